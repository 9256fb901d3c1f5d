import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: IdentityStore {
    /// The same tables as SQLiteStore's `v8-identity`.
    static var v6Identity: Migration {
        Migration(
            version: "v6-identity",
            statements: [
                """
                CREATE TABLE identity_user (
                    id text PRIMARY KEY, name text NOT NULL UNIQUE,
                    project_id text NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                    password_hash text NOT NULL, created_at timestamptz NOT NULL)
                """,
                """
                CREATE TABLE identity_token (
                    id text PRIMARY KEY, secret_hash text NOT NULL UNIQUE,
                    user_id text REFERENCES identity_user(id) ON DELETE CASCADE,
                    project_id text NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                    admin boolean NOT NULL, methods text NOT NULL,
                    issued_at timestamptz NOT NULL, expires_at timestamptz NOT NULL)
                """,
                "CREATE INDEX identity_token_expiry ON identity_token(expires_at)",
            ])
    }

    public func createUser(_ user: IdentityUser, passwordHash: String) async throws(SwiftletError) {
        try await write { db in
            do {
                try await db.execute(
                    """
                    INSERT INTO identity_user (id, name, project_id, password_hash, created_at)
                    VALUES (\(user.id), \(user.name), \(user.projectId), \(passwordHash), \(user.createdAt))
                    """)
            } catch  where Self.isUniqueViolation(error) {
                throw SwiftletError(.conflict, "user.duplicate_name", "a user named '\(user.name)' already exists")
            }
        }
    }

    public func user(name: String) async throws(SwiftletError) -> (user: IdentityUser, passwordHash: String)? {
        try await read { db in
            guard let row = try await db.row("SELECT * FROM identity_user WHERE name = \(name)") else { return nil }
            return (try Self.user(row), try row.get("password_hash", as: String.self))
        }
    }

    public func user(id: String) async throws(SwiftletError) -> IdentityUser? {
        try await read { db in
            try await db.row("SELECT * FROM identity_user WHERE id = \(id)").map(Self.user)
        }
    }

    public func users(projectId: String?) async throws(SwiftletError) -> [IdentityUser] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM identity_user WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY created_at, id
                """
            ).map(Self.user)
        }
    }

    private static func user(_ row: PostgresRandomAccessRow) throws -> IdentityUser {
        IdentityUser(
            id: try row.get("id"), name: try row.get("name"), projectId: try row.get("project_id"),
            createdAt: try row.get("created_at"))
    }

    public func createIdentityToken(_ token: IdentityToken, secretHash: String) async throws(SwiftletError) {
        let methods = token.methods.joined(separator: ",")
        try await write { db in
            try await db.execute("DELETE FROM identity_token WHERE expires_at <= \(token.issuedAt)")
            try await db.execute(
                """
                INSERT INTO identity_token (id, secret_hash, user_id, project_id, admin, methods, issued_at, expires_at)
                VALUES (\(token.id), \(secretHash), \(token.userId), \(token.projectId), \(token.admin), \(methods),
                    \(token.issuedAt), \(token.expiresAt))
                """)
        }
    }

    public func identityToken(secretHash: String) async throws(SwiftletError) -> IdentityToken? {
        try await read { db in
            guard let row = try await db.row("SELECT * FROM identity_token WHERE secret_hash = \(secretHash)") else {
                return nil
            }
            return IdentityToken(
                id: try row.get("id"), userId: try row.get("user_id", as: String?.self),
                projectId: try row.get("project_id"), admin: try row.get("admin"),
                methods: try row.get("methods", as: String.self).split(separator: ",").map(String.init),
                issuedAt: try row.get("issued_at"), expiresAt: try row.get("expires_at"))
        }
    }

    public func revokeIdentityToken(secretHash: String) async throws(SwiftletError) -> Bool {
        try await write { db in
            try await db.row("DELETE FROM identity_token WHERE secret_hash = \(secretHash) RETURNING id") != nil
        }
    }
}
