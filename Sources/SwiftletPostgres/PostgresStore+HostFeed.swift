import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: HostFeedStore {
    /// Each host's feed; an append is announced on `changeChannel` as
    /// "<writer>:host_change:<host id>", so the controller holding the host's watch stream
    /// reads it at once.
    /// Each watch holder's writer (its controller's connections' application name), so that a
    /// holder that died is told from a live one by its connections.
    static var v5WatchHolderWriter: Migration {
        Migration(
            version: "v5-watch-holder-writer",
            statements: ["ALTER TABLE watch_holder ADD COLUMN writer text NOT NULL DEFAULT ''"])
    }

    static var v4HostFeed: Migration {
        Migration(
            version: "v4-host-feed",
            statements: [
                "CREATE TABLE store_identity (id text PRIMARY KEY)",
                "INSERT INTO store_identity (id) VALUES (replace(gen_random_uuid()::text, '-', ''))",
                "CREATE TABLE host_feed (host_id text PRIMARY KEY, revision bigint NOT NULL CHECK (revision >= 0))",
                """
                CREATE TABLE host_change (
                    host_id text NOT NULL, revision bigint NOT NULL, body bytea NOT NULL,
                    PRIMARY KEY (host_id, revision))
                """,
                """
                CREATE FUNCTION swiftlet_announce_host_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('swiftlet_changes',
                        current_setting('application_name') || ':host_change:' || NEW.host_id);
                    RETURN NULL;
                END $$
                """,
                """
                CREATE TRIGGER host_change_announce AFTER INSERT ON host_change
                FOR EACH ROW EXECUTE FUNCTION swiftlet_announce_host_change()
                """,
                "CREATE TABLE watch_holder (host_id text PRIMARY KEY, holder text NOT NULL)",
                """
                CREATE TABLE agent_call (
                    id text PRIMARY KEY, host_id text NOT NULL, request bytea NOT NULL, answer bytea,
                    taken boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now())
                """,
                "CREATE INDEX agent_call_host ON agent_call(host_id) WHERE NOT taken",
                """
                CREATE FUNCTION swiftlet_announce_agent_call() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF TG_OP = 'INSERT' THEN
                        PERFORM pg_notify('swiftlet_changes',
                            current_setting('application_name') || ':agent_call:' || NEW.host_id);
                    ELSIF NEW.answer IS NOT NULL AND OLD.answer IS NULL THEN
                        PERFORM pg_notify('swiftlet_changes',
                            current_setting('application_name') || ':agent_answer:' || NEW.id);
                    END IF;
                    RETURN NULL;
                END $$
                """,
                """
                CREATE TRIGGER agent_call_announce AFTER INSERT OR UPDATE ON agent_call
                FOR EACH ROW EXECUTE FUNCTION swiftlet_announce_agent_call()
                """,
                // A create that waits on one controller while its host reports to another.
                """
                CREATE FUNCTION swiftlet_announce_settled() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF TG_OP = 'DELETE' OR NEW.state <> 'BUILDING' THEN
                        PERFORM pg_notify('swiftlet_changes',
                            current_setting('application_name') || ':instance_settled:' || OLD.id);
                    END IF;
                    RETURN NULL;
                END $$
                """,
                """
                CREATE TRIGGER instance_settled AFTER UPDATE OF state OR DELETE ON instance
                FOR EACH ROW WHEN (OLD.state = 'BUILDING') EXECUTE FUNCTION swiftlet_announce_settled()
                """,
            ])
    }

    public func feedIdentity() async throws(SwiftletError) -> String {
        try await read { db in try await db.value(String.self, "SELECT id FROM store_identity LIMIT 1") ?? "" }
    }

    // Not counted in `generation`: the feed is no cached resource. The upsert's row lock on the
    // host's feed serialises its appends until commit, so revisions commit in order.
    public func appendHostChanges(_ changes: [HostChange]) async throws(SwiftletError) -> [UInt64] {
        try await transaction { db in try await Self.append(changes, db) }
    }

    /// Appends `changes` in the caller's transaction and returns their revisions. Hosts are taken
    /// in one order, so two transactions appending to the same hosts never wait on each other in a
    /// cycle.
    static func append(_ changes: [HostChange], _ db: PostgresSession) async throws -> [UInt64] {
        var revisions = [UInt64](repeating: 0, count: changes.count)
        let byHost = Dictionary(grouping: changes.indices, by: { changes[$0].hostId })
        for hostId in byHost.keys.sorted() {
            let indices = byHost[hostId] ?? []
            let last =
                try await db.value(
                    Int64.self,
                    """
                    INSERT INTO host_feed (host_id, revision) VALUES (\(hostId), \(Int64(indices.count)))
                    ON CONFLICT (host_id) DO UPDATE SET revision = host_feed.revision + EXCLUDED.revision
                    RETURNING revision
                    """) ?? 0
            var revision = last - Int64(indices.count)
            for index in indices {
                revision += 1
                revisions[index] = UInt64(revision)
                try await db.execute(
                    """
                    INSERT INTO host_change (host_id, revision, body)
                    VALUES (\(hostId), \(revision), \(ByteBuffer(data: changes[index].body)))
                    """)
                let capacity = Int64(HostFeed.capacity)
                if revision % Int64(HostFeed.trimEvery) == 0, revision > capacity {
                    try await db.execute(
                        "DELETE FROM host_change WHERE host_id = \(hostId) AND revision <= \(revision - capacity)")
                }
            }
        }
        return revisions
    }

    public func hostChanges(hostId: String, after revision: UInt64, limit: Int) async throws(SwiftletError)
        -> HostFeedPage
    {
        try await snapshot { db in
            let latest = try await db.value(Int64.self, "SELECT revision FROM host_feed WHERE host_id = \(hostId)") ?? 0
            let oldest =
                try await db.value(
                    Int64?.self, "SELECT min(revision) FROM host_change WHERE host_id = \(hostId)") ?? nil
            var entries: [HostFeedEntry] = []
            for row in try await db.rows(
                """
                SELECT revision, body FROM host_change WHERE host_id = \(hostId) AND revision > \(Int64(revision))
                ORDER BY revision LIMIT \(limit)
                """)
            {
                let body = try row.get("body", as: ByteBuffer.self)
                entries.append(
                    HostFeedEntry(
                        revision: UInt64(try row.get("revision", as: Int64.self)), body: Data(buffer: body)))
            }
            return HostFeedPage(
                entries: entries, latest: UInt64(latest), oldest: oldest.map(UInt64.init) ?? UInt64(latest) + 1)
        }
    }

    public func observeHostFeeds(_ observer: @escaping @Sendable (HostFeedSignal) -> Void) {
        feedObserver.withLock { $0 = observer }
    }

    public var routesAgentCalls: Bool { true }

    public func setWatchHolder(hostId: String, holder: String?, releasing: String?) async throws(SwiftletError) {
        try await transaction { db in
            if let holder {
                try await db.execute(
                    """
                    INSERT INTO watch_holder (host_id, holder, writer)
                    VALUES (\(hostId), \(holder), current_setting('application_name'))
                    ON CONFLICT (host_id) DO UPDATE SET holder = excluded.holder, writer = excluded.writer
                    """)
            } else {
                try await db.execute("DELETE FROM watch_holder WHERE host_id = \(hostId) AND holder = \(releasing)")
            }
        }
    }

    public func watchHolder(hostId: String) async throws(SwiftletError) -> String? {
        try await read { db in
            try await db.value(
                String.self,
                """
                SELECT holder FROM watch_holder AS watch WHERE host_id = \(hostId)
                AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = watch.writer)
                """)
        }
    }

    public func sendAgentCall(id: String, hostId: String, body: Data) async throws(SwiftletError) {
        try await transaction { db in
            try await db.execute("DELETE FROM agent_call WHERE created_at < now() - interval '1 minute'")
            try await db.execute(
                "INSERT INTO agent_call (id, host_id, request) VALUES (\(id), \(hostId), \(ByteBuffer(data: body)))")
        }
    }

    public func takeAgentCalls(hostId: String) async throws(SwiftletError) -> [(id: String, body: Data)] {
        try await transaction { db in
            try await db.rows(
                """
                UPDATE agent_call SET taken = true WHERE host_id = \(hostId) AND NOT taken RETURNING id, request
                """
            ).map { row in
                (try row.get("id", as: String.self), Data(buffer: try row.get("request", as: ByteBuffer.self)))
            }
        }
    }

    public func answerAgentCall(id: String, body: Data) async throws(SwiftletError) -> Bool {
        try await transaction { db in
            try await db.changed(
                "UPDATE agent_call SET answer = \(ByteBuffer(data: body)) WHERE id = \(id) AND answer IS NULL RETURNING 1"
            )
        }
    }

    public func takeAgentCallAnswer(id: String) async throws(SwiftletError) -> Data? {
        try await transaction { db in
            try await db.value(
                ByteBuffer.self, "DELETE FROM agent_call WHERE id = \(id) AND answer IS NOT NULL RETURNING answer"
            ).map { Data(buffer: $0) }
        }
    }

    public func endAgentCall(id: String) async throws(SwiftletError) {
        try await transaction { db in try await db.execute("DELETE FROM agent_call WHERE id = \(id)") }
    }
}
