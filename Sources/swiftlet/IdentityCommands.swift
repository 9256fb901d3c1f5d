import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

/// Users of the OpenStack Identity API, for the `openstack` CLI and other OpenStack tools.
struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Users who sign in with a password through the OpenStack API (docs/openstack.md).",
        subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract:
                "Create a user in a project (admin), e.g. `echo secret | swiftlet user create ann --project web --password-stdin`."
        )
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "User name.") var name: String
        @Option(help: "The user's project (id or name); users of the admin project are admins.") var project: String
        @Flag(help: "Read the password from standard input (its first line).") var passwordStdin = false

        func run() async throws {
            guard passwordStdin else {
                throw ValidationError("give the password on standard input with --password-stdin")
            }
            guard let password = readLine(strippingNewline: true), !password.isEmpty else {
                throw ValidationError("no password on standard input")
            }
            let user = try await connection.withClient {
                try await $0.createUser(name: name, project: project, password: password)
            }
            if output.json { return try Output.json(user) }
            print("\(user.name)  \(user.id)  \(user.projectId)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List users.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let users = try await connection.withClient { try await $0.users() }
            var table = TextTable(["ID", "NAME", "PROJECT"])
            for user in users { table.add([user.id, user.name, user.projectId]) }
            Output.table(table)
        }
    }
}

/// `swiftlet openrc`: the `OS_*` variables for the `openstack` CLI, like Horizon's openrc file.
struct OpenRCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "openrc",
        abstract: "Print the OS_* variables for the openstack CLI (`eval \"$(swiftlet openrc --user ann)\"`).",
        discussion: """
            With --user, password authentication as that user: the script asks for the password, as \
            Horizon's does, and never holds it. Without, token authentication with this CLI's own token \
            (printed: keep the output private).
            """)
    @OptionGroup var connection: Connection
    @Option(help: "A user made with `swiftlet user create`.") var user: String?

    func run() async throws {
        let authURL = connection.resolvedURL.trimmingSuffix("/") + "/identity/v3"
        var lines = [
            "export OS_AUTH_URL=\(authURL)", "export OS_IDENTITY_API_VERSION=3", "export OS_REGION_NAME=RegionOne",
            "export OS_INTERFACE=public",
        ]
        if let user {
            let (found, projectName) = try await connection.withClient { client in
                guard let found = try await client.users().first(where: { $0.name == user }) else {
                    throw ClientError(.api(status: 404, code: "user.not_found", message: "user '\(user)' not found"))
                }
                let scope = try await client.identityScope()
                var projectName = scope.projectId == found.projectId ? scope.projectName : nil
                if projectName == nil, scope.admin {
                    projectName = try await client.projects().first { $0.id == found.projectId }?.name
                }
                return (found, projectName)
            }
            lines += [
                "export OS_USERNAME=\(shellQuoted(found.name))", "export OS_USER_DOMAIN_NAME=Default",
                "export OS_PROJECT_ID=\(found.projectId)", "export OS_PROJECT_DOMAIN_NAME=Default",
                "unset OS_TOKEN OS_AUTH_TYPE",
            ]
            if let projectName { lines.append("export OS_PROJECT_NAME=\(shellQuoted(projectName))") }
            lines += [
                "echo \"Please enter your Swiftlet password for user \(found.name): \" >&2",
                "read -sr OS_PASSWORD_INPUT", "export OS_PASSWORD=$OS_PASSWORD_INPUT",
            ]
        } else {
            guard let token = connection.resolvedToken else { throw ValidationError("no token: give --token") }
            let scope = try await connection.withClient { try await $0.identityScope() }
            lines += [
                "export OS_AUTH_TYPE=v3token", "export OS_TOKEN=\(shellQuoted(token))",
                "export OS_PROJECT_ID=\(scope.projectId)", "export OS_PROJECT_NAME=\(shellQuoted(scope.projectName))",
                "export OS_PROJECT_DOMAIN_NAME=Default", "unset OS_USERNAME OS_PASSWORD",
            ]
        }
        print(lines.joined(separator: "\n"))
    }

    private func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        var text = self
        while text.hasSuffix(suffix) { text.removeLast(suffix.count) }
        return text
    }
}
