import Foundation
import GRDB
import SwiftletCore

/// Warm-pool policies. The pooled VMs themselves are not stored: they hold no instance yet, and
/// after a restart the agent's orphan sweep removes them and the pool is filled again.
public protocol PoolStore: Sendable {
    func createPool(_ pool: WarmPool) async throws(SwiftletError)
    func pools(projectId: String?) async throws(SwiftletError) -> [WarmPool]
    func deletePool(id: String) async throws(SwiftletError)
}

extension SQLiteStore: PoolStore {
    static func registerPoolMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2-pools") { db in
            try db.execute(
                sql: """
                    CREATE TABLE pool (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        image_id TEXT NOT NULL REFERENCES image(id) ON DELETE RESTRICT,
                        memory_mib INTEGER NOT NULL CHECK (memory_mib > 0), vcpus INTEGER NOT NULL CHECK (vcpus > 0),
                        size INTEGER NOT NULL CHECK (size BETWEEN 1 AND 64), created_at DATETIME NOT NULL,
                        UNIQUE (image_id, memory_mib, vcpus));
                    """)
        }
    }

    public func createPool(_ pool: WarmPool) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO pool (id, project_id, image_id, memory_mib, vcpus, size, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    pool.id, pool.projectId, pool.imageId, pool.memoryMib, pool.vcpus, pool.size, pool.createdAt,
                ])
        }
    }

    public func pools(projectId: String?) async throws(SwiftletError) -> [WarmPool] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM pool WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id",
                arguments: [projectId]
            ).map {
                WarmPool(
                    id: $0["id"], projectId: $0["project_id"], imageId: $0["image_id"], memoryMib: $0["memory_mib"],
                    vcpus: $0["vcpus"], size: $0["size"], createdAt: $0["created_at"])
            }
        }
    }

    public func deletePool(id: String) async throws(SwiftletError) {
        try await write { db in try db.execute(sql: "DELETE FROM pool WHERE id = ?", arguments: [id]) }
    }
}
