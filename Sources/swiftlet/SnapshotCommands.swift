import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract:
            "Save a running instance's whole state as a snapshot; `swiftlet run --from-snapshot` starts from it.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Argument(help: "Instance id or name.") var instance: String
    @Option(help: "Snapshot name, unique in the project (default: <instance>-<time>).") var name: String?

    func run() async throws {
        let snapshot = try await connection.withClient { try await $0.snapshot(instance: instance, name: name) }
        if output.json { return try Output.json(snapshot) }
        SnapshotsCommand.show(snapshot)
    }
}

struct SnapshotsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots", abstract: "List snapshots, show one, or delete one.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Argument(help: "A snapshot id or name: show it.") var id: String?
    @Option(help: "Delete this snapshot (id or name).") var delete: String?

    func run() async throws {
        if let delete {
            try await connection.withClient { try await $0.deleteSnapshot(delete) }
            return Output.note("snapshot \(delete) deleted")
        }
        if let id {
            let snapshot = try await connection.withClient { try await $0.snapshot(id) }
            if output.json { return try Output.json(snapshot) }
            return Self.show(snapshot)
        }
        let snapshots = try await connection.withClient { try await $0.snapshots() }
        if output.json { return try Output.json(SnapshotList(snapshots)) }
        var table = TextTable(["ID", "NAME", "INSTANCE", "IMAGE", "SIZE", "MEMORY", "CREATED"], rightAligned: [4, 5])
        for snapshot in snapshots {
            table.add([
                snapshot.id, snapshot.name, snapshot.instanceId, snapshot.imageId,
                Format.bytes(snapshot.sizeBytes), "\(snapshot.memoryMib) MiB",
                snapshot.createdAt.formatted(.iso8601),
            ])
        }
        Output.table(table)
    }

    static func show(_ snapshot: Snapshot) {
        Output.fields([
            ("id", snapshot.id), ("name", snapshot.name), ("instance", snapshot.instanceId),
            ("image", snapshot.imageId), ("sha256", snapshot.sha256), ("size", Format.bytes(snapshot.sizeBytes)),
            ("shape", "\(snapshot.memoryMib) MiB, \(snapshot.vcpus) vCPUs, \(snapshot.machineType ?? "-")"),
            ("hypervisor", "\(snapshot.hypervisor) \(snapshot.hypervisorVersion)"), ("host", snapshot.hostId),
            ("paused", String(format: "%.1f ms", snapshot.pausedMs)),
            ("created", snapshot.createdAt.formatted(.iso8601)),
        ])
    }
}
