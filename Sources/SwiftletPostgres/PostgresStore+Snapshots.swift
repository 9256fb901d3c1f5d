import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: SnapshotStore {
    /// Snapshots of instances, names unique per project (see SnapshotStore).
    static var snapshotTable: Migration {
        Migration(
            version: "snapshots",
            statements: [
                """
                CREATE TABLE snapshot (
                    id text PRIMARY KEY, project_id text NOT NULL REFERENCES project(id),
                    name text NOT NULL, image_id text NOT NULL REFERENCES image(id) ON DELETE RESTRICT,
                    sha256 text NOT NULL, created_at timestamptz NOT NULL, body text NOT NULL,
                    UNIQUE (project_id, name))
                """,
                "CREATE INDEX snapshot_sha256 ON snapshot(sha256)",
            ])
    }

    public func createSnapshot(_ snapshot: Snapshot) async throws(SwiftletError) {
        try await write { db in
            do {
                try await db.execute(
                    """
                    INSERT INTO snapshot (id, project_id, name, image_id, sha256, created_at, body)
                    VALUES (\(snapshot.id), \(snapshot.projectId), \(snapshot.name), \(snapshot.imageId),
                    \(snapshot.sha256), \(snapshot.createdAt), \(try RecordCoding.json(snapshot)))
                    """)
            } catch  where Self.isUniqueViolation(error) {
                throw SwiftletError(
                    .conflict, "snapshot.duplicate_name",
                    "a snapshot named '\(snapshot.name)' already exists in the project")
            }
        }
    }

    public func snapshot(idOrName: String, projectId: String?) async throws(SwiftletError) -> Snapshot? {
        try await read { db in
            try await db.row(
                """
                SELECT body FROM snapshot WHERE (id = \(idOrName) OR name = \(idOrName))
                AND (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY id = \(idOrName) DESC, created_at LIMIT 1
                """
            ).map { try RecordCoding.decode(Snapshot.self, try $0.get("body")) }
        }
    }

    public func snapshots(projectId: String?) async throws(SwiftletError) -> [Snapshot] {
        try await read { db in
            try await db.rows(
                """
                SELECT body FROM snapshot WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY created_at, id
                """
            ).map { try RecordCoding.decode(Snapshot.self, try $0.get("body")) }
        }
    }

    public func deleteSnapshot(id: String) async throws(SwiftletError) -> Bool {
        try await write { db in
            guard let sha = try await db.value(String.self, "DELETE FROM snapshot WHERE id = \(id) RETURNING sha256")
            else { throw SwiftletError.notFound("snapshot", id) }
            return try await db.value(
                Bool.self,
                """
                SELECT EXISTS (SELECT 1 FROM snapshot WHERE sha256 = \(sha))
                OR EXISTS (SELECT 1 FROM image WHERE sha256 = \(sha))
                """) ?? false
        }
    }
}
