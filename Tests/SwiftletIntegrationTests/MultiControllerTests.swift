import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Several controllers on one PostgreSQL database, as root: three `swiftlet server
/// --controller-only` processes sharing a data directory and a database, two namespace hosts
/// whose agents know all three, real unikernels in real QEMU.
@Suite(.serialized, .enabled(if: getuid() == 0, "namespace hosts need root"))
struct MultiControllerTests {
    /// The controllers of one cluster, and the fabric of its hosts; cleans up all.
    final class Cluster: @unchecked Sendable {
        // @unchecked: used by the one test that made it, one call at a time.
        let fabric: Fabric
        var controllers: [ServerProcess] = []
        var agentPorts: [Int] = []
        var clients: [SwiftletClient] = []

        init(controllers count: Int, hosts: Int) async throws {
            fabric = try Fabric()
            for index in 1...hosts { try fabric.addHost(index) }
            for index in 0..<count {
                let agentPort = try ServerProcess.freePort()
                let config: [String: Any] = [
                    "agentPort": agentPort, "agentNames": [fabric.controllerAddress], "leaseDurationMs": 3000,
                    "leaseRenewMs": 500, "networkPrefix": fabric.prefix, "controllerOnly": true,
                ]
                let server = try ServerProcess(
                    config: config, engine: .postgres, sharing: index == 0 ? nil : controllers[0])
                controllers.append(server)
                agentPorts.append(agentPort)
                try await server.start()
            }
            clients = controllers.map { $0.client() }
        }

        /// Joins host `index` with a token from controller `via`; its agent knows every controller,
        /// the one it joined through first.
        func join(_ index: Int, via: Int) async throws -> AgentProcess {
            let token = try #require(try await clients[via].createJoinToken(ttlSeconds: 600).token)
            let order = agentPorts[via...] + agentPorts[..<via]
            return try await fabric.startAgent(index, controllerPorts: Array(order), token: token)
        }

        func cleanUp() async {
            for client in clients { try? await client.shutdown() }
            fabric.cleanUp()
            // The first removes the shared data directory and drops the database: it goes last.
            for server in controllers.reversed() { server.cleanUp() }
        }

        func dumpLogs() {
            for (index, server) in controllers.enumerated() {
                print("---- controller \(index) log ----\n\(server.log.suffix(3000))")
            }
            for agent in fabric.agents { print("---- agent \(agent.index) log ----\n\(agent.log.suffix(3000))") }
        }
    }

    static func withCluster(
        controllers: Int = 3, hosts: Int = 2, _ body: (Cluster) async throws -> Void
    ) async throws {
        let cluster = try await Cluster(controllers: controllers, hosts: hosts)
        do {
            try await body(cluster)
            await cluster.cleanUp()
        } catch {
            cluster.dumpLogs()
            await cluster.cleanUp()
            throw error
        }
    }

    @Test func threeControllersServeOneClusterAndAgentsFailOverBetweenThem() async throws {
        let kernel = try await Kernels.path("hello")
        // An image that brings its NIC up (hello has no network stack).
        let http = try await Kernels.path("http")
        try await Self.withCluster { cluster in
            let clients = cluster.clients
            // Image bytes uploaded through one controller are served by all (shared data directory).
            _ = try await clients[0].uploadImage(path: kernel, name: "hello")
            _ = try await clients[1].uploadImage(path: http, name: "http")
            // Host 1 joins through controller 1, host 2 through controller 2: each agent watches the
            // controller it joined through.
            _ = try await cluster.join(1, via: 1)
            _ = try await cluster.join(2, via: 2)
            for client in clients {
                try await eventually("both hosts UP on every controller", timeout: .seconds(30)) {
                    let up = Set(try await client.hosts().filter { $0.status == .up }.map(\.id))
                    return up.isSuperset(of: ["host-node1", "host-node2"])
                }
            }

            // A create that waits for READY through a controller no agent watches: the agent's
            // report reaches another controller, and this one hears of it through the store.
            let waitStart = ContinuousClock.now
            let waited = try #require(
                try await clients[0].createInstances(CreateInstanceRequest(name: "waited", image: "hello", wait: true))
                    .first)
            #expect(waited.state == .running, "\(waited.reason ?? "")")
            #expect(ContinuousClock.now - waitStart < .seconds(30))
            try await clients[0].deleteInstance("waited")

            // A burst of creates spread over the three controllers at once. Each instance asks for a
            // third of a host's memory and then some (the guest touches little of it): two fit on a
            // host, four in the cluster.
            let memories = try await clients[0].hosts().filter { $0.id.hasPrefix("host-node") }.map(\.memoryMib)
            let memoryMib = try #require(memories.min()) / 3 + 1
            #expect(memories.allSatisfy { $0 / memoryMib == 2 }, "each host must fit exactly two: \(memories)")
            let outcomes = await withTaskGroup(of: (String, Result<Instance, any Error>).self) { group in
                for index in 0..<8 {
                    let client = clients[index % 3]
                    group.addTask {
                        var request = CreateInstanceRequest(name: "burst-\(index)", image: "hello")
                        request.memoryMib = memoryMib
                        do {
                            return (
                                "burst-\(index)",
                                .success(try #require(try await client.createInstances(request).first))
                            )
                        } catch {
                            return ("burst-\(index)", .failure(error))
                        }
                    }
                }
                // The same name through two controllers at once: one create only.
                for index in 0..<2 {
                    let client = clients[index + 1]
                    group.addTask {
                        do {
                            return (
                                "twin",
                                .success(
                                    try #require(
                                        try await client.createInstances(
                                            CreateInstanceRequest(name: "twin", image: "hello")
                                        ).first))
                            )
                        } catch { return ("twin", .failure(error)) }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            let burst = outcomes.filter { $0.0.hasPrefix("burst") }
            let placed = burst.compactMap { try? $0.1.get() }
            #expect(placed.count == 4, "exactly four fit: \(burst.map { "\($0.0): \($0.1)" })")
            for failure in burst.compactMap({ if case .failure(let error) = $0.1 { error } else { nil } }) {
                #expect((failure as? ClientError)?.code == "scheduler.no_host", "\(failure)")
            }
            let perHost = Dictionary(grouping: placed, by: { $0.hostId ?? "" }).mapValues(\.count)
            #expect(perHost == ["host-node1": 2, "host-node2": 2], "no host overcommitted: \(perHost)")
            let twins = outcomes.filter { $0.0 == "twin" }
            #expect(twins.filter { (try? $0.1.get()) != nil }.count == 1, "\(twins.map { "\($0.1)" })")

            // Addresses handed out through three controllers at once are all different.
            let cidr = "10.\(Int.random(in: 150...159)).\(Int.random(in: 0...255)).0/24"
            _ = try await clients[0].createNetwork(CreateNetworkRequest(name: "shared", cidr: cidr))
            let ported = try await withThrowingTaskGroup(of: Instance.self) { group in
                for index in 0..<6 {
                    let client = clients[index % 3]
                    group.addTask {
                        var request = CreateInstanceRequest(name: "net-\(index)", image: "http")
                        request.networks = [NetworkAttachment(network: "shared")]
                        return try #require(try await client.createInstances(request).first)
                    }
                }
                return try await group.reduce(into: [Instance]()) { $0.append($1) }
            }
            let addresses = ported.compactMap { $0.ports?.first?.address }
            #expect(addresses.count == 6 && Set(addresses).count == 6, "\(addresses)")

            // Every placed instance runs, whichever controller took its create and whichever one its
            // host's agent watches: the desired state went through the store. Every controller sees it.
            for instance in placed + ported + twins.compactMap({ try? $0.1.get() }) {
                for client in clients {
                    try await eventually("\(instance.name) RUNNING", timeout: .seconds(60)) {
                        try await client.instance(instance.id).state == .running
                    }
                }
            }
            // Calls on an agent through a controller it is not connected to go through the store to
            // the one it is: the console, and pause and resume.
            let onSecond = try #require(placed.first { $0.hostId == "host-node2" })
            var console = ""
            for try await text in clients[0].console(onSecond.id) { console += text }
            #expect(console.contains("SWIFTLET-READY"), "\(console.suffix(500))")
            #expect(try await clients[0].pause(onSecond.id).state == .paused)
            #expect(try await clients[1].resume(onSecond.id).state == .running)
            // (An agent may have moved to another controller meanwhile: some of these calls were routed.)
            #expect(cluster.controllers.contains { $0.log.contains("call routed through the store") })
            // A stop through controller 0 (no agent watches it) reaches host 1's agent on controller 1.
            let onFirst = try #require(placed.first { $0.hostId == "host-node1" })
            _ = try await clients[0].stop(onFirst.id, timeout: 5)
            try await eventually("stopped on its host") {
                cluster.fabric.vmms(onHost: 1, instanceId: onFirst.id).isEmpty
            }

            // kill -9 the controller host 1's agent watches: the agent fails over to the next one,
            // the host stays UP, and new work for it still arrives.
            cluster.controllers[1].crash()
            // A call on host 1 meanwhile is answered at once: 409 while its agent has not reconnected
            // (the dead holder is told by its connections to the database being gone), or the
            // console once it has; never the routed call's timeout.
            let alsoOnFirst = try #require(placed.first { $0.hostId == "host-node1" && $0.id != onFirst.id })
            do {
                for try await _ in clients[2].console(alsoOnFirst.id) {}
            } catch let error as ClientError {
                #expect(error.code == "host.unreachable", "\(error)")
            }
            _ = try await clients[2].start(onFirst.id)
            try await eventually(
                "restarted through controller 2 after its agent's controller died", timeout: .seconds(30)
            ) {
                try await clients[2].instance(onFirst.id).state == .running
                    && cluster.fabric.vmms(onHost: 1, instanceId: onFirst.id).count == 1
            }
            #expect(try await clients[0].hosts().first { $0.id == "host-node1" }?.status == .up)
            // kill -9 of the leader during a burst of creates: a new leader takes over, every
            // acknowledged create is kept once, and the agents stay connected (their hosts UP).
            let alive = [0, 2]
            var leaders: [Int] = []
            for index in alive where try await clients[index].isLeader() == true { leaders.append(index) }
            #expect(leaders.count == 1, "one leader among the live controllers: \(leaders)")
            let leader = try #require(leaders.first)
            let survivor = alive.first { $0 != leader }!
            let acknowledged = try await withThrowingTaskGroup(of: String?.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        // Small ones, through the survivor: they fit, and are acknowledged or refused.
                        let name = "during-\(index)"
                        do {
                            _ = try await clients[survivor].createInstances(
                                CreateInstanceRequest(name: name, image: "hello"))
                            return name
                        } catch { return nil }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(200))
                    cluster.controllers[leader].crash()
                    return nil
                }
                return try await group.reduce(into: Set<String>()) { if let name = $1 { $0.insert(name) } }
            }
            try await eventually("a new leader", timeout: .seconds(10)) {
                try await clients[survivor].isLeader() == true
            }
            let names = try await clients[survivor].instances().map(\.name)
            #expect(acknowledged.isSubset(of: Set(names)), "every acknowledged create is kept")
            #expect(Set(names).count == names.count, "none twice")
            for host in ["host-node1", "host-node2"] {
                #expect(try await clients[survivor].hosts().first { $0.id == host }?.status == .up, "\(host)")
            }
            for name in acknowledged {
                try await eventually("\(name) RUNNING", timeout: .seconds(60)) {
                    try await clients[survivor].instance(name).state == .running
                }
            }

            // Nothing ran twice: one VMM per running instance.
            for instance in placed {
                let host = instance.hostId == "host-node1" ? 1 : 2
                #expect(cluster.fabric.vmms(onHost: host, instanceId: instance.id).count == 1, "\(instance.name)")
            }
        }
    }
}
