import Foundation
import Glibc
import SwiftletClient
import SwiftletCore

/// The namespace hosts of `swiftlet demo --hosts N`: each a network namespace joined to a fabric
/// bridge by a veth pair (the server's host is `.1` on it, host i is `.(10 + i)`), so its agent,
/// QEMU, bridges and tunnels live inside it.
struct DemoFabric: Sendable {
    /// Every fabric device and namespace name starts with `prefix`, every device of the demo's
    /// networks with `networkPrefix`: random, so that two demos on one machine never touch each other's.
    let prefix: String
    let networkPrefix: String
    let hosts: Int

    init(hosts: Int) {
        self.hosts = hosts
        let tag = String((0..<3).map { _ in "abcdefghijklmnopqrstuvwxyz".randomElement() ?? "x" })
        prefix = "df" + tag
        networkPrefix = "dn" + tag
    }

    /// `10.253.X`, picked at random so that two demos on one machine rarely meet.
    let subnet = "10.253.\(Int.random(in: 1...254))"
    var bridge: String { prefix + "br" }
    var controllerAddress: String { subnet + ".1" }

    func namespace(_ index: Int) -> String { prefix + "h\(index)" }

    func create() throws {
        destroy()
        try Self.ip(["link", "add", bridge, "type", "bridge"])
        try Self.ip(["addr", "add", controllerAddress + "/24", "dev", bridge])
        try Self.ip(["link", "set", bridge, "up"])
        for index in 1...hosts {
            let (namespace, outside, inside) = (namespace(index), prefix + "v\(index)", prefix + "e\(index)")
            for step in [
                ["netns", "add", namespace],
                ["link", "add", outside, "type", "veth", "peer", "name", inside],
                ["link", "set", inside, "netns", namespace],
                ["link", "set", outside, "master", bridge, "up"],
                ["-n", namespace, "addr", "add", "\(subnet).\(10 + index)/24", "dev", inside],
                ["-n", namespace, "link", "set", inside, "up"],
                ["-n", namespace, "link", "set", "lo", "up"],
                ["-n", namespace, "route", "add", "default", "via", controllerAddress],
            ] {
                try Self.ip(step)
            }
        }
    }

    /// Removes the namespaces (and with them everything made inside), the fabric bridge and the
    /// server host's devices and tables of the demo's networks. Safe to call when nothing is there.
    func destroy() {
        for index in 1...max(hosts, 1) { _ = try? Self.ip(["netns", "del", namespace(index)]) }
        for index in 1...max(hosts, 1) { _ = try? Self.ip(["link", "del", prefix + "v\(index)"]) }
        _ = try? Self.ip(["link", "del", bridge])
        let links = (try? Self.run("/usr/sbin/ip", ["-o", "link", "show"]).output) ?? ""
        for line in links.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2)
            guard fields.count >= 2 else { continue }
            let name = fields[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first.map(String.init) ?? ""
            if name.hasPrefix(networkPrefix) { _ = try? Self.ip(["link", "del", name]) }
        }
        for family in ["inet", "bridge"] {
            _ = try? Self.run("/usr/sbin/nft", ["delete", "table", family, "swiftlet_" + networkPrefix])
        }
    }

    /// What the check of an instance runs in: its host's namespace (nil: the server's own host).
    func namespace(ofHost hostId: String?) -> String? {
        guard let hostId, hostId.hasPrefix("host-node"), let index = Int(hostId.dropFirst("host-node".count)),
            (1...hosts).contains(index)
        else { return nil }
        return namespace(index)
    }

    @discardableResult
    static func ip(_ arguments: [String]) throws -> String {
        let result = try run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw ClientError(.local("ip \(arguments.joined(separator: " ")) failed: \(result.output)"))
        }
        return result.output
    }

    static func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `curl` in a host's namespace (or on this host); the body, or nil when it failed.
    static func curl(_ arguments: [String], in namespace: String?) -> String? {
        let curl = ["/usr/bin/curl", "-sf", "-m", "5"] + arguments
        let result =
            namespace.map { try? run("/usr/sbin/ip", ["netns", "exec", $0] + curl) }
            ?? (try? run(curl[0], Array(curl.dropFirst())))
        guard let result, result.status == 0 else { return nil }
        return result.output
    }
}

extension Demo {
    /// The main job over namespace hosts: the server with its agent listener on the fabric, one
    /// joined agent per host, one network spanning them, the instances placed by the scheduler and
    /// each checked from its own host. Returns whether every check passed.
    func performOnHosts(_ fabric: DemoFabric) async throws -> Bool {
        try fabric.create()
        log("fabric", "\(fabric.hosts) namespace hosts on \(fabric.bridge) (\(fabric.subnet).0/24)")
        let agentPort = try freePort()
        let config = workDir + "/server.json"
        try Data(#"{"networkPrefix": "\#(fabric.networkPrefix)"}"#.utf8).write(to: URL(fileURLWithPath: config))
        let client = try await startServer(extraArguments: [
            "--config", config, "--agent-port", String(agentPort), "--agent-host", fabric.controllerAddress,
        ])
        for index in 1...fabric.hosts {
            let token = try await client.createJoinToken(ttlSeconds: 600)
            try startAgent(
                index, fabric: fabric, controller: "https://\(fabric.controllerAddress):\(agentPort)",
                token: token.token ?? "")
        }
        try await waitForHosts(client, fabric: fabric)
        let images = try await buildAndUpload(client)
        let cidr = "10.252.\(Int.random(in: 1...254)).0/24"
        let network = try await client.createNetwork(CreateNetworkRequest(name: "demo", cidr: cidr, mode: .isolated))
        log("network", "demo \(cidr), VNI \(network.vni), on every host")

        var failures: [String] = []
        var booted: [Instance] = []
        for (name, image) in (1...webCount).map({ ("web-\($0)", images.http) }) + [("kv", images.kv)] {
            var request = CreateInstanceRequest(name: name, image: image, flavor: "small", wait: true)
            request.networks = [NetworkAttachment(network: "demo")]
            do {
                let created = try await client.createInstances(request)
                record(created)
                guard let instance = created.first, instance.state == .running else {
                    failures.append("\(name) did not boot: \(created.first?.reason ?? "no instance")")
                    continue
                }
                booted.append(instance)
                log(
                    "boot",
                    "\(name): READY in \(Format.milliseconds(instance.timeline.total)) ms on \(instance.hostId ?? "?") "
                        + "at \(instance.ports?.first?.address ?? "?")")
            } catch {
                failures.append("\(name): \(error)")
            }
        }
        for instance in booted {
            guard let address = instance.ports?.first?.address else { continue }
            let namespace = fabric.namespace(ofHost: instance.hostId)
            let base = "http://\(address)"
            if instance.name == "kv" {
                _ = DemoFabric.curl(
                    ["-X", "PUT", "--data", "from-\(instance.hostId ?? "")", base + "/kv/demo"], in: namespace)
                if DemoFabric.curl([base + "/kv/demo"], in: namespace)?.contains("from-") != true {
                    failures.append("kv: PUT then GET /kv/demo from its host failed")
                } else {
                    log("check", "kv: PUT then GET /kv/demo from \(instance.hostId ?? "?")")
                }
            } else if DemoFabric.curl([base + "/"], in: namespace)?.contains(instance.name) == true {
                log("check", "\(instance.name): GET \(base)/ from \(instance.hostId ?? "?") names it")
            } else {
                failures.append("\(instance.name): GET / from its host failed")
            }
        }
        var table = TextTable(["INSTANCE", "HOST", "ADDRESS", "READY (ms)"], rightAligned: [3])
        for instance in booted {
            table.add([
                instance.name, instance.hostId ?? "-", instance.ports?.first?.address ?? "-",
                Format.milliseconds(instance.timeline.total),
            ])
        }
        Output.raw("\nWhere each instance landed:\n" + table.render() + "\n")
        let spread = Set(booted.compactMap(\.hostId)).count
        Output.raw("\nPhase timeline over \(booted.count) instances on \(spread) hosts:\n")
        Output.raw(TimelineSummary(booted.map(\.timeline)).table.render() + "\n\n")
        if failures.isEmpty {
            log("result", "all \(webCount + 1) instances booted on \(spread) hosts and answered")
        } else {
            for failure in failures { log("FAILED", failure) }
        }
        return failures.isEmpty
    }

    private func startAgent(_ index: Int, fabric: DemoFabric, controller: String, token: String) throws {
        let agent = try ChildProcess.spawn(
            "/usr/sbin/ip",
            [
                "netns", "exec", fabric.namespace(index), try DemoEnvironment.executablePath(), "agent",
                "--controller", controller, "--join-token", token, "--data", workDir + "/agent-\(index)", "--name",
                "node\(index)", "--network-prefix", fabric.networkPrefix,
            ],
            log: workDir + "/agent-\(index).log")
        addAgent(agent)
    }

    private func waitForHosts(_ client: SwiftletClient, fabric: DemoFabric) async throws {
        let deadline = monotonicNanos() + 120 * 1_000_000_000
        let wanted = Set((1...fabric.hosts).map { "host-node\($0)" })
        while true {
            try Task.checkCancellation()
            let up = Set(try await client.hosts().filter { $0.status == .up }.map(\.id))
            if wanted.isSubset(of: up) { break }
            guard monotonicNanos() < deadline else {
                throw ClientError(
                    .local(
                        "hosts \(wanted.subtracting(up).sorted()) did not join within 120 s: "
                            + tail(of: workDir + "/agent-1.log")))
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        log("hosts", "\(fabric.hosts) agents joined over mutual TLS and are UP")
    }
}
