import Foundation
import SwiftletClient
import SwiftletCore
import Synchronization
import Testing

@testable import SwiftletController

/// Live migration between namespace hosts, each with its own agent process: real QEMU on both,
/// the VM's state over TCP between the namespaces, the instance's network spanning both by VXLAN.
/// In `ClusterTests`, one at a time: each test's controller numbers its networks' VXLAN segments
/// from 1, and its own host's tunnels share the root namespace.
extension ClusterTests {
    /// `kv` on host 1 serves a client on host 1's segment of the network, which increments its
    /// counter without pause. The instance moves live to host 2 through the CLI: every increment
    /// the client saw acknowledged is in the counter afterwards (none lost, none twice), the
    /// client's requests all succeed (they only wait out the downtime), the instance's record, the
    /// VMMs and the migration say it is on host 2, and the bad requests are refused clearly.
    @Test func aRunningKVMovesLiveToAnotherHostAndKeepsEveryAcknowledgedIncrement() async throws {
        let kv = try await Kernels.path("kv")
        try await withCluster(hosts: 2) { server, client, fabric, agentPort in
            let agents = try await fabric.join(1...2, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kv, name: "kv")
            let prefix24 = "10.\(Int.random(in: 150...159)).\(Int.random(in: 0...255))"
            let network = try await client.createNetwork(
                CreateNetworkRequest(name: "overlay", cidr: prefix24 + ".0/24"))
            var request = CreateInstanceRequest(name: "kv", image: "kv", wait: true)
            request.networks = [NetworkAttachment(network: "overlay")]
            request.host = "node1"
            let created = try #require(try await client.createInstances(request).first)
            #expect(created.state == .running && created.hostId == "host-node1", "\(created.reason ?? "")")
            let address = try #require(created.ports?.first?.address)

            let counter = try CounterClient.plugged(
                into: network, onHost: 1, of: fabric, address: prefix24 + ".250/24", counter: address)
            let increment = { await counter.increment() }
            let before = try await counter.firstIncrement()

            // Bad requests first: nothing moves.
            await expectAPIError(409, "migration.same_host") {
                _ = try await client.migrate("kv", MigrateInstanceRequest(host: "node1"))
            }
            await expectAPIError(404) { _ = try await client.migrate("kv", MigrateInstanceRequest(host: "nowhere")) }
            await expectAPIError(400, "migration.bad_mode") {
                _ = try await client.migrate("kv", MigrateInstanceRequest(mode: "teleport"))
            }
            await expectAPIError(404) { _ = try await client.migrate("no-such-instance", MigrateInstanceRequest()) }
            try await client.cordonHost("node2", true)
            await expectAPIError(409, "host.cordoned") {
                _ = try await client.migrate("kv", MigrateInstanceRequest(host: "node2"))
            }
            try await client.cordonHost("node2", false)
            #expect(try await client.migrations(instance: "kv").isEmpty, "a refused move leaves no record")

            // The target's agent dies (its host is still UP for its lease): the move fails, and the
            // instance runs on, where it was, with the reason recorded.
            agents[1].crash()
            let doomed = try await client.migrate("kv", MigrateInstanceRequest(host: "node2"))
            #expect(doomed.status == .preparing && doomed.targetHostId == "host-node2")
            var failed = doomed
            try await eventually("the move to a dead agent fails", timeout: .seconds(90)) {
                failed = try await client.migration(doomed.id)
                return failed.status.isFinal
            }
            #expect(failed.status == .failed && failed.reason != nil, "\(failed)")
            let stayed = try await client.instance("kv")
            #expect(stayed.hostId == "host-node1" && stayed.state == .running && stayed.task == nil)
            #expect(await increment() == before + 1, "the instance serves on from its source")
            #expect(try await client.events("kv").map(\.type).contains("migration_failed"))
            try agents[1].start()
            // Its lease may be renewed before its watch stream is open: an instance that boots
            // there says the agent has its link again.
            var probe = CreateInstanceRequest(name: "probe", image: "kv", wait: true)
            probe.host = "node2"
            probe.networks = [NetworkAttachment(network: "overlay")]
            try await eventually("host 2's agent is back", timeout: .seconds(60)) {
                if (try? await client.instance("probe")) == nil { _ = try? await client.createInstances(probe) }
                return (try? await client.instance("probe").state) == .running
            }
            try await client.deleteInstance("probe")

            // A move throttled to 1 Mbit/s is called off while the state is sent: it rolls back.
            let slow = try await client.migrate("kv", MigrateInstanceRequest(host: "node2", maxBandwidthMbps: 1))
            var throttled = slow
            try await eventually("the throttled transfer starts", timeout: .seconds(60)) {
                throttled = try await client.migration(slow.id)
                return throttled.status != .preparing
            }
            #expect(throttled.status == .running, "\(throttled)")
            try await Task.sleep(for: .milliseconds(300))
            let cancelCLI = try await offThePool {
                try Shell.run(
                    Repo.swiftletBinary,
                    ["migrations", slow.id, "--cancel", "--url", server.url, "--token", server.adminToken],
                    timeout: .seconds(30))
            }
            #expect(cancelCLI.status == 0, "\(cancelCLI.output)")
            var cancelled = slow
            try await eventually("the cancelled move ends", timeout: .seconds(60)) {
                cancelled = try await client.migration(slow.id)
                return cancelled.status.isFinal
            }
            #expect(cancelled.status == .cancelled && cancelled.cancelRequested == true, "\(cancelled)")
            let home = try await client.instance("kv")
            #expect(home.hostId == "host-node1" && home.state == .running && home.task == nil)
            #expect(fabric.vmms(onHost: 2, instanceId: home.id).isEmpty, "the target's VMM is gone")
            #expect(await increment() == before + 2, "the instance serves on from its source")
            await expectAPIError(409, "migration.ended") { _ = try await client.cancelMigration(slow.id) }

            // Faults in the middle of a transfer (throttled to 1 Mbit/s so that it lasts): the
            // target's VMM killed, then host 2's link cut. Each rolls back, and the instance serves
            // on from its source.
            let running: @Sendable (InstanceMigration) async throws -> Void = { move in
                try await eventually("the transfer starts", timeout: .seconds(60)) {
                    try await client.migration(move.id).status == .running
                }
            }
            let ended: @Sendable (InstanceMigration) async throws -> InstanceMigration = { move in
                var last = move
                try await eventually("the move ends", timeout: .seconds(60)) {
                    last = try await client.migration(move.id)
                    return last.status.isFinal
                }
                return last
            }
            let killed = try await client.migrate("kv", MigrateInstanceRequest(host: "node2", maxBandwidthMbps: 1))
            try await running(killed)
            let targetVMMs = fabric.vmms(onHost: 2, instanceId: home.id)
            #expect(targetVMMs.count == 1)
            for pid in targetVMMs { kill(pid, SIGKILL) }
            let afterKill = try await ended(killed)
            #expect(afterKill.status == .failed, "\(afterKill)")
            #expect(try await client.instance("kv").hostId == "host-node1")
            #expect(await increment() == before + 3, "the instance serves on from its source")

            let cut = try await client.migrate("kv", MigrateInstanceRequest(host: "node2", maxBandwidthMbps: 1))
            try await running(cut)
            try Fabric.run(["link", "set", fabric.hostVeth(2), "down"])
            let afterCut = try await ended(cut)
            try Fabric.run(["link", "set", fabric.hostVeth(2), "up"])
            #expect(afterCut.status == .failed && afterCut.reason?.contains("host.down") == true, "\(afterCut)")
            let source = try await client.instance("kv")
            #expect(source.hostId == "host-node1" && source.state == .running && source.task == nil)
            #expect(await increment() == before + 4, "the instance serves on from its source")
            try await eventually("host 2 is back, its link working, its half-received VM gone", timeout: .seconds(90)) {
                if (try? await client.instance("probe")) == nil { _ = try? await client.createInstances(probe) }
                let probed = (try? await client.instance("probe").state) == .running
                return probed && fabric.vmms(onHost: 2, instanceId: home.id).isEmpty
            }
            try await client.deleteInstance("probe")

            // The client increments while the instance moves; each answer must be the one before + 1.
            let (acknowledged, failures, refused, longestGap) = try await counter.incrementing(from: before + 4) {
                try Shell.run(
                    Repo.swiftletBinary,
                    [
                        "migrate", "kv", "--to", "node2", "--wait", "--json", "--url", server.url, "--token",
                        server.adminToken,
                    ],
                    timeout: .seconds(120))
            }
            #expect(failures == 0 && refused == 0, "\(failures) requests failed, \(refused) were refused")
            #expect(acknowledged > before + 7, "the client kept incrementing during the move")
            #expect(await increment() == acknowledged + 1, "the counter holds every acknowledged increment")

            let moved = try await client.instance("kv")
            #expect(moved.hostId == "host-node2" && moved.state == .running && moved.task == nil)
            #expect(fabric.vmms(onHost: 1, instanceId: moved.id).isEmpty, "the source VMM is gone")
            #expect(fabric.vmms(onHost: 2, instanceId: moved.id).count == 1)
            let migration = try #require(try await client.migrations(instance: "kv").first)
            #expect(
                migration.status == .completed && migration.sourceHostId == "host-node1", "\(migration.reason ?? "")")
            #expect((migration.transferredBytes ?? 0) > 0 && migration.downtimeMs != nil)
            let events = try await client.events("kv").map(\.type)
            #expect(events.contains("migrating") && events.contains("migrated"))
            print(
                "kv live migration: downtime \(migration.downtimeMs ?? -1) ms (QEMU), total \(migration.totalMs ?? -1) ms, "
                    + "\(migration.transferredBytes ?? 0) bytes; longest gap the client saw \(longestGap)")

            // Draining host 2 cordons it and moves what runs there: kv goes back to host 1 (the
            // controller's own host, which could take it too, is cordoned for this).
            for host in try await client.hosts() where !host.id.hasPrefix("host-node") {
                try await client.cordonHost(host.id, true)
            }
            let drain = try await offThePool {
                try Shell.run(
                    Repo.swiftletBinary,
                    ["host", "drain", "node2", "--wait", "--url", server.url, "--token", server.adminToken],
                    timeout: .seconds(120))
            }
            #expect(drain.status == 0 && drain.output.contains("completed"), "\(drain.output)")
            #expect(try await client.instance("kv").hostId == "host-node1")
            #expect(try await client.hosts().first { $0.id == "host-node2" }?.cordoned == true)
            #expect(await increment() == acknowledged + 2, "the counter went along")
            #expect(fabric.vmms(onHost: 2, instanceId: moved.id).isEmpty)

            // The controller's own host (its agent in process) takes a move too.
            let local = try #require(try await client.hosts().first { !$0.id.hasPrefix("host-node") })
            try await client.cordonHost(local.id, false)
            let toLocal = try await client.migrate("kv", MigrateInstanceRequest(host: local.id))
            var landed = toLocal
            try await eventually("the move to the controller's host ends", timeout: .seconds(60)) {
                landed = try await client.migration(toLocal.id)
                return landed.status.isFinal
            }
            #expect(landed.status == .completed, "\(landed)")
            #expect(try await client.instance("kv").hostId == local.id)
            #expect(await increment() == acknowledged + 3, "the counter went along again")

            // On its new host it is an instance like any other: it stops, and a stopped one does not move.
            _ = try await client.stop("kv", timeout: 5)
            await expectAPIError(409, "migration.not_running") {
                _ = try await client.migrate("kv", MigrateInstanceRequest())
            }
            try await client.deleteInstance("kv")
        }
    }
    /// `kv` declares the kit's state interface. While a client on host 1's segment increments its
    /// counter without pause, it moves by its state to host 2 through the CLI: a fresh kv boots
    /// there silent, the source is quiesced and paused, its state goes over, and the target takes
    /// over the address. Every acknowledged increment is in the counter afterwards, no request
    /// fails (they wait out the switch), and a few hundred bytes move instead of the VM's memory.
    @Test func aKVMovesByItsStateAndKeepsEveryAcknowledgedIncrement() async throws {
        let kv = try await Kernels.path("kv")
        try await withCluster(hosts: 2) { server, client, fabric, agentPort in
            _ = try await fabric.join(1...2, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kv, name: "kv", properties: ["state_interface": "kit-console"])
            _ = try await client.uploadImage(path: kv, name: "kv-opaque")
            await expectAPIError(400, "image.bad_state_interface") {
                _ = try await client.uploadImage(path: kv, name: "kv-bad", properties: ["state_interface": "telepathy"])
            }
            let prefix24 = "10.\(Int.random(in: 160...169)).\(Int.random(in: 0...255))"
            let network = try await client.createNetwork(CreateNetworkRequest(name: "edge", cidr: prefix24 + ".0/24"))
            for (name, image) in [("kv", "kv"), ("opaque", "kv-opaque")] {
                var request = CreateInstanceRequest(name: name, image: image, wait: true)
                request.networks = [NetworkAttachment(network: "edge")]
                request.host = "node1"
                let created = try #require(try await client.createInstances(request).first)
                #expect(created.state == .running && created.hostId == "host-node1", "\(created.reason ?? "")")
            }
            await expectAPIError(400, "migration.no_state_interface") {
                _ = try await client.migrate("opaque", MigrateInstanceRequest(host: "node2", mode: "stateful"))
            }
            try await client.deleteInstance("opaque")
            let address = try #require(try await client.instance("kv").ports?.first?.address)
            let counter = try CounterClient.plugged(
                into: network, onHost: 1, of: fabric, address: prefix24 + ".250/24", counter: address)
            let increment = { await counter.increment() }
            let before = try await counter.firstIncrement()

            let (acknowledged, failures, refused, longestGap) = try await counter.incrementing(from: before) {
                try Shell.run(
                    Repo.swiftletBinary,
                    [
                        "migrate", "kv", "--to", "node2", "--mode", "stateful", "--wait", "--url", server.url,
                        "--token", server.adminToken,
                    ],
                    timeout: .seconds(120))
            }
            // The quiesced source refuses connections until the target takes over: clients retry.
            #expect(failures == 0, "\(failures) requests failed while the instance moved")
            #expect(acknowledged > before + 5, "the client kept incrementing during the move")
            #expect(await increment() == acknowledged + 1, "the counter holds every acknowledged increment")

            let moved = try await client.instance("kv")
            #expect(moved.hostId == "host-node2" && moved.state == .running && moved.task == nil)
            #expect(fabric.vmms(onHost: 1, instanceId: moved.id).isEmpty, "the source VMM is gone")
            #expect(fabric.vmms(onHost: 2, instanceId: moved.id).count == 1)
            let migration = try #require(try await client.migrations(instance: "kv").first)
            #expect(migration.mode == .stateful && migration.status == .completed, "\(migration.reason ?? "")")
            let bytes = migration.transferredBytes ?? 0
            #expect(bytes > 0 && bytes < 4096, "the state, not the memory, moved: \(bytes) bytes")
            #expect(migration.downtimeMs != nil)
            print(
                "kv stateful migration: switch \(migration.downtimeMs ?? -1) ms (quiesce -> target active), total "
                    + "\(migration.totalMs ?? -1) ms, \(bytes) bytes; longest gap the client saw \(longestGap), "
                    + "\(refused) requests refused meanwhile")

            // An image that claims the interface while its app registered no state: the source
            // answers the export with an error, and the move rolls back; the guest, quiesced for
            // the export, serves again.
            let http = try await Kernels.path("http")
            _ = try await client.uploadImage(path: http, name: "claims", properties: ["state_interface": "kit-console"])
            var claims = CreateInstanceRequest(name: "claims", image: "claims", wait: true)
            claims.networks = [NetworkAttachment(network: "edge")]
            claims.host = "node1"
            let claimant = try #require(try await client.createInstances(claims).first)
            let claimantAddress = try #require(claimant.ports?.first?.address)
            let refusedMove = try await client.migrate(
                "claims", MigrateInstanceRequest(host: "node2", mode: "stateful"))
            var refusedEnd = refusedMove
            try await eventually("the move of a guest without state ends", timeout: .seconds(60)) {
                refusedEnd = try await client.migration(refusedMove.id)
                return refusedEnd.status.isFinal
            }
            #expect(
                refusedEnd.status == .failed && refusedEnd.reason?.contains("no state interface") == true,
                "\(refusedEnd)")
            #expect(try await client.instance("claims").hostId == "host-node1")
            #expect(fabric.vmms(onHost: 2, instanceId: claimant.id).isEmpty, "the standby target is gone")
            let healthz = try await offThePool {
                HostNet.run(
                    "/usr/bin/curl", ["-s", "-f", "-m", "10", "http://\(claimantAddress)/healthz"],
                    namespace: counter.namespace)
            }
            #expect(healthz.status == 0 && healthz.output == "ok", "the source serves again: \(healthz)")
            try await client.deleteInstance("claims")

            // Back by the drain of host 2, in the best mode the image allows: stateful again.
            for host in try await client.hosts() where !host.id.hasPrefix("host-node") {
                try await client.cordonHost(host.id, true)
            }
            let drain = try await client.drain(host: "node2")
            #expect(drain.migrations.map(\.mode) == [.stateful], "\(drain)")
            try await eventually("the drain's move ends", timeout: .seconds(60)) {
                try await client.migration(drain.migrations[0].id).status.isFinal
            }
            #expect(try await client.migration(drain.migrations[0].id).status == .completed)
            #expect(try await client.instance("kv").hostId == "host-node1")
            #expect(await increment() == acknowledged + 2, "the counter went along")
            try await client.deleteInstance("kv")
        }
    }
    /// Twenty `http` instances move live at once, while one of them holds 32 keep-alive TCP
    /// connections from a client on host 1's segment: every move completes, and each of the 32
    /// connections answers a request again afterwards on the same socket (the VM's TCP state went
    /// along with its memory).
    @Test func twentyInstancesMoveAtOnceAndOpenConnectionsSurvive() async throws {
        let http = try await Kernels.path("http")
        try await withCluster(hosts: 2) { server, client, fabric, agentPort in
            _ = try await fabric.join(1...2, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: http, name: "http")
            let prefix24 = "10.\(Int.random(in: 170...179)).\(Int.random(in: 0...255))"
            let network = try await client.createNetwork(CreateNetworkRequest(name: "web", cidr: prefix24 + ".0/24"))
            var request = CreateInstanceRequest(name: "web", image: "http", wait: true)
            request.count = 20
            request.networks = [NetworkAttachment(network: "web")]
            request.host = "node1"
            let fleet = try await client.createInstances(request)
            #expect(fleet.count == 20 && fleet.allSatisfy { $0.state == .running }, "\(fleet.map(\.state))")
            let address = try #require(fleet.first?.ports?.first?.address)
            _ = try CounterClient.plugged(
                into: network, onHost: 1, of: fabric, address: prefix24 + ".250/24", counter: address)

            // 32 connections, each answered once before the moves; the client then waits for a
            // file and asks again on the same sockets.
            let go = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-go-\(UUID().uuidString)")
            let script = """
                import os, socket, sys, time
                def ask(s):
                    s.sendall(b"GET /healthz HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n")
                    data = b""
                    while b"\\r\\n\\r\\n" not in data or not data.endswith(b"ok"):
                        chunk = s.recv(4096)
                        if not chunk: return False
                        data += chunk
                    return data.startswith(b"HTTP/1.1 200")
                sockets = [socket.create_connection((sys.argv[1], 80), timeout=20) for _ in range(32)]
                print("before", sum(ask(s) for s in sockets), flush=True)
                while not os.path.exists(sys.argv[2]): time.sleep(0.05)
                print("after", sum(ask(s) for s in sockets), flush=True)
                """
            let namespace = fabric.prefix + "cl"
            let held = Task.detached {
                try await offThePool {
                    HostNet.run("/usr/bin/python3", ["-c", script, address, go.path], namespace: namespace)
                }
            }
            try await Task.sleep(for: .seconds(2))

            let started = ContinuousClock.now
            let migrations = try await withThrowingTaskGroup(of: InstanceMigration.self) { group in
                for instance in fleet {
                    group.addTask { try await client.migrate(instance.id, MigrateInstanceRequest(host: "node2")) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            var ended: [InstanceMigration] = []
            try await eventually("the twenty moves end", timeout: .seconds(240)) {
                ended = try await client.migrations().filter { migration in
                    migrations.contains { $0.id == migration.id } && migration.status.isFinal
                }
                return ended.count == 20
            }
            let failed = ended.filter { $0.status != .completed }
            #expect(failed.isEmpty, "\(failed.map { "\($0.instanceName): \($0.reason ?? "")" })")
            print("twenty live migrations at once: all ended in \(ContinuousClock.now - started)")
            for instance in try await client.instances() where instance.name.hasPrefix("web") {
                #expect(instance.hostId == "host-node2" && instance.state == .running, "\(instance.name)")
            }

            FileManager.default.createFile(atPath: go.path, contents: Data())
            defer { try? FileManager.default.removeItem(at: go) }
            let answers = try await held.value
            #expect(answers.output.contains("before 32") && answers.output.contains("after 32"), "\(answers.output)")
            for instance in fleet { try await client.deleteInstance(instance.id) }
        }
    }
}

/// A client in a namespace of its own, plugged into one host's bridge of a network: it increments
/// kv's counter with curl.
struct CounterClient: Sendable {
    enum Answer: Sendable, Equatable {
        case value(Int)
        /// Not served, and so not counted: the connection was refused or closed unanswered (a
        /// quiesced guest does this until the move's switch is over; a client tries again).
        case refused
        case failed(String)
    }

    let namespace: String
    let url: String

    static func plugged(
        into network: Network, onHost host: Int, of fabric: Fabric, address: String, counter: String
    ) throws -> CounterClient {
        let namespace = fabric.prefix + "cl"
        for step in [
            ["netns", "add", namespace],
            ["link", "add", fabric.prefix + "c1", "type", "veth", "peer", "name", fabric.prefix + "c0"],
            ["link", "set", fabric.prefix + "c0", "netns", namespace],
            ["link", "set", fabric.prefix + "c1", "netns", fabric.namespace(host)],
            ["-n", fabric.namespace(host), "link", "set", fabric.prefix + "c1", "master", network.bridge, "up"],
            ["-n", namespace, "addr", "add", address, "dev", fabric.prefix + "c0"],
            ["-n", namespace, "link", "set", fabric.prefix + "c0", "up"],
            ["-n", namespace, "link", "set", "lo", "up"],
        ] {
            try Fabric.run(step)
        }
        return CounterClient(namespace: namespace, url: "http://\(counter)/counter")
    }

    func attempt() async -> Answer {
        let namespace = namespace
        let url = url
        guard
            let result = try? await offThePool({
                HostNet.run("/usr/bin/curl", ["-s", "-f", "-m", "20", "-X", "POST", url], namespace: namespace)
            })
        else { return .failed("curl did not run") }
        // curl: 7 connection refused, 52 closed without an answer, 56 reset while receiving.
        if [7, 52, 56].contains(result.status) { return .refused }
        guard result.status == 0, let value = Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            return .failed("curl exit \(result.status): \(result.output)")
        }
        return .value(value)
    }

    /// The new value, or nil when the request was not answered.
    func increment() async -> Int? {
        if case .value(let value) = await attempt() { return value }
        return nil
    }

    /// The first value once the client reaches kv across the bridge (its ARP and path settle).
    func firstIncrement() async throws -> Int {
        try await eventually("the client reaches kv across the bridge", timeout: .seconds(20)) {
            await increment() != nil
        }
        return try #require(await increment())
    }

    /// Increments without pause from `start` while `move` runs a CLI command (off the pool), from
    /// half a second before it to half a second after. Each answer must be the one before + 1; a
    /// refused request is tried again. Returns the last value acknowledged, the requests that
    /// failed otherwise and the longest wait between two answers.
    func incrementing(
        from start: Int, during move: @escaping @Sendable () throws -> (status: Int32, output: String)
    ) async throws -> (acknowledged: Int, failures: Int, refused: Int, longestGap: Duration) {
        let stop = StopFlag()
        return try await withThrowingTaskGroup(of: (Int, Int, Int, Duration).self) { group in
            group.addTask {
                var last = start
                var failures = 0
                var refused = 0
                var longestGap = Duration.zero
                var lastAnswer = ContinuousClock.now
                while !stop.isSet {
                    let value: Int
                    switch await attempt() {
                    case .value(let answered): value = answered
                    case .refused:
                        refused += 1
                        continue
                    case .failed(let why):
                        Issue.record("a request failed while the instance moved: \(why)")
                        failures += 1
                        continue
                    }
                    #expect(value == last + 1, "an increment was lost or counted twice: \(last) then \(value)")
                    last = value
                    longestGap = max(longestGap, ContinuousClock.now - lastAnswer)
                    lastAnswer = .now
                }
                return (last, failures, refused, longestGap)
            }
            try await Task.sleep(for: .milliseconds(500))
            let cli = try await offThePool(move)
            #expect(cli.status == 0, "\(cli.output)")
            try await Task.sleep(for: .milliseconds(500))
            stop.set()
            return try await group.next()!
        }
    }
}

/// Tells a loop in another task to end.
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}

/// What the leader does with a migration whose controller died (in process, fake driver).
@Suite struct AbandonedMigrationTests {
    static func abandoned(_ instance: Instance, from source: String, to target: String) -> InstanceMigration {
        InstanceMigration(
            id: ResourceID.make("mig"), instanceId: instance.id, instanceName: instance.name,
            projectId: instance.projectId, mode: .live, sourceHostId: source, targetHostId: target,
            status: .running, createdAt: Date(timeIntervalSinceNow: -600))
    }

    /// Not committed: it rolls back, and the instance runs where it was, free to move again. Its
    /// commit done: it completes. A recent one is left to the controller that drives it.
    @Test func theLeaderRollsBackWhatWasNotCommittedAndCompletesWhatWas() async throws {
        let host = try await FakeHost()
        let stuck = try await host.create("stuck")
        let rolledBack = Self.abandoned(stuck, from: FakeHost.hostId, to: "host-gone")
        try await host.store.createMigration(rolledBack)
        try await host.store.updateInstance(id: stuck.id) {
            $0.task = InstanceTask(
                kind: .migrating, from: FakeHost.hostId, to: "host-gone", startedAt: Date(),
                migrationId: rolledBack.id)
        }
        let arrived = try await host.create("arrived")
        let completed = Self.abandoned(arrived, from: "host-gone", to: FakeHost.hostId)
        try await host.store.createMigration(completed)
        let recent = try await host.create("recent")
        var fresh = Self.abandoned(recent, from: FakeHost.hostId, to: "host-gone")
        fresh.createdAt = Date()
        fresh.updatedAt = Date()
        try await host.store.createMigration(fresh)

        // A second move of an instance that is moving, or any command on it, is refused meanwhile.
        await expectStoreError("migration.in_progress") {
            _ = try await host.controller.migrate("stuck", MigrateInstanceRequest(), by: .admin)
        }
        await expectStoreError("instance.migrating") {
            _ = try await host.controller.act(.stop, on: "stuck", by: .admin, stopTimeout: .zero)
        }
        await expectStoreError("instance.migrating") {
            _ = try await host.controller.act(.delete, on: "stuck", by: .admin, stopTimeout: .zero)
        }

        await host.controller.settleAbandonedMigrations()

        let failed = try #require(try await host.store.migration(id: rolledBack.id, projectId: nil))
        #expect(failed.status == .failed && failed.reason?.contains("abandoned") == true)
        let back = try #require(try await host.store.instance(idOrName: stuck.id, projectId: nil))
        #expect(back.task == nil && back.state == .running && back.hostId == FakeHost.hostId)
        #expect(try await host.store.events(instanceId: stuck.id).map(\.type).contains("migration_failed"))
        #expect(try await host.store.migration(id: completed.id, projectId: nil)?.status == .completed)
        #expect(try await host.store.migration(id: fresh.id, projectId: nil)?.status == .running)
    }
}

private func expectStoreError(_ code: String, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \(code), got success")
    } catch let error as SwiftletError {
        #expect(error.code == code, "\(error)")
    } catch {
        Issue.record("expected \(code), got \(error)")
    }
}
