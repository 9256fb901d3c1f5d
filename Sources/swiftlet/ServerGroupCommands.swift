import ArgumentParser
import SwiftletClient
import SwiftletCore

extension GroupPolicy: ExpressibleByArgument {}

struct ServerGroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server-group",
        abstract: "Server groups: place their instances together (affinity) or apart (anti-affinity).",
        subcommands: [Create.self, List.self, Show.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Create a group, e.g. `swiftlet server-group create web --policy anti-affinity`.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Group name.") var name: String
        @Option(help: "affinity (one host) or anti-affinity (a host each).") var policy: GroupPolicy

        func run() async throws {
            let group = try await connection.withClient {
                try await $0.createServerGroup(CreateServerGroupRequest(name: name, policy: policy.rawValue))
            }
            if output.json { return try Output.json(group) }
            print("\(group.name)  \(group.id)  \(group.policy.rawValue)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List server groups.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let groups = try await connection.withClient { try await $0.serverGroups() }
            if output.json { return try Output.json(ServerGroupList(groups)) }
            var table = TextTable(["ID", "NAME", "POLICY", "MEMBERS"], rightAligned: [3])
            for group in groups { table.add([group.id, group.name, group.policy.rawValue, "\(group.members.count)"]) }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Show a group and where its members are.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Group id or name.") var group: String

        func run() async throws {
            let (found, members) = try await connection.withClient { client in
                let found = try await client.serverGroup(group)
                var members: [Instance] = []
                for id in found.members { members.append(try await client.instance(id)) }
                return (found, members)
            }
            if output.json { return try Output.json(found) }
            Output.fields([("id", found.id), ("name", found.name), ("policy", found.policy.rawValue)])
            print("")
            var table = TextTable(["MEMBER", "NAME", "STATE", "HOST"])
            for member in members { table.add([member.id, member.name, member.state.rawValue, member.hostId ?? "-"]) }
            Output.table(table)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete", abstract: "Delete server groups (without members).", aliases: ["rm"])
        @OptionGroup var connection: Connection
        @Argument(help: "Group ids or names.") var groups: [String]

        func run() async throws {
            try await connection.withClient { client in
                for group in groups {
                    try await client.deleteServerGroup(group)
                    print(group)
                }
            }
        }
    }
}
