import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: LeadershipStore {
    static func registerLeadershipMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v6-leadership") { db in
            try db.execute(
                sql: """
                    CREATE TABLE host_lease (host_id TEXT PRIMARY KEY, renewed_at REAL NOT NULL);
                    CREATE TABLE leader_lease (
                        name TEXT PRIMARY KEY, holder TEXT NOT NULL, term INTEGER NOT NULL CHECK (term > 0),
                        expires_at REAL NOT NULL);
                    """)
        }
    }

    /// Unix seconds by SQLite's clock: the host's, as every store on one file runs on one host.
    static let leaseClock = "((julianday('now') - 2440587.5) * 86400.0)"

    public func renewHostLease(hostId: String) async throws(SwiftletError) {
        try await leaseWrite { db in
            try db.cachedExecute(
                sql: """
                    INSERT INTO host_lease (host_id, renewed_at) VALUES (?, \(Self.leaseClock))
                    ON CONFLICT (host_id) DO UPDATE SET renewed_at = excluded.renewed_at
                    """,
                arguments: [hostId])
        }
    }

    public func hostLeaseAges() async throws(SwiftletError) -> [String: Duration] {
        try await read { db in
            var ages: [String: Duration] = [:]
            for row in try db.cachedRows(sql: "SELECT host_id, \(Self.leaseClock) - renewed_at AS age FROM host_lease")
            {
                ages[row["host_id"]] = .seconds(max(0, row["age"] as Double))
            }
            return ages
        }
    }

    public func forgetHostLease(hostId: String) async throws(SwiftletError) {
        try await leaseWrite { db in
            try db.execute(sql: "DELETE FROM host_lease WHERE host_id = ?", arguments: [hostId])
        }
    }

    /// SQLite's single writer makes the read, the decision and the write one step.
    public func acquireLease(name: String, holder: String, duration: Duration) async throws(SwiftletError)
        -> UInt64?
    {
        try await leaseWrite { db -> UInt64? in
            let now = try Double.fetchOne(db, sql: "SELECT \(Self.leaseClock)") ?? 0
            let expires = now + duration.totalSeconds
            guard
                let lease = try Row.fetchOne(
                    db, sql: "SELECT holder, term, expires_at FROM leader_lease WHERE name = ?", arguments: [name])
            else {
                try db.execute(
                    sql: "INSERT INTO leader_lease (name, holder, term, expires_at) VALUES (?, ?, 1, ?)",
                    arguments: [name, holder, expires])
                return 1
            }
            var term: Int64 = lease["term"]
            if (lease["holder"] as String) != holder {
                guard (lease["expires_at"] as Double) <= now else { return nil }
                term += 1
            }
            try db.execute(
                sql: "UPDATE leader_lease SET holder = ?, term = ?, expires_at = ? WHERE name = ?",
                arguments: [holder, term, expires, name])
            return UInt64(term)
        }
    }

    public func releaseLease(name: String, holder: String) async throws(SwiftletError) {
        try await leaseWrite { db in
            try db.execute(
                sql: "UPDATE leader_lease SET expires_at = 0 WHERE name = ? AND holder = ?", arguments: [name, holder])
        }
    }

    /// A write that moves no generation: no cached answer depends on leases.
    private func leaseWrite<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T)
        async throws(SwiftletError) -> T
    {
        do { return try await pool.write(body) } catch { throw Self.map(error) }
    }
}

extension Duration {
    /// In seconds, with the fraction.
    var totalSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
