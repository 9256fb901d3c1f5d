import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: ServerGroupStore {
    /// The states whose instances hold their host's memory and vCPUs (SQL list, a constant).
    static let liveStates = "('BUILDING', 'RUNNING', 'PAUSED')"

    /// Run by a write after its rows are in, under the placement lock: throws (so the
    /// transaction rolls back) when a host now holds more than its capacity or the group's
    /// policy is broken.
    static func check(_ claim: PlacementClaim, _ db: PostgresSession) async throws {
        if let quota = claim.quota {
            try quota.quota.verify(try await usage(projectId: quota.projectId, db), projectId: quota.projectId)
        }
        if let fence = claim.leader {
            // FOR SHARE: a takeover's update of the lease waits for this transaction to end.
            let held = try await db.value(
                Int64.self,
                """
                SELECT term FROM leader_lease
                WHERE name = \(fence.lease) AND holder = \(fence.holder) AND expires_at > now() FOR SHARE
                """)
            try fence.verify(held: held.map { UInt64($0) })
        }
        for hostId in claim.capacity.keys {
            let used = try await db.row(
                """
                SELECT COALESCE(SUM(memory_mib), 0)::bigint AS memory, COALESCE(SUM(vcpus), 0)::bigint AS vcpus
                FROM instance WHERE host_id = \(hostId) AND state IN \(unescaped: liveStates)
                """)
            try claim.verify(
                hostId: hostId, usedMemoryMib: try used?.get("memory", as: Int.self) ?? 0,
                usedVcpus: try used?.get("vcpus", as: Int.self) ?? 0)
        }
        guard let group = claim.group else { return }
        try claim.verifyGroup(
            memberHosts: try await db.values(
                String.self,
                "SELECT host_id FROM instance WHERE server_group_id = \(group.id) AND host_id IS NOT NULL"))
    }

    // MARK: - Server groups

    public func createServerGroup(_ group: ServerGroup) async throws(SwiftletError) {
        try await write { db in
            do {
                try await db.execute(
                    """
                    INSERT INTO server_group (id, project_id, name, policy, created_at)
                    VALUES (\(group.id), \(group.projectId), \(group.name), \(group.policy.rawValue), \(group.createdAt))
                    """)
            } catch  where Self.isUniqueViolation(error) {
                throw SwiftletError(
                    .conflict, "server_group.duplicate_name", "a server group named '\(group.name)' already exists")
            }
        }
    }

    public func serverGroups(projectId: String?) async throws(SwiftletError) -> [ServerGroup] {
        try await snapshot { db in
            var groups: [ServerGroup] = []
            for row in try await db.rows(
                """
                SELECT * FROM server_group WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY created_at, id
                """)
            {
                groups.append(try await Self.serverGroup(row, db))
            }
            return groups
        }
    }

    public func serverGroup(idOrName: String, projectId: String?) async throws(SwiftletError) -> ServerGroup? {
        try await snapshot { db in
            guard
                let row = try await db.row(
                    """
                    SELECT * FROM server_group WHERE (id = \(idOrName) OR name = \(idOrName))
                    AND (\(projectId)::text IS NULL OR project_id = \(projectId))
                    ORDER BY id = \(idOrName) DESC LIMIT 1
                    """)
            else { return nil }
            return try await Self.serverGroup(row, db)
        }
    }

    public func deleteServerGroup(id: String) async throws(SwiftletError) {
        try await write { db in
            let members =
                try await db.value(Int.self, "SELECT COUNT(*) FROM instance WHERE server_group_id = \(id)") ?? 0
            if members > 0 {
                throw SwiftletError(
                    .conflict, "server_group.in_use",
                    "server group '\(id)' has \(members) member instance(s): delete them first")
            }
            try await db.execute("DELETE FROM server_group WHERE id = \(id)")
        }
    }

    public func serverGroupHosts(id: String) async throws(SwiftletError) -> [String: String] {
        try await read { db in
            var hosts: [String: String] = [:]
            for row in try await db.rows(
                "SELECT id, host_id FROM instance WHERE server_group_id = \(id) AND host_id IS NOT NULL")
            {
                hosts[try row.get("id")] = try row.get("host_id", as: String.self)
            }
            return hosts
        }
    }

    private static func serverGroup(_ row: PostgresRandomAccessRow, _ db: PostgresSession) async throws
        -> ServerGroup
    {
        let id: String = try row.get("id")
        let members = try await db.values(
            String.self, "SELECT id FROM instance WHERE server_group_id = \(id) ORDER BY created_at, id")
        return ServerGroup(
            id: id, projectId: try row.get("project_id"), name: try row.get("name"),
            policy: GroupPolicy(rawValue: try row.get("policy")) ?? .antiAffinity, members: members,
            createdAt: try row.get("created_at"))
    }
}
