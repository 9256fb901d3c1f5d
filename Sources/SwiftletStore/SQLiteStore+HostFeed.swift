import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: HostFeedStore {
    static func registerHostFeedMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v7-host-feed") { db in
            try db.execute(
                sql: """
                    CREATE TABLE store_identity (id TEXT PRIMARY KEY);
                    INSERT INTO store_identity (id) VALUES (lower(hex(randomblob(16))));
                    CREATE TABLE host_feed (host_id TEXT PRIMARY KEY, revision INTEGER NOT NULL CHECK (revision >= 0));
                    CREATE TABLE host_change (
                        host_id TEXT NOT NULL, revision INTEGER NOT NULL, body BLOB NOT NULL,
                        PRIMARY KEY (host_id, revision));
                    """)
        }
    }

    public func feedIdentity() async throws(SwiftletError) -> String {
        try await read { db in try String.fetchOne(db, sql: "SELECT id FROM store_identity") ?? "" }
    }

    // Not counted in `generation`: the feed is no cached resource.
    public func appendHostChanges(_ changes: [HostChange]) async throws(SwiftletError) -> [UInt64] {
        do { return try await pool.write { db in try Self.append(changes, db) } } catch { throw Self.map(error) }
    }

    /// Appends `changes` in the caller's transaction and returns their revisions.
    static func append(_ changes: [HostChange], _ db: Database) throws -> [UInt64] {
        var revisions = [UInt64](repeating: 0, count: changes.count)
        for (hostId, indices) in Dictionary(grouping: changes.indices, by: { changes[$0].hostId }) {
            try db.cachedExecute(
                sql: """
                    INSERT INTO host_feed (host_id, revision) VALUES (?, ?)
                    ON CONFLICT (host_id) DO UPDATE SET revision = revision + excluded.revision
                    """, arguments: [hostId, indices.count])
            let last =
                try UInt64.fetchOne(db, sql: "SELECT revision FROM host_feed WHERE host_id = ?", arguments: [hostId])
                ?? 0
            var revision = last - UInt64(indices.count)
            for index in indices {
                revision += 1
                revisions[index] = revision
                try db.cachedExecute(
                    sql: "INSERT INTO host_change (host_id, revision, body) VALUES (?, ?, ?)",
                    arguments: [hostId, revision, changes[index].body])
                if revision % HostFeed.trimEvery == 0, revision > HostFeed.capacity {
                    try db.execute(
                        sql: "DELETE FROM host_change WHERE host_id = ? AND revision <= ?",
                        arguments: [hostId, revision - HostFeed.capacity])
                }
            }
        }
        return revisions
    }

    public func hostChanges(hostId: String, after revision: UInt64, limit: Int) async throws(SwiftletError)
        -> HostFeedPage
    {
        try await read { db in
            let latest =
                try UInt64.fetchOne(
                    db, sql: "SELECT revision FROM host_feed WHERE host_id = ?", arguments: [hostId]) ?? 0
            let oldest = try UInt64.fetchOne(
                db, sql: "SELECT min(revision) FROM host_change WHERE host_id = ?", arguments: [hostId])
            let entries = try db.cachedRows(
                sql:
                    "SELECT revision, body FROM host_change WHERE host_id = ? AND revision > ? ORDER BY revision LIMIT ?",
                arguments: [hostId, revision, limit]
            ).map { HostFeedEntry(revision: $0["revision"], body: $0["body"]) }
            return HostFeedPage(entries: entries, latest: latest, oldest: oldest ?? latest + 1)
        }
    }

    // One process writes a SQLite file: there is nobody else to hear, and every agent is
    // connected to this one controller.

    public func observeHostFeeds(_ observer: @escaping @Sendable (HostFeedSignal) -> Void) {}

    public var routesAgentCalls: Bool { false }

    public func setWatchHolder(hostId: String, holder: String?, releasing: String?) async throws(SwiftletError) {}

    public func watchHolder(hostId: String) async throws(SwiftletError) -> String? { nil }

    public func sendAgentCall(id: String, hostId: String, body: Data) async throws(SwiftletError) {
        throw Self.noRouting
    }

    public func takeAgentCalls(hostId: String) async throws(SwiftletError) -> [(id: String, body: Data)] { [] }

    public func answerAgentCall(id: String, body: Data) async throws(SwiftletError) -> Bool { false }

    public func takeAgentCallAnswer(id: String) async throws(SwiftletError) -> Data? { throw Self.noRouting }

    public func endAgentCall(id: String) async throws(SwiftletError) {}

    private static var noRouting: SwiftletError {
        SwiftletError(.conflict, "host.unreachable", "the host's agent is not connected to this controller")
    }
}
