import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: PoolStore {
    public func createPool(_ pool: WarmPool) async throws(SwiftletError) {
        try await write { db in
            try await db.execute(
                """
                INSERT INTO pool (id, project_id, image_id, memory_mib, vcpus, size, created_at)
                VALUES (\(pool.id), \(pool.projectId), \(pool.imageId), \(pool.memoryMib), \(pool.vcpus), \(pool.size),
                \(pool.createdAt))
                """)
        }
    }

    public func pools(projectId: String?) async throws(SwiftletError) -> [WarmPool] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM pool WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY created_at, id
                """
            ).map {
                WarmPool(
                    id: try $0.get("id"), projectId: try $0.get("project_id"), imageId: try $0.get("image_id"),
                    memoryMib: try $0.get("memory_mib"), vcpus: try $0.get("vcpus"), size: try $0.get("size"),
                    createdAt: try $0.get("created_at"))
            }
        }
    }

    public func deletePool(id: String) async throws(SwiftletError) {
        try await write { db in try await db.execute("DELETE FROM pool WHERE id = \(id)") }
    }
}
