import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

/// `swiftlet token`: API tokens with an expiry, listed and revoked (admin).
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "API tokens: issue one with an expiry, list them, revoke one (admin).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Issue a token for a project; prints only the secret (shown once).",
            discussion: "Example: export SWIFTLET_TOKEN=$(swiftlet token create team-a --ttl 8h)")
        @OptionGroup var options: IssueOptions

        func run() async throws { try await options.issue() }
    }

    /// What issuing a token takes (`token create`, `project token`).
    struct IssueOptions: ParsableArguments {
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Project id or name.") var project: String
        @Option(help: "How long the token works: 90s, 10m, 8h, 30d (default: until revoked).") var ttl: String?

        func issue() async throws {
            let seconds = try ttl.map(HostCommand.JoinTokenCommand.Create.seconds)
            let info = try await connection.withClient { client in
                let projects = try await client.projects()
                guard
                    let match = projects.first(where: { $0.id == project })
                        ?? projects.first(where: { $0.name == project })
                else { throw ClientError(.local("project.not_found: project '\(project)' not found")) }
                return try await client.createToken(project: match.id, ttlSeconds: seconds)
            }
            if output.json { return try Output.json(info) }
            guard let secret = info.token else { throw ClientError(.invalidResponse("the new token has no secret")) }
            let expiry = info.expiresAt.map { ", expires \(Format.date($0))" } ?? ""
            Output.note("token \(info.id) for project \(info.projectId)\(expiry) (shown only once):")
            print(secret)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List tokens (never secrets).")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Option(help: "Only this project's (id).") var project: String?

        func run() async throws {
            let tokens = try await connection.withClient { try await $0.tokens(project: project) }
            if output.json { return try Output.json(TokenList(tokens)) }
            var table = TextTable(["ID", "PROJECT", "ADMIN", "CREATED", "EXPIRES", "REVOKED"])
            for token in tokens {
                table.add([
                    token.id, token.projectId, token.admin ? "yes" : "no", Format.date(token.createdAt),
                    token.expiresAt.map(Format.date) ?? "never", token.revokedAt.map(Format.date) ?? "-",
                ])
            }
            Output.table(table)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "Revoke a token: it is refused (401 auth.token_revoked) from now on.")
        @OptionGroup var connection: Connection
        @Argument(help: "Token id (tok-…).") var id: String

        func run() async throws {
            let token = try await connection.withClient { try await $0.revokeToken(id) }
            print("revoked \(token.id)")
        }
    }
}

/// `swiftlet audit`: every change made through the API (admin).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Show the audit log: who changed what, when, and the result (admin).")
    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Option(help: "Only changes since: an RFC 3339 time, or an age such as 90s, 10m, 2h, 1d.") var since: String?
    @Option(help: "At most this many, newest first (1-1000, default 100).") var limit: Int?

    func run() async throws {
        let start = try since.map(Self.time)
        let entries = try await connection.withClient { try await $0.audit(since: start, limit: limit) }
        if output.json { return try Output.json(AuditList(entries)) }
        var table = TextTable(["TIME", "TOKEN", "USER", "PROJECT", "METHOD", "ROUTE", "RESOURCE", "STATUS"])
        for entry in entries {
            table.add([
                Format.date(entry.time), entry.tokenId ?? "-", entry.userId ?? "-", entry.projectId ?? "-",
                entry.method, entry.route, entry.resourceId ?? "-",
                String(entry.status) + (entry.code.map { " \($0)" } ?? ""),
            ])
        }
        Output.table(table)
    }

    static func time(_ text: String) throws -> Date {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        guard let seconds = try? HostCommand.JoinTokenCommand.Create.seconds(text) else {
            throw ValidationError("--since must be an RFC 3339 time or an age such as 10m; got '\(text)'")
        }
        return Date().addingTimeInterval(-TimeInterval(seconds))
    }
}
