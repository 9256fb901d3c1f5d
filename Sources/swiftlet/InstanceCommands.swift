import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

extension RestartPolicy: ExpressibleByArgument {}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Create and boot instances of an image.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption

    @Argument(help: "Image id or name (with --from-snapshot: the snapshot's, or none).") var image: String?
    @Option(help: "Instance name (with --count N: <name>-1 … <name>-N).") var name: String?
    @Option(help: "Flavor name (see `swiftlet flavor list`).") var flavor: String?
    @Option(help: "Memory in MiB (instead of --flavor).") var memory: Int?
    @Option(help: "Virtual CPUs (instead of --flavor).") var vcpus: Int?
    @Option(
        name: .customLong("arg"), help: "A key=value or bare word for the kernel command line (repeatable).",
        transform: checked(ArgumentCheck.configWord))
    var args: [String] = []
    @Option(
        help: "Publish a port HOST:GUEST[/tcp|/udp] (repeatable).",
        transform: checked { try ArgumentCheck.publish($0).description })
    var publish: [String] = []
    @Option(help: "How many instances to create.") var count: Int = 1
    @Option(help: "Restart policy: no, on-failure or always.") var restart: RestartPolicy?
    @Flag(help: "Answer only when every instance is RUNNING (guest READY) or ERROR.") var wait = false
    @Option(
        help: """
            Attach a NIC to this network, NAME or NAME:ADDRESS for a fixed address (repeatable: one NIC per \
            network, in order; see `swiftlet network list`).
            """)
    var network: [String] = []
    @Option(help: "Fixed address on the first --network (default: the next free one).") var ip: String?
    @Option(help: "Put the instance in this security group (repeatable).") var sg: [String] = []
    @Option(help: "Place on this host, by id or name (admin; it must be UP and not cordoned).") var host: String?
    @Option(help: "Join this server group: placed by its policy (see `swiftlet server-group`).") var serverGroup:
        String?
    @Option(help: "Start from this snapshot (id or name) instead of booting: the guest runs on from its state.")
    var fromSnapshot: String?

    func validate() throws {
        if image == nil, fromSnapshot == nil { throw ValidationError("give an image, or --from-snapshot") }
        if ip != nil, network.isEmpty { throw ValidationError("--ip needs --network") }
        if ip != nil, network.first?.contains(":") == true {
            throw ValidationError("give the first network's address once: --ip or --network NAME:ADDRESS")
        }
        if flavor != nil, memory != nil || vcpus != nil {
            throw ValidationError("use either --flavor or --memory/--vcpus")
        }
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        if let memory, memory < 1 { throw ValidationError("--memory must be a positive number of MiB") }
        if let vcpus, vcpus < 1 { throw ValidationError("--vcpus must be at least 1") }
    }

    func run() async throws {
        var request = CreateInstanceRequest(
            name: name, image: image ?? "", flavor: flavor, memoryMib: memory, vcpus: vcpus,
            args: args.isEmpty ? nil : args, count: count, restartPolicy: restart,
            publish: publish.isEmpty ? nil : publish, wait: wait)
        if !network.isEmpty {
            request.networks = network.enumerated().map { index, text in
                let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
                return NetworkAttachment(
                    network: parts.first ?? text, ip: parts.count == 2 ? parts[1] : index == 0 ? ip : nil)
            }
        }
        request.securityGroups = sg.isEmpty ? nil : sg
        request.host = host
        request.serverGroup = serverGroup
        request.fromSnapshot = fromSnapshot
        let instances = try await connection.withClient { try await $0.createInstances(request) }
        if output.json { return try Output.json(InstanceList(instances: instances)) }
        var table = TextTable(["ID", "NAME", "STATE", "PORTS", "READY (ms)"], rightAligned: [4])
        for instance in instances {
            table.add([
                instance.id, instance.name, instance.state.rawValue, Format.ports(instance.publishedPorts),
                Format.milliseconds(instance.timeline.total),
            ])
        }
        Output.table(table)
        let failed = instances.filter { $0.state == .error }
        for instance in failed { Output.error("\(instance.name): \(instance.reason ?? "failed to boot")") }
        if !failed.isEmpty { throw ExitCode.failure }
    }
}

struct PsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List instances (without stopped ones unless --all or --state).")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Option(help: "Only instances in this state (running, stopped, error, …).", transform: parseState)
    var state: InstanceState?
    @Flag(help: "Include stopped (and deleted) instances.") var all = false

    func run() async throws {
        let (instances, images) = try await connection.withClient { client in
            (try await client.instances(state: state), output.json ? [] : try await client.images())
        }
        let shown = all || state != nil ? instances : instances.filter { $0.state != .stopped && $0.state != .deleted }
        if output.json { return try Output.json(InstanceList(instances: shown)) }
        let imageNames = Dictionary(images.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        var table = TextTable(
            ["ID", "NAME", "IMAGE", "STATE", "VCPUS", "MEMORY", "PORTS", "READY (ms)"], rightAligned: [4, 5, 7])
        for instance in shown {
            table.add([
                instance.id, instance.name, imageNames[instance.imageId] ?? instance.imageId, instance.state.rawValue,
                String(instance.vcpus), "\(instance.memoryMib) MiB", Format.ports(instance.publishedPorts),
                Format.milliseconds(instance.timeline.total),
            ])
        }
        Output.table(table)
    }
}

struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show an instance and the timeline of its last boot.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Argument(help: "Instance id or name.") var instance: String

    func run() async throws {
        let (found, image) = try await connection.withClient { client in
            let found = try await client.instance(instance)
            return (found, try? await client.image(found.imageId))
        }
        if output.json { return try Output.json(found) }
        var state = found.state.rawValue
        if let reason = found.reason { state += " (\(reason))" }
        let size = "\(found.vcpus) vCPU, \(found.memoryMib) MiB"
        Output.fields([
            ("id", found.id), ("name", found.name), ("project", found.projectId),
            ("image", image.map { "\($0.name) (\(found.imageId))" } ?? found.imageId),
            ("state", state), ("desired", found.desired?.rawValue ?? "-"),
            (
                "observed",
                found.observed.map { "\($0.phase.rawValue) on \($0.hostId) at \(Format.date($0.at))" } ?? "-"
            ),
            ("task", found.task.map { "\($0.kind.rawValue) from \($0.from) to \($0.to)" } ?? "-"),
            ("size", found.flavor.map { "\($0): \(size)" } ?? size),
            ("args", found.args.isEmpty ? "-" : found.args.joined(separator: " ")),
            ("ports", Format.ports(found.publishedPorts)),
            ("networks", NetworkCommand.describe(found.ports ?? [])),
            (
                "security groups",
                (found.securityGroups ?? []).isEmpty ? "-" : (found.securityGroups ?? []).joined(separator: ", ")
            ),
            ("restart", "\(found.restartPolicy.rawValue) (restarted \(found.restartCount) times)"),
            ("host", found.hostId ?? "-"), ("server group", found.serverGroupId ?? "-"),
            ("created", Format.date(found.createdAt)),
            ("updated", Format.date(found.updatedAt)),
        ])
        print("")
        Output.table(Format.timelineTable(found.timeline))
    }
}

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Stop instances (gracefully, then forced after the timeout).")

    @OptionGroup var connection: Connection
    @Option(help: "Seconds to wait for a graceful stop before forcing it.") var timeout: Int?
    @Argument(help: "Instance ids or names.") var instances: [String]

    func validate() throws {
        guard !instances.isEmpty else { throw ValidationError("name at least one instance") }
        if let timeout, timeout < 0 { throw ValidationError("--timeout must not be negative") }
    }

    func run() async throws {
        try await connection.withClient { client in
            try await forEachInstance(instances, client) { try await client.stop($0, timeout: timeout) }
        }
    }
}

/// start, reboot, pause, resume, rm: one request per instance, the same output.
protocol InstanceActionCommand: AsyncParsableCommand {
    var connection: Connection { get }
    var instances: [String] { get }
    static func act(_ client: SwiftletClient, _ id: String) async throws -> Instance?
}

extension InstanceActionCommand {
    func validate() throws {
        guard !instances.isEmpty else { throw ValidationError("name at least one instance") }
    }

    func run() async throws {
        try await connection.withClient { client in
            try await forEachInstance(instances, client) { try await Self.act(client, $0) }
        }
    }
}

struct StartCommand: InstanceActionCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Boot stopped instances.")
    @OptionGroup var connection: Connection
    @Argument(help: "Instance ids or names.") var instances: [String]
    static func act(_ client: SwiftletClient, _ id: String) async throws -> Instance? { try await client.start(id) }
}

struct RebootCommand: InstanceActionCommand {
    static let configuration = CommandConfiguration(commandName: "reboot", abstract: "Reset running instances.")
    @OptionGroup var connection: Connection
    @Argument(help: "Instance ids or names.") var instances: [String]
    static func act(_ client: SwiftletClient, _ id: String) async throws -> Instance? { try await client.reboot(id) }
}

struct PauseCommand: InstanceActionCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Pause running instances.")
    @OptionGroup var connection: Connection
    @Argument(help: "Instance ids or names.") var instances: [String]
    static func act(_ client: SwiftletClient, _ id: String) async throws -> Instance? { try await client.pause(id) }
}

struct ResumeCommand: InstanceActionCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume paused instances.")
    @OptionGroup var connection: Connection
    @Argument(help: "Instance ids or names.") var instances: [String]
    static func act(_ client: SwiftletClient, _ id: String) async throws -> Instance? { try await client.resume(id) }
}

struct RmCommand: InstanceActionCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Delete instances (stopping them first if needed).")
    @OptionGroup var connection: Connection
    @Argument(help: "Instance ids or names.") var instances: [String]
    static func act(_ client: SwiftletClient, _ id: String) async throws -> Instance? {
        try await client.deleteInstance(id)
        return nil
    }
}

/// Applies `action` to each named instance (resolving names to ids first), printing one line per
/// instance. Keeps going after a failure and exits 1 at the end, unless the server itself is
/// unreachable or refuses the token.
func forEachInstance(
    _ names: [String], _ client: SwiftletClient, _ action: (String) async throws -> Instance?
) async throws {
    var failed = false
    for name in names {
        do {
            let id = try await client.instance(name).id
            if let instance = try await action(id) {
                print("\(instance.name)  \(instance.id)  \(instance.state.rawValue)")
            } else {
                print("\(name)  \(id)  deleted")
            }
        } catch let error as ClientError where error.status == nil || error.status == 401 {
            throw error
        } catch {
            Output.error("\(name): \(error)")
            failed = true
        }
    }
    if failed { throw ExitCode.failure }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print an instance's console.")

    @OptionGroup var connection: Connection
    @Flag(name: .shortAndLong, help: "Keep printing until the instance stops.") var follow = false
    @Argument(help: "Instance id or name.") var instance: String

    func run() async throws {
        try await connection.withClient { client in
            let id = try await client.instance(instance).id
            for try await chunk in client.console(id, follow: follow) { Output.raw(chunk) }
        }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "List an instance's lifecycle events.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Argument(help: "Instance id or name.") var instance: String

    func run() async throws {
        let events = try await connection.withClient { client in
            try await client.events(try await client.instance(instance).id)
        }
        if output.json { return try Output.json(EventList(events)) }
        var table = TextTable(["TIME (UTC)", "TYPE", "MESSAGE"])
        for event in events { table.add([Format.date(event.time), event.type, event.message]) }
        Output.table(table)
    }
}

struct TimelineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "timeline",
        abstract: "Boot phases over all instances: p50/p90 per phase and accepted → READY, in ms.")

    @OptionGroup var connection: Connection
    @OptionGroup var output: JSONOption
    @Flag(help: "Show the deployment workflow (compile / package / upload / schedule / boot / READY) of one instance.")
    var workflow = false
    @Argument(help: "With --workflow: the instance (default: the latest one booted from a built image).")
    var instance: String?

    /// The summary as JSON; times in milliseconds.
    struct Row: Encodable {
        var phase: String
        var samples: Int
        var p50Ms: Double
        var p90Ms: Double
    }

    func run() async throws {
        if workflow {
            return try await connection.withClient {
                try await Workflow.show(instance: instance, client: $0, json: output.json)
            }
        }
        let instances = try await connection.withClient { try await $0.instances() }
        let summary = TimelineSummary(instances.map(\.timeline))
        if output.json {
            return try Output.json(
                summary.rows.map {
                    Row(
                        phase: $0.label, samples: $0.samples, p50Ms: Double($0.p50) / 1e6,
                        p90Ms: Double($0.p90) / 1e6)
                })
        }
        guard !summary.rows.isEmpty else { return print("no instance has a recorded timeline yet") }
        Output.table(summary.table)
    }
}

/// Accepts `running` as well as `RUNNING`.
func parseState(_ text: String) throws -> InstanceState {
    guard let state = InstanceState(rawValue: text.uppercased()) else {
        let names = InstanceState.allCases.map { $0.rawValue.lowercased() }.joined(separator: ", ")
        throw ValidationError("unknown state '\(text)' (one of: \(names))")
    }
    return state
}

/// Turns a check from SwiftletClient into an ArgumentParser transform.
func checked<T>(_ check: @escaping @Sendable (String) throws -> T) -> @Sendable (String) throws -> T {
    { text in
        do {
            return try check(text)
        } catch {
            throw ValidationError(String(describing: error))
        }
    }
}
