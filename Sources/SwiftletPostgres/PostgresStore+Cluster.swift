import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: ClusterStore {
    public func createJoinToken(id: String, secretHash: String, expiresAt: Date) async throws(SwiftletError) {
        try await write { db in
            try await db.execute(
                "INSERT INTO join_token (id, secret_hash, expires_at) VALUES (\(id), \(secretHash), \(expiresAt))")
        }
    }

    public func joinHost(tokenId: String, secretHash: String, now: Date, credential: HostCredential)
        async throws(SwiftletError)
    {
        try await write { db in
            // The token's row lock spends it once; the join lock makes the name check and the
            // insert one step for joins with different tokens.
            try await db.lock(.hostJoin)
            let row = try await db.row(
                "SELECT secret_hash, expires_at, used_at FROM join_token WHERE id = \(tokenId) FOR UPDATE")
            guard let row, try row.get("secret_hash", as: String.self) == secretHash else {
                throw SwiftletError(.unauthorized, "join.invalid_token", "the join token is not valid")
            }
            guard try row.get("used_at", as: Date?.self) == nil else {
                throw SwiftletError(.unauthorized, "join.token_used", "the join token was used already")
            }
            guard try row.get("expires_at", as: Date.self) > now else {
                throw SwiftletError(.unauthorized, "join.token_expired", "the join token has expired")
            }
            let holder = try await db.value(
                String.self, "SELECT host_id FROM host_credential WHERE name = \(credential.name) AND NOT revoked")
            if let holder {
                throw SwiftletError(
                    .conflict, "host.name_taken",
                    "host name '\(credential.name)' is held by host '\(holder)': revoke it first (swiftlet host revoke)"
                )
            }
            try await db.execute("UPDATE join_token SET used_at = \(now) WHERE id = \(tokenId)")
            try await db.execute(
                """
                INSERT INTO host_credential (host_id, name, certificate_serial, revoked, joined_at)
                VALUES (\(credential.hostId), \(credential.name), \(credential.certificateSerial), false,
                \(credential.joinedAt))
                ON CONFLICT (host_id) DO UPDATE SET name = excluded.name,
                certificate_serial = excluded.certificate_serial, revoked = false, joined_at = excluded.joined_at
                """)
        }
    }

    public func hostCredential(hostId: String) async throws(SwiftletError) -> HostCredential? {
        try await read { db in
            try await db.row("SELECT * FROM host_credential WHERE host_id = \(hostId)").map {
                HostCredential(
                    hostId: try $0.get("host_id"), name: try $0.get("name"),
                    certificateSerial: try $0.get("certificate_serial"), revoked: try $0.get("revoked"),
                    joinedAt: try $0.get("joined_at"))
            }
        }
    }

    public func revokeHost(hostId: String) async throws(SwiftletError) {
        try await write { db in
            guard
                try await db.changed("UPDATE host_credential SET revoked = true WHERE host_id = \(hostId) RETURNING 1")
            else { throw SwiftletError.notFound("host", hostId) }
        }
    }
}
