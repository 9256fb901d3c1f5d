import Foundation
import GRDB
import SwiftletCore

/// Snapshots of instances (their state is a blob by digest, as an image's bytes). Names are
/// unique per project; a snapshot keeps its image from being deleted (a restore loads its kernel).
public protocol SnapshotStore: Sendable {
    /// 409 `snapshot.duplicate_name` when the project has one of that name.
    func createSnapshot(_ snapshot: Snapshot) async throws(SwiftletError)
    /// By id, or by name within the project (nil project: any, for admins).
    func snapshot(idOrName: String, projectId: String?) async throws(SwiftletError) -> Snapshot?
    /// Oldest first.
    func snapshots(projectId: String?) async throws(SwiftletError) -> [Snapshot]
    /// Removes the record; returns whether another snapshot or image still names its digest.
    func deleteSnapshot(id: String) async throws(SwiftletError) -> Bool
}

extension SwiftletError {
    static func duplicateSnapshot(_ name: String) -> SwiftletError {
        SwiftletError(.conflict, "snapshot.duplicate_name", "a snapshot named '\(name)' already exists in the project")
    }
}

extension SQLiteStore: SnapshotStore {
    static func registerSnapshotMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("snapshots") { db in
            try db.execute(
                sql: """
                    CREATE TABLE snapshot (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        name TEXT NOT NULL, image_id TEXT NOT NULL REFERENCES image(id) ON DELETE RESTRICT,
                        sha256 TEXT NOT NULL, created_at DATETIME NOT NULL, body TEXT NOT NULL,
                        UNIQUE (project_id, name));
                    CREATE INDEX snapshot_sha256 ON snapshot(sha256);
                    """)
        }
    }

    public func createSnapshot(_ snapshot: Snapshot) async throws(SwiftletError) {
        try await write { db in
            do {
                try db.execute(
                    sql: """
                        INSERT INTO snapshot (id, project_id, name, image_id, sha256, created_at, body)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        snapshot.id, snapshot.projectId, snapshot.name, snapshot.imageId, snapshot.sha256,
                        DatabaseDate.text(snapshot.createdAt), try RecordCoding.json(snapshot),
                    ])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw SwiftletError.duplicateSnapshot(snapshot.name)
            }
        }
    }

    public func snapshot(idOrName: String, projectId: String?) async throws(SwiftletError) -> Snapshot? {
        try await read { db in
            try String.fetchOne(
                db,
                sql: """
                    SELECT body FROM snapshot WHERE (id = ?1 OR name = ?1) AND (?2 IS NULL OR project_id = ?2)
                    ORDER BY id = ?1 DESC, created_at LIMIT 1
                    """,
                arguments: [idOrName, projectId]
            ).map { try RecordCoding.decode(Snapshot.self, $0) }
        }
    }

    public func snapshots(projectId: String?) async throws(SwiftletError) -> [Snapshot] {
        try await read { db in
            try String.fetchAll(
                db,
                sql: "SELECT body FROM snapshot WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id",
                arguments: [projectId]
            ).map { try RecordCoding.decode(Snapshot.self, $0) }
        }
    }

    public func deleteSnapshot(id: String) async throws(SwiftletError) -> Bool {
        try await write { db in
            guard let sha256 = try String.fetchOne(db, sql: "SELECT sha256 FROM snapshot WHERE id = ?", arguments: [id])
            else { throw SwiftletError.notFound("snapshot", id) }
            try db.execute(sql: "DELETE FROM snapshot WHERE id = ?", arguments: [id])
            let others =
                try Int.fetchOne(
                    db,
                    sql:
                        "SELECT (SELECT COUNT(*) FROM snapshot WHERE sha256 = ?1) + (SELECT COUNT(*) FROM image WHERE sha256 = ?1)",
                    arguments: [sha256]) ?? 0
            return others > 0
        }
    }
}
