import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

struct PoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Warm pools: unikernels booted ahead of demand, taken by matching `run`s.",
        subcommands: [Create.self, List.self, Remove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Keep SIZE pre-booted VMs of IMAGE (kit unikernels) for instances of the same shape.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Image id or name.") var image: String
        @Option(help: "How many pre-booted VMs to keep (1-64).") var size: Int
        @Option(help: "Flavor of the instances it serves (default tiny).") var flavor: String?
        @Option(help: "Memory in MiB, instead of a flavor.") var memory: Int?
        @Option(help: "vCPUs, instead of a flavor.") var vcpus: Int?

        func run() async throws {
            let pool = try await connection.withClient {
                try await $0.createPool(
                    CreatePoolRequest(image: image, flavor: flavor, memoryMib: memory, vcpus: vcpus, size: size))
            }
            if output.json { return try Output.json(pool) }
            print("\(pool.id)  image \(pool.imageId)  \(pool.memoryMib) MiB  \(pool.vcpus) vCPU  size \(pool.size)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List warm pools.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let pools = try await connection.withClient { try await $0.pools() }
            if output.json { return try Output.json(PoolList(pools)) }
            var table = TextTable(["ID", "IMAGE", "MEMORY", "VCPUS", "READY", "SIZE"], rightAligned: [2, 3, 4, 5])
            for pool in pools {
                table.add([
                    pool.id, pool.imageId, "\(pool.memoryMib) MiB", "\(pool.vcpus)", "\(pool.ready ?? 0)",
                    "\(pool.size)",
                ])
            }
            Output.table(table)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete a pool and its idle VMs (instances taken from it keep running).")
        @OptionGroup var connection: Connection
        @Argument(help: "Pool id.") var id: String

        func run() async throws {
            try await connection.withClient { try await $0.deletePool(id) }
        }
    }
}
