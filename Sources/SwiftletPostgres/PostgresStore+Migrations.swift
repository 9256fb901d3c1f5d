import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: MigrationStore {
    /// Migrations between hosts, one unfinished per instance (see MigrationStore).
    static var migrationTable: Migration {
        Migration(
            version: "migrations",
            statements: [
                """
                CREATE TABLE migration (
                    id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                    instance_id text NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL,
                    body text NOT NULL)
                """,
                """
                CREATE UNIQUE INDEX migration_unfinished ON migration(instance_id)
                WHERE status NOT IN \(unescaped: finalMigrationStatuses)
                """,
                "CREATE INDEX migration_created ON migration(created_at)",
            ])
    }

    public func createMigration(_ migration: InstanceMigration) async throws(SwiftletError) {
        try await write { db in
            do {
                try await db.execute(
                    """
                    INSERT INTO migration (id, project_id, instance_id, status, created_at, body)
                    VALUES (\(migration.id), \(migration.projectId), \(migration.instanceId),
                    \(migration.status.rawValue), \(migration.createdAt), \(try RecordCoding.json(migration)))
                    """)
            } catch  where Self.isUniqueViolation(error) {
                throw SwiftletError.migrationInProgress
            }
        }
    }

    public func updateMigration(
        id: String, _ change: @escaping @Sendable (inout InstanceMigration) throws(SwiftletError) -> Void
    ) async throws(SwiftletError) -> InstanceMigration {
        try await write { db in
            guard let row = try await db.row("SELECT body FROM migration WHERE id = \(id) FOR UPDATE") else {
                throw SwiftletError.notFound("migration", id)
            }
            var migration = try RecordCoding.decode(InstanceMigration.self, try row.get("body"))
            try change(&migration)
            migration.updatedAt = Date()
            try await db.execute(
                """
                UPDATE migration SET status = \(migration.status.rawValue), body = \(try RecordCoding.json(migration))
                WHERE id = \(id)
                """)
            return migration
        }
    }

    public func migration(id: String, projectId: String?) async throws(SwiftletError) -> InstanceMigration? {
        try await read { db in
            try await db.row(
                """
                SELECT body FROM migration WHERE id = \(id)
                AND (\(projectId)::text IS NULL OR project_id = \(projectId))
                """
            ).map { try RecordCoding.decode(InstanceMigration.self, try $0.get("body")) }
        }
    }

    public func migrations(projectId: String?, instanceId: String?) async throws(SwiftletError) -> [InstanceMigration] {
        try await read { db in
            try await db.rows(
                """
                SELECT body FROM migration WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                AND (\(instanceId)::text IS NULL OR instance_id = \(instanceId)) ORDER BY created_at DESC, id DESC
                """
            ).map { try RecordCoding.decode(InstanceMigration.self, try $0.get("body")) }
        }
    }
}
