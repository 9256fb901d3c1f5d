import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Compute hosts made as network namespaces (as root): each joined to the controller's fabric
/// bridge by a veth pair, each running its own `swiftlet agent` process with its own data
/// directory, so its QEMU, TAPs and sockets live inside its namespace. Every name starts with the
/// fabric's own prefix, and `cleanUp` removes all of them whatever happened.
final class Fabric: @unchecked Sendable {
    // @unchecked: used by the one test that made it, one call at a time.
    let prefix: String
    let bridge: String
    /// `10.X.Y`: the controller is `.1` on the bridge, host i is `.(10 + i)`.
    let subnet: String
    var controllerAddress: String { subnet + ".1" }
    private(set) var agents: [AgentProcess] = []

    init() throws {
        let letters = "abcdefghijklmnopqrstuvwxyz"
        prefix = "sf" + String((0..<3).map { _ in letters.randomElement()! })
        bridge = prefix + "br"
        subnet = "10.\(Int.random(in: 200...249)).\(Int.random(in: 1...254))"
        try Self.run(["link", "add", bridge, "type", "bridge"])
        try Self.run(["addr", "add", controllerAddress + "/24", "dev", bridge])
        try Self.run(["link", "set", bridge, "up"])
    }

    static func run(_ arguments: [String]) throws {
        let result = HostNet.ip(arguments)
        guard result.status == 0 else { throw TestFailure("ip \(arguments.joined(separator: " ")): \(result.output)") }
    }

    func namespace(_ index: Int) -> String { prefix + "h\(index)" }
    func hostVeth(_ index: Int) -> String { prefix + "v\(index)" }

    /// A namespace host on the fabric, with loopback up and the controller as its gateway.
    func addHost(_ index: Int) throws {
        let namespace = namespace(index)
        let inside = prefix + "e\(index)"
        for step in [
            ["netns", "add", namespace],
            ["link", "add", hostVeth(index), "type", "veth", "peer", "name", inside],
            ["link", "set", inside, "netns", namespace],
            ["link", "set", hostVeth(index), "master", bridge, "up"],
            ["-n", namespace, "addr", "add", "\(subnet).\(10 + index)/24", "dev", inside],
            ["-n", namespace, "link", "set", inside, "up"],
            ["-n", namespace, "link", "set", "lo", "up"],
            ["-n", namespace, "route", "add", "default", "via", controllerAddress],
        ] {
            try Self.run(step)
        }
    }

    /// Cuts (or restores) a host's fabric link: a partition.
    func setLink(_ index: Int, up: Bool) throws {
        try Self.run(["link", "set", hostVeth(index), up ? "up" : "down"])
    }

    /// PIDs of the QEMU processes running in host `index`'s namespace for `instanceId`.
    func vmms(onHost index: Int, instanceId: String) -> [Int32] {
        let pids = HostNet.ip(["netns", "pids", namespace(index)]).output.split(separator: "\n").compactMap {
            Int32($0.trimmingCharacters(in: .whitespaces))
        }
        return pids.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), !stat.contains(") Z ")
            else { return false }
            let command = String(decoding: data, as: UTF8.self)
            return command.contains("qemu-system") && command.contains(instanceId)
        }
    }

    /// `servesMetrics`: with `--metrics-listen` on the namespace's loopback (`AgentProcess.metrics()`).
    func startAgent(
        _ index: Int, controllerPort: Int, token: String?, name: String? = nil, servesMetrics: Bool = false
    ) async throws -> AgentProcess {
        try await startAgent(
            index, controllerPorts: [controllerPort], token: token, name: name, servesMetrics: servesMetrics)
    }

    /// An agent that knows several controllers (on this machine, on the fabric's address), in order.
    func startAgent(
        _ index: Int, controllerPorts: [Int], token: String?, name: String? = nil, servesMetrics: Bool = false
    ) async throws -> AgentProcess {
        let agent = try AgentProcess(
            fabric: self, index: index,
            controller: controllerPorts.map { "https://\(controllerAddress):\($0)" }.joined(separator: ","),
            token: token, name: name ?? "node\(index)", servesMetrics: servesMetrics)
        agents.append(agent)
        try agent.start()
        return agent
    }

    /// Joins hosts `indices` with a token each, and waits until every one is UP.
    @discardableResult
    func join(_ indices: ClosedRange<Int>, client: SwiftletClient, agentPort: Int) async throws -> [AgentProcess] {
        var started: [AgentProcess] = []
        for index in indices {
            let token = try #require(try await client.createJoinToken(ttlSeconds: 600).token)
            started.append(try await startAgent(index, controllerPort: agentPort, token: token))
        }
        try await eventually("hosts \(indices) UP", timeout: .seconds(30)) {
            let up = Set(try await client.hosts().filter { $0.status == .up }.map(\.id))
            return indices.allSatisfy { up.contains("host-node\($0)") }
        }
        return started
    }

    func cleanUp() {
        for agent in agents { agent.cleanUp() }
        HostNet.removeAll(prefix: prefix)
    }
}

/// One `swiftlet agent` process inside a namespace host.
final class AgentProcess: @unchecked Sendable {
    // @unchecked: as Fabric.
    let index: Int
    let namespace: String
    let dataDirectory: String
    let controller: String
    let token: String?
    let name: String
    /// The controller's device prefix (the fabric's), so that the host carries its networks.
    let networkPrefix: String
    let servesMetrics: Bool
    private var process: Process?
    let logPath: String

    init(fabric: Fabric, index: Int, controller: String, token: String?, name: String, servesMetrics: Bool) throws {
        self.servesMetrics = servesMetrics
        self.index = index
        namespace = fabric.namespace(index)
        dataDirectory = NSTemporaryDirectory() + "swiftlet-agent-\(fabric.prefix)-\(index)"
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        logPath = dataDirectory + ".log"
        self.controller = controller
        self.token = token
        self.name = name
        networkPrefix = fabric.prefix
    }

    func start(token override: String? = nil) throws {
        var arguments = [
            "netns", "exec", namespace, Repo.swiftletBinary, "agent", "--controller", controller, "--data",
            dataDirectory, "--name", name, "--log-level", "debug", "--network-prefix", networkPrefix,
        ]
        if servesMetrics { arguments += ["--metrics-listen", "\(Self.metricsPort)"] }
        if let token = override ?? token { arguments += ["--join-token", token] }
        process = try Shell.launch("/usr/sbin/ip", arguments, appendingTo: logPath)
    }

    /// Where an agent that serves metrics listens, on its namespace's loopback.
    static let metricsPort = 9464

    /// The agent's `GET /metrics`, asked from inside its namespace.
    func metrics() throws -> String {
        let result = try Shell.run(
            "/usr/sbin/ip",
            ["netns", "exec", namespace, "/usr/bin/curl", "-sf", "http://127.0.0.1:\(Self.metricsPort)/metrics"],
            timeout: .seconds(10))
        guard result.status == 0 else { throw TestFailure("agent \(index) metrics: \(result.output)") }
        return result.output
    }

    /// Waits for the process to end on its own (a refused join); nil if it still runs after `timeout`.
    func exitStatus(within timeout: Duration) async -> Int32? {
        guard let process else { return nil }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    var identityDirectory: String { dataDirectory + "/identity" }

    /// SIGKILL: the crash case. Its VMs live on.
    func crash() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    /// What the agent's fence watchdog logged, with its last record.
    var fenceLog: String {
        ["/fence.log", "/fence.json", "/fence.pid"].map {
            "\($0): " + ((try? String(contentsOfFile: dataDirectory + $0, encoding: .utf8)) ?? "(none)")
        }.joined(separator: "\n")
    }

    func cleanUp() {
        if let process {
            process.terminate()
            process.waitUntilExit()
        }
        process = nil
        for pid in processes(mentioning: dataDirectory) { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: logPath)
    }
}

/// A server with the agent listener open on the fabric, and the fabric's hosts; cleans up all.
func withCluster(
    hosts: Int, leaseDurationMs: Int = 3000, leaseRenewMs: Int = 500,
    _ body: (ServerProcess, SwiftletClient, Fabric, Int) async throws -> Void
) async throws {
    let fabric = try Fabric()
    defer { fabric.cleanUp() }
    for index in 1...max(hosts, 1) where hosts > 0 { try fabric.addHost(index) }
    let agentPort = try ServerProcess.freePort()
    try await withServer(
        config: [
            "agentPort": agentPort, "agentNames": [fabric.controllerAddress], "leaseDurationMs": leaseDurationMs,
            "leaseRenewMs": leaseRenewMs, "networkPrefix": fabric.prefix, "fabricAddress": fabric.controllerAddress,
        ]
    ) { server, client in
        do {
            try await body(server, client, fabric, agentPort)
        } catch {
            for agent in fabric.agents { print("---- agent \(agent.index) log ----\n\(agent.log.suffix(3000))") }
            throw error
        }
    }
}
