import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// End to end through the HTTP API: real server process, real SQLite file or PostgreSQL database,
/// real QEMU, real kit unikernels.
@Suite(.serialized) struct LifecycleTests {
    @Test(arguments: StoreEngine.allCases) func instanceLifecycleEndToEnd(engine: StoreEngine) async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer(engine: engine) { server, client in
            let image = try await client.uploadImage(path: kernel, name: "hello")
            #expect(image.kind == .pvh)
            #expect(image.sha256.count == 64)
            let hosts = try await client.hosts()
            #expect(hosts.count == 1)
            #expect(hosts[0].chosenAccelerator.isEmpty == false)

            let created = try await client.createInstances(
                CreateInstanceRequest(name: "h1", image: "hello", flavor: "tiny", wait: true))
            let instance = try #require(created.first)
            #expect(instance.state == .running, "\(instance.reason ?? "")")
            #expect(instance.memoryMib == 16)
            for phase in Phase.allCases { #expect(instance.timeline[phase] != nil, "phase \(phase) missing") }
            let total = try #require(instance.timeline.total)
            #expect(total > 0)

            let console = try await collect(client.console(instance.id))
            #expect(console.contains("SWIFTLET-READY hello"))
            #expect(try await client.pause("h1").state == .paused)
            #expect(try await client.resume("h1").state == .running)
            _ = try await client.reboot("h1")
            await expectAPIError(409, "instance.illegal_transition") { _ = try await client.resume("h1") }

            let vmPids = processes(mentioning: server.dataDirectory + "/run/" + instance.id)
            #expect(vmPids.count == 1)
            #expect(try await client.stop("h1", timeout: 5).state == .stopped)
            #expect(processes(mentioning: server.dataDirectory + "/run/" + instance.id).isEmpty)
            let restarted = try await client.start("h1")
            #expect(restarted.state == .building || restarted.state == .running)
            try await eventually("h1 running again") { try await client.instance("h1").state == .running }
            let events = try await client.events("h1").map(\.type)
            #expect(events.contains("ready"))
            #expect(events.contains("stopped"))

            try await client.deleteInstance("h1")
            await expectAPIError(404, "instance.not_found") { _ = try await client.instance("h1") }
            #expect(processes(mentioning: server.dataDirectory + "/run/").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: server.dataDirectory + "/run/" + instance.id))
            try await client.deleteImage("hello")
            #expect(try FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/blobs/sha256").isEmpty)
            // Creates keep the image they read until the catalog changes: a deleted one is gone.
            await expectAPIError(404, "image.not_found") {
                _ = try await client.createInstances(CreateInstanceRequest(name: "h2", image: "hello"))
            }
        }
    }

    @Test func publishedPortReachesTheUnikernel() async throws {
        let kernel = try await Kernels.path("http")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "http")
            let port = try ServerProcess.freePort()
            let created = try await client.createInstances(
                CreateInstanceRequest(
                    name: "web", image: "http", args: ["name=web-one"], publish: ["\(port):80"], wait: true))
            #expect(created.first?.state == .running, "\(created.first?.reason ?? "")")
            let page = try await client.fetch("GET", url: "http://127.0.0.1:\(port)/")
            #expect(page.status == 200)
            #expect(page.body.contains("web-one"))
            try await client.deleteInstance("web")
        }
    }

    @Test func restartPolicyRestartsACrashedVM() async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let created = try await client.createInstances(
                CreateInstanceRequest(name: "phoenix", image: "hello", restartPolicy: .onFailure, wait: true))
            let id = try #require(created.first?.id)
            let pids = processes(mentioning: server.dataDirectory + "/run/" + id)
            try #require(pids.count == 1)
            kill(pids[0], SIGKILL)
            try await eventually("restarted after a crash") {
                let instance = try await client.instance(id)
                return instance.state == .running && instance.restartCount == 1
            }
            let newPids = processes(mentioning: server.dataDirectory + "/run/" + id)
            #expect(newPids.count == 1 && newPids != pids)

            // Without a restart policy a crash ends in ERROR with a reason.
            _ = try await client.createInstances(CreateInstanceRequest(name: "mortal", image: "hello", wait: true))
            let mortal = try await client.instance("mortal")
            for pid in processes(mentioning: server.dataDirectory + "/run/" + mortal.id) { kill(pid, SIGKILL) }
            try await eventually("ERROR after a crash") { try await client.instance("mortal").state == .error }
            #expect(try await client.instance("mortal").reason?.isEmpty == false)
        }
    }

    @Test(arguments: StoreEngine.allCases) func serverCrashNeitherLosesNorDuplicatesVMs(engine: StoreEngine)
        async throws
    {
        let kernel = try await Kernels.path("hello")
        let server = try ServerProcess(engine: engine)
        defer { server.cleanUp() }
        try await server.start()
        var client = server.client()
        _ = try await client.uploadImage(path: kernel, name: "hello")
        let running = try await client.createInstances(
            CreateInstanceRequest(name: "keep", image: "hello", count: 2, wait: true))
        #expect(running.allSatisfy { $0.state == .running })
        let before = Set(processes(mentioning: server.dataDirectory + "/run/"))
        #expect(before.count == 2)

        // Creates in flight when the server dies: a batch, and single ones (their VMMs start while
        // their records commit, and their handles are saved with READY).
        _ = try await client.createInstances(CreateInstanceRequest(name: "inflight", image: "hello", count: 4))
        for index in 1...2 {
            _ = try await client.createInstances(CreateInstanceRequest(name: "solo-\(index)", image: "hello"))
        }
        server.crash()
        try? await client.shutdown()
        // VMs are not children of the dead server's session: they still run.
        #expect(before.isSubset(of: Set(processes(mentioning: server.dataDirectory + "/run/"))))

        try await server.start()
        client = server.client()
        defer { Task { [client] in try? await client.shutdown() } }
        try await eventually("in-flight creates settle", timeout: .seconds(60)) {
            try await client.instances().allSatisfy { $0.state == .running || $0.state == .error }
        }
        let instances = try await client.instances()
        #expect(instances.count == 8)
        for instance in instances where instance.state == .error { #expect(instance.reason?.isEmpty == false) }
        // Re-attached, not duplicated: the first two kept their VMs, each instance has at most one VMM.
        let after = processes(mentioning: server.dataDirectory + "/run/")
        #expect(before.isSubset(of: Set(after)))
        #expect(after.count == instances.filter { $0.state == .running }.count)
        for instance in instances {
            #expect(processes(mentioning: server.dataDirectory + "/run/" + instance.id + "/").count <= 1)
        }
        // Runtime directories only for live instances.
        let dirs = Set(try FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/run"))
        #expect(dirs.isSubset(of: Set(instances.filter { $0.state == .running }.map(\.id))))
        // And the re-attached VMs are still supervised: delete works and leaves nothing.
        for instance in instances { try await client.deleteInstance(instance.id) }
        #expect(processes(mentioning: server.dataDirectory + "/run/").isEmpty)
    }
}

/// `swiftlet top` against a live server: each view shows every instance with its state, host
/// and boot time, and a state change shows in the next view.
@Suite struct TopCommandTests {
    @Test func topShowsInstancesLiveAndFollowsAStop() async throws {
        try await withServer { server, client in
            _ = try await client.uploadImage(path: try await Kernels.path("hello"), name: "hello")
            let created = try await client.createInstances(
                CreateInstanceRequest(name: "watched", image: "hello", flavor: "tiny", wait: true))
            let total = try #require(created.first?.timeline.total)
            let environment = ["SWIFTLET_URL": server.url, "SWIFTLET_TOKEN": server.adminToken]
            let top = try BuildServiceTests.cli(["top", "--iterations", "1"], environment: environment)
            #expect(top.status == 0, "\(top.output)")
            let row = try #require(
                top.output.split(separator: "\n").first { $0.hasPrefix("watched ") }, "\(top.output)")
            #expect(
                row.contains("RUNNING") && row.contains(Format.milliseconds(total)) && row.contains("cold"), "\(row)")
            #expect(top.output.contains("1 instances: 1 RUNNING") && top.output.contains("hosts: 1 up, 0 down"))
            _ = try await client.stop("watched")
            let after = try BuildServiceTests.cli(
                ["top", "--iterations", "2", "--interval", "0.2"], environment: environment)
            let views = after.output.components(separatedBy: "swiftlet top - ").dropFirst()
            #expect(views.count == 2, "\(after.output)")
            #expect(views.allSatisfy { $0.contains("1 STOPPED") }, "\(after.output)")
            let bad = try BuildServiceTests.cli(["top", "--interval", "0"], environment: environment)
            #expect(bad.status != 0)
        }
    }
}

/// A server that confines its VMMs (as root): they run as swiftlet-vmm under seccomp, and one
/// re-attaches after the server is killed, its state intact.
@Suite(.enabled(if: getuid() == 0, "confinement needs root"))
struct ConfinedServerTests {
    @Test func aConfinedVMReattachesAfterTheServerIsKilled() async throws {
        let server = try ServerProcess(config: ["confineVMMs": true])
        defer { server.cleanUp() }
        try await server.start()
        var client = server.client()
        _ = try await client.uploadImage(path: try await Kernels.path("kv"), name: "kv")
        let port = try ServerProcess.freePort()
        let created = try #require(
            try await client.createInstances(
                CreateInstanceRequest(name: "counter", image: "kv", publish: ["\(port):80"], wait: true)
            ).first)
        #expect(created.state == .running)
        func increment() throws -> String {
            try Shell.run(
                "/usr/bin/curl", ["-sf", "--max-time", "10", "-X", "POST", "http://127.0.0.1:\(port)/counter"]
            )
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try increment() == "1")
        let vmm = try #require(processes(mentioning: server.dataDirectory + "/run/" + created.id + "/").first)
        let status = try String(contentsOfFile: "/proc/\(vmm)/status", encoding: .utf8)
        let user = try #require(getpwnam("swiftlet-vmm")).pointee
        #expect(status.contains("Uid:\t\(user.pw_uid)\t") && status.contains("Seccomp:\t2"), "\(status)")

        server.crash()
        try? await client.shutdown()
        try await server.start()
        client = server.client()
        #expect(try await client.instance("counter").state == .running)
        #expect(try increment() == "2")
        #expect(processes(mentioning: server.dataDirectory + "/run/").count == 1)
        try await client.deleteInstance("counter")
        #expect(processes(mentioning: server.dataDirectory + "/run/").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/pids/swiftlet/vmm-\(vmm)"))
        try? await client.shutdown()
    }
}

func collect(_ stream: AsyncThrowingStream<String, any Error>) async throws -> String {
    var text = ""
    for try await chunk in stream { text += chunk }
    return text
}
