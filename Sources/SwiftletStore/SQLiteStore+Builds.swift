import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: BuildStore {
    static func registerBuildMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v3-builds") { db in
            try db.execute(
                sql: """
                    CREATE TABLE build (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                        state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
                        body TEXT NOT NULL, created_at DATETIME NOT NULL);
                    CREATE TABLE build_cache (
                        project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                        inputs_digest TEXT NOT NULL CHECK (length(inputs_digest) = 64),
                        image_id TEXT NOT NULL REFERENCES image(id) ON DELETE CASCADE,
                        PRIMARY KEY (project_id, inputs_digest));
                    """)
        }
    }

    public func createBuild(_ build: Build) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO build (id, project_id, state, body, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    build.id, build.projectId, build.state.rawValue, try RecordCoding.json(build),
                    DatabaseDate.text(build.createdAt),
                ])
        }
    }

    public func updateBuild(_ build: Build) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: "UPDATE build SET state = ?, body = ? WHERE id = ?",
                arguments: [build.state.rawValue, try RecordCoding.json(build), build.id])
        }
    }

    public func build(id: String, projectId: String?) async throws(SwiftletError) -> Build? {
        try await read { db in
            try String.fetchOne(
                db, sql: "SELECT body FROM build WHERE id = ? AND (? IS NULL OR project_id = ?)",
                arguments: [id, projectId, projectId]
            ).map { try RecordCoding.decode(Build.self, $0) }
        }
    }

    public func builds(projectId: String?) async throws(SwiftletError) -> [Build] {
        try await read { db in
            try String.fetchAll(
                db, sql: "SELECT body FROM build WHERE ? IS NULL OR project_id = ? ORDER BY created_at, id",
                arguments: [projectId, projectId]
            ).map { try RecordCoding.decode(Build.self, $0) }
        }
    }

    public func cachedImage(projectId: String, inputsDigest: String) async throws(SwiftletError) -> String? {
        try await read { db in
            try String.fetchOne(
                db, sql: "SELECT image_id FROM build_cache WHERE project_id = ? AND inputs_digest = ?",
                arguments: [projectId, inputsDigest])
        }
    }

    public func cacheImage(projectId: String, inputsDigest: String, imageId: String) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO build_cache (project_id, inputs_digest, image_id) VALUES (?, ?, ?)",
                arguments: [projectId, inputsDigest, imageId])
        }
    }
}
