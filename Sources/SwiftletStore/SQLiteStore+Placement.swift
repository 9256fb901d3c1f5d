import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: ServerGroupStore {
    /// The states whose instances hold their host's memory and vCPUs (SQL list).
    static let liveStates = "('BUILDING', 'RUNNING', 'PAUSED')"

    /// What placement reads and claims becomes real, indexed columns (they were JSON in `body`):
    /// an insert can then re-check its host's usage inside its own transaction cheaply.
    static func registerPlacementMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v5-placement") { db in
            try db.execute(
                sql: """
                    CREATE TABLE server_group (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        name TEXT NOT NULL, policy TEXT NOT NULL CHECK (policy IN ('affinity', 'anti-affinity')),
                        created_at DATETIME NOT NULL, UNIQUE (project_id, name));
                    ALTER TABLE instance ADD COLUMN host_id TEXT;
                    ALTER TABLE instance ADD COLUMN memory_mib INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE instance ADD COLUMN vcpus INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE instance ADD COLUMN server_group_id TEXT REFERENCES server_group(id);
                    UPDATE instance SET host_id = json_extract(body, '$.hostId'),
                        memory_mib = json_extract(body, '$.memoryMib'), vcpus = json_extract(body, '$.vcpus');
                    CREATE INDEX instance_placement ON instance(host_id, state, memory_mib, vcpus);
                    CREATE INDEX instance_server_group ON instance(server_group_id);
                    """)
        }
    }

    /// Run by an insert after its rows are in: throws (so the transaction rolls back) when a
    /// host now holds more than its capacity or the group's policy is broken.
    static func check(_ claim: PlacementClaim, _ db: Database) throws {
        if let quota = claim.quota {
            try quota.quota.verify(try usage(projectId: quota.projectId, db), projectId: quota.projectId)
        }
        if let fence = claim.leader {
            let held = try Int64.fetchOne(
                db,
                sql: "SELECT term FROM leader_lease WHERE name = ? AND holder = ? AND expires_at > \(leaseClock)",
                arguments: [fence.lease, fence.holder])
            try fence.verify(held: held.map { UInt64($0) })
        }
        for hostId in claim.capacity.keys {
            let used = try db.cachedRow(
                sql: """
                    SELECT COALESCE(SUM(memory_mib), 0) AS memory, COALESCE(SUM(vcpus), 0) AS vcpus FROM instance
                    WHERE host_id = ? AND state IN \(liveStates)
                    """,
                arguments: [hostId])
            try claim.verify(hostId: hostId, usedMemoryMib: used?["memory"] ?? 0, usedVcpus: used?["vcpus"] ?? 0)
        }
        guard let group = claim.group else { return }
        try claim.verifyGroup(
            memberHosts: try db.cachedValues(
                String.self, sql: "SELECT host_id FROM instance WHERE server_group_id = ? AND host_id IS NOT NULL",
                arguments: [group.id]))
    }

    // MARK: - Server groups

    public func createServerGroup(_ group: ServerGroup) async throws(SwiftletError) {
        try await write { db in
            do {
                try db.execute(
                    sql: "INSERT INTO server_group (id, project_id, name, policy, created_at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [
                        group.id, group.projectId, group.name, group.policy.rawValue,
                        DatabaseDate.text(group.createdAt),
                    ])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw SwiftletError(
                    .conflict, "server_group.duplicate_name", "a server group named '\(group.name)' already exists")
            }
        }
    }

    public func serverGroups(projectId: String?) async throws(SwiftletError) -> [ServerGroup] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM server_group WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id",
                arguments: [projectId]
            ).map { try Self.serverGroup($0, db) }
        }
    }

    public func serverGroup(idOrName: String, projectId: String?) async throws(SwiftletError) -> ServerGroup? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT * FROM server_group WHERE (id = ?1 OR name = ?1) AND (?2 IS NULL OR project_id = ?2)
                    ORDER BY id = ?1 DESC LIMIT 1
                    """,
                arguments: [idOrName, projectId]
            ).map { try Self.serverGroup($0, db) }
        }
    }

    public func deleteServerGroup(id: String) async throws(SwiftletError) {
        try await write { db in
            let members =
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM instance WHERE server_group_id = ?", arguments: [id])
                ?? 0
            if members > 0 {
                throw SwiftletError(
                    .conflict, "server_group.in_use",
                    "server group '\(id)' has \(members) member instance(s): delete them first")
            }
            try db.execute(sql: "DELETE FROM server_group WHERE id = ?", arguments: [id])
        }
    }

    public func serverGroupHosts(id: String) async throws(SwiftletError) -> [String: String] {
        try await read { db in
            var hosts: [String: String] = [:]
            for row in try db.cachedRows(
                sql: "SELECT id, host_id FROM instance WHERE server_group_id = ? AND host_id IS NOT NULL",
                arguments: [id])
            {
                hosts[row["id"]] = row["host_id"]
            }
            return hosts
        }
    }

    private static func serverGroup(_ row: Row, _ db: Database) throws -> ServerGroup {
        let id: String = row["id"]
        let members = try String.fetchAll(
            db, sql: "SELECT id FROM instance WHERE server_group_id = ? ORDER BY created_at, id", arguments: [id])
        return ServerGroup(
            id: id, projectId: row["project_id"], name: row["name"],
            policy: GroupPolicy(rawValue: row["policy"]) ?? .antiAffinity, members: members,
            createdAt: row["created_at"])
    }
}
