import ArgumentParser
import Logging
import SwiftletClient
import SwiftletController
import SwiftletCore

/// `swiftlet admin`: operations on a deployment's files and databases, run on its host while the
/// server is stopped (they do not go through the API).
struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin", abstract: "Operate on a stopped deployment's store.",
        subcommands: [MigrateStore.self])

    struct MigrateStore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate-store",
            abstract: "Move a single host's state from its SQLite file into an empty PostgreSQL database.",
            discussion: """
                Stop `swiftlet server` first (its instances keep running unless it was started with \
                --stop-instances-on-exit); a file another process still has open is refused. The target is \
                migrated to this version's schema, then every table is copied in one transaction: on any \
                failure the target is left as it was. Refused too: a target that already holds data, a \
                source whose schema is not this version's. Then start `swiftlet server --database \
                postgres://…` on the same data directory: it re-attaches to the running instances.
                """)

        @Option(help: "The SQLite store: sqlite:PATH (the server's default is <data>/swiftlet.sqlite).")
        var from: String

        @Option(help: "The PostgreSQL database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB.")
        var to: String

        func run() async throws {
            let source: StoreLocation
            let target: StoreLocation
            do {
                source = try StoreLocation.parse(from)
                target = try StoreLocation.parse(to)
            } catch { throw ValidationError(error.message) }
            guard case .sqlite = source else { throw ValidationError("--from must be sqlite:PATH") }
            guard case .postgres = target else {
                throw ValidationError("--to must be postgres://USER[:PASSWORD]@HOST[:PORT]/DB")
            }
            var logger = Logger(label: "swiftlet.migrate-store")
            logger.logLevel = .warning
            let imported = try await StoreLocation.migrate(from: source, to: target, logger: logger)
            var table = TextTable(["TABLE", "ROWS"], rightAligned: [1])
            for entry in imported.sorted(by: { $0.table < $1.table }) { table.add([entry.table, "\(entry.rows)"]) }
            Output.table(table)
            Output.note("moved \(imported.reduce(0) { $0 + $1.rows }) rows into PostgreSQL")
        }
    }
}
