import Foundation
import Logging
import NIOSSL
import PostgresNIO
import ServiceLifecycle
import SwiftletCore
import SwiftletStore
import Synchronization

/// The store for a cluster: PostgreSQL through a `PostgresClient` pool, built to be shared by
/// several controllers (what they still need beyond the store: docs/store.md). The
/// schema mirrors `SQLiteStore`'s (JSON bodies encoded the same way, so both decode alike);
/// what the SQLite store gets from its single writer, this one gets from row locks and
/// transaction-scoped advisory locks.
///
/// A `Service`: `run()` must be running (in the caller's service group or task group) for any
/// other method to get a connection.
public final class PostgresStore: SwiftletStore, Service {
    let client: PostgresClient
    let statements = StatementWatch()
    let logger: Logger
    private let writes = Atomic<UInt64>(0)
    private let catalogWrites = Atomic<UInt64>(0)
    /// Whether other writers' changes are being heard (`listenForChanges`).
    private let hearing = Atomic<Bool>(false)
    /// This store's connections' application name: how it tells its own announcements apart.
    let writerName: String
    /// Told of other writers' appends to host feeds (`observeHostFeeds`).
    let feedObserver = Mutex<(@Sendable (HostFeedSignal) -> Void)?>(nil)
    /// "database DB on HOST:PORT", for messages (never the URL: it may hold the password).
    let databaseName: String
    private let connectionConfiguration: PostgresConnection.Configuration

    /// The channel every committed change is announced on (migration v2-change-notify).
    static let changeChannel = "swiftlet_changes"
    static let catalogTables: Set<String> = ["image", "flavor", "host", "project", "signing_key"]

    /// Moves with this store's own commits and with every other writer's it hears of. While it
    /// cannot hear them, each read is a new generation: nothing kept under one is trusted.
    public var generation: UInt64 { current(writes) }
    /// As `generation`, for changes to images, flavors, hosts, projects and signing keys.
    public var catalogGeneration: UInt64 { current(catalogWrites) }

    private func current(_ counter: borrowing Atomic<UInt64>) -> UInt64 {
        if hearing.load(ordering: .acquiring) { return counter.load(ordering: .acquiring) }
        return counter.add(1, ordering: .acquiringAndReleasing).newValue
    }

    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`; connects only once `run()` runs.
    /// `connectionTimeout`: how long a call waits for a connection before it answers 503 (tests
    /// that race many writers on a loaded machine wait longer; the server keeps the default).
    public init(
        url: String, logger: Logger, connectionTimeout: Duration = PostgresStore.defaultConnectionTimeout
    ) throws(SwiftletError) {
        self.connectionTimeout = connectionTimeout
        writerName = "swiftlet-" + UUID().uuidString.prefix(8).lowercased()
        let (parsed, tls) = try Self.configuration(url: url)
        var configuration = parsed
        configuration.options.additionalStartupParameters = [("application_name", writerName)]
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        let host = configuration.host ?? "?"
        databaseName = "database \(configuration.database ?? "?") on \(host):\(configuration.port ?? 5432)"
        connectionConfiguration = PostgresConnection.Configuration(
            host: host, port: configuration.port ?? 5432, username: configuration.username,
            password: configuration.password, database: configuration.database, tls: try tls.connection)
    }

    /// Connects once, outside the pool (which keeps retrying a database it cannot reach), and
    /// says in one line why it cannot: at start, a wrong URL or password must stop the server,
    /// not leave it waiting.
    public func checkConnection(timeout: Duration = .seconds(10)) async throws(SwiftletError) {
        var configuration = connectionConfiguration
        configuration.options.connectTimeout = .seconds(timeout.components.seconds)
        do {
            let connection = try await PostgresConnection.connect(
                configuration: configuration, id: 0, logger: logger)
            try? await connection.close()
        } catch {
            throw connectionError(error)
        }
    }

    private func connectionError(_ error: any Error) -> SwiftletError {
        let prefix = "cannot connect to \(databaseName)"
        guard let error = error as? PSQLError else {
            return SwiftletError(.unavailable, "store.unavailable", "\(prefix): \(error)")
        }
        if error.code == .server, let state = error.serverInfo?[.sqlState] {
            let message = error.serverInfo?[.message] ?? state
            // 28xxx: the server refused the role or its password; 3D000: no such database.
            let code = state.hasPrefix("28") ? "store.auth_failed" : "store.unavailable"
            return SwiftletError(.unavailable, code, "\(prefix): \(message)")
        }
        if error.code == .sslUnsupported {
            return SwiftletError(
                .unavailable, "store.tls_failed", "\(prefix): the server does not offer TLS, which sslmode requires")
        }
        if let tls = error.underlying as? NIOSSLError {
            return SwiftletError(.unavailable, "store.tls_failed", "\(prefix): TLS with the server failed: \(tls)")
        }
        let cause = error.underlying.map { "\($0)" } ?? "\(error.code)"
        return SwiftletError(
            .unavailable, "store.unavailable", "\(prefix) (is PostgreSQL running and reachable there?): \(cause)")
    }

    /// Checks a database URL without connecting: 400 `store.bad_url` saying what is wrong.
    public static func validate(url: String) throws(SwiftletError) {
        let (_, tls) = try configuration(url: url)
        _ = try tls.connection
    }

    static func configuration(url: String) throws(SwiftletError) -> (PostgresClient.Configuration, DatabaseTLS) {
        func bad(_ reason: String) -> SwiftletError {
            SwiftletError(
                .badRequest, "store.bad_url",
                "the database URL is not valid (\(reason)): expected postgres://USER[:PASSWORD]@HOST[:PORT]/DB"
                    + "[?sslmode=MODE&sslrootcert=PATH]")
        }
        guard let components = URLComponents(string: url) else { throw bad("it does not parse as a URL") }
        guard components.scheme == "postgres" || components.scheme == "postgresql" else {
            throw bad("the scheme must be postgres or postgresql")
        }
        guard let user = components.user, !user.isEmpty else { throw bad("it names no user") }
        guard let host = components.host, !host.isEmpty else { throw bad("it names no host") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw bad("it names no single database") }
        guard components.fragment == nil else { throw bad("it has a fragment") }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw bad("the port is out of range") }
        let tls = try DatabaseTLS(query: components.queryItems ?? [], bad: bad)
        let configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: components.password, database: database,
            tls: try tls.client)
        return (configuration, tls)
    }

    /// Runs the connection pool, and hears other writers' changes, until the task is cancelled
    /// or a graceful shutdown begins.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.listenForChanges() }
            group.addTask { await self.statements.watch() }
            await client.run()
            group.cancelAll()
        }
    }

    /// Keeps one connection listening on `changeChannel`, reconnecting after a failure; each
    /// change another writer announces moves the generations. The generations also move when
    /// listening (re)starts, for what was missed meanwhile.
    private func listenForChanges() async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.changeChannel) { notifications in
                        // Moved before hearing is on: a value handed out while deaf must not
                        // come back as the current generation.
                        countWrite(catalog: true)
                        hearing.store(true, ordering: .releasing)
                        // Appends may have been missed while deaf: every feed is read again.
                        feedObserver.withLock { $0 }?(.missed)
                        defer { hearing.store(false, ordering: .releasing) }
                        for try await notification in notifications { heard(notification.payload) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("not hearing other controllers' changes; retrying", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// "<writer>:<table>" moves the generations; "<writer>:host_change:<host id>",
    /// "<writer>:agent_call:<host id>", "<writer>:agent_answer:<call id>" and
    /// "<writer>:instance_settled:<instance id>" go to the feed observer.
    private func heard(_ payload: String) {
        let parts = payload.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, parts[0] != writerName else { return }
        guard parts.count == 3 else {
            countWrite(catalog: Self.catalogTables.contains(parts[1]))
            return
        }
        let signal: HostFeedSignal? =
            switch parts[1] {
            case "host_change": .appended(hostId: parts[2])
            case "agent_call": .called(hostId: parts[2])
            case "agent_answer": .answered(callId: parts[2])
            case "instance_settled": .settled(instanceId: parts[2])
            default: nil
            }
        if let signal { feedObserver.withLock { $0 }?(signal) }
    }

    // MARK: - Plumbing

    /// How long a call waits for a connection before it answers 503 (`ConnectionDeadline`).
    public static let defaultConnectionTimeout: Duration = .seconds(3)
    let connectionTimeout: Duration

    /// Statements on one connection, each committed on its own: reads of one statement.
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresSession) async throws -> T)
        async throws(SwiftletError) -> T
    {
        try await withConnection { connection, logger in
            try await body(PostgresSession(connection: connection, logger: logger, statements: self.statements))
        }
    }

    /// Several statements that must see one state of the database (a record and its children).
    func snapshot<T: Sendable>(_ body: @escaping @Sendable (PostgresSession) async throws -> T)
        async throws(SwiftletError) -> T
    {
        try await transaction { db in
            try await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return try await body(db)
        }
    }

    /// One transaction, counted in `generation` (and in `catalogGeneration` when `catalog`) once
    /// committed, or when its outcome is unknown; anything the body throws rolls it back.
    func write<T: Sendable>(catalog: Bool = false, _ body: @escaping @Sendable (PostgresSession) async throws -> T)
        async throws(SwiftletError) -> T
    {
        do {
            let result = try await transaction(body)
            countWrite(catalog: catalog)
            return result
        } catch {
            // A lost connection leaves the outcome unknown: the commit may have happened, and this
            // store ignores its own announcements. A needless move costs only a cache miss.
            if error.code == "store.unavailable" { countWrite(catalog: catalog) }
            throw error
        }
    }

    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresSession) async throws -> T)
        async throws(SwiftletError) -> T
    {
        try await withConnection { connection, logger in
            // BEGIN, COMMIT and ROLLBACK go through the session too (postgres-nio's own
            // `withTransaction` sends them unguarded: see `PostgresSession.query`).
            let db = PostgresSession(connection: connection, logger: logger, statements: self.statements)
            try await db.execute("BEGIN")
            let value: T
            do { value = try await body(db) } catch {
                // A rollback that fails leaves a connection the server ends the transaction of.
                try? await db.execute("ROLLBACK")
                throw error
            }
            try await db.execute("COMMIT")
            return value
        }
    }

    /// A pooled connection for `body`, or 503 when none comes within `connectionTimeout`.
    private func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(SwiftletError) -> T {
        let (client, logger) = (client, logger)
        do {
            return try await ConnectionDeadline.run(timeout: connectionTimeout) { deadline in
                try await client.withConnection { connection in
                    guard deadline.connect() else { throw CancellationError() }
                    return try await body(connection, logger)
                }
            }
        } catch { throw Self.map(error) }
    }

    func countWrite(catalog: Bool) {
        writes.add(1, ordering: .releasing)
        if catalog { catalogWrites.add(1, ordering: .releasing) }
    }

    static func map(_ error: any Error) -> SwiftletError {
        switch error {
        case let error as SwiftletError:
            return error
        case let error as PSQLError:
            return map(error)
        case is PostgresDecodingError, is EncodingError, is DecodingError:
            return SwiftletError(.internal, "store.failed", "database error: \(error)")
        default:
            // What is left comes from the pool or the socket (no connection could be made).
            return unavailable("\(error)")
        }
    }

    private static func map(_ error: PSQLError) -> SwiftletError {
        guard error.code == .server, let state = error.serverInfo?[.sqlState] else {
            switch error.code {
            case .tooManyParameters, .messageDecodingFailure, .unexpectedBackendMessage, .invalidCommandTag:
                return SwiftletError(.internal, "store.failed", "database error: \(error.code)")
            default:
                return unavailable(error.underlying.map { "\(error.code): \($0)" } ?? "\(error.code)")
            }
        }
        let message = error.serverInfo?[.message] ?? "unknown"
        switch state {
        case "23505":
            return SwiftletError(.conflict, "store.duplicate", "a resource with that name already exists")
        case "23503":
            return SwiftletError(.conflict, "store.in_use", "the resource is referenced by another resource")
        case "23514":
            return SwiftletError(.badRequest, "store.invalid", "a value is out of its allowed range: \(message)")
        case "53300", "57P01", "57P02", "57P03":
            return unavailable(message)
        case _ where state.hasPrefix("08"):
            return unavailable(message)
        default:
            return SwiftletError(.internal, "store.failed", "database error \(state): \(message)")
        }
    }

    private static func unavailable(_ detail: String) -> SwiftletError {
        SwiftletError(.unavailable, "store.unavailable", "the database is unreachable: \(detail)")
    }

    /// Whether `error` is the server refusing a row for a UNIQUE constraint (to turn into a
    /// resource's own error code inside the transaction that hit it).
    static func isUniqueViolation(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "23505"
    }

    // MARK: - Projects and tokens

    public func createProject(_ project: Project) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            try await db.execute(
                """
                INSERT INTO project (id, name, require_signed, created_at)
                VALUES (\(project.id), \(project.name), \(project.requireSignedImages), \(project.createdAt))
                """)
        }
    }

    public func projects() async throws(SwiftletError) -> [Project] {
        try await read { db in
            try await db.rows("SELECT * FROM project ORDER BY created_at, id").map(Self.project)
        }
    }

    public func project(id: String) async throws(SwiftletError) -> Project? {
        try await read { db in
            try await db.row("SELECT * FROM project WHERE id = \(id)").map(Self.project)
        }
    }

    private static func project(_ row: PostgresRandomAccessRow) throws -> Project {
        var project = Project(
            id: try row.get("id"), name: try row.get("name"), requireSignedImages: try row.get("require_signed"),
            createdAt: try row.get("created_at"))
        project.quota = try row.get("quota", as: String?.self).flatMap {
            try? RecordCoding.decode(ProjectQuota.self, $0)
        }
        return project
    }

    public func setProjectQuota(projectId: String, _ quota: ProjectQuota?) async throws(SwiftletError) {
        let text: String?
        do { text = try quota.map(RecordCoding.json) } catch {
            throw SwiftletError(.internal, "store.failed", "cannot encode the quota: \(error)")
        }
        try await write(catalog: true) { db in
            guard try await db.changed("UPDATE project SET quota = \(text) WHERE id = \(projectId) RETURNING 1") else {
                throw SwiftletError.notFound("project", projectId)
            }
        }
    }

    public func projectUsage(projectId: String) async throws(SwiftletError) -> ProjectUsage {
        try await snapshot { db in try await Self.usage(projectId: projectId, db) }
    }

    /// What a project holds, read in the caller's transaction.
    static func usage(projectId: String, _ db: PostgresSession) async throws -> ProjectUsage {
        let instances = try await db.row(
            """
            SELECT COUNT(*)::bigint AS count, COALESCE(SUM(vcpus), 0)::bigint AS vcpus,
            COALESCE(SUM(memory_mib), 0)::bigint AS memory FROM instance WHERE project_id = \(projectId)
            """)
        let imageBytes =
            try await db.value(
                Int64.self, "SELECT COALESCE(SUM(size_bytes), 0)::bigint FROM image WHERE project_id = \(projectId)")
            ?? 0
        let networks =
            try await db.value(Int.self, "SELECT COUNT(*)::bigint FROM network WHERE project_id = \(projectId)") ?? 0
        return ProjectUsage(
            instances: try instances?.get("count", as: Int.self) ?? 0,
            vcpus: try instances?.get("vcpus", as: Int.self) ?? 0,
            memoryMib: try instances?.get("memory", as: Int.self) ?? 0, imageBytes: imageBytes, networks: networks)
    }

    public func createToken(_ info: TokenInfo, secretHash: String) async throws(SwiftletError) {
        try await write { db in
            try await db.execute(
                """
                INSERT INTO token (id, project_id, admin, secret_hash, created_at, expires_at)
                VALUES (\(info.id), \(info.projectId), \(info.admin), \(secretHash), \(info.createdAt), \(info.expiresAt))
                """)
        }
    }

    public func token(forSecretHash hash: String) async throws(SwiftletError) -> TokenInfo? {
        try await read { db in
            try await db.row("SELECT * FROM token WHERE secret_hash = \(hash)").map(Self.token)
        }
    }

    public func tokens(projectId: String?) async throws(SwiftletError) -> [TokenInfo] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM token WHERE \(projectId)::text IS NULL OR project_id = \(projectId)
                ORDER BY created_at, id
                """
            ).map(Self.token)
        }
    }

    public func revokeToken(id: String, now: Date) async throws(SwiftletError) -> TokenInfo? {
        try await write { db in
            try await db.execute("UPDATE token SET revoked_at = \(now) WHERE id = \(id) AND revoked_at IS NULL")
            return try await db.row("SELECT * FROM token WHERE id = \(id)").map(Self.token)
        }
    }

    private static func token(_ row: PostgresRandomAccessRow) throws -> TokenInfo {
        TokenInfo(
            id: try row.get("id"), projectId: try row.get("project_id"), admin: try row.get("admin"), token: nil,
            createdAt: try row.get("created_at"), expiresAt: try row.get("expires_at"),
            revokedAt: try row.get("revoked_at"))
    }

    // MARK: - Images

    public func createImage(_ image: Image, quota: ProjectQuota?) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            // Image quotas are checked one create at a time: concurrent uploads see each other's bytes.
            if quota != nil { try await db.lock(.placement) }
            try await db.execute(
                """
                INSERT INTO image (id, project_id, name, kind, sha256, size_bytes, properties, created_at)
                VALUES (\(image.id), \(image.projectId), \(image.name), \(image.kind.rawValue), \(image.sha256),
                \(image.sizeBytes), \(try RecordCoding.json(image.properties)), \(image.createdAt))
                """)
            if let quota {
                try quota.verify(try await Self.usage(projectId: image.projectId, db), projectId: image.projectId)
            }
        }
    }

    public func images(projectId: String?) async throws(SwiftletError) -> [Image] {
        try await read { db in
            if let projectId {
                return try await db.rows(
                    """
                    SELECT * FROM image WHERE project_id = \(projectId) OR visibility = 'public'
                    ORDER BY created_at, id
                    """
                ).map(Self.image)
            }
            return try await db.rows("SELECT * FROM image ORDER BY created_at, id").map(Self.image)
        }
    }

    public func image(idOrName: String, projectId: String?) async throws(SwiftletError) -> Image? {
        try await read { db in
            // The id before a name, then the project's own image before another's public one.
            try await db.row(
                """
                SELECT * FROM image WHERE (id = \(idOrName) OR name = \(idOrName))
                AND (\(projectId)::text IS NULL OR project_id = \(projectId) OR visibility = 'public')
                ORDER BY id = \(idOrName) DESC, project_id = \(projectId) DESC NULLS LAST LIMIT 1
                """
            ).map(Self.image)
        }
    }

    public func deleteImage(id: String) async throws(SwiftletError) -> Bool {
        try await write(catalog: true) { db in
            let instances = try await db.value(Int.self, "SELECT COUNT(*) FROM instance WHERE image_id = \(id)") ?? 0
            let snapshots = try await db.value(Int.self, "SELECT COUNT(*) FROM snapshot WHERE image_id = \(id)") ?? 0
            let pools = try await db.value(Int.self, "SELECT COUNT(*) FROM pool WHERE image_id = \(id)") ?? 0
            for (inUse, what) in [(instances, "instance(s)"), (snapshots, "snapshot(s)"), (pools, "warm pool(s)")]
            where inUse > 0 {
                throw SwiftletError(.conflict, "image.in_use", "image '\(id)' is used by \(inUse) \(what)")
            }
            guard let sha = try await db.value(String.self, "DELETE FROM image WHERE id = \(id) RETURNING sha256")
            else { return false }
            return try await db.value(Bool.self, "SELECT EXISTS (SELECT 1 FROM image WHERE sha256 = \(sha))") ?? false
        }
    }

    private static func image(_ row: PostgresRandomAccessRow) throws -> Image {
        var image = Image(
            id: try row.get("id"), projectId: try row.get("project_id"), name: try row.get("name"),
            kind: ImageKind(rawValue: try row.get("kind")) ?? .pvh, sha256: try row.get("sha256"),
            sizeBytes: try row.get("size_bytes"),
            properties: try RecordCoding.decode([String: String].self, row.get("properties")),
            createdAt: try row.get("created_at"))
        image.visibility = ImageVisibility(rawValue: try row.get("visibility"))
        image.tags = try RecordCoding.decode([String].self, row.get("tags"))
        image.signature = try row.get("signature")
        image.signingKeyId = try row.get("signing_key_id")
        return image
    }

    // MARK: - Flavors

    public func flavors() async throws(SwiftletError) -> [Flavor] {
        try await read { db in
            try await db.rows("SELECT * FROM flavor ORDER BY memory_mib, name").map {
                Flavor(name: try $0.get("name"), vcpus: try $0.get("vcpus"), memoryMib: try $0.get("memory_mib"))
            }
        }
    }

    public func createFlavor(_ flavor: Flavor) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            try await db.execute(
                """
                INSERT INTO flavor (name, vcpus, memory_mib) VALUES (\(flavor.name), \(flavor.vcpus), \(flavor.memoryMib))
                """)
        }
    }

    // MARK: - Instances

    public func createInstances(_ instances: [Instance], claim: PlacementClaim?, feed: [HostChange])
        async throws(SwiftletError) -> [UInt64]
    {
        try await write { db in
            // Taken before the inserts: concurrent claims then check one after another, each
            // seeing the rows of those committed before it.
            if claim != nil { try await db.lock(.placement) }
            for instance in instances {
                try await db.execute(
                    """
                    INSERT INTO instance (id, project_id, name, image_id, state, body, created_at, host_id,
                    memory_mib, vcpus, server_group_id, revision) VALUES (\(instance.id), \(instance.projectId),
                    \(instance.name), \(instance.imageId), \(instance.state.rawValue), \(try RecordCoding.json(instance)),
                    \(instance.createdAt), \(instance.hostId), \(instance.memoryMib), \(instance.vcpus),
                    \(instance.serverGroupId), 1)
                    """)
                try await db.execute(
                    """
                    INSERT INTO event (instance_id, time, type, message)
                    VALUES (\(instance.id), \(instance.createdAt), 'created', 'instance accepted')
                    """)
            }
            if let claim { try await Self.check(claim, db) }
            return try await Self.append(feed, db)
        }
    }

    public func instances(
        projectId: String?, state: InstanceState?, name: String?, imageId: String?, after marker: String?,
        limit: Int?
    ) async throws(SwiftletError) -> [Instance] {
        var builder = QueryBuilder("SELECT body FROM instance WHERE true")
        if let projectId { builder.append(" AND project_id = ?", projectId) }
        if let state { builder.append(" AND state = ?", state.rawValue) }
        if let name { builder.append(" AND name = ?", name) }
        if let imageId { builder.append(" AND image_id = ?", imageId) }
        if let marker {
            // A marker that no longer exists compares as NULL: an empty page, not the first one.
            builder.append(" AND (created_at, id) > (SELECT created_at, id FROM instance WHERE id = ?)", marker)
        }
        builder.append(" ORDER BY created_at, id")
        if let limit { builder.append(" LIMIT ?", bigint: limit) }
        let query = builder.query
        return try await read { db in
            try await db.values(String.self, query).map { try RecordCoding.decode(Instance.self, $0) }
        }
    }

    public func instanceState(id: String) async throws(SwiftletError) -> InstanceState? {
        try await read { db in
            try await db.value(String.self, "SELECT state FROM instance WHERE id = \(id)")
                .flatMap(InstanceState.init(rawValue:))
        }
    }

    public func instanceStates(ids: [String]) async throws(SwiftletError) -> [String: InstanceState] {
        try await read { db in
            var states: [String: InstanceState] = [:]
            for row in try await db.rows("SELECT id, state FROM instance WHERE id = ANY(\(ids))") {
                states[try row.get("id")] = InstanceState(rawValue: try row.get("state"))
            }
            return states
        }
    }

    public func instance(idOrName: String, projectId: String?) async throws(SwiftletError) -> Instance? {
        try await read { db in
            try await db.value(
                String.self,
                """
                SELECT body FROM instance WHERE (id = \(idOrName) OR name = \(idOrName))
                AND (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY id = \(idOrName) DESC LIMIT 1
                """
            ).map { try RecordCoding.decode(Instance.self, $0) }
        }
    }

    @discardableResult
    public func updateInstance(
        id: String, events: [(type: String, message: String)], handle: Data?, claim: PlacementClaim?,
        _ change: @escaping @Sendable (inout Instance) throws(SwiftletError) -> Void
    ) async throws(SwiftletError) -> Instance {
        try await write { db in
            if claim != nil { try await db.lock(.placement) }
            // The row lock makes concurrent read-modify-writes of one instance take turns.
            guard let body = try await db.value(String.self, "SELECT body FROM instance WHERE id = \(id) FOR UPDATE")
            else { throw SwiftletError.notFound("instance", id) }
            var instance = try RecordCoding.decode(Instance.self, body)
            try change(&instance)
            instance.updatedAt = Date()
            try await db.execute(
                """
                UPDATE instance SET state = \(instance.state.rawValue), host_id = \(instance.hostId),
                body = \(try RecordCoding.json(instance)), revision = revision + 1 WHERE id = \(id)
                """)
            for event in events {
                try await Self.insertEvent(
                    db, instanceId: id, time: instance.updatedAt, type: event.type, message: event.message)
            }
            if let handle {
                try await db.execute(
                    """
                    INSERT INTO vm_handle (instance_id, handle) VALUES (\(id), \(handle))
                    ON CONFLICT (instance_id) DO UPDATE SET handle = excluded.handle
                    """)
            }
            if let claim { try await Self.check(claim, db) }
            return instance
        }
    }

    public func deleteInstance(id: String) async throws(SwiftletError) {
        try await write { db in
            try await db.execute("DELETE FROM instance WHERE id = \(id)")
            try await db.execute("DELETE FROM event WHERE instance_id = \(id)")
        }
    }

    public func hostUsage() async throws(SwiftletError) -> [String: HostUsage] {
        try await read { db in
            let rows = try await db.rows(
                """
                SELECT host_id, SUM(memory_mib)::bigint AS memory, SUM(vcpus)::bigint AS vcpus, COUNT(*) AS count
                FROM instance WHERE state IN \(unescaped: Self.liveStates) AND host_id IS NOT NULL GROUP BY host_id
                """)
            var usage: [String: HostUsage] = [:]
            for row in rows {
                usage[try row.get("host_id")] = HostUsage(
                    memoryMib: try row.get("memory"), vcpus: try row.get("vcpus"), instances: try row.get("count"))
            }
            return usage
        }
    }

    // MARK: - Handles

    public func handle(instanceId: String) async throws(SwiftletError) -> Data? {
        try await read { db in
            try await db.value(Data.self, "SELECT handle FROM vm_handle WHERE instance_id = \(instanceId)")
        }
    }

    public func removeHandle(instanceId: String) async throws(SwiftletError) {
        try await write { db in
            try await db.execute("DELETE FROM vm_handle WHERE instance_id = \(instanceId)")
        }
    }

    public func allHandles() async throws(SwiftletError) -> [(instanceId: String, handle: Data)] {
        let rows = try await read { db in
            try await db.rows("SELECT instance_id, handle FROM vm_handle ORDER BY instance_id").map {
                HandleRow(instanceId: try $0.get("instance_id"), handle: try $0.get("handle"))
            }
        }
        return rows.map { ($0.instanceId, $0.handle) }
    }

    /// A tuple is not `Sendable` across the connection's closure; this is.
    private struct HandleRow: Sendable {
        var instanceId: String
        var handle: Data
    }

    // MARK: - Events

    public func addEvent(instanceId: String, type: String, message: String) async throws(SwiftletError) {
        try await write { db in
            try await Self.insertEvent(db, instanceId: instanceId, time: Date(), type: type, message: message)
        }
    }

    private static func insertEvent(
        _ db: PostgresSession, instanceId: String, time: Date, type: String, message: String
    ) async throws {
        try await db.execute(
            """
            INSERT INTO event (instance_id, time, type, message) VALUES (\(instanceId), \(time), \(type), \(message))
            """)
    }

    public func events(instanceId: String) async throws(SwiftletError) -> [InstanceEvent] {
        try await read { db in
            try await db.rows("SELECT * FROM event WHERE instance_id = \(instanceId) ORDER BY id").map {
                InstanceEvent(
                    id: try $0.get("id"), instanceId: try $0.get("instance_id"), time: try $0.get("time"),
                    type: try $0.get("type"), message: try $0.get("message"))
            }
        }
    }

    // MARK: - Hosts

    public func upsertHost(_ host: ComputeHost) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            // The cordon is the operator's, not the host's report: an upsert keeps it.
            try await db.execute(
                """
                INSERT INTO host (id, body) VALUES (\(host.id), \(try RecordCoding.json(host)))
                ON CONFLICT (id) DO UPDATE SET body = excluded.body
                """)
        }
    }

    public func setCordoned(hostId: String, _ cordoned: Bool) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            guard try await db.changed("UPDATE host SET cordoned = \(cordoned) WHERE id = \(hostId) RETURNING 1")
            else { throw SwiftletError.notFound("host", hostId) }
        }
    }

    public func hosts() async throws(SwiftletError) -> [ComputeHost] {
        try await read { db in
            try await db.rows("SELECT body, cordoned FROM host ORDER BY id").map { row in
                var host = try RecordCoding.decode(ComputeHost.self, row.get("body"))
                host.cordoned = try row.get("cordoned", as: Bool.self)
                return host
            }
        }
    }
}
