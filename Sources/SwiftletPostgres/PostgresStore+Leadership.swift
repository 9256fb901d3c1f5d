import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: LeadershipStore {
    /// Leases are written every few seconds by every controller: their tables get no change
    /// trigger (`v2ChangeNotify`), so renewals drop no controller's caches.
    static var v3Leadership: Migration {
        Migration(
            version: "v3-leadership",
            statements: [
                "CREATE TABLE host_lease (host_id text PRIMARY KEY, renewed_at timestamptz NOT NULL)",
                """
                CREATE TABLE leader_lease (
                    name text PRIMARY KEY, holder text NOT NULL, term bigint NOT NULL CHECK (term > 0),
                    expires_at timestamptz NOT NULL)
                """,
            ])
    }

    // Each call is one statement, committed on its own (`read`'s connection), and not counted in
    // the generations: no cached answer depends on leases. `now()` is the database's clock.

    public func renewHostLease(hostId: String) async throws(SwiftletError) {
        try await read { db in
            try await db.execute(
                """
                INSERT INTO host_lease (host_id, renewed_at) VALUES (\(hostId), now())
                ON CONFLICT (host_id) DO UPDATE SET renewed_at = excluded.renewed_at
                """)
        }
    }

    public func hostLeaseAges() async throws(SwiftletError) -> [String: Duration] {
        try await read { db in
            var ages: [String: Duration] = [:]
            for row in try await db.rows(
                "SELECT host_id, (EXTRACT(EPOCH FROM now() - renewed_at) * 1000000)::bigint AS age FROM host_lease")
            {
                ages[try row.get("host_id", as: String.self)] = .microseconds(
                    max(0, try row.get("age", as: Int64.self)))
            }
            return ages
        }
    }

    public func forgetHostLease(hostId: String) async throws(SwiftletError) {
        try await read { db in try await db.execute("DELETE FROM host_lease WHERE host_id = \(hostId)") }
    }

    /// One statement: the upsert locks the lease's row (or waits for a racing insert of it) and
    /// checks its holder and expiry on the latest committed version, so racing controllers take
    /// turns and exactly one holds it.
    public func acquireLease(name: String, holder: String, duration: Duration) async throws(SwiftletError)
        -> UInt64?
    {
        let micros = duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
        return try await read { db -> UInt64? in
            let term = try await db.value(
                Int64.self,
                """
                INSERT INTO leader_lease AS lease (name, holder, term, expires_at)
                VALUES (\(name), \(holder), 1, now() + \(micros) * interval '1 microsecond')
                ON CONFLICT (name) DO UPDATE SET
                    term = CASE WHEN lease.holder = excluded.holder THEN lease.term ELSE lease.term + 1 END,
                    holder = excluded.holder, expires_at = excluded.expires_at
                WHERE lease.holder = excluded.holder OR lease.expires_at <= now()
                RETURNING term
                """)
            return term.map { UInt64($0) }
        }
    }

    public func releaseLease(name: String, holder: String) async throws(SwiftletError) {
        try await read { db in
            try await db.execute(
                "UPDATE leader_lease SET expires_at = '-infinity' WHERE name = \(name) AND holder = \(holder)")
        }
    }
}
