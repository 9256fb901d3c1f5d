import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move a running instance to another host, e.g. `swiftlet migrate web --to node2 --wait`.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Argument(help: "Instance id or name.") var instance: String
    @Option(help: "Target host id or name (admin); without it the scheduler picks one.") var to: String?
    @Option(
        help:
            "live: the whole VM moves while it runs; stateful: its application state moves into a fresh instance (images with a state_interface)."
    )
    var mode: String = MigrationMode.live.rawValue
    @Flag(help: "Wait until the migration ends, and fail if it did not complete.") var wait = false
    @Option(help: "Seconds --wait waits at most.") var timeout: Int = 300
    @Option(help: "The most the transfer may take of the link, in Mbit/s.") var maxBandwidth: Int?

    func run() async throws {
        let migration = try await connection.withClient { client in
            let started = try await client.migrate(
                instance, MigrateInstanceRequest(host: to, mode: mode, maxBandwidthMbps: maxBandwidth))
            guard wait else { return started }
            return try await Self.waitForEnd(of: started.id, client: client, timeout: .seconds(timeout))
        }
        if output.json { try Output.json(migration) } else { MigrationsCommand.show(migration) }
        if wait, migration.status != .completed {
            throw ClientError(
                .local("migration \(migration.id) \(migration.status.rawValue): \(migration.reason ?? "")"))
        }
    }

    /// Polls until the migration ends, printing each new status.
    static func waitForEnd(of id: String, client: SwiftletClient, timeout: Duration) async throws -> InstanceMigration {
        let deadline = ContinuousClock.now + timeout
        var last: MigrationStatus?
        while true {
            let migration = try await client.migration(id)
            if migration.status != last {
                Output.note("migration \(id): \(migration.status.rawValue)")
                last = migration.status
            }
            if migration.status.isFinal { return migration }
            guard ContinuousClock.now < deadline else {
                throw ClientError(.local("migration \(id) is still \(migration.status.rawValue) after \(timeout)"))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

struct MigrationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrations", abstract: "List migrations, newest first, or show one.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Option(help: "Only this instance's.") var instance: String?
    @Argument(help: "A migration id: show it.") var id: String?
    @Flag(help: "Call the migration off (it rolls back unless the target has taken over).") var cancel = false

    func validate() throws {
        if cancel && id == nil { throw ValidationError("--cancel needs a migration id") }
    }

    func run() async throws {
        if let id {
            let migration = try await connection.withClient {
                cancel ? try await $0.cancelMigration(id) : try await $0.migration(id)
            }
            if output.json { return try Output.json(migration) }
            return Self.show(migration)
        }
        let migrations = try await connection.withClient { try await $0.migrations(instance: instance) }
        if output.json { return try Output.json(MigrationList(migrations)) }
        var table = TextTable(
            ["ID", "INSTANCE", "MODE", "FROM", "TO", "STATUS", "DOWNTIME MS", "TOTAL MS"], rightAligned: [6, 7])
        for migration in migrations {
            table.add([
                migration.id, migration.instanceName, migration.mode.rawValue, migration.sourceHostId,
                migration.targetHostId, migration.status.rawValue, Self.milliseconds(migration.downtimeMs),
                Self.milliseconds(migration.totalMs),
            ])
        }
        Output.table(table)
    }

    static func show(_ migration: InstanceMigration) {
        var fields = [
            ("id", migration.id), ("instance", migration.instanceName), ("mode", migration.mode.rawValue),
            ("from", migration.sourceHostId), ("to", migration.targetHostId), ("status", migration.status.rawValue),
        ]
        if let reason = migration.reason { fields.append(("reason", reason)) }
        if let downtime = migration.downtimeMs { fields.append(("downtime", milliseconds(downtime) + " ms")) }
        if let total = migration.totalMs { fields.append(("total", milliseconds(total) + " ms")) }
        if let bytes = migration.transferredBytes { fields.append(("transferred", "\(bytes) bytes")) }
        Output.fields(fields)
    }

    static func milliseconds(_ value: Double?) -> String {
        value.map { String(format: "%.1f", $0) } ?? "-"
    }
}
