import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: IdentityStore {
    static func registerIdentityMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v8-identity") { db in
            try db.execute(
                sql: """
                    CREATE TABLE identity_user (
                        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                        project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                        password_hash TEXT NOT NULL, created_at DATETIME NOT NULL);
                    CREATE TABLE identity_token (
                        id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE,
                        user_id TEXT REFERENCES identity_user(id) ON DELETE CASCADE,
                        project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE,
                        admin INTEGER NOT NULL, methods TEXT NOT NULL,
                        issued_at DATETIME NOT NULL, expires_at DATETIME NOT NULL);
                    CREATE INDEX identity_token_expiry ON identity_token(expires_at);
                    """)
        }
    }

    public func createUser(_ user: IdentityUser, passwordHash: String) async throws(SwiftletError) {
        try await write { db in
            do {
                try db.execute(
                    sql: """
                        INSERT INTO identity_user (id, name, project_id, password_hash, created_at)
                        VALUES (?, ?, ?, ?, ?)
                        """,
                    arguments: [user.id, user.name, user.projectId, passwordHash, DatabaseDate.text(user.createdAt)])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw SwiftletError(.conflict, "user.duplicate_name", "a user named '\(user.name)' already exists")
            }
        }
    }

    public func user(name: String) async throws(SwiftletError) -> (user: IdentityUser, passwordHash: String)? {
        try await read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM identity_user WHERE name = ?", arguments: [name])
            else { return nil }
            return (Self.user(row), row["password_hash"])
        }
    }

    public func user(id: String) async throws(SwiftletError) -> IdentityUser? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM identity_user WHERE id = ?", arguments: [id]).map(Self.user)
        }
    }

    public func users(projectId: String?) async throws(SwiftletError) -> [IdentityUser] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM identity_user WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id",
                arguments: [projectId]
            ).map(Self.user)
        }
    }

    private static func user(_ row: Row) -> IdentityUser {
        IdentityUser(id: row["id"], name: row["name"], projectId: row["project_id"], createdAt: row["created_at"])
    }

    public func createIdentityToken(_ token: IdentityToken, secretHash: String) async throws(SwiftletError) {
        let methods = token.methods.joined(separator: ",")
        try await write { db in
            try db.execute(
                sql: "DELETE FROM identity_token WHERE expires_at <= ?", arguments: [DatabaseDate.text(token.issuedAt)])
            try db.execute(
                sql: """
                    INSERT INTO identity_token
                        (id, secret_hash, user_id, project_id, admin, methods, issued_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    token.id, secretHash, token.userId, token.projectId, token.admin, methods,
                    DatabaseDate.text(token.issuedAt), DatabaseDate.text(token.expiresAt),
                ])
        }
    }

    public func identityToken(secretHash: String) async throws(SwiftletError) -> IdentityToken? {
        try await read { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT * FROM identity_token WHERE secret_hash = ?", arguments: [secretHash])
            else { return nil }
            let methods: String = row["methods"]
            return IdentityToken(
                id: row["id"], userId: row["user_id"], projectId: row["project_id"], admin: row["admin"],
                methods: methods.split(separator: ",").map(String.init), issuedAt: row["issued_at"],
                expiresAt: row["expires_at"])
        }
    }

    public func revokeIdentityToken(secretHash: String) async throws(SwiftletError) -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM identity_token WHERE secret_hash = ?", arguments: [secretHash])
            return db.changesCount > 0
        }
    }
}
