import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: BuildStore {
    public func createBuild(_ build: Build) async throws(SwiftletError) {
        try await write { db in
            try await db.execute(
                """
                INSERT INTO build (id, project_id, state, body, created_at)
                VALUES (\(build.id), \(build.projectId), \(build.state.rawValue), \(try RecordCoding.json(build)),
                \(build.createdAt))
                """)
        }
    }

    public func updateBuild(_ build: Build) async throws(SwiftletError) {
        try await write { db in
            try await db.execute(
                """
                UPDATE build SET state = \(build.state.rawValue), body = \(try RecordCoding.json(build)) WHERE id = \(build.id)
                """)
        }
    }

    public func build(id: String, projectId: String?) async throws(SwiftletError) -> Build? {
        try await read { db in
            try await db.value(
                String.self,
                "SELECT body FROM build WHERE id = \(id) AND (\(projectId)::text IS NULL OR project_id = \(projectId))"
            ).map { try RecordCoding.decode(Build.self, $0) }
        }
    }

    public func builds(projectId: String?) async throws(SwiftletError) -> [Build] {
        try await read { db in
            try await db.values(
                String.self,
                """
                SELECT body FROM build WHERE \(projectId)::text IS NULL OR project_id = \(projectId)
                ORDER BY created_at, id
                """
            ).map { try RecordCoding.decode(Build.self, $0) }
        }
    }

    public func cachedImage(projectId: String, inputsDigest: String) async throws(SwiftletError) -> String? {
        try await read { db in
            try await db.value(
                String.self,
                "SELECT image_id FROM build_cache WHERE project_id = \(projectId) AND inputs_digest = \(inputsDigest)")
        }
    }

    public func cacheImage(projectId: String, inputsDigest: String, imageId: String) async throws(SwiftletError) {
        try await write { db in
            try await db.execute(
                """
                INSERT INTO build_cache (project_id, inputs_digest, image_id)
                VALUES (\(projectId), \(inputsDigest), \(imageId))
                ON CONFLICT (project_id, inputs_digest) DO UPDATE SET image_id = excluded.image_id
                """)
        }
    }
}
