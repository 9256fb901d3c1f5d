import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

extension NetworkMode: ExpressibleByArgument {}
extension RuleProtocol: ExpressibleByArgument {}

struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Create and manage networks (a bridge per network on each host).",
        subcommands: [Create.self, List.self, Show.self, Remove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a network, e.g. `swiftlet network create web --cidr 10.20.0.0/24`."
        )
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Network name.") var name: String
        @Option(help: "Address block a.b.c.d/prefix (prefix 8-30).") var cidr: String
        @Option(help: "The host's address on the network (default: the first address).") var gateway: String?
        @Option(help: "MTU (default 1500).") var mtu: Int?
        @Option(help: "nat (reach the host's uplink, masqueraded) or isolated (default nat).") var mode: NetworkMode?

        func run() async throws {
            let network = try await connection.withClient {
                try await $0.createNetwork(
                    CreateNetworkRequest(name: name, cidr: cidr, gateway: gateway, mtu: mtu, mode: mode))
            }
            if output.json { return try Output.json(network) }
            print(
                "\(network.name)  \(network.id)  \(network.cidr)  gateway \(network.gateway)  \(network.mode.rawValue)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List networks.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let networks = try await connection.withClient { try await $0.networks() }
            if output.json { return try Output.json(NetworkList(networks)) }
            var table = TextTable(["ID", "NAME", "CIDR", "GATEWAY", "MODE", "MTU", "BRIDGE"], rightAligned: [5])
            for network in networks {
                table.add([
                    network.id, network.name, network.cidr, network.gateway, network.mode.rawValue, "\(network.mtu)",
                    network.bridge,
                ])
            }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a network and its ports.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Network id or name.") var network: String

        func run() async throws {
            let (found, ports) = try await connection.withClient { client in
                (try await client.network(network), try await client.networkPorts(network))
            }
            if output.json { return try Output.json(found) }
            Output.fields([
                ("id", found.id), ("name", found.name), ("project", found.projectId), ("cidr", found.cidr),
                ("gateway", found.gateway), ("mode", found.mode.rawValue), ("mtu", "\(found.mtu)"),
                ("bridge", found.bridge), ("created", Format.date(found.createdAt)), ("ports", "\(ports.count)"),
            ])
            guard !ports.isEmpty else { return }
            print("")
            var table = TextTable(["PORT", "INSTANCE", "ADDRESS", "MAC", "TAP"])
            for port in ports { table.add([port.id, port.instanceId, port.address, port.mac, port.tap]) }
            Output.table(table)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete networks (without ports).")
        @OptionGroup var connection: Connection
        @Argument(help: "Network ids or names.") var networks: [String]

        func validate() throws {
            guard !networks.isEmpty else { throw ValidationError("name at least one network") }
        }

        func run() async throws {
            try await connection.withClient { client in
                for network in networks {
                    try await client.deleteNetwork(network)
                    print(network)
                }
            }
        }
    }
}

struct SecurityGroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sg",
        abstract: "Security groups: inbound denied except from members and what rules allow.",
        subcommands: [Create.self, List.self, Show.self, Remove.self, RuleAdd.self, RuleRemove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a security group.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Group name.") var name: String
        @Option(help: "Free text.") var description: String?

        func run() async throws {
            let group = try await connection.withClient {
                try await $0.createSecurityGroup(CreateSecurityGroupRequest(name: name, description: description))
            }
            if output.json { return try Output.json(group) }
            print("\(group.name)  \(group.id)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List security groups.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let groups = try await connection.withClient { try await $0.securityGroups() }
            if output.json { return try Output.json(SecurityGroupList(groups)) }
            var table = TextTable(["ID", "NAME", "RULES", "DESCRIPTION"], rightAligned: [2])
            for group in groups { table.add([group.id, group.name, "\(group.rules.count)", group.description]) }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a group and its rules.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Group id or name.") var group: String

        func run() async throws {
            let found = try await connection.withClient { try await $0.securityGroup(group) }
            if output.json { return try Output.json(found) }
            Output.fields([("id", found.id), ("name", found.name), ("description", found.description)])
            print("")
            var table = TextTable(["RULE", "PROTOCOL", "PORTS", "SOURCE"])
            for rule in found.rules {
                table.add([rule.id, rule.proto.rawValue, SecurityGroupCommand.ports(rule), rule.source])
            }
            Output.table(table)
        }
    }

    static func ports(_ rule: SecurityGroupRule) -> String {
        guard let low = rule.portMin else { return "all" }
        let high = rule.portMax ?? low
        return high == low ? "\(low)" : "\(low)-\(high)"
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete security groups (without members).")
        @OptionGroup var connection: Connection
        @Argument(help: "Group ids or names.") var groups: [String]

        func run() async throws {
            try await connection.withClient { client in
                for group in groups {
                    try await client.deleteSecurityGroup(group)
                    print(group)
                }
            }
        }
    }

    struct RuleAdd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allow", abstract: "Let traffic in, e.g. `swiftlet sg allow web tcp --port 80`.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Group id or name.") var group: String
        @Argument(help: "tcp, udp, icmp or any.") var proto: RuleProtocol
        @Option(help: "A port or a range LOW-HIGH (tcp/udp; default all).") var port: String?
        @Option(help: "Source CIDR (default 0.0.0.0/0).") var source: String?

        func run() async throws {
            var low: Int?
            var high: Int?
            if let port {
                let parts = port.split(separator: "-").map { Int($0) }
                guard (1...2).contains(parts.count), parts.allSatisfy({ $0 != nil }) else {
                    throw ValidationError("--port must be N or LOW-HIGH")
                }
                (low, high) = (parts[0], parts.last!)
            }
            let updated = try await connection.withClient {
                try await $0.addRule(
                    CreateSecurityGroupRuleRequest(proto: proto, portMin: low, portMax: high, source: source), to: group
                )
            }
            if output.json { return try Output.json(updated) }
            if let rule = updated.rules.last { print(rule.id) }
        }
    }

    struct RuleRemove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Delete a rule of a group.")
        @OptionGroup var connection: Connection
        @Argument(help: "Group id or name.") var group: String
        @Argument(help: "Rule id (see `swiftlet sg show`).") var rule: String

        func run() async throws {
            try await connection.withClient { try await $0.deleteRule(rule, from: group) }
        }
    }
}

extension NetworkCommand {
    /// `web 10.20.0.2/24 (02:…)` per port, for `swiftlet show`.
    static func describe(_ ports: [NetworkPort]) -> String {
        ports.isEmpty
            ? "-"
            : ports.map { "\($0.networkName) \($0.address)/\($0.prefixLength) (\($0.mac))" }.joined(separator: ", ")
    }
}
