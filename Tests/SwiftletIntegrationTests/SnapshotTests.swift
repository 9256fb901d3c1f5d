import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Snapshots end to end through the HTTP API: a real server, real QEMU, the kit's kv unikernel.
@Suite(.serialized) struct SnapshotTests {
    /// One POST /counter through a published port: the counter's new value.
    static func increment(_ port: Int) async throws -> String {
        try await offThePool {
            try Shell.run(
                "/usr/bin/curl", ["-sf", "--max-time", "10", "-X", "POST", "http://127.0.0.1:\(port)/counter"]
            ).output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    @Test func anInstanceFromASnapshotRunsOnWithTheGuestsMemory() async throws {
        let kernel = try await Kernels.path("kv")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "kv")
            let port = try ServerProcess.freePort()
            let source = try #require(
                try await client.createInstances(
                    CreateInstanceRequest(name: "counter", image: "kv", publish: ["\(port):80"], wait: true)
                ).first)
            #expect(source.state == .running, "\(source.reason ?? "")")
            for expected in ["1", "2", "3"] { #expect(try await Self.increment(port) == expected) }

            let snapshot = try await client.snapshot(instance: "counter", name: "at-3")
            #expect(snapshot.instanceId == source.id && snapshot.imageId == source.imageId)
            #expect(snapshot.sha256.count == 64 && snapshot.sizeBytes > 0 && snapshot.hypervisor == "qemu")
            #expect(snapshot.memoryMib == source.memoryMib && snapshot.vcpus == source.vcpus)
            #expect(FileManager.default.fileExists(atPath: server.dataDirectory + "/blobs/sha256/" + snapshot.sha256))
            // The source ran on through the save.
            #expect(try await Self.increment(port) == "4")
            await expectAPIError(409, "snapshot.duplicate_name") {
                _ = try await client.snapshot(instance: "counter", name: "at-3")
            }
            #expect(try await client.snapshots().map(\.name) == ["at-3"])
            #expect(try await client.snapshot("at-3").id == snapshot.id)

            // The copy continues from the saved 3, on its own port, while the source goes on from 4.
            let copyPort = try ServerProcess.freePort()
            var request = CreateInstanceRequest(name: "copy", image: "", publish: ["\(copyPort):80"], wait: true)
            request.fromSnapshot = "at-3"
            let copy = try #require(try await client.createInstances(request).first)
            #expect(copy.state == .running, "\(copy.reason ?? "")")
            #expect(copy.timeline.bootPath == "snapshot" && copy.timeline.ready != nil)
            #expect(copy.memoryMib == snapshot.memoryMib)
            #expect(try await Self.increment(copyPort) == "4")
            #expect(try await Self.increment(copyPort) == "5")
            #expect(try await Self.increment(port) == "5")
            #expect(try await client.events("copy").contains { $0.type == "restore" })
            if let total = copy.timeline.total {
                print("restore: accepted → READY \(Double(total) / 1e6) ms; snapshot \(snapshot.sizeBytes) bytes")
            }

            // The second restore here takes the VMM held ready since the first, and publishes its port.
            let heldPort = try ServerProcess.freePort()
            var again = CreateInstanceRequest(name: "again", image: "kv", publish: ["\(heldPort):80"], wait: true)
            again.fromSnapshot = snapshot.id
            try await eventually("a VMM is held for the next restore", timeout: .seconds(20)) {
                processes(mentioning: server.dataDirectory + "/run/held-").count == 1
            }
            // Held once its QMP answers: tens of milliseconds after the process appears, more under load.
            try await Task.sleep(for: .seconds(2))
            let second = try #require(try await client.createInstances(again).first)
            #expect(second.state == .running, "\(second.reason ?? "")")
            #expect(try await Self.increment(heldPort) == "4")
            let restoreEvent = try await client.events("again").first { $0.type == "restore" }
            #expect(restoreEvent?.message.contains("held ready") == true, "\(restoreEvent?.message ?? "")")
            if let total = second.timeline.total { print("restore into a held VMM: \(Double(total) / 1e6) ms") }
            try await client.deleteInstance("again")

            // What the saved VM cannot be is refused before anything starts.
            var other = CreateInstanceRequest(name: "bigger", image: "", memoryMib: 64, publish: ["\(copyPort + 1):80"])
            other.fromSnapshot = "at-3"
            await expectAPIError(400, "snapshot.shape_fixed") { _ = try await client.createInstances(other) }
            var noNIC = CreateInstanceRequest(name: "nonic", image: "")
            noNIC.fromSnapshot = "at-3"
            await expectAPIError(400, "snapshot.devices_mismatch") { _ = try await client.createInstances(noNIC) }

            try await client.deleteInstance("copy")
            try await client.deleteSnapshot("at-3")
            await expectAPIError(404, "snapshot.not_found") { _ = try await client.snapshot("at-3") }
            #expect(!FileManager.default.fileExists(atPath: server.dataDirectory + "/blobs/sha256/" + snapshot.sha256))
            try await client.deleteInstance("counter")
            // The VMM held for the deleted snapshot went with it.
            try await eventually("no VMM is left", timeout: .seconds(10)) {
                processes(mentioning: server.dataDirectory + "/run/").isEmpty
            }
        }
    }

    @Test func aSnapshotCutShortFailsTheCreateWithTheReason() async throws {
        let kernel = try await Kernels.path("kv")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "kv")
            let port = try ServerProcess.freePort()
            _ = try await client.createInstances(
                CreateInstanceRequest(name: "counter", image: "kv", publish: ["\(port):80"], wait: true))
            let snapshot = try await client.snapshot(instance: "counter", name: "cut")
            try await client.deleteInstance("counter")
            // Cut in half on the controller's disk (and so in a host's cache that links to it).
            let blob = server.dataDirectory + "/blobs/sha256/" + snapshot.sha256
            #expect(truncate(blob, off_t(snapshot.sizeBytes / 2)) == 0)
            var request = CreateInstanceRequest(name: "restored", image: "kv", publish: ["\(port):80"], wait: true)
            request.fromSnapshot = "cut"
            let started = ContinuousClock.now
            let failed = try #require(try await client.createInstances(request).first)
            #expect(failed.state == .error)
            #expect(failed.reason?.contains("cut short") == true, "\(failed.reason ?? "")")
            #expect(ContinuousClock.now - started < .seconds(20))
            #expect(processes(mentioning: server.dataDirectory + "/run/").isEmpty)
        }
    }
}

extension ClusterTests {
    /// `kv` on host 1 counts to 2 and is snapshotted there: its agent sends the state to the
    /// controller by digest. A new instance from the snapshot, placed on host 2, fetches it from
    /// the controller, checks it and restores it: its counter goes on from 2.
    @Test func aSnapshotTakenOnOneHostRestoresOnAnotherWithTheGuestsMemory() async throws {
        let kv = try await Kernels.path("kv")
        try await withCluster(hosts: 2) { _, client, fabric, agentPort in
            _ = try await fabric.join(1...2, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kv, name: "kv")
            let port = try ServerProcess.freePort()
            let increment: @Sendable (Int) async -> String? = { host in
                let result = try? await offThePool {
                    HostNet.run(
                        "/usr/bin/curl", ["-s", "-f", "-m", "10", "-X", "POST", "http://127.0.0.1:\(port)/counter"],
                        namespace: fabric.namespace(host))
                }
                guard let result, result.status == 0 else { return nil }
                return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            var request = CreateInstanceRequest(name: "kv", image: "kv", publish: ["\(port):80"], wait: true)
            request.host = "node1"
            let source = try #require(try await client.createInstances(request).first)
            #expect(source.state == .running && source.hostId == "host-node1", "\(source.reason ?? "")")
            #expect(await increment(1) == "1")
            #expect(await increment(1) == "2")

            let snapshot = try await client.snapshot(instance: "kv", name: "two")
            #expect(snapshot.hostId == "host-node1" && snapshot.sizeBytes > 0)
            #expect(await increment(1) == "3", "the source runs on")

            var copy = CreateInstanceRequest(name: "copy", image: "kv", publish: ["\(port):80"], wait: true)
            copy.fromSnapshot = "two"
            copy.host = "node2"
            let restored = try #require(try await client.createInstances(copy).first)
            #expect(restored.state == .running && restored.hostId == "host-node2", "\(restored.reason ?? "")")
            #expect(restored.timeline.bootPath == "snapshot")
            #expect(await increment(2) == "3", "the copy goes on from the saved 2")
            #expect(await increment(1) == "4")
            try await client.deleteInstance("copy")
            try await client.deleteInstance("kv")
            try await client.deleteSnapshot("two")
        }
    }
}
