import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: ImageCatalogStore {
    static func registerImageCatalogMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2-image-catalog") { db in
            try db.execute(
                sql: """
                    ALTER TABLE image ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private'
                        CHECK (visibility IN ('private', 'public'));
                    ALTER TABLE image ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
                    ALTER TABLE image ADD COLUMN signature TEXT;
                    ALTER TABLE image ADD COLUMN signing_key_id TEXT;
                    CREATE TABLE signing_key (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                        name TEXT NOT NULL, public_key TEXT NOT NULL CHECK (length(public_key) = 44),
                        created_at DATETIME NOT NULL,
                        UNIQUE (project_id, name), UNIQUE (project_id, public_key));
                    """)
        }
    }

    /// The catalog columns of an image row (absent before the migration ran).
    static func applyCatalog(_ row: Row, to image: inout Image) throws {
        if let visibility: String = row["visibility"] { image.visibility = ImageVisibility(rawValue: visibility) }
        if let tags: String = row["tags"] { image.tags = try RecordCoding.decode([String].self, tags) }
        image.signature = row["signature"]
        image.signingKeyId = row["signing_key_id"]
    }

    public func addSigningKey(_ key: SigningKey) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO signing_key (id, project_id, name, public_key, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [key.id, key.projectId, key.name, key.publicKey, DatabaseDate.text(key.createdAt)])
        }
    }

    public func signingKeys(projectId: String) async throws(SwiftletError) -> [SigningKey] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM signing_key WHERE project_id = ? ORDER BY created_at", arguments: [projectId]
            )
            .map {
                SigningKey(
                    id: $0["id"], projectId: $0["project_id"], name: $0["name"], publicKey: $0["public_key"],
                    createdAt: $0["created_at"])
            }
        }
    }

    public func deleteSigningKey(idOrName: String, projectId: String) async throws(SwiftletError) -> Bool {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM signing_key WHERE (id = ? OR name = ?) AND project_id = ?",
                arguments: [idOrName, idOrName, projectId])
            return db.changesCount > 0
        }
    }

    public func setRequireSignedImages(projectId: String, _ required: Bool) async throws(SwiftletError) {
        try await write { db in
            try db.execute(sql: "UPDATE project SET require_signed = ? WHERE id = ?", arguments: [required, projectId])
            guard db.changesCount > 0 else { throw SwiftletError.notFound("project", projectId) }
        }
    }

    public func updateImageCatalog(_ image: Image) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: """
                    UPDATE image SET visibility = ?, tags = ?, signature = ?, signing_key_id = ?, properties = ?
                    WHERE id = ?
                    """,
                arguments: [
                    (image.visibility ?? .private).rawValue, try RecordCoding.json(image.tags ?? []), image.signature,
                    image.signingKeyId, try RecordCoding.json(image.properties), image.id,
                ])
            guard db.changesCount > 0 else { throw SwiftletError.notFound("image", image.id) }
        }
    }
}

extension Image {
    func withCatalog(_ row: Row) throws -> Image {
        var image = self
        try SQLiteStore.applyCatalog(row, to: &image)
        return image
    }
}
