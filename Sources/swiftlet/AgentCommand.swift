import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SwiftletCore
import SwiftletHost
import SwiftletMetrics

/// `swiftlet agent`: this machine as a compute host of a controller elsewhere.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run this host's agent for a controller elsewhere (joins once with a token).",
        discussion: """
            The agent dials a controller's agent listener (`swiftlet server --agent-port`) over mutual TLS, \
            so hosts behind NAT work. The first start needs --join-token (from `swiftlet host join-token create` \
            on the controller): it checks the controller's CA against the token's pin, gets a client certificate \
            for this host and keeps it in <data>/identity; later starts need no token.
            """)

    @Option(
        help: """
            A controller's agent listener, https://ADDR:PORT; repeat it (or separate by commas) for each \
            controller of a cluster: the agent fails over between them.
            """)
    var controller: [String]
    @Option(help: "Single-use join token (first start only).") var joinToken: String?
    @Option(help: "Data directory (default: /var/lib/swiftlet-agent as root, else ~/.local/share/swiftlet-agent).")
    var data: String?
    @Option(help: "This host's name (default: the machine's host name).") var name: String?
    @Flag(help: "Allow a plain http:// controller (refused otherwise).") var insecure = false
    @Option(help: "Force the accelerator (tcg or kvm) instead of the calibrated choice.") var accelerator: String?
    @Flag(
        name: .customLong("confine-vmms"),
        help: "Run each VMM confined (its own user, seccomp, a chroot, a cgroup: docs/qemu-driver.md).")
    var confineVMMs = false
    @Option(help: "VMMs this host starts at once (default: 2 per CPU).") var maxConcurrentBoots: Int?
    @Option(help: "Device prefix of this host's bridges, TAPs and nftables tables: the controller's (default: swl).")
    var networkPrefix: String?
    @Option(help: "This host's address for VXLAN tunnels (default: the address it reaches the controller from).")
    var fabricAddress: String?
    @Option(
        help: """
            Serve GET /metrics (Prometheus, no token) on ADDR:PORT, or on 127.0.0.1:PORT given a port \
            alone (default: not served).
            """)
    var metricsListen: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"
    @Option(
        help: """
            Benchmarks only: run this many simulated hosts in this process, each its own agent (own \
            certificate, link and lease) with a fake hypervisor driver: no VMM, a guest READY at once. \
            They are named <name>-<i>, keep their data in <data>/sim-<i>, and join with the tokens of \
            --join-tokens-file.
            """)
    var simulate: Int?
    @Option(help: "With --simulate: a file with one join token per line, one per simulated host.")
    var joinTokensFile: String?
    @Option(help: "With --simulate: memory each simulated host reports, MiB.") var simulatedMemoryMib = 4096

    func run() async throws {
        bootstrapLogging(level: logLevel)
        let logger = Logger(label: "swiftlet.agent")
        let directory =
            data ?? (getuid() == 0 ? "/var/lib/swiftlet-agent" : NSHomeDirectory() + "/.local/share/swiftlet-agent")
        var settings = RemoteAgentSettings(
            controllers: controller.flatMap { $0.split(separator: ",").map(String.init) }, joinToken: joinToken,
            dataDirectory: directory,
            name: name ?? ProcessInfo.processInfo.hostName)
        settings.insecure = insecure
        settings.accelerator = accelerator
        settings.confineVMMs = confineVMMs
        settings.maxConcurrentBoots = maxConcurrentBoots
        if let networkPrefix { settings.networkPrefix = networkPrefix }
        if let fabricAddress {
            guard IPv4.parse(fabricAddress) != nil else {
                throw ValidationError("--fabric-address must be an IPv4 address")
            }
            settings.fabricAddress = fabricAddress
        }
        let metricsAddress = try metricsListen.map { text in
            guard let address = AgentMetricsListener.parse(text) else {
                throw ValidationError("--metrics-listen must be ADDR:PORT or PORT, got '\(text)'")
            }
            return address
        }
        let metrics = PrometheusMetrics()
        var agents: [RemoteAgent] = []
        if let simulate {
            guard (1...1000).contains(simulate) else { throw ValidationError("--simulate must be 1-1000") }
            let tokens = try joinTokensFile.map {
                try String(contentsOfFile: $0, encoding: .utf8).split(separator: "\n").map(String.init)
            }
            for index in 0..<simulate {
                var simulated = settings
                simulated.dataDirectory = directory + "/sim-\(index)"
                simulated.name = settings.name + "-\(index)"
                simulated.joinToken = tokens.flatMap { index < $0.count ? $0[index] : nil }
                simulated.simulatedMemoryMib = simulatedMemoryMib
                agents.append(try await RemoteAgent(settings: simulated, logger: logger, metrics: metrics))
            }
        } else {
            agents.append(try await RemoteAgent(settings: settings, logger: logger, metrics: metrics))
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = agents.map { .init(service: $0) }
        if let metricsAddress {
            services.append(
                .init(
                    service: AgentMetricsListener.application(
                        agents: agents, metrics: metrics, host: metricsAddress.host, port: metricsAddress.port,
                        logger: logger)))
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// `swiftlet agent-watchdog`: started by `swiftlet agent` in its own session; kills the VMMs of
/// movable instances once the agent is gone and the host's lease ran out (docs/agent-protocol.md).
struct AgentWatchdogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-watchdog", abstract: "Fence a host's movable VMs when its agent is gone (internal).",
        shouldDisplay: false)

    @Option(help: "The agent's data directory.") var data: String

    func run() async throws {
        bootstrapLogging(level: "info")
        await RemoteAgent.runFenceWatchdog(directory: data, logger: Logger(label: "swiftlet.agent-watchdog"))
    }
}
