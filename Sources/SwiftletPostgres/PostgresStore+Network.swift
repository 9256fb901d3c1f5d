import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: NetworkStore {
    // MARK: - Networks

    public func createNetwork(_ network: Network, quota: ProjectQuota?) async throws(SwiftletError) {
        guard let block = CIDRBlock.parse(network.cidr), let gateway = IPv4.parse(network.gateway) else {
            throw SwiftletError.badRequest("network.bad_cidr", "'\(network.cidr)' is not a CIDR block")
        }
        try await write { db in
            // The overlap check reads every network: without the lock, two creates of
            // overlapping blocks would each miss the other's uncommitted row.
            try await db.lock(.networkRange)
            for row in try await db.rows("SELECT name, first_address, prefix_length FROM network") {
                let other = CIDRBlock(
                    network: UInt32(try row.get("first_address", as: Int64.self)),
                    prefixLength: try row.get("prefix_length"))
                if other.overlaps(block) {
                    throw SwiftletError(
                        .conflict, "network.overlap",
                        "\(block.description) overlaps network '\(try row.get("name", as: String.self))' "
                            + "(\(other.description))")
                }
            }
            let vni = try await db.value(Int.self, "SELECT (COALESCE(MAX(vni), 0) + 1)::bigint FROM network") ?? 1
            guard vni < 1 << 24 else {
                throw SwiftletError(.conflict, "network.no_vni", "no VXLAN segment id is left for a new network")
            }
            do {
                try await db.execute(
                    """
                    INSERT INTO network (id, project_id, name, first_address, prefix_length, gateway, mtu, mode,
                    bridge, created_at, vni) VALUES (\(network.id), \(network.projectId), \(network.name),
                    \(Int64(block.network)), \(block.prefixLength), \(Int64(gateway)), \(network.mtu),
                    \(network.mode.rawValue), \(network.bridge), \(network.createdAt), \(vni))
                    """)
            } catch  where Self.isUniqueViolation(error) {
                throw SwiftletError(
                    .conflict, "network.duplicate_name", "a network named '\(network.name)' already exists")
            }
            if let quota {
                try quota.verify(try await Self.usage(projectId: network.projectId, db), projectId: network.projectId)
            }
        }
    }

    public func networks(projectId: String?) async throws(SwiftletError) -> [Network] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM network WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY created_at, id
                """
            ).map(Self.network)
        }
    }

    public func network(idOrName: String, projectId: String?) async throws(SwiftletError) -> Network? {
        try await read { db in
            try await db.row(
                """
                SELECT * FROM network WHERE (id = \(idOrName) OR name = \(idOrName))
                AND (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY id = \(idOrName) DESC LIMIT 1
                """
            ).map(Self.network)
        }
    }

    public func deleteNetwork(id: String) async throws(SwiftletError) {
        try await write { db in
            let ports = try await db.value(Int.self, "SELECT COUNT(*) FROM port WHERE network_id = \(id)") ?? 0
            if ports > 0 {
                let name = try await db.value(String.self, "SELECT name FROM network WHERE id = \(id)") ?? id
                throw SwiftletError(
                    .conflict, "network.in_use", "network '\(name)' has \(ports) port(s); delete its instances first")
            }
            try await db.execute("DELETE FROM network WHERE id = \(id)")
        }
    }

    private static func network(_ row: PostgresRandomAccessRow) throws -> Network {
        let block = CIDRBlock(
            network: UInt32(try row.get("first_address", as: Int64.self)), prefixLength: try row.get("prefix_length"))
        return Network(
            id: try row.get("id"), projectId: try row.get("project_id"), name: try row.get("name"),
            cidr: block.description, gateway: IPv4.format(UInt32(try row.get("gateway", as: Int64.self))),
            mtu: try row.get("mtu"), mode: NetworkMode(rawValue: try row.get("mode")) ?? .isolated,
            bridge: try row.get("bridge"), vni: try row.get("vni"), createdAt: try row.get("created_at"))
    }

    // MARK: - Ports (IPAM)

    public func attach(ports requests: [PortRequest], groupIds: [String], toInstances instanceIds: [String])
        async throws(SwiftletError) -> [NetworkPort]
    {
        try await write { db in
            // Allocations on one network take turns, each then reading the addresses the one
            // before it committed; the locks are taken in id order, so two attaches cannot deadlock.
            let networkIds = Set(requests.map(\.network.id)).sorted()
            if !networkIds.isEmpty {
                try await db.execute("SELECT id FROM network WHERE id = ANY(\(networkIds)) ORDER BY id FOR UPDATE")
            }
            var made: [NetworkPort] = []
            for request in requests {
                made.append(try await Self.allocate(request, db))
            }
            for instanceId in instanceIds {
                var groupNames: [String] = []
                for groupId in groupIds {
                    try await db.execute(
                        "INSERT INTO instance_security_group (instance_id, group_id) VALUES (\(instanceId), \(groupId))"
                    )
                    groupNames.append(
                        try await db.value(String.self, "SELECT name FROM security_group WHERE id = \(groupId)")
                            ?? groupId)
                }
                guard
                    let body = try await db.value(
                        String.self, "SELECT body FROM instance WHERE id = \(instanceId) FOR UPDATE")
                else { throw SwiftletError.notFound("instance", instanceId) }
                var instance = try RecordCoding.decode(Instance.self, body)
                instance.ports = made.filter { $0.instanceId == instanceId }
                instance.securityGroups = groupNames
                try await db.execute(
                    """
                    UPDATE instance SET body = \(try RecordCoding.json(instance)), revision = revision + 1
                    WHERE id = \(instanceId)
                    """)
            }
            return made
        }
    }

    /// One port in the caller's transaction, its network locked. The UNIQUE constraints remain
    /// the final guard: a clash (a random MAC or TAP collision) inserts nothing and is retried.
    private static func allocate(_ request: PortRequest, _ db: PostgresSession) async throws -> NetworkPort {
        for _ in 0..<PortRequest.draftAttempts {
            let used = Set(
                try await db.values(Int64.self, "SELECT address FROM port WHERE network_id = \(request.network.id)")
                    .map { UInt32($0) })
            let draft = try request.draft(used: used)
            // ON CONFLICT DO NOTHING, not a caught error: a failed statement would abort the
            // whole transaction.
            let inserted = try await db.changed(
                """
                INSERT INTO port (id, network_id, instance_id, address, mac, tap)
                VALUES (\(draft.id), \(request.network.id), \(request.instanceId), \(Int64(draft.address)),
                    \(draft.mac), \(draft.tap))
                ON CONFLICT DO NOTHING RETURNING 1
                """)
            if inserted { return draft.port(for: request) }
        }
        throw request.allocationFailed
    }

    public func ports(networkId: String?, instanceId: String?) async throws(SwiftletError) -> [NetworkPort] {
        try await read { db in
            try await db.rows(
                """
                SELECT port.*, network.name AS network_name, network.prefix_length, network.gateway
                FROM port JOIN network ON network.id = port.network_id
                WHERE (\(networkId)::text IS NULL OR port.network_id = \(networkId))
                AND (\(instanceId)::text IS NULL OR port.instance_id = \(instanceId))
                ORDER BY port.network_id, port.address
                """
            ).map { row in
                NetworkPort(
                    id: try row.get("id"), networkId: try row.get("network_id"),
                    networkName: try row.get("network_name"), instanceId: try row.get("instance_id"),
                    address: IPv4.format(UInt32(try row.get("address", as: Int64.self))),
                    prefixLength: try row.get("prefix_length"),
                    gateway: IPv4.format(UInt32(try row.get("gateway", as: Int64.self))), mac: try row.get("mac"),
                    tap: try row.get("tap"))
            }
        }
    }

    // MARK: - Security groups

    public func createSecurityGroup(_ group: SecurityGroup) async throws(SwiftletError) {
        try await write { db in
            do {
                try await db.execute(
                    """
                    INSERT INTO security_group (id, project_id, name, description, created_at)
                    VALUES (\(group.id), \(group.projectId), \(group.name), \(group.description), \(group.createdAt))
                    """)
            } catch  where Self.isUniqueViolation(error) {
                throw SwiftletError(
                    .conflict, "security_group.duplicate_name", "a security group named '\(group.name)' already exists")
            }
        }
    }

    public func securityGroups(projectId: String?) async throws(SwiftletError) -> [SecurityGroup] {
        try await snapshot { db in
            var groups: [SecurityGroup] = []
            for row in try await db.rows(
                """
                SELECT * FROM security_group WHERE (\(projectId)::text IS NULL OR project_id = \(projectId))
                ORDER BY created_at, id
                """)
            {
                groups.append(try await Self.securityGroup(row, db))
            }
            return groups
        }
    }

    public func securityGroup(idOrName: String, projectId: String?) async throws(SwiftletError) -> SecurityGroup? {
        try await snapshot { db in
            guard
                let row = try await db.row(
                    """
                    SELECT * FROM security_group WHERE (id = \(idOrName) OR name = \(idOrName))
                    AND (\(projectId)::text IS NULL OR project_id = \(projectId))
                    ORDER BY id = \(idOrName) DESC LIMIT 1
                    """)
            else { return nil }
            return try await Self.securityGroup(row, db)
        }
    }

    public func deleteSecurityGroup(id: String) async throws(SwiftletError) {
        try await write { db in
            let members =
                try await db.value(Int.self, "SELECT COUNT(*) FROM instance_security_group WHERE group_id = \(id)")
                ?? 0
            if members > 0 {
                throw SwiftletError(
                    .conflict, "security_group.in_use", "security group '\(id)' has \(members) instance(s) in it")
            }
            try await db.execute("DELETE FROM security_group WHERE id = \(id)")
        }
    }

    public func addRule(_ rule: SecurityGroupRule, groupId: String) async throws(SwiftletError) {
        try await write { db in
            // The group's row lock orders concurrent additions, so positions stay distinct.
            try await db.execute("SELECT id FROM security_group WHERE id = \(groupId) FOR UPDATE")
            try await db.execute(
                """
                INSERT INTO security_group_rule (id, group_id, protocol, port_min, port_max, source, position)
                SELECT \(rule.id), \(groupId), \(rule.proto.rawValue), \(rule.portMin)::integer, \(rule.portMax)::integer,
                \(rule.source),
                COALESCE(MAX(position), 0) + 1 FROM security_group_rule WHERE group_id = \(groupId)
                """)
        }
    }

    public func deleteRule(id: String, groupId: String) async throws(SwiftletError) {
        try await write { db in
            guard
                try await db.changed(
                    "DELETE FROM security_group_rule WHERE id = \(id) AND group_id = \(groupId) RETURNING 1")
            else { throw SwiftletError.notFound("rule", id) }
        }
    }

    public func securityGroupMembership() async throws(SwiftletError) -> [String: [String]] {
        try await read { db in
            var membership: [String: [String]] = [:]
            for row in try await db.rows(
                "SELECT instance_id, group_id FROM instance_security_group ORDER BY group_id")
            {
                membership[try row.get("instance_id"), default: []].append(try row.get("group_id"))
            }
            return membership
        }
    }

    private static func securityGroup(_ row: PostgresRandomAccessRow, _ db: PostgresSession) async throws
        -> SecurityGroup
    {
        let id: String = try row.get("id")
        let rules = try await db.rows(
            "SELECT * FROM security_group_rule WHERE group_id = \(id) ORDER BY position"
        ).map {
            SecurityGroupRule(
                id: try $0.get("id"), proto: RuleProtocol(rawValue: try $0.get("protocol")) ?? .any,
                portMin: try $0.get("port_min"), portMax: try $0.get("port_max"), source: try $0.get("source"))
        }
        return SecurityGroup(
            id: id, projectId: try row.get("project_id"), name: try row.get("name"),
            description: try row.get("description"), rules: rules, createdAt: try row.get("created_at"))
    }
}
