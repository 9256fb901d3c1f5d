import Crypto
import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletImages
import SwiftletMetrics
import SwiftletNetwork
import SwiftletPKI
import SwiftletStore
import Synchronization

/// The API's behaviour, independent of HTTP: validation, persistence, hand-off to the hosts' agents.
public final class Controller: Sendable {
    public let store: any SwiftletStore
    public let blobs: BlobStore
    /// The connected host agents, by host id.
    public let agents: AgentRegistry
    /// Instances' desired state down to their hosts, observations back into the store.
    public let instanceSync: InstanceSync
    /// Work started by API calls that answer before it ends (migrations); a `Service`.
    public let background = BackgroundWork()
    public let uploadLimit: Int64
    /// Encoded list answers, reused until the store changes.
    let responses = ResponseCache()
    /// Images, flavors and hosts as creates read them, reused until the catalog changes.
    let launchCatalog: CatalogCache
    /// Tokens by `Authorization` header value, so that most requests skip hashing and the store.
    /// An entry is trusted until its token expires and for `principalRecheck` at most: a token
    /// revoked here leaves at once, one revoked by another controller within that time.
    private let principals = Mutex<[String: CachedToken]>([:])
    static let principalCacheLimit = 4096
    static let principalRecheck: UInt64 = 5_000_000_000

    struct CachedToken {
        var token: TokenInfo
        var principal: Principal
        var checkedAt: UInt64
    }

    /// Every change made through the API, written in the background (`AuditLog`).
    public let audit: AuditLog
    private let scheme = Mutex("http")
    private let authority = Mutex<ClusterCA?>(nil)
    /// Issues each live migration's TLS certificates: the cluster's CA, once hosts may join.
    public var migrationAuthority: ClusterCA? {
        get { authority.withLock { $0 } }
        set { authority.withLock { $0 = newValue } }
    }
    /// `https` when the API is served over TLS (for links the OpenStack APIs answer with).
    public var apiScheme: String {
        get { scheme.withLock { $0 } }
        set { scheme.withLock { $0 = newValue } }
    }
    private let hostMemoryMib: Int
    let logger: Logger
    /// Networks, ports and security groups (nil: networking disabled).
    public let networking: ControllerNetworking?
    /// Hands every host its network state after a change.
    let networkPublisher: NetworkPublisher?
    /// What `GET /metrics` shows: recorded here, by the instance sync and by the API middleware.
    public let metrics: PrometheusMetrics
    /// Remote hosts' leases: who is UP.
    public let leases = HostLeases()
    /// The migrations this process drives now (the others' are known by their records' age).
    let movesInFlight = Mutex<Set<String>>([])
    /// The host of the agent in this process, once connected.
    private let localHost = Mutex<String?>(nil)

    public var localHostId: String? { localHost.withLock { $0 } }

    func setLocalHost(_ hostId: String) {
        localHost.withLock { $0 = hostId }
        networking?.setLocalHost(hostId)
    }

    /// Whether new instances may be placed on a host now: the local host, or a remote one whose
    /// lease holds.
    func isUp(hostId: String) -> Bool {
        hostId == localHostId || leases.status(hostId: hostId).up
    }

    public init(
        store: any SwiftletStore, blobs: BlobStore, agents: AgentRegistry = AgentRegistry(), uploadLimit: Int64,
        hostMemoryMib: Int, logger: Logger, networking: ControllerNetworking? = nil,
        metrics: PrometheusMetrics = PrometheusMetrics()
    ) {
        self.metrics = metrics
        self.networking = networking
        networkPublisher = networking.map { NetworkPublisher(networking: $0, agents: agents, logger: logger) }
        self.store = store
        self.blobs = blobs
        self.agents = agents
        let catalog = CatalogCache()
        launchCatalog = catalog
        instanceSync = InstanceSync(
            store: store, agents: agents, catalog: catalog, networking: networking, metrics: metrics, logger: logger)
        self.uploadLimit = uploadLimit
        self.hostMemoryMib = hostMemoryMib
        self.logger = logger
        audit = AuditLog(store: store, logger: logger)
    }

    // MARK: - Auth

    public static func hash(secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).hexString
    }

    public func authenticate(authorization: String?) async throws(SwiftletError) -> Principal {
        try await authenticateToken(authorization: authorization).principal
    }

    /// `authenticate`, with the token: 401 `auth.missing_token`, `auth.invalid_token`,
    /// `auth.token_expired` or `auth.token_revoked` unless it works.
    public func authenticateToken(authorization: String?) async throws(SwiftletError) -> (
        token: TokenInfo, principal: Principal
    ) {
        guard let authorization, authorization.hasPrefix("Bearer ") else {
            throw SwiftletError(.unauthorized, "auth.missing_token", "missing 'Authorization: Bearer <token>' header")
        }
        let now = monotonicNanos()
        // Known headers skip hashing and the store: this runs on every request.
        if let known = principals.withLock({ $0[authorization] }), now &- known.checkedAt < Self.principalRecheck,
            known.token.expiresAt.map({ $0 > Date() }) ?? true
        {
            AuditNote.authenticated(tokenId: known.token.id, projectId: known.principal.projectId)
            return (known.token, known.principal)
        }
        let secret = String(authorization.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        let hash = Self.hash(secret: secret)
        guard !secret.isEmpty, let token = try await store.token(forSecretHash: hash) else {
            principals.withLock { _ = $0.removeValue(forKey: authorization) }
            throw SwiftletError(.unauthorized, "auth.invalid_token", "the token is not valid")
        }
        let principal: Principal = token.admin ? .admin : .project(token.projectId)
        AuditNote.authenticated(tokenId: token.id, projectId: principal.projectId)
        try Self.checkLive(token)
        principals.withLock { principals in
            // Only valid tokens get here, so this bounds memory against many distinct valid ones.
            if principals.count >= Self.principalCacheLimit { principals.removeAll(keepingCapacity: true) }
            principals[authorization] = CachedToken(token: token, principal: principal, checkedAt: now)
        }
        return (token, principal)
    }

    /// 401 `auth.token_revoked` or `auth.token_expired` for a token that no longer works.
    static func checkLive(_ token: TokenInfo, now: Date = Date()) throws(SwiftletError) {
        if let revokedAt = token.revokedAt {
            throw SwiftletError(
                .unauthorized, "auth.token_revoked",
                "the token \(token.id) was revoked at \(revokedAt.formatted(.iso8601))")
        }
        if let expiresAt = token.expiresAt, expiresAt <= now {
            throw SwiftletError(
                .unauthorized, "auth.token_expired",
                "the token \(token.id) expired at \(expiresAt.formatted(.iso8601))")
        }
    }

    /// Longest lifetime a token may be given: ten years.
    static let maxTokenTTL = 10 * 365 * 86400

    /// Creates a token for a project and returns it with its secret (shown once); with `ttl`
    /// (seconds), it stops working that long after.
    public func createToken(projectId: String, admin: Bool, ttlSeconds: Int? = nil) async throws(SwiftletError)
        -> TokenInfo
    {
        if let ttlSeconds, !(1...Self.maxTokenTTL).contains(ttlSeconds) {
            throw SwiftletError.badRequest(
                "token.bad_ttl", "ttlSeconds must be 1 to \(Self.maxTokenTTL) (ten years), not \(ttlSeconds)")
        }
        guard try await store.project(id: projectId) != nil else { throw .notFound("project", projectId) }
        var generator = SystemRandomNumberGenerator()
        let secret = "swl_" + (0..<4).map { _ in String(format: "%016llx", generator.next() as UInt64) }.joined()
        let now = Date()
        var info = TokenInfo(
            id: ResourceID.make("tok"), projectId: projectId, admin: admin, token: nil, createdAt: now,
            expiresAt: ttlSeconds.map { now.addingTimeInterval(TimeInterval($0)) })
        try await store.createToken(info, secretHash: Self.hash(secret: secret))
        info.token = secret
        return info
    }

    /// Admin only: the tokens of one project (nil: all), never their secrets.
    public func tokens(projectId: String?, by principal: Principal) async throws(SwiftletError) -> [TokenInfo] {
        try requireAdmin(principal)
        return try await store.tokens(projectId: projectId)
    }

    /// Admin only: the token stops working at once here (and within `principalRecheck` on the
    /// other controllers sharing the store). Revoking it again answers as the first time.
    public func revokeToken(id: String, by principal: Principal) async throws(SwiftletError) -> TokenInfo {
        try requireAdmin(principal)
        guard let token = try await store.revokeToken(id: id, now: Date()) else { throw .notFound("token", id) }
        principals.withLock { principals in
            for (key, cached) in principals where cached.token.id == id { principals.removeValue(forKey: key) }
        }
        return token
    }

    // Untyped throws: with `throws(SwiftletError)` here, Swift 6.3.1's optimizer crashes splitting
    // the route closure that calls this (LLVM CoroSplit); it throws only SwiftletError.
    public func createProject(_ request: CreateProjectRequest, by principal: Principal) async throws
        -> Project
    {
        try requireAdmin(principal)
        try ResourceID.validateName(request.name)
        let project = Project(
            id: ResourceID.make("prj"), name: request.name, requireSignedImages: request.requireSignedImages ?? false,
            createdAt: Date())
        try await store.createProject(project)
        return project
    }

    public func requireAdmin(_ principal: Principal) throws(SwiftletError) {
        guard principal.isAdmin else {
            throw SwiftletError(.forbidden, "auth.admin_only", "this request needs the admin token")
        }
    }

    /// The project filter for reads: admins see every project.
    func scope(_ principal: Principal) -> String? { principal.isAdmin ? nil : principal.projectId }

    // MARK: - Images

    /// Streams an upload into the blob store and registers it. Nothing remains if it fails. `id`
    /// is for an image whose id was handed out before its bytes (the Image API's two steps).
    public func uploadImage(
        name: String, properties: [String: String], by principal: Principal, signature: String? = nil,
        visibility: ImageVisibility? = nil, tags: [String]? = nil, id: String? = nil,
        body: (BlobUpload) async throws -> Void
    ) async throws -> Image {
        try ResourceID.validateName(name)
        let tags = try tags.map(Self.normalizeTags)
        if let pattern = properties[Image.readyPatternProperty] {
            do { _ = try Regex(pattern) } catch {
                throw SwiftletError.badRequest(
                    "image.bad_ready_pattern", "ready_pattern is not a valid regex: \(pattern)")
            }
        }
        let upload = try blobs.beginUpload(limit: uploadLimit)
        do { try await body(upload) } catch {
            upload.abort()
            throw error
        }
        let size = upload.size
        guard size > 0 else {
            upload.abort()
            throw SwiftletError.badRequest("image.empty", "the upload is empty")
        }
        // Kind, launch properties and signature are checked before the bytes become a blob.
        let (sha256, (kind, launchProperties, keyId)) = try await upload.commit { path in
            let kind = try KernelFormat.detect(path: path)
            let launchProperties = try await normalizeImageProperties(properties, kind: kind, by: principal)
            return (
                kind, launchProperties, try await verifyUploadSignature(signature, sha256: upload.sha256, by: principal)
            )
        }
        var image = Image(
            id: id ?? ResourceID.make("img"), projectId: principal.projectId, name: name, kind: kind, sha256: sha256,
            sizeBytes: size, properties: launchProperties, createdAt: Date())
        (image.signature, image.signingKeyId) = keyId == nil ? (nil, nil) : (signature, keyId)
        (image.visibility, image.tags) = (visibility ?? .private, tags ?? [])
        do {
            try await store.createImage(image, quota: try await quota(of: principal.projectId))
            if keyId != nil || visibility != nil || tags != nil { try await catalog.updateImageCatalog(image) }
        } catch {
            if await (try? store.images(projectId: nil).contains { $0.sha256 == sha256 }) != true {
                blobs.remove(sha256: sha256)
            }
            if error.kind == .conflict {
                throw SwiftletError(.conflict, "image.duplicate_name", "an image named '\(name)' already exists")
            }
            throw error
        }
        logger.info(
            "image registered",
            metadata: ["image.id": "\(image.id)", "image.kind": "\(kind)", "image.sha256": "\(sha256)"])
        return image
    }

    public func images(by principal: Principal) async throws(SwiftletError) -> [Image] {
        try await store.images(projectId: scope(principal))
    }

    public func image(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> Image {
        guard let image = try await findImage(idOrName, by: principal) else { throw .notFound("image", idOrName) }
        return image
    }

    /// An image by id or name. A name no image has may be a build's: the newest succeeded build
    /// of that name answers with its image, as the name given to `docker build` is the one to
    /// run. The image's own name, `<name>-<digest>`, stays its version.
    func findImage(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> Image? {
        if let image = try await store.image(idOrName: idOrName, projectId: scope(principal)) { return image }
        guard let builds = store as? any BuildStore else { return nil }
        let newest = try await builds.builds(projectId: scope(principal)).last {
            $0.name == idOrName && $0.state == .succeeded && $0.imageId != nil
        }
        guard let imageId = newest?.imageId else { return nil }
        return try await store.image(idOrName: imageId, projectId: scope(principal))
    }

    public func deleteImage(_ idOrName: String, by principal: Principal) async throws(SwiftletError) {
        let image = try await image(idOrName, by: principal)
        try requireOwner(image, principal)
        let shared = try await store.deleteImage(id: image.id)
        if !shared {
            blobs.remove(sha256: image.sha256)
            // A host's copy may be a hard link to the blob: without this the bytes never leave the disk.
            for link in agents.all { await link.apply(.evictImage(sha256: image.sha256), pendingCommit: nil) }
        }
    }

    // MARK: - Flavors

    public func createFlavor(_ flavor: Flavor, by principal: Principal) async throws(SwiftletError) -> Flavor {
        try requireAdmin(principal)
        try ResourceID.validateName(flavor.name)
        try validateResources(memoryMib: flavor.memoryMib, vcpus: flavor.vcpus)
        do { try await store.createFlavor(flavor) } catch  where error.kind == .conflict {
            throw SwiftletError(.conflict, "flavor.duplicate", "flavor '\(flavor.name)' already exists")
        }
        return flavor
    }

    func validateResources(memoryMib: Int, vcpus: Int) throws(SwiftletError) {
        guard memoryMib >= 2, memoryMib <= hostMemoryMib else {
            throw .badRequest(
                "instance.bad_memory",
                "memoryMib must be between 2 and the host's \(hostMemoryMib) MiB, got \(memoryMib)")
        }
        guard (1...64).contains(vcpus) else {
            throw .badRequest("instance.bad_vcpus", "vcpus must be between 1 and 64, got \(vcpus)")
        }
    }

    // MARK: - Instances

    public static let maxCount = 1000

    public func createInstances(_ request: CreateInstanceRequest, by principal: Principal, accepted: UInt64)
        async throws(SwiftletError)
        -> [Instance]
    {
        var request = request
        let snapshot = try await snapshotLaunch(&request, by: principal)
        let catalog = store.catalogGeneration
        let image = try await launchCatalog.value(
            "image|\(scope(principal) ?? "")|\(request.image)", generation: catalog
        ) {
            () async throws(SwiftletError) in try await self.image(request.image, by: principal)
        }
        var memoryMib = request.memoryMib
        var vcpus = request.vcpus
        if let flavorName = request.flavor {
            let flavors = try await launchCatalog.value("flavors", generation: catalog) {
                () async throws(SwiftletError) in try await store.flavors()
            }
            guard let flavor = flavors.first(where: { $0.name == flavorName }) else {
                throw .notFound("flavor", flavorName)
            }
            memoryMib = memoryMib ?? flavor.memoryMib
            vcpus = vcpus ?? flavor.vcpus
        } else if memoryMib == nil && vcpus == nil {
            let tiny = Flavor.defaults[0]
            (memoryMib, vcpus) = (tiny.memoryMib, tiny.vcpus)
        }
        try validateResources(memoryMib: memoryMib ?? 16, vcpus: vcpus ?? 1)
        let args = request.args ?? []
        try checkLaunch(
            of: image, memoryMib: memoryMib ?? 16,
            hasNIC: !(request.publish ?? []).isEmpty || !(request.networks ?? []).isEmpty
                || args.contains { $0.hasPrefix("ip=") })
        let count = request.count ?? 1
        guard (1...Self.maxCount).contains(count) else {
            throw .badRequest("instance.bad_count", "count must be between 1 and \(Self.maxCount), got \(count)")
        }
        for arg in args { try Self.validateArg(arg) }
        var ports: [PublishedPort] = []
        for text in request.publish ?? [] { ports.append(try PublishedPort.parse(text)) }
        if count > 1 && !ports.isEmpty {
            throw .badRequest("publish.with_count", "published host ports cannot be shared by \(count) instances")
        }
        let baseName = request.name ?? image.name
        try ResourceID.validateName(baseName)
        let now = Date()
        var instances = (1...count).map { index in
            let id = ResourceID.make("i")
            let name = count == 1 ? (request.name ?? "\(image.name)-\(id.suffix(6))") : "\(baseName)-\(index)"
            return Instance(
                id: id, projectId: principal.projectId, name: name, imageId: image.id, flavor: request.flavor,
                vcpus: vcpus ?? 1, memoryMib: memoryMib ?? 16, args: args, restartPolicy: request.restartPolicy ?? .no,
                publishedPorts: ports, state: .building, timeline: .starting(at: accepted), createdAt: now,
                updatedAt: now)
        }
        for index in instances.indices {
            instances[index].generation = 1
            instances[index].desired = .running
            instances[index].snapshotId = snapshot?.id
        }
        for instance in instances { try ResourceID.validateName(instance.name) }
        if request.host != nil { try requireAdmin(principal) }
        let group: ServerGroup? =
            if let name = request.serverGroup { try await serverGroup(name, by: principal) } else { nil }
        let networkPlan = try await planNetworks(request, by: principal, count: count)
        // Checked with the instances counted, in the insert's own transaction.
        let quota = try await quota(of: principal.projectId).map {
            QuotaClaim(projectId: principal.projectId, quota: $0)
        }
        let place = { () async throws(SwiftletError) in
            var placements = try await self.placeInstances(
                count: count, memoryMib: memoryMib ?? 16, vcpus: vcpus ?? 1, image: image, target: request.host,
                needsNetworks: !networkPlan.attachments.isEmpty, group: group)
            placements.claim.quota = quota
            return placements
        }
        var placements = try await place()
        // Instances whose assignment went into their host's feed with their record.
        var fed: Set<String> = []
        for attempt in 1...Self.placementAttempts {
            for index in instances.indices {
                instances[index].hostId = placements.hostIds[index]
                instances[index].serverGroupId = group?.id
            }
            do throws(SwiftletError) {
                if networkPlan.attachments.isEmpty {
                    if count == 1, remoteLink(for: instances[0]) == nil {
                        return try await createWhileSpawning(
                            instances[0], image: image, wait: request.wait == true, claim: placements.claim)
                    }
                    fed = try await insertFeedingRemoteHosts(instances, image: image, claim: placements.claim)
                } else {
                    do { try await store.createInstances(instances, claim: placements.claim) } catch {
                        throw Self.insertError(error)
                    }
                }
                break
            } catch  where error.code == PlacementClaim.lostCode && attempt < Self.placementAttempts {
                // Concurrent creates took the room first: place again over what they committed. New ids,
                // as a boot started for the lost claim may still be ending under the old one.
                placements = try await place()
                for index in instances.indices { instances[index].id = ResourceID.make("i") }
            }
        }
        try await attachNetworks(networkPlan, to: instances)
        // The hosts learn the new members' policies (and the others their new peers) before the
        // assignments arrive, so no port is ever unguarded.
        if !networkPlan.groups.isEmpty { await publishNetworks() }
        // Recorded with READY, so persisting costs one commit, not two.
        let persisted = monotonicNanos()
        let sync = self.instanceSync
        let ids = instances.map(\.id)
        // Attaching networks rewrites the records (ports, groups): then they are read back.
        var committed: [Instance] = []
        for var instance in instances {
            if !networkPlan.attachments.isEmpty {
                guard let stored = try await store.instance(idOrName: instance.id, projectId: nil) else { continue }
                instance = stored
            }
            instance.timeline.persisted = persisted
            committed.append(instance)
        }
        if !networkPlan.attachments.isEmpty {
            fed = await feedRemoteHosts(committed, image: image)
        }
        let unfed = committed.filter { !fed.contains($0.id) }
        if request.wait == true {
            await withTaskGroup(of: Void.self) { [fed] group in
                for instance in committed {
                    group.addTask {
                        if !fed.contains(instance.id) { await sync.dispatch(instance, image: image) }
                        await sync.waitUntilSettled(instanceId: instance.id, timeout: .seconds(60))
                    }
                }
            }
        } else {
            // The answer does not wait for the boots (they queue at the host's boot gate).
            for instance in unfed { Task { await sync.dispatch(instance, image: image) } }
        }
        var created: [Instance] = []
        for id in ids {
            if let instance = try await store.instance(idOrName: id, projectId: nil) { created.append(instance) }
        }
        return created.map(present)
    }

    /// The link of the instance's host when its agent is another process (nil for the in-process one).
    private func remoteLink(for instance: Instance) -> RemoteAgentLink? {
        guard let hostId = instance.hostId else { return nil }
        return (try? agents.link(for: hostId)) as? RemoteAgentLink
    }

    /// The assignments of the instances on remote hosts, each with its link; an instance whose
    /// assignment cannot be made is left out (its dispatch records why it fails).
    private func remoteAssignments(_ instances: [Instance], image: Image) async -> [(
        link: RemoteAgentLink, change: DesiredChange, instanceId: String
    )] {
        var changes: [(link: RemoteAgentLink, change: DesiredChange, instanceId: String)] = []
        for instance in instances {
            guard let link = remoteLink(for: instance),
                let assignment = try? await instanceSync.assignment(for: instance, image: image)
            else { continue }
            changes.append((link, .assign(assignment), instance.id))
        }
        return changes
    }

    /// Inserts the records, and in the same transaction the assignments of those on remote hosts
    /// into their hosts' feeds: a committed instance is never missing from its host's desired
    /// state, and the agent has it one commit after the request. Returns the ids of those fed.
    private func insertFeedingRemoteHosts(_ instances: [Instance], image: Image, claim: PlacementClaim)
        async throws(SwiftletError) -> Set<String>
    {
        let changes = await remoteAssignments(instances, image: image)
        let store = self.store
        do {
            try await RemoteAgentLink.commit(changes.map { ($0.link, $0.change) }) { feed throws(SwiftletError) in
                try await store.createInstances(instances, claim: claim, feed: feed)
            }
        } catch {
            // A connection lost at commit leaves the outcome unknown: records that are there are
            // kept, and their hosts' agents read the feed entries committed with them.
            guard error.code == "store.unavailable", (try? await store.instanceState(id: instances[0].id)) != nil
            else { throw Self.insertError(error) }
        }
        return Set(changes.map(\.instanceId))
    }

    /// Appends the assignments of committed instances on remote hosts to their hosts' feeds, in
    /// one transaction; returns the ids of those appended (the others are dispatched one by one,
    /// which keeps what the store cannot take to append later).
    private func feedRemoteHosts(_ instances: [Instance], image: Image) async -> Set<String> {
        let changes = await remoteAssignments(instances, image: image)
        guard !changes.isEmpty else { return [] }
        do { try await RemoteAgentLink.append(changes.map { ($0.link, $0.change) }) } catch { return [] }
        return Set(changes.map(\.instanceId))
    }

    /// What a failed insert answers: a name taken in the project is said so; a lost placement
    /// claim or anything else as it is.
    private static func insertError(_ error: SwiftletError) -> SwiftletError {
        guard error.code == "store.duplicate" else { return error }
        return SwiftletError(
            .conflict, "instance.duplicate_name", "an instance with that name already exists in the project")
    }

    /// Creates one instance without networks on the in-process agent's host, with its VMM starting
    /// while its record commits: the agent spawns QEMU paused and lets the guest run once the insert is done, so the commit is off
    /// the path to READY. A failed insert ends that VMM (nothing is recorded) and is the answer.
    private func createWhileSpawning(_ instance: Instance, image: Image, wait: Bool, claim: PlacementClaim)
        async throws(SwiftletError) -> [Instance]
    {
        let (store, sync) = (self.store, self.instanceSync)
        let pendingCommit = PendingCommit()
        let commit = Task { () -> SwiftletError? in
            // The claim is checked in the insert's own transaction: no extra commit on this path.
            do throws(SwiftletError) { try await store.createInstances([instance], claim: claim) } catch {
                // A connection lost at commit leaves the outcome unknown: a record that is there
                // boots, so that no recorded instance is left without its VM.
                if error.code == "store.unavailable",
                    (try? await store.instanceState(id: instance.id)) != nil
                {
                    pendingCommit.committed(at: monotonicNanos())
                    return nil
                }
                pendingCommit.failed()
                return Self.insertError(error)
            }
            pendingCommit.committed(at: monotonicNanos())
            return nil
        }
        if wait {
            // The boot runs here up to the spawn, then waits for the commit task.
            await sync.dispatch(instance, image: image, pendingCommit: pendingCommit)
            if let error = await commit.value { throw error }
            await sync.waitUntilSettled(instanceId: instance.id, timeout: .seconds(60))
        } else {
            // The boot goes on after the answer.
            Task { await sync.dispatch(instance, image: image, pendingCommit: pendingCommit) }
            if let error = await commit.value { throw error }
        }
        guard let created = try await store.instance(idOrName: instance.id, projectId: nil) else {
            throw .notFound("instance", instance.id)
        }
        return [present(created)]
    }

    /// A config word: `key=value` (key of letters, digits, `_`, `-`, `.`) or a bare word, since some
    /// unikernels take a literal word; either way printable ASCII with no spaces, as the words are
    /// joined with spaces into the command line.
    static func validateArg(_ arg: String) throws(SwiftletError) {
        let printable = !arg.isEmpty && arg.unicodeScalars.allSatisfy { $0.value > 32 && $0.value < 127 }
        var keyOK = true
        if let equals = arg.firstIndex(of: "=") {
            let key = arg[..<equals]
            keyOK =
                !key.isEmpty
                && key.unicodeScalars.allSatisfy {
                    $0.properties.isAlphabetic || ("0"..."9").contains($0) || "_-.".unicodeScalars.contains($0)
                }
        }
        guard printable, keyOK, arg.utf8.count <= 256 else {
            throw .badRequest(
                "instance.bad_arg",
                "config argument '\(arg)' must be key=value or a bare word, printable and with no spaces")
        }
    }

    /// The most instances one page holds, as Nova's `osapi_max_limit`: a larger `limit` is cut to it.
    public static let maxPageSize = 1000

    /// A principal's instances in creation order. With `limit`, one page of at most that many,
    /// created after the `marker` instance, and the marker of the next page when more follow.
    public func instances(
        by principal: Principal, state: InstanceState?, name: String?, image: String?, after marker: String? = nil,
        limit: Int? = nil
    ) async throws(SwiftletError) -> InstanceList {
        var imageId: String?
        if let image {
            guard let found = try await findImage(image, by: principal) else { return InstanceList(instances: []) }
            imageId = found.id
        }
        if let marker, try await store.instance(idOrName: marker, projectId: scope(principal))?.id != marker {
            throw .badRequest("instance.bad_marker", "marker '\(marker)' is not the id of one of your instances")
        }
        // The router has refused a limit under 1. One more than the page is read: whether
        // another page follows, without a second query.
        let pageSize = limit.map { min($0, Self.maxPageSize) }
        // UNKNOWN is not stored: those are the instances that want a VM, on a DOWN host. With a
        // state filter a page may hold fewer than `limit` (its presented state differs).
        var page = try await store.instances(
            projectId: scope(principal), state: state == .unknown ? nil : state, name: name, imageId: imageId,
            after: marker, limit: pageSize.map { $0 + 1 })
        var next: String?
        if let pageSize, page.count > pageSize {
            page.removeLast(page.count - pageSize)
            next = page.last?.id
        }
        var shown = page.map(present)
        if let state { shown.removeAll { $0.state != state } }
        return InstanceList(instances: shown, next: next)
    }

    /// An instance as the API shows it: UNKNOWN when it should have a VM and its host is DOWN.
    public func present(_ instance: Instance) -> Instance {
        guard instance.state.wantsVM, let hostId = instance.hostId, !isUp(hostId: hostId) else { return instance }
        var shown = instance
        shown.state = .unknown
        return shown
    }

    /// The hosts that are DOWN now, sorted: part of a cached list answer's key, since it changes
    /// how instances are shown without a change to the store.
    public func downHosts() async -> [String] {
        await ((try? knownHosts()) ?? []).map(\.id).filter { !isUp(hostId: $0) }.sorted()
    }

    public func instance(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> Instance {
        guard let instance = try await store.instance(idOrName: idOrName, projectId: scope(principal)) else {
            throw .notFound("instance", idOrName)
        }
        return instance
    }

    /// Applies a user command through the state machine, then has the instance's host carry it out.
    public func act(_ command: InstanceCommand, on idOrName: String, by principal: Principal, stopTimeout: Duration)
        async throws(SwiftletError) -> Instance?
    {
        let id = try await instance(idOrName, by: principal).id
        let accepted = monotonicNanos()
        let updated = try await store.updateInstance(id: id) { instance throws(SwiftletError) in
            if let task = instance.task, task.kind == .migrating {
                throw SwiftletError(
                    .conflict, "instance.migrating",
                    "instance '\(instance.name)' is being migrated to '\(task.to)': wait for it, or cancel migration "
                        + "'\(task.migrationId ?? "")'")
            }
            let next = try InstanceLifecycle.apply(command, to: instance.state)
            if next.wantsVM != instance.state.wantsVM { instance.generation = (instance.generation ?? 0) + 1 }
            instance.state = next
            switch command {
            case .start, .resume, .reboot: instance.desired = .running
            case .stop: instance.desired = .stopped
            case .pause: instance.desired = .paused
            case .delete: break
            }
            if command == .start {
                instance.timeline = .starting(at: accepted)
                instance.restartCount = 0
                instance.reason = nil
            }
        }
        try? await store.addEvent(instanceId: id, type: command.rawValue, message: "\(command.rawValue) requested")
        switch command {
        case .start, .stop:
            await instanceSync.dispatch(updated, stopTimeout: stopTimeout)
        case .pause, .resume, .reboot:
            guard let hostId = updated.hostId else { throw .notFound("host", "of instance \(id)") }
            let vmCommand: VMCommand = command == .pause ? .pause : command == .resume ? .resume : .reboot
            try await agents.link(for: hostId).command(vmCommand, instanceId: id)
            if command != .reboot {
                try await store.updateInstance(id: id) { instance throws(SwiftletError) in
                    instance.observed = ObservedState(
                        phase: command == .pause ? .paused : .running, hostId: hostId, at: Date())
                }
            }
        case .delete:
            await instanceSync.unassign(updated)
            try await store.deleteInstance(id: id)
            instanceSync.releaseWaiters(id)
            // Its address is no longer a peer of its groups' members.
            if !(updated.securityGroups ?? []).isEmpty { await publishNetworks() }
            return nil
        }
        return try await store.instance(idOrName: id, projectId: nil).map(present)
    }

    /// The link to the host an instance is on (409 when that host's agent is not connected).
    public func link(for instance: Instance) throws(SwiftletError) -> any AgentLink {
        guard let hostId = instance.hostId else {
            throw SwiftletError(.conflict, "instance.no_host", "instance '\(instance.id)' is on no host")
        }
        return try agents.link(for: hostId)
    }

    public func events(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> [InstanceEvent] {
        try await store.events(instanceId: instance(idOrName, by: principal).id)
    }

    /// Stops (or resumes) new placements on a host (admin).
    public func setCordoned(host: String, _ cordoned: Bool, by principal: Principal) async throws(SwiftletError) {
        try requireAdmin(principal)
        try await store.setCordoned(hostId: try hostId(for: host), cordoned)
    }

    /// A host's id from its id or its name (404 when neither is known).
    public func hostId(for idOrName: String) async throws(SwiftletError) -> String {
        guard let host = try await store.hosts().first(where: { $0.id == idOrName || $0.name == idOrName }) else {
            throw .notFound("host", idOrName)
        }
        return host.id
    }

    /// Hosts, each with the number of instances placed on it that are not stopped, whether it is
    /// UP, and when a remote one was last heard from.
    public func hosts() async throws(SwiftletError) -> [ComputeHost] {
        let usage = try await store.hostUsage()
        return try await store.hosts().map { host in
            var host = host
            host.instances = usage[host.id]?.instances ?? 0
            if host.id == localHostId {
                host.status = .up
            } else {
                let lease = leases.status(hostId: host.id)
                host.status = lease.up ? .up : .down
                host.lastSeenAt = lease.lastSeen
            }
            return host
        }
    }
}
