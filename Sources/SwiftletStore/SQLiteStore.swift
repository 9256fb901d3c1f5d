import Foundation
import GRDB
import SwiftletCore
import Synchronization

/// The embedded default store: one SQLite file (WAL) through GRDB. Nested values (args, ports,
/// timeline, properties) are JSON columns; everything queried or constrained is a real column.
public final class SQLiteStore: SwiftletStore {
    /// Internal so that other resources' stores (extensions in sibling files) share the pool.
    let pool: DatabasePool
    private let writes = Atomic<UInt64>(0)

    public var generation: UInt64 { writes.load(ordering: .acquiring) }
    private let catalogChanges = CatalogChangeCounter()
    public var catalogGeneration: UInt64 { catalogChanges.generation }

    public init(path: String) throws(SwiftletError) {
        do {
            var configuration = Configuration()
            configuration.foreignKeysEnabled = true
            configuration.busyMode = .timeout(5)
            // WAL + NORMAL: a commit survives a crash of this process (what restart safety needs);
            // only an OS crash can lose the last commits. FULL would fsync every timeline mark.
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            pool = try DatabasePool(path: path, configuration: configuration)
            pool.add(transactionObserver: catalogChanges, extent: .databaseLifetime)
            let migrator = Self.migrator
            // GRDB's migrator passes over migrations it does not know: this version would start
            // on a schema it misreads.
            let applied = try pool.read { db in try migrator.appliedIdentifiers(db) }
            if let error = Self.newerSchemaError(path: path, applied: applied, known: migrator.migrations) {
                throw error
            }
            try migrator.migrate(pool)
        } catch let error as SwiftletError {
            throw error
        } catch {
            throw SwiftletError(.internal, "store.open_failed", "cannot open database \(path): \(error)")
        }
    }

    /// 500 `store.newer_schema` when the file records migrations this version does not know: a
    /// newer swiftlet wrote it.
    static func newerSchemaError(path: String, applied: Set<String>, known: [String]) -> SwiftletError? {
        let unknown = applied.subtracting(known).sorted()
        guard !unknown.isEmpty else { return nil }
        return SwiftletError.newerSchema(database: path, unknown: unknown)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE project (
                        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                        require_signed INTEGER NOT NULL DEFAULT 0, created_at DATETIME NOT NULL);
                    CREATE TABLE token (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                        admin INTEGER NOT NULL, secret_hash TEXT NOT NULL UNIQUE, created_at DATETIME NOT NULL);
                    CREATE TABLE image (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        name TEXT NOT NULL, kind TEXT NOT NULL, sha256 TEXT NOT NULL,
                        size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
                        properties TEXT NOT NULL, created_at DATETIME NOT NULL,
                        UNIQUE (project_id, name));
                    CREATE TABLE flavor (
                        name TEXT PRIMARY KEY, vcpus INTEGER NOT NULL CHECK (vcpus > 0),
                        memory_mib INTEGER NOT NULL CHECK (memory_mib > 0));
                    CREATE TABLE instance (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        name TEXT NOT NULL, image_id TEXT NOT NULL REFERENCES image(id) ON DELETE RESTRICT,
                        state TEXT NOT NULL, body TEXT NOT NULL, created_at DATETIME NOT NULL,
                        UNIQUE (project_id, name));
                    CREATE INDEX instance_state ON instance(state);
                    CREATE TABLE vm_handle (
                        instance_id TEXT PRIMARY KEY REFERENCES instance(id) ON DELETE CASCADE,
                        handle BLOB NOT NULL);
                    CREATE TABLE event (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        instance_id TEXT NOT NULL, time DATETIME NOT NULL, type TEXT NOT NULL,
                        message TEXT NOT NULL);
                    CREATE INDEX event_instance ON event(instance_id);
                    CREATE TABLE host (id TEXT PRIMARY KEY, body TEXT NOT NULL);
                    """)
            for flavor in Flavor.defaults {
                try db.execute(
                    sql: "INSERT INTO flavor (name, vcpus, memory_mib) VALUES (?, ?, ?)",
                    arguments: [flavor.name, flavor.vcpus, flavor.memoryMib])
            }
            try db.execute(
                sql: "INSERT INTO project (id, name, require_signed, created_at) VALUES (?, 'admin', 0, ?)",
                arguments: [Project.adminProjectId, DatabaseDate.text(Date())])
        }
        // Later migrations register here, in order, one per feature (never edit a shipped one).
        registerImageCatalogMigration(&migrator)
        registerBuildMigration(&migrator)
        registerClusterMigration(&migrator)
        registerNetworkMigration(&migrator)
        registerPoolMigration(&migrator)
        registerPlacementMigration(&migrator)
        registerLeadershipMigration(&migrator)
        registerHostFeedMigration(&migrator)
        registerIdentityMigration(&migrator)
        migrator.registerMigration("project-quota") { db in
            try db.execute(sql: "ALTER TABLE project ADD COLUMN quota TEXT")
        }
        registerAuditMigration(&migrator)
        registerMigrationTable(&migrator)
        registerSnapshotMigration(&migrator)
        return migrator
    }

    // MARK: - Plumbing

    // GRDB runs the closures on its own queues: a store call never blocks the caller's thread
    // (NIO's event loops among them).
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(SwiftletError) -> T {
        do { return try await pool.read(body) } catch { throw Self.map(error) }
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(SwiftletError) -> T {
        do {
            let result = try await pool.write(body)
            writes.add(1, ordering: .releasing)
            return result
        } catch { throw Self.map(error) }
    }

    static func map(_ error: any Error) -> SwiftletError {
        if let error = error as? SwiftletError { return error }
        if let error = error as? DatabaseError {
            switch error.extendedResultCode {
            case .SQLITE_CONSTRAINT_UNIQUE, .SQLITE_CONSTRAINT_PRIMARYKEY:
                return SwiftletError(.conflict, "store.duplicate", "a resource with that name already exists")
            case .SQLITE_CONSTRAINT_FOREIGNKEY:
                return SwiftletError(.conflict, "store.in_use", "the resource is referenced by another resource")
            case .SQLITE_CONSTRAINT_CHECK:
                return SwiftletError(.badRequest, "store.invalid", "a value is out of its allowed range")
            default: break
            }
        }
        return SwiftletError(.internal, "store.failed", "database error: \(error)")
    }

    // MARK: - Projects and tokens

    public func createProject(_ project: Project) async throws(SwiftletError) {
        try await write { db in
            try db.cachedExecute(
                sql: "INSERT INTO project (id, name, require_signed, created_at) VALUES (?, ?, ?, ?)",
                arguments: [
                    project.id, project.name, project.requireSignedImages, DatabaseDate.text(project.createdAt),
                ])
        }
    }

    public func projects() async throws(SwiftletError) -> [Project] {
        try await read { db in try db.cachedRows(sql: "SELECT * FROM project ORDER BY created_at").map(Self.project) }
    }

    public func project(id: String) async throws(SwiftletError) -> Project? {
        try await read { db in
            try db.cachedRow(sql: "SELECT * FROM project WHERE id = ?", arguments: [id]).map(Self.project)
        }
    }

    private static func project(_ row: Row) -> Project {
        var project = Project(
            id: row["id"], name: row["name"], requireSignedImages: row["require_signed"], createdAt: row["created_at"])
        project.quota = (row["quota"] as String?).flatMap { try? RecordCoding.decode(ProjectQuota.self, $0) }
        return project
    }

    public func setProjectQuota(projectId: String, _ quota: ProjectQuota?) async throws(SwiftletError) {
        let text: String?
        do { text = try quota.map(RecordCoding.json) } catch { throw Self.map(error) }
        try await write { db in
            try db.execute(sql: "UPDATE project SET quota = ? WHERE id = ?", arguments: [text, projectId])
            guard db.changesCount > 0 else { throw SwiftletError.notFound("project", projectId) }
        }
    }

    public func projectUsage(projectId: String) async throws(SwiftletError) -> ProjectUsage {
        try await read { db in try Self.usage(projectId: projectId, db) }
    }

    /// What a project holds, read in the caller's transaction.
    static func usage(projectId: String, _ db: Database) throws -> ProjectUsage {
        let instances = try db.cachedRow(
            sql: """
                SELECT COUNT(*) AS count, COALESCE(SUM(vcpus), 0) AS vcpus, COALESCE(SUM(memory_mib), 0) AS memory
                FROM instance WHERE project_id = ?
                """, arguments: [projectId])
        let imageBytes =
            try Int64.fetchOne(
                db, sql: "SELECT COALESCE(SUM(size_bytes), 0) FROM image WHERE project_id = ?", arguments: [projectId])
            ?? 0
        let networks =
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM network WHERE project_id = ?", arguments: [projectId]) ?? 0
        return ProjectUsage(
            instances: instances?["count"] ?? 0, vcpus: instances?["vcpus"] ?? 0, memoryMib: instances?["memory"] ?? 0,
            imageBytes: imageBytes, networks: networks)
    }

    public func createToken(_ info: TokenInfo, secretHash: String) async throws(SwiftletError) {
        try await write { db in
            try db.cachedExecute(
                sql: """
                    INSERT INTO token (id, project_id, admin, secret_hash, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    info.id, info.projectId, info.admin, secretHash, DatabaseDate.text(info.createdAt),
                    info.expiresAt.map(DatabaseDate.text),
                ])
        }
    }

    public func token(forSecretHash hash: String) async throws(SwiftletError) -> TokenInfo? {
        try await read { db in
            try db.cachedRow(sql: "SELECT * FROM token WHERE secret_hash = ?", arguments: [hash]).map(Self.token)
        }
    }

    public func tokens(projectId: String?) async throws(SwiftletError) -> [TokenInfo] {
        try await read { db in
            try db.cachedRows(
                sql: "SELECT * FROM token WHERE ? IS NULL OR project_id = ? ORDER BY created_at, id",
                arguments: [projectId, projectId]
            ).map(Self.token)
        }
    }

    public func revokeToken(id: String, now: Date) async throws(SwiftletError) -> TokenInfo? {
        try await write { db in
            try db.execute(
                sql: "UPDATE token SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                arguments: [DatabaseDate.text(now), id])
            return try db.cachedRow(sql: "SELECT * FROM token WHERE id = ?", arguments: [id]).map(Self.token)
        }
    }

    private static func token(_ row: Row) -> TokenInfo {
        TokenInfo(
            id: row["id"], projectId: row["project_id"], admin: row["admin"], token: nil, createdAt: row["created_at"],
            expiresAt: row["expires_at"], revokedAt: row["revoked_at"])
    }

    // MARK: - Images

    public func createImage(_ image: Image, quota: ProjectQuota?) async throws(SwiftletError) {
        try await write { db in
            try db.cachedExecute(
                sql: """
                    INSERT INTO image (id, project_id, name, kind, sha256, size_bytes, properties, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    image.id, image.projectId, image.name, image.kind.rawValue, image.sha256, image.sizeBytes,
                    try RecordCoding.json(image.properties), image.createdAt,
                ])
            if let quota {
                try quota.verify(try Self.usage(projectId: image.projectId, db), projectId: image.projectId)
            }
        }
    }

    public func images(projectId: String?) async throws(SwiftletError) -> [Image] {
        try await read { db in
            if let projectId {
                return try db.cachedRows(
                    sql: "SELECT * FROM image WHERE project_id = ? OR visibility = 'public' ORDER BY created_at",
                    arguments: [projectId]
                ).map(Self.image)
            }
            return try db.cachedRows(sql: "SELECT * FROM image ORDER BY created_at").map(Self.image)
        }
    }

    public func image(idOrName: String, projectId: String?) async throws(SwiftletError) -> Image? {
        try await read { db in
            let rows = try db.cachedRows(
                sql:
                    "SELECT * FROM image WHERE (id = ? OR name = ?) AND (? IS NULL OR project_id = ? OR visibility = 'public') ORDER BY id = ? DESC, project_id = ? DESC",
                arguments: [idOrName, idOrName, projectId, projectId, idOrName, projectId])
            return try rows.first.map(Self.image)
        }
    }

    public func deleteImage(id: String) async throws(SwiftletError) -> Bool {
        try await write { db in
            for (table, what) in [("instance", "instance(s)"), ("snapshot", "snapshot(s)"), ("pool", "warm pool(s)")] {
                let inUse =
                    try db.cachedValue(
                        Int.self, sql: "SELECT COUNT(*) FROM \(table) WHERE image_id = ?", arguments: [id]) ?? 0
                if inUse > 0 {
                    throw SwiftletError(.conflict, "image.in_use", "image '\(id)' is used by \(inUse) \(what)")
                }
            }
            let sha = try db.cachedValue(String.self, sql: "SELECT sha256 FROM image WHERE id = ?", arguments: [id])
            try db.cachedExecute(sql: "DELETE FROM image WHERE id = ?", arguments: [id])
            guard let sha else { return false }
            return
                (try db.cachedValue(Int.self, sql: "SELECT COUNT(*) FROM image WHERE sha256 = ?", arguments: [sha]) ?? 0)
                > 0
        }
    }

    private static func image(_ row: Row) throws -> Image {
        try Image(
            id: row["id"], projectId: row["project_id"], name: row["name"],
            kind: ImageKind(rawValue: row["kind"]) ?? .pvh, sha256: row["sha256"], sizeBytes: row["size_bytes"],
            properties: try RecordCoding.decode([String: String].self, row["properties"]), createdAt: row["created_at"]
        )
        .withCatalog(row)
    }

    // MARK: - Flavors

    public func flavors() async throws(SwiftletError) -> [Flavor] {
        try await read { db in
            try db.cachedRows(sql: "SELECT * FROM flavor ORDER BY memory_mib, name").map {
                Flavor(name: $0["name"], vcpus: $0["vcpus"], memoryMib: $0["memory_mib"])
            }
        }
    }

    public func createFlavor(_ flavor: Flavor) async throws(SwiftletError) {
        try await write { db in
            try db.cachedExecute(
                sql: "INSERT INTO flavor (name, vcpus, memory_mib) VALUES (?, ?, ?)",
                arguments: [flavor.name, flavor.vcpus, flavor.memoryMib])
        }
    }

    // MARK: - Instances

    public func createInstances(_ instances: [Instance], claim: PlacementClaim?, feed: [HostChange])
        async throws(SwiftletError) -> [UInt64]
    {
        try await write { db in
            for instance in instances {
                try db.cachedExecute(
                    sql: """
                        INSERT INTO instance (id, project_id, name, image_id, state, body, created_at, host_id,
                        memory_mib, vcpus, server_group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        instance.id, instance.projectId, instance.name, instance.imageId, instance.state.rawValue,
                        try RecordCoding.json(instance), DatabaseDate.text(instance.createdAt), instance.hostId,
                        instance.memoryMib, instance.vcpus, instance.serverGroupId,
                    ])
                try db.cachedExecute(
                    sql:
                        "INSERT INTO event (instance_id, time, type, message) VALUES (?, ?, 'created', 'instance accepted')",
                    arguments: [instance.id, DatabaseDate.text(instance.createdAt)])
            }
            if let claim { try Self.check(claim, db) }
            return try Self.append(feed, db)
        }
    }

    public func instances(
        projectId: String?, state: InstanceState?, name: String?, imageId: String?, after marker: String?,
        limit: Int?
    ) async throws(SwiftletError) -> [Instance] {
        try await read { db in
            // A marker that no longer exists compares as NULL: an empty page, not the first one.
            try db.cachedValues(
                String.self,
                sql: """
                    SELECT body FROM instance WHERE (?1 IS NULL OR project_id = ?1) AND (?2 IS NULL OR state = ?2)
                    AND (?3 IS NULL OR name = ?3) AND (?4 IS NULL OR image_id = ?4)
                    AND (?5 IS NULL OR (created_at, id) > (SELECT created_at, id FROM instance WHERE id = ?5))
                    ORDER BY created_at, id LIMIT ?6
                    """,
                arguments: [projectId, state?.rawValue, name, imageId, marker, limit ?? -1]
            ).map { try RecordCoding.decode(Instance.self, $0) }
        }
    }

    public func instanceState(id: String) async throws(SwiftletError) -> InstanceState? {
        try await read { db in
            try db.cachedValue(String.self, sql: "SELECT state FROM instance WHERE id = ?", arguments: [id])
                .flatMap(InstanceState.init(rawValue:))
        }
    }

    public func instance(idOrName: String, projectId: String?) async throws(SwiftletError) -> Instance? {
        try await read { db in
            try db.cachedValue(
                String.self,
                sql: """
                    SELECT body FROM instance WHERE (id = ?1 OR name = ?1) AND (?2 IS NULL OR project_id = ?2)
                    ORDER BY id = ?1 DESC LIMIT 1
                    """,
                arguments: [idOrName, projectId]
            ).map { try RecordCoding.decode(Instance.self, $0) }
        }
    }

    @discardableResult
    public func updateInstance(
        id: String, events: [(type: String, message: String)], handle: Data?, claim: PlacementClaim?,
        _ change: @escaping @Sendable (inout Instance) throws(SwiftletError) -> Void
    ) async throws(SwiftletError) -> Instance {
        try await write { db in
            guard
                let body = try db.cachedValue(
                    String.self, sql: "SELECT body FROM instance WHERE id = ?", arguments: [id])
            else {
                throw SwiftletError.notFound("instance", id)
            }
            var instance = try RecordCoding.decode(Instance.self, body)
            try change(&instance)
            instance.updatedAt = Date()
            try db.cachedExecute(
                sql: "UPDATE instance SET state = ?, host_id = ?, body = ? WHERE id = ?",
                arguments: [instance.state.rawValue, instance.hostId, try RecordCoding.json(instance), id])
            for event in events {
                try Self.insertEvent(
                    db, instanceId: id, time: instance.updatedAt, type: event.type, message: event.message)
            }
            if let handle {
                try db.cachedExecute(
                    sql: "INSERT OR REPLACE INTO vm_handle (instance_id, handle) VALUES (?, ?)",
                    arguments: [id, handle])
            }
            if let claim { try Self.check(claim, db) }
            return instance
        }
    }

    public func deleteInstance(id: String) async throws(SwiftletError) {
        try await write { db in
            try db.cachedExecute(sql: "DELETE FROM instance WHERE id = ?", arguments: [id])
            try db.cachedExecute(sql: "DELETE FROM event WHERE instance_id = ?", arguments: [id])
        }
    }

    public func hostUsage() async throws(SwiftletError) -> [String: HostUsage] {
        try await read { db in
            let rows = try db.cachedRows(
                sql: """
                    SELECT host_id AS host, SUM(memory_mib) AS memory, SUM(vcpus) AS vcpus, COUNT(*) AS count
                    FROM instance WHERE state IN \(Self.liveStates) AND host_id IS NOT NULL GROUP BY host_id
                    """)
            var usage: [String: HostUsage] = [:]
            for row in rows {
                usage[row["host"]] = HostUsage(memoryMib: row["memory"], vcpus: row["vcpus"], instances: row["count"])
            }
            return usage
        }
    }

    // MARK: - Handles

    public func handle(instanceId: String) async throws(SwiftletError) -> Data? {
        try await read { db in
            try db.cachedValue(
                Data.self, sql: "SELECT handle FROM vm_handle WHERE instance_id = ?", arguments: [instanceId])
        }
    }

    public func removeHandle(instanceId: String) async throws(SwiftletError) {
        try await write { db in
            try db.cachedExecute(sql: "DELETE FROM vm_handle WHERE instance_id = ?", arguments: [instanceId])
        }
    }

    public func allHandles() async throws(SwiftletError) -> [(instanceId: String, handle: Data)] {
        try await read { db in
            try db.cachedRows(sql: "SELECT instance_id, handle FROM vm_handle").map {
                ($0["instance_id"], $0["handle"])
            }
        }
    }

    // MARK: - Events

    public func addEvent(instanceId: String, type: String, message: String) async throws(SwiftletError) {
        try await write { db in
            try Self.insertEvent(db, instanceId: instanceId, time: Date(), type: type, message: message)
        }
    }

    private static func insertEvent(_ db: Database, instanceId: String, time: Date, type: String, message: String)
        throws
    {
        try db.cachedExecute(
            sql: "INSERT INTO event (instance_id, time, type, message) VALUES (?, ?, ?, ?)",
            arguments: [instanceId, DatabaseDate.text(time), type, message])
    }

    public func events(instanceId: String) async throws(SwiftletError) -> [InstanceEvent] {
        try await read { db in
            try db.cachedRows(sql: "SELECT * FROM event WHERE instance_id = ? ORDER BY id", arguments: [instanceId])
                .map {
                    InstanceEvent(
                        id: $0["id"], instanceId: $0["instance_id"], time: $0["time"], type: $0["type"],
                        message: $0["message"])
                }
        }
    }

    // MARK: - Hosts

    public func upsertHost(_ host: ComputeHost) async throws(SwiftletError) {
        try await write { db in
            // The cordon is the operator's, not the host's report: an upsert keeps it.
            try db.cachedExecute(
                sql: "INSERT INTO host (id, body) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                arguments: [host.id, try RecordCoding.json(host)])
        }
    }

    public func setCordoned(hostId: String, _ cordoned: Bool) async throws(SwiftletError) {
        try await write { db in
            try db.execute(sql: "UPDATE host SET cordoned = ? WHERE id = ?", arguments: [cordoned, hostId])
            guard db.changesCount > 0 else { throw SwiftletError.notFound("host", hostId) }
        }
    }

    public func hosts() async throws(SwiftletError) -> [ComputeHost] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT body, cordoned FROM host ORDER BY id").map { row in
                var host = try RecordCoding.decode(ComputeHost.self, row["body"] as String)
                host.cordoned = row["cordoned"] as Bool
                return host
            }
        }
    }
}

extension Database {
    // Statements prepared once per connection and reused: SQLite compiles SQL text on every
    // uncached call, a good part of a short query's cost on the create path.
    func cachedRows(sql: String, arguments: StatementArguments = StatementArguments()) throws -> [Row] {
        try Row.fetchAll(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedRow(sql: String, arguments: StatementArguments = StatementArguments()) throws -> Row? {
        try Row.fetchOne(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedValue<Value: DatabaseValueConvertible & StatementColumnConvertible>(
        _ type: Value.Type, sql: String, arguments: StatementArguments = StatementArguments()
    ) throws -> Value? {
        try Value.fetchOne(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedValues<Value: DatabaseValueConvertible & StatementColumnConvertible>(
        _ type: Value.Type, sql: String, arguments: StatementArguments = StatementArguments()
    ) throws -> [Value] {
        try Value.fetchAll(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedExecute(sql: String, arguments: StatementArguments = StatementArguments()) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}
