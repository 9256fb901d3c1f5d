import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: ImageCatalogStore {
    public func addSigningKey(_ key: SigningKey) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            try await db.execute(
                """
                INSERT INTO signing_key (id, project_id, name, public_key, created_at)
                VALUES (\(key.id), \(key.projectId), \(key.name), \(key.publicKey), \(key.createdAt))
                """)
        }
    }

    public func signingKeys(projectId: String) async throws(SwiftletError) -> [SigningKey] {
        try await read { db in
            try await db.rows("SELECT * FROM signing_key WHERE project_id = \(projectId) ORDER BY created_at, id").map {
                SigningKey(
                    id: try $0.get("id"), projectId: try $0.get("project_id"), name: try $0.get("name"),
                    publicKey: try $0.get("public_key"), createdAt: try $0.get("created_at"))
            }
        }
    }

    public func deleteSigningKey(idOrName: String, projectId: String) async throws(SwiftletError) -> Bool {
        // Counted as a catalog change only when a key went.
        let removed = try await transaction { db in
            try await db.changed(
                """
                DELETE FROM signing_key WHERE (id = \(idOrName) OR name = \(idOrName)) AND project_id = \(projectId)
                RETURNING 1
                """)
        }
        countWrite(catalog: removed)
        return removed
    }

    public func setRequireSignedImages(projectId: String, _ required: Bool) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            guard
                try await db.changed(
                    "UPDATE project SET require_signed = \(required) WHERE id = \(projectId) RETURNING 1")
            else { throw SwiftletError.notFound("project", projectId) }
        }
    }

    public func updateImageCatalog(_ image: Image) async throws(SwiftletError) {
        try await write(catalog: true) { db in
            guard
                try await db.changed(
                    """
                    UPDATE image SET visibility = \((image.visibility ?? .private).rawValue),
                    tags = \(try RecordCoding.json(image.tags ?? [])), signature = \(image.signature),
                    signing_key_id = \(image.signingKeyId), properties = \(try RecordCoding.json(image.properties))
                    WHERE id = \(image.id) RETURNING 1
                    """)
            else { throw SwiftletError.notFound("image", image.id) }
        }
    }
}
