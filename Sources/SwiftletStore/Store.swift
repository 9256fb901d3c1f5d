import Foundation
import SwiftletCore

/// Resources held on one host by its live instances (an aggregate, not a record).
public struct HostUsage: Sendable, Equatable {
    public var memoryMib: Int
    public var vcpus: Int
    public var instances: Int

    public init(memoryMib: Int, vcpus: Int, instances: Int) {
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.instances = instances
    }
}

/// What the controller needs from persistent state. The SQLite implementation is the embedded
/// default; the PostgreSQL one (module SwiftletPostgres) serves a cluster and several controllers.
public protocol SwiftletStore: Sendable {
    /// Grows with every committed write: a reader that saw the same value saw the same data
    /// (the API caches encoded list responses on it).
    var generation: UInt64 { get }
    /// Grows with every committed change to images, flavors, hosts, projects or signing keys,
    /// however made: what a create reads before placing, so the controller can keep it meanwhile.
    var catalogGeneration: UInt64 { get }

    // Projects and tokens
    func createProject(_ project: Project) async throws(SwiftletError)
    func projects() async throws(SwiftletError) -> [Project]
    func project(id: String) async throws(SwiftletError) -> Project?
    /// Sets a project's quota (nil: none); 404 for no such project.
    func setProjectQuota(projectId: String, _ quota: ProjectQuota?) async throws(SwiftletError)
    /// What a project holds now: its instances and their vCPUs and memory, its images' bytes, its networks.
    func projectUsage(projectId: String) async throws(SwiftletError) -> ProjectUsage
    /// Stores the sha256 of a token secret; the secret itself is never stored.
    func createToken(_ info: TokenInfo, secretHash: String) async throws(SwiftletError)
    /// The token whose secret has this hash, expired or revoked or not (the caller checks).
    func token(forSecretHash hash: String) async throws(SwiftletError) -> TokenInfo?
    /// The tokens of one project (nil: all), oldest first; secrets are never returned.
    func tokens(projectId: String?) async throws(SwiftletError) -> [TokenInfo]
    /// Marks the token revoked at `now` (kept, so that its use is told apart from an unknown
    /// token); revoking it again keeps the first time. Nil when there is no such token.
    func revokeToken(id: String, now: Date) async throws(SwiftletError) -> TokenInfo?

    // Images
    /// Inserts the record; with `quota`, refused (403 `quota.exceeded`) when the project's images
    /// would take more bytes than it allows, checked in the same transaction.
    func createImage(_ image: Image, quota: ProjectQuota?) async throws(SwiftletError)
    func images(projectId: String?) async throws(SwiftletError) -> [Image]
    /// By id or by name within the project (nil project = any, for admins).
    func image(idOrName: String, projectId: String?) async throws(SwiftletError) -> Image?
    /// Deletes the record; 409 while an instance uses it. Returns whether another image record
    /// still references the same blob.
    func deleteImage(id: String) async throws(SwiftletError) -> Bool

    // Flavors
    func flavors() async throws(SwiftletError) -> [Flavor]
    func createFlavor(_ flavor: Flavor) async throws(SwiftletError)

    // Instances
    /// Inserts all or none (names unique per project). With a claim, in the same transaction,
    /// 409 `scheduler.no_host` when it no longer holds (see `PlacementClaim`). `feed` is appended
    /// to the hosts' feeds in that transaction too (as `HostFeedStore.appendHostChanges`), so a
    /// committed instance's desired state is never missing from its host's feed; returns their
    /// revisions.
    @discardableResult
    func createInstances(_ instances: [Instance], claim: PlacementClaim?, feed: [HostChange])
        async throws(SwiftletError) -> [UInt64]
    /// In creation order; with `marker`, only those created after that instance (keyset paging),
    /// and at most `limit` of them.
    func instances(
        projectId: String?, state: InstanceState?, name: String?, imageId: String?, after marker: String?,
        limit: Int?
    ) async throws(SwiftletError) -> [Instance]
    func instance(idOrName: String, projectId: String?) async throws(SwiftletError) -> Instance?
    /// Only the state of an instance, by id: no record to decode (polled while a create waits).
    func instanceState(id: String) async throws(SwiftletError) -> InstanceState?
    /// The states of these instances (those that exist), in one read where the engine can.
    func instanceStates(ids: [String]) async throws(SwiftletError) -> [String: InstanceState]
    /// `updateInstance`, and in the same transaction appends `events` (type, message) and, when
    /// given, saves the instance's VM handle: what the agent learns at once costs one commit.
    /// With a claim (a move to another host), 409 `scheduler.no_host` when it no longer holds.
    @discardableResult
    func updateInstance(
        id: String, events: [(type: String, message: String)], handle: Data?, claim: PlacementClaim?,
        _ change: @escaping @Sendable (inout Instance) throws(SwiftletError) -> Void
    ) async throws(SwiftletError) -> Instance
    func deleteInstance(id: String) async throws(SwiftletError)
    /// What the BUILDING, RUNNING and PAUSED instances on each host hold, by host id.
    func hostUsage() async throws(SwiftletError) -> [String: HostUsage]

    // VMM handles (opaque to the store), so the agent can re-attach after a restart; saved with
    // the instance by `updateInstance(id:events:handle:_:)`
    func handle(instanceId: String) async throws(SwiftletError) -> Data?
    func removeHandle(instanceId: String) async throws(SwiftletError)
    func allHandles() async throws(SwiftletError) -> [(instanceId: String, handle: Data)]

    // Events
    func addEvent(instanceId: String, type: String, message: String) async throws(SwiftletError)
    func events(instanceId: String) async throws(SwiftletError) -> [InstanceEvent]

    // Hosts
    /// Inserts or replaces what a host reports; its cordon is kept.
    func upsertHost(_ host: ComputeHost) async throws(SwiftletError)
    func hosts() async throws(SwiftletError) -> [ComputeHost]
    /// A cordoned host takes no new placements. 404 for an unknown host.
    func setCordoned(hostId: String, _ cordoned: Bool) async throws(SwiftletError)
}

/// The audit log: every change made through the API (docs/api.md, "Audit log").
public protocol AuditStore: Sendable {
    /// Appends the entries in one transaction.
    func appendAudit(_ entries: [AuditEntry]) async throws(SwiftletError)
    /// Entries at or after `since` (nil: any), newest first, at most `limit`.
    func auditEntries(since: Date?, limit: Int) async throws(SwiftletError) -> [AuditEntry]
}

/// Everything the controller keeps in its store, as one type: what every engine implements.
public typealias ControllerStore = SwiftletStore & NetworkStore & ClusterStore & ImageCatalogStore & BuildStore
    & HostFeedStore & ServerGroupStore & PoolStore & LeadershipStore & IdentityStore & AuditStore & MigrationStore
    & SnapshotStore

extension SwiftletStore {
    /// What the token with this secret hash grants, when it exists (expired or revoked or not).
    public func principal(forSecretHash hash: String) async throws(SwiftletError) -> Principal? {
        guard let token = try await token(forSecretHash: hash) else { return nil }
        return token.admin ? .admin : .project(token.projectId)
    }

    /// One read per instance: for an engine whose reads are cheap (SQLite, in process).
    public func instanceStates(ids: [String]) async throws(SwiftletError) -> [String: InstanceState] {
        var states: [String: InstanceState] = [:]
        for id in ids { states[id] = try await instanceState(id: id) }
        return states
    }

    /// Read-modify-write in one transaction; returns the updated instance.
    @discardableResult
    public func updateInstance(id: String, _ change: @escaping @Sendable (inout Instance) throws(SwiftletError) -> Void)
        async throws(SwiftletError) -> Instance
    {
        try await updateInstance(id: id, events: [], handle: nil, claim: nil, change)
    }

    /// `updateInstance(id:events:handle:claim:_:)` with no placement check.
    @discardableResult
    public func updateInstance(
        id: String, events: [(type: String, message: String)], handle: Data?,
        _ change: @escaping @Sendable (inout Instance) throws(SwiftletError) -> Void
    ) async throws(SwiftletError) -> Instance {
        try await updateInstance(id: id, events: events, handle: handle, claim: nil, change)
    }

    public func createImage(_ image: Image) async throws(SwiftletError) {
        try await createImage(image, quota: nil)
    }

    /// Inserts all or none, with no placement check.
    public func createInstances(_ instances: [Instance]) async throws(SwiftletError) {
        try await createInstances(instances, claim: nil, feed: [])
    }

    public func createInstances(_ instances: [Instance], claim: PlacementClaim?) async throws(SwiftletError) {
        try await createInstances(instances, claim: claim, feed: [])
    }

    /// Every instance that passes the filters, in creation order.
    public func instances(projectId: String?, state: InstanceState?, name: String?, imageId: String?)
        async throws(SwiftletError) -> [Instance]
    {
        try await instances(projectId: projectId, state: state, name: name, imageId: imageId, after: nil, limit: nil)
    }
}
