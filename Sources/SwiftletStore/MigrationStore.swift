import Foundation
import GRDB
import SwiftletCore

/// Migrations of instances between hosts, kept after they end. An instance has at most one that
/// has not ended: the store refuses a second (a unique index, so racing requests cannot both win).
public protocol MigrationStore: Sendable {
    /// 409 `migration.in_progress` when the instance has one that has not ended.
    func createMigration(_ migration: InstanceMigration) async throws(SwiftletError)
    /// Applies `change` in one transaction and returns the record as stored.
    @discardableResult
    func updateMigration(
        id: String, _ change: @escaping @Sendable (inout InstanceMigration) throws(SwiftletError) -> Void
    )
        async throws(SwiftletError) -> InstanceMigration
    /// By id, within the project (nil project: any, for admins).
    func migration(id: String, projectId: String?) async throws(SwiftletError) -> InstanceMigration?
    /// Newest first; `instanceId` narrows to one instance's.
    func migrations(projectId: String?, instanceId: String?) async throws(SwiftletError) -> [InstanceMigration]
}

extension SwiftletError {
    public static var migrationInProgress: SwiftletError {
        SwiftletError(.conflict, "migration.in_progress", "the instance is already being migrated")
    }
}

/// The statuses a migration ends in (SQL list), for the index that allows one unfinished a time.
public let finalMigrationStatuses = "('completed', 'failed', 'cancelled')"

extension SQLiteStore: MigrationStore {
    static func registerMigrationTable(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("migrations") { db in
            try db.execute(
                sql: """
                    CREATE TABLE migration (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        instance_id TEXT NOT NULL, status TEXT NOT NULL, created_at DATETIME NOT NULL,
                        body TEXT NOT NULL);
                    CREATE UNIQUE INDEX migration_unfinished ON migration(instance_id)
                        WHERE status NOT IN \(finalMigrationStatuses);
                    CREATE INDEX migration_created ON migration(created_at);
                    """)
        }
    }

    public func createMigration(_ migration: InstanceMigration) async throws(SwiftletError) {
        try await write { db in
            do {
                try db.execute(
                    sql: """
                        INSERT INTO migration (id, project_id, instance_id, status, created_at, body)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        migration.id, migration.projectId, migration.instanceId, migration.status.rawValue,
                        DatabaseDate.text(migration.createdAt), try RecordCoding.json(migration),
                    ])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw SwiftletError.migrationInProgress
            }
        }
    }

    public func updateMigration(
        id: String, _ change: @escaping @Sendable (inout InstanceMigration) throws(SwiftletError) -> Void
    ) async throws(SwiftletError) -> InstanceMigration {
        try await write { db in
            guard let body = try String.fetchOne(db, sql: "SELECT body FROM migration WHERE id = ?", arguments: [id])
            else { throw SwiftletError.notFound("migration", id) }
            var migration = try RecordCoding.decode(InstanceMigration.self, body)
            try change(&migration)
            migration.updatedAt = Date()
            try db.execute(
                sql: "UPDATE migration SET status = ?, body = ? WHERE id = ?",
                arguments: [migration.status.rawValue, try RecordCoding.json(migration), id])
            return migration
        }
    }

    public func migration(id: String, projectId: String?) async throws(SwiftletError) -> InstanceMigration? {
        try await read { db in
            try String.fetchOne(
                db, sql: "SELECT body FROM migration WHERE id = ?1 AND (?2 IS NULL OR project_id = ?2)",
                arguments: [id, projectId]
            ).map { try RecordCoding.decode(InstanceMigration.self, $0) }
        }
    }

    public func migrations(projectId: String?, instanceId: String?) async throws(SwiftletError) -> [InstanceMigration] {
        try await read { db in
            try String.fetchAll(
                db,
                sql: """
                    SELECT body FROM migration WHERE (?1 IS NULL OR project_id = ?1)
                    AND (?2 IS NULL OR instance_id = ?2) ORDER BY created_at DESC, id DESC
                    """,
                arguments: [projectId, instanceId]
            ).map { try RecordCoding.decode(InstanceMigration.self, $0) }
        }
    }
}
