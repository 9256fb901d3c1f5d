import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: ClusterStore {
    static func registerClusterMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v4-cluster") { db in
            try db.execute(
                sql: """
                    CREATE TABLE join_token (
                        id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL CHECK (length(secret_hash) = 64),
                        expires_at DATETIME NOT NULL, used_at DATETIME);
                    CREATE TABLE host_credential (
                        host_id TEXT PRIMARY KEY, name TEXT NOT NULL,
                        certificate_serial TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
                        joined_at DATETIME NOT NULL);
                    CREATE UNIQUE INDEX host_credential_live_name ON host_credential(name) WHERE revoked = 0;
                    ALTER TABLE host ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0 CHECK (cordoned IN (0, 1));
                    """)
        }
    }

    public func createJoinToken(id: String, secretHash: String, expiresAt: Date) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO join_token (id, secret_hash, expires_at) VALUES (?, ?, ?)",
                arguments: [id, secretHash, DatabaseDate.text(expiresAt)])
        }
    }

    public func joinHost(tokenId: String, secretHash: String, now: Date, credential: HostCredential)
        async throws(SwiftletError)
    {
        try await write { db in
            let row = try Row.fetchOne(
                db, sql: "SELECT secret_hash, expires_at, used_at FROM join_token WHERE id = ?", arguments: [tokenId])
            guard let row, row["secret_hash"] == secretHash else {
                throw SwiftletError(.unauthorized, "join.invalid_token", "the join token is not valid")
            }
            guard (row["used_at"] as String?) == nil else {
                throw SwiftletError(.unauthorized, "join.token_used", "the join token was used already")
            }
            guard let expires = row["expires_at"] as Date?, expires > now else {
                throw SwiftletError(.unauthorized, "join.token_expired", "the join token has expired")
            }
            let holder = try String.fetchOne(
                db, sql: "SELECT host_id FROM host_credential WHERE name = ? AND revoked = 0",
                arguments: [credential.name])
            if let holder {
                throw SwiftletError(
                    .conflict, "host.name_taken",
                    "host name '\(credential.name)' is held by host '\(holder)': revoke it first (swiftlet host revoke)"
                )
            }
            try db.execute(
                sql: "UPDATE join_token SET used_at = ? WHERE id = ?", arguments: [DatabaseDate.text(now), tokenId])
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO host_credential (host_id, name, certificate_serial, revoked, joined_at)
                    VALUES (?, ?, ?, 0, ?)
                    """,
                arguments: [
                    credential.hostId, credential.name, credential.certificateSerial,
                    DatabaseDate.text(credential.joinedAt),
                ])
        }
    }

    public func hostCredential(hostId: String) async throws(SwiftletError) -> HostCredential? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM host_credential WHERE host_id = ?", arguments: [hostId]).map {
                HostCredential(
                    hostId: $0["host_id"], name: $0["name"], certificateSerial: $0["certificate_serial"],
                    revoked: $0["revoked"], joinedAt: $0["joined_at"])
            }
        }
    }

    public func revokeHost(hostId: String) async throws(SwiftletError) {
        try await write { db in
            try db.execute(sql: "UPDATE host_credential SET revoked = 1 WHERE host_id = ?", arguments: [hostId])
            guard db.changesCount > 0 else { throw SwiftletError.notFound("host", hostId) }
        }
    }
}
