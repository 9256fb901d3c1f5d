import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: NetworkStore {
    /// Networks, ports and security groups. Addresses are integers so that UNIQUE(network_id,
    /// address) is what makes IPAM safe under concurrent creates.
    static func registerNetworkMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2-networks") { db in
            try db.execute(
                sql: """
                    CREATE TABLE network (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        name TEXT NOT NULL, first_address INTEGER NOT NULL, prefix_length INTEGER NOT NULL
                        CHECK (prefix_length BETWEEN 8 AND 30), gateway INTEGER NOT NULL,
                        mtu INTEGER NOT NULL CHECK (mtu BETWEEN 576 AND 9000),
                        mode TEXT NOT NULL CHECK (mode IN ('isolated', 'nat')), bridge TEXT NOT NULL UNIQUE,
                        created_at DATETIME NOT NULL, UNIQUE (project_id, name));
                    CREATE TABLE port (
                        id TEXT PRIMARY KEY, network_id TEXT NOT NULL REFERENCES network(id) ON DELETE RESTRICT,
                        instance_id TEXT NOT NULL REFERENCES instance(id) ON DELETE CASCADE,
                        address INTEGER NOT NULL, mac TEXT NOT NULL UNIQUE, tap TEXT NOT NULL UNIQUE,
                        UNIQUE (network_id, address));
                    CREATE INDEX port_instance ON port(instance_id);
                    CREATE TABLE security_group (
                        id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id),
                        name TEXT NOT NULL, description TEXT NOT NULL, created_at DATETIME NOT NULL,
                        UNIQUE (project_id, name));
                    CREATE TABLE security_group_rule (
                        id TEXT PRIMARY KEY, group_id TEXT NOT NULL REFERENCES security_group(id) ON DELETE CASCADE,
                        protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp', 'icmp', 'any')),
                        port_min INTEGER CHECK (port_min BETWEEN 1 AND 65535),
                        port_max INTEGER CHECK (port_max BETWEEN 1 AND 65535 AND port_max >= port_min),
                        source TEXT NOT NULL, position INTEGER NOT NULL);
                    CREATE TABLE instance_security_group (
                        instance_id TEXT NOT NULL REFERENCES instance(id) ON DELETE CASCADE,
                        group_id TEXT NOT NULL REFERENCES security_group(id) ON DELETE RESTRICT,
                        PRIMARY KEY (instance_id, group_id));
                    """)
        }
        // Networks span hosts: each one's VXLAN segment id, unique in the deployment.
        migrator.registerMigration("v5-network-vni") { db in
            try db.execute(
                sql: """
                    ALTER TABLE network ADD COLUMN vni INTEGER NOT NULL DEFAULT 0;
                    UPDATE network SET vni = (SELECT COUNT(*) FROM network AS older WHERE older.rowid <= network.rowid);
                    CREATE UNIQUE INDEX network_vni ON network(vni);
                    """)
        }
    }

    // MARK: - Networks

    public func createNetwork(_ network: Network, quota: ProjectQuota?) async throws(SwiftletError) {
        guard let block = CIDRBlock.parse(network.cidr), let gateway = IPv4.parse(network.gateway) else {
            throw SwiftletError.badRequest("network.bad_cidr", "'\(network.cidr)' is not a CIDR block")
        }
        try await write { db in
            for row in try Row.fetchAll(db, sql: "SELECT name, first_address, prefix_length FROM network") {
                let other = CIDRBlock(
                    network: UInt32(row["first_address"] as Int64), prefixLength: row["prefix_length"])
                if other.overlaps(block) {
                    throw SwiftletError(
                        .conflict, "network.overlap",
                        "\(block.description) overlaps network '\(row["name"] as String)' (\(other.description))")
                }
            }
            let vni = try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(vni), 0) + 1 FROM network") ?? 1
            guard vni < 1 << 24 else {
                throw SwiftletError(.conflict, "network.no_vni", "no VXLAN segment id is left for a new network")
            }
            do {
                try db.execute(
                    sql: """
                        INSERT INTO network (id, project_id, name, first_address, prefix_length, gateway, mtu, mode,
                        bridge, created_at, vni) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        network.id, network.projectId, network.name, Int64(block.network), block.prefixLength,
                        Int64(gateway), network.mtu, network.mode.rawValue, network.bridge, network.createdAt, vni,
                    ])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw SwiftletError(
                    .conflict, "network.duplicate_name", "a network named '\(network.name)' already exists")
            }
            if let quota {
                try quota.verify(try Self.usage(projectId: network.projectId, db), projectId: network.projectId)
            }
        }
    }

    public func networks(projectId: String?) async throws(SwiftletError) -> [Network] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM network WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id",
                arguments: [projectId]
            ).map(Self.network)
        }
    }

    public func network(idOrName: String, projectId: String?) async throws(SwiftletError) -> Network? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT * FROM network WHERE (id = ?1 OR name = ?1) AND (?2 IS NULL OR project_id = ?2)
                    ORDER BY id = ?1 DESC LIMIT 1
                    """,
                arguments: [idOrName, projectId]
            ).map(Self.network)
        }
    }

    public func deleteNetwork(id: String) async throws(SwiftletError) {
        try await write { db in
            let ports =
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM port WHERE network_id = ?", arguments: [id]) ?? 0
            if ports > 0 {
                let name = try String.fetchOne(db, sql: "SELECT name FROM network WHERE id = ?", arguments: [id]) ?? id
                throw SwiftletError(
                    .conflict, "network.in_use", "network '\(name)' has \(ports) port(s); delete its instances first")
            }
            try db.execute(sql: "DELETE FROM network WHERE id = ?", arguments: [id])
        }
    }

    private static func network(_ row: Row) -> Network {
        let block = CIDRBlock(network: UInt32(row["first_address"] as Int64), prefixLength: row["prefix_length"])
        return Network(
            id: row["id"], projectId: row["project_id"], name: row["name"], cidr: block.description,
            gateway: IPv4.format(UInt32(row["gateway"] as Int64)), mtu: row["mtu"],
            mode: NetworkMode(rawValue: row["mode"]) ?? .isolated, bridge: row["bridge"], vni: row["vni"],
            createdAt: row["created_at"])
    }

    // MARK: - Ports (IPAM)

    public func attach(ports requests: [PortRequest], groupIds: [String], toInstances instanceIds: [String])
        async throws(SwiftletError) -> [NetworkPort]
    {
        try await write { db in
            var made: [NetworkPort] = []
            for request in requests {
                made.append(try Self.allocate(request, db))
            }
            for instanceId in instanceIds {
                for groupId in groupIds {
                    try db.execute(
                        sql: "INSERT INTO instance_security_group (instance_id, group_id) VALUES (?, ?)",
                        arguments: [instanceId, groupId])
                }
                let groupNames = try groupIds.map { id in
                    try String.fetchOne(db, sql: "SELECT name FROM security_group WHERE id = ?", arguments: [id]) ?? id
                }
                guard
                    let body = try String.fetchOne(
                        db, sql: "SELECT body FROM instance WHERE id = ?", arguments: [instanceId])
                else { throw SwiftletError.notFound("instance", instanceId) }
                var instance = try RecordCoding.decode(Instance.self, body)
                instance.ports = made.filter { $0.instanceId == instanceId }
                instance.securityGroups = groupNames
                try db.execute(
                    sql: "UPDATE instance SET body = ? WHERE id = ?",
                    arguments: [try RecordCoding.json(instance), instanceId])
            }
            return made
        }
    }

    /// One port in the caller's transaction. The UNIQUE constraints, not the scan, are what
    /// rule out duplicates: a clash (another writer, a random MAC or TAP collision) is retried.
    private static func allocate(_ request: PortRequest, _ db: Database) throws -> NetworkPort {
        for _ in 0..<PortRequest.draftAttempts {
            let used = Set(
                try Int64.fetchAll(
                    db, sql: "SELECT address FROM port WHERE network_id = ?", arguments: [request.network.id]
                ).map { UInt32($0) })
            let draft = try request.draft(used: used)
            do {
                try db.execute(
                    sql: "INSERT INTO port (id, network_id, instance_id, address, mac, tap) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [
                        draft.id, request.network.id, request.instanceId, Int64(draft.address), draft.mac, draft.tap,
                    ])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                continue
            }
            return draft.port(for: request)
        }
        throw request.allocationFailed
    }

    public func ports(networkId: String?, instanceId: String?) async throws(SwiftletError) -> [NetworkPort] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT port.*, network.name AS network_name, network.prefix_length, network.gateway
                    FROM port JOIN network ON network.id = port.network_id
                    WHERE (?1 IS NULL OR port.network_id = ?1) AND (?2 IS NULL OR port.instance_id = ?2)
                    ORDER BY port.network_id, port.address
                    """,
                arguments: [networkId, instanceId]
            ).map { row in
                NetworkPort(
                    id: row["id"], networkId: row["network_id"], networkName: row["network_name"],
                    instanceId: row["instance_id"], address: IPv4.format(UInt32(row["address"] as Int64)),
                    prefixLength: row["prefix_length"], gateway: IPv4.format(UInt32(row["gateway"] as Int64)),
                    mac: row["mac"], tap: row["tap"])
            }
        }
    }

    // MARK: - Security groups

    public func createSecurityGroup(_ group: SecurityGroup) async throws(SwiftletError) {
        try await write { db in
            do {
                try db.execute(
                    sql:
                        "INSERT INTO security_group (id, project_id, name, description, created_at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [
                        group.id, group.projectId, group.name, group.description, DatabaseDate.text(group.createdAt),
                    ])
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                throw SwiftletError(
                    .conflict, "security_group.duplicate_name", "a security group named '\(group.name)' already exists")
            }
        }
    }

    public func securityGroups(projectId: String?) async throws(SwiftletError) -> [SecurityGroup] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM security_group WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id",
                arguments: [projectId]
            ).map { try Self.securityGroup($0, db) }
        }
    }

    public func securityGroup(idOrName: String, projectId: String?) async throws(SwiftletError) -> SecurityGroup? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT * FROM security_group WHERE (id = ?1 OR name = ?1) AND (?2 IS NULL OR project_id = ?2)
                    ORDER BY id = ?1 DESC LIMIT 1
                    """,
                arguments: [idOrName, projectId]
            ).map { try Self.securityGroup($0, db) }
        }
    }

    public func deleteSecurityGroup(id: String) async throws(SwiftletError) {
        try await write { db in
            let members =
                try Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM instance_security_group WHERE group_id = ?", arguments: [id]) ?? 0
            if members > 0 {
                throw SwiftletError(
                    .conflict, "security_group.in_use", "security group '\(id)' has \(members) instance(s) in it")
            }
            try db.execute(sql: "DELETE FROM security_group WHERE id = ?", arguments: [id])
        }
    }

    public func addRule(_ rule: SecurityGroupRule, groupId: String) async throws(SwiftletError) {
        try await write { db in
            let position =
                (try Int.fetchOne(
                    db, sql: "SELECT MAX(position) FROM security_group_rule WHERE group_id = ?", arguments: [groupId])
                    ?? 0) + 1
            try db.execute(
                sql: """
                    INSERT INTO security_group_rule (id, group_id, protocol, port_min, port_max, source, position)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [rule.id, groupId, rule.proto.rawValue, rule.portMin, rule.portMax, rule.source, position])
        }
    }

    public func deleteRule(id: String, groupId: String) async throws(SwiftletError) {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM security_group_rule WHERE id = ? AND group_id = ?", arguments: [id, groupId])
            if db.changesCount == 0 { throw SwiftletError.notFound("rule", id) }
        }
    }

    public func securityGroupMembership() async throws(SwiftletError) -> [String: [String]] {
        try await read { db in
            var membership: [String: [String]] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT instance_id, group_id FROM instance_security_group ORDER BY group_id")
            {
                membership[row["instance_id"], default: []].append(row["group_id"])
            }
            return membership
        }
    }

    private static func securityGroup(_ row: Row, _ db: Database) throws -> SecurityGroup {
        let id: String = row["id"]
        let rules = try Row.fetchAll(
            db, sql: "SELECT * FROM security_group_rule WHERE group_id = ? ORDER BY position", arguments: [id]
        ).map {
            SecurityGroupRule(
                id: $0["id"], proto: RuleProtocol(rawValue: $0["protocol"]) ?? .any, portMin: $0["port_min"],
                portMax: $0["port_max"], source: $0["source"])
        }
        return SecurityGroup(
            id: id, projectId: row["project_id"], name: row["name"], description: row["description"], rules: rules,
            createdAt: row["created_at"])
    }
}
