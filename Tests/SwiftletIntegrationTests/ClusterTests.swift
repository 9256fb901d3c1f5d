import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// Many hosts, as root: namespace hosts with their own `swiftlet agent` processes, joined to a
/// real server over mutual TLS, booting real unikernels in real QEMU inside their namespaces.
@Suite(.serialized, .enabled(if: getuid() == 0, "namespace hosts need root"))
struct ClusterTests {
    @Test func hostsJoinAndInstancesRunWhereTheyArePlaced() async throws {
        let kernel = try Kernels.path("hello")
        try await withCluster(hosts: 2) { server, client, fabric, agentPort in
            try await fabric.join(1...2, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kernel, name: "hello")
            var ids: [Int: String] = [:]
            for index in 1...2 {
                var request = CreateInstanceRequest(name: "on\(index)", image: "hello", wait: true)
                request.host = "node\(index)"
                let created = try #require(try await client.createInstances(request).first)
                #expect(created.state == .running, "\(created.reason ?? "")")
                #expect(created.hostId == "host-node\(index)")
                #expect(fabric.vmms(onHost: index, instanceId: created.id).count == 1, "the VMM runs in its host")
                ids[index] = created.id
            }
            // The image came over the link, by digest, into the host's own cache.
            let events = try await client.events("on1").map(\.message)
            #expect(events.contains { $0.contains("fetched into host cache") })
            // The console comes through the link.
            var console = ""
            for try await text in client.console("on1") { console += text }
            #expect(console.contains("SWIFTLET-READY"))
            // A stop and a start go down the watch stream.
            _ = try await client.stop("on2", timeout: 5)
            try await eventually("on2 stopped on its host") {
                fabric.vmms(onHost: 2, instanceId: ids[2]!).isEmpty
            }
            _ = try await client.start("on2")
            try await eventually("on2 running again") { try await client.instance("on2").state == .running }
            // Deleting a remote instance ends its VMM in its namespace.
            try await client.deleteInstance("on1")
            try await eventually("on1's VMM gone") { fabric.vmms(onHost: 1, instanceId: ids[1]!).isEmpty }
            // Placement refuses a cordoned host, and says why.
            try await client.cordonHost("node1", true)
            var request = CreateInstanceRequest(name: "nope", image: "hello")
            request.host = "node1"
            await expectAPIError(409, "host.cordoned") { _ = try await client.createInstances(request) }
            try await client.cordonHost("node1", false)
            _ = server
        }
    }

    @Test func badTokensAndForeignCredentialsAreRefused() async throws {
        try await withCluster(hosts: 3) { server, client, fabric, agentPort in
            let good = try #require(try await client.createJoinToken(ttlSeconds: 600).token)
            // A token whose secret is wrong.
            let parts = good.split(separator: ".")
            let forged = "\(parts[0]).\(String(repeating: "0", count: 32)).\(parts[2])"
            let bad = try await fabric.startAgent(1, controllerPort: agentPort, token: forged)
            #expect(await bad.exitStatus(within: .seconds(30)) == 1)
            #expect(bad.log.contains("not valid"), "\(bad.log.suffix(500))")
            // A token that pins another CA: the agent refuses to send it.
            let otherCA = "\(parts[0]).\(parts[1]).\(String(repeating: "a", count: 64))"
            let pinned = try await fabric.startAgent(2, controllerPort: agentPort, token: otherCA)
            #expect(await pinned.exitStatus(within: .seconds(30)) == 1)
            #expect(
                pinned.log.contains("join.ca_mismatch") || pinned.log.contains("is not the one the join token pins"))
            // The good token works once...
            let first = try await fabric.startAgent(3, controllerPort: agentPort, token: good)
            try await eventually("node3 UP", timeout: .seconds(30)) {
                try await client.hosts().contains { $0.id == "host-node3" && $0.status == .up }
            }
            // ...and not twice (another host, same token).
            let reused = try await fabric.startAgent(1, controllerPort: agentPort, token: good, name: "node1b")
            #expect(await reused.exitStatus(within: .seconds(30)) == 1)
            #expect(reused.log.contains("used already"), "\(reused.log.suffix(500))")
            // An expired token.
            let short = try #require(try await client.createJoinToken(ttlSeconds: 1).token)
            try await Task.sleep(for: .milliseconds(1500))
            let late = try await fabric.startAgent(2, controllerPort: agentPort, token: short, name: "node2b")
            #expect(await late.exitStatus(within: .seconds(30)) == 1)
            #expect(late.log.contains("expired"), "\(late.log.suffix(500))")
            // Two agents claiming one name.
            let again = try #require(try await client.createJoinToken(ttlSeconds: 600).token)
            let twin = try await fabric.startAgent(2, controllerPort: agentPort, token: again, name: "node3")
            #expect(await twin.exitStatus(within: .seconds(30)) == 1)
            #expect(twin.log.contains("host.name_taken") || twin.log.contains("is held by host"))

            let identity = first.identityDirectory
            let url = "https://\(fabric.controllerAddress):\(agentPort)/agent/v1"
            // A forged host id: node3's certificate reporting for another host.
            let forgedReport = """
                [{"hostId":"host-node9","instanceId":"i-0","generation":1,"report":{"event":{"_0":{"type":"x","message":"y"}}}}]
                """
            let forgery = try Shell.run(
                "/usr/bin/curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", identity + "/ca.pem", "--cert",
                    identity + "/host.pem", "--key", identity + "/host.key", "-H", "Content-Type: application/json",
                    "-d", forgedReport, url + "/observations",
                ])
            #expect(forgery.output == "403", "\(forgery.output)")
            // No certificate at all.
            let anonymous = try Shell.run(
                "/usr/bin/curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", identity + "/ca.pem", "-X", "POST",
                    url + "/lease",
                ])
            #expect(anonymous.output == "401", "\(anonymous.output)")
            // A certificate from another CA: the TLS handshake fails.
            let foreign = NSTemporaryDirectory() + "swiftlet-foreign-\(fabric.prefix)"
            _ = try Shell.run(
                "/usr/bin/openssl",
                [
                    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                    "/CN=host-node3", "-days", "1", "-keyout", foreign + ".key", "-out", foreign + ".pem",
                ])
            defer {
                try? FileManager.default.removeItem(atPath: foreign + ".key")
                try? FileManager.default.removeItem(atPath: foreign + ".pem")
            }
            let stranger = try Shell.run(
                "/usr/bin/curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", identity + "/ca.pem", "--cert",
                    foreign + ".pem", "--key", foreign + ".key", "-X", "POST", url + "/lease",
                ])
            #expect(stranger.output == "000", "a foreign certificate got HTTP \(stranger.output)")
            // Revoked: its own certificate no longer speaks for it.
            try await client.revokeHost("host-node3")
            let revoked = try Shell.run(
                "/usr/bin/curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", identity + "/ca.pem", "--cert",
                    identity + "/host.pem", "--key", identity + "/host.key", "-X", "POST", url + "/lease",
                ])
            #expect(revoked.output == "403", "\(revoked.output)")
            _ = server
        }
    }

    @Test func aKilledAgentsHostGoesDownItsInstancesMoveAndItsStaleVMsAreFenced() async throws {
        let kernel = try Kernels.path("hello")
        try await withCluster(hosts: 2) { server, client, fabric, agentPort in
            let agents = try await fabric.join(1...2, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kernel, name: "hello")
            var request = CreateInstanceRequest(name: "keep", image: "hello", restartPolicy: .always, wait: true)
            request.host = "node1"
            let created = try #require(try await client.createInstances(request).first)
            #expect(created.state == .running && created.hostId == "host-node1")
            var plain = CreateInstanceRequest(name: "plain", image: "hello", wait: true)
            plain.host = "node1"
            let plainId = try #require(try await client.createInstances(plain).first?.id)

            agents[0].crash()
            let killed = ContinuousClock.now
            try await eventually("node1 DOWN", timeout: .seconds(10)) {
                try await client.host("host-node1").status == .down
            }
            let down = ContinuousClock.now - killed
            try await eventually("keep RUNNING on another host", timeout: .seconds(20)) {
                let moved = try await client.instance("keep")
                return moved.hostId != "host-node1" && moved.state == .running
            }
            let moved = ContinuousClock.now - killed
            print("cluster: kill -9 → host DOWN \(down), → `always` instance RUNNING elsewhere \(moved)")
            #expect(down < .milliseconds(3000 + 1000))
            let after = try await client.instance("keep")
            #expect((after.generation ?? 0) > (created.generation ?? 0))
            #expect(try await client.events("keep").map(\.type).contains("evacuated"))
            // Only `always` instances move.
            #expect(try await client.instance(plainId).hostId == "host-node1")
            // The dead agent's VM still runs (nothing could stop it) until its agent comes back.
            #expect(fabric.vmms(onHost: 1, instanceId: created.id).count == 1)

            try agents[0].start()
            try await eventually("node1 UP again", timeout: .seconds(30)) {
                try await client.host("host-node1").status == .up
            }
            try await eventually("the stale VM of the moved instance fenced", timeout: .seconds(20)) {
                fabric.vmms(onHost: 1, instanceId: created.id).isEmpty
            }
            // What was not moved was re-attached, not booted again.
            #expect(fabric.vmms(onHost: 1, instanceId: plainId).count == 1)
            #expect(try await client.instance("keep").state == .running)
            _ = server
        }
    }

    @Test func aPartitionedHostFencesItselfAndHeals() async throws {
        let kernel = try Kernels.path("hello")
        try await withCluster(hosts: 1) { server, client, fabric, agentPort in
            try await fabric.join(1...1, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kernel, name: "hello")
            var request = CreateInstanceRequest(name: "p", image: "hello", restartPolicy: .always, wait: true)
            request.host = "node1"
            let created = try #require(try await client.createInstances(request).first)
            #expect(created.state == .running)

            try fabric.setLink(1, up: false)
            // The agent stops its VM before the controller counts its lease as expired, so the
            // instance never runs on two hosts: sampled all along the partition.
            let start = ContinuousClock.now
            var sawBoth = false
            var fencedAt: Duration?
            while ContinuousClock.now - start < .seconds(8) {
                let onHost = !fabric.vmms(onHost: 1, instanceId: created.id).isEmpty
                if !onHost, fencedAt == nil { fencedAt = ContinuousClock.now - start }
                let record = try await client.instance("p")
                if onHost && record.hostId != "host-node1" { sawBoth = true }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(!sawBoth, "the instance ran on two hosts")
            #expect(fencedAt != nil, "the partitioned host kept its VM")
            #expect(try await client.host("host-node1").status == .down)
            let moved = try await client.instance("p")
            #expect(moved.hostId != "host-node1" && moved.state == .running)

            try fabric.setLink(1, up: true)
            try await eventually("node1 heals", timeout: .seconds(20)) {
                try await client.host("host-node1").status == .up
            }
            try await Task.sleep(for: .seconds(1))
            #expect(fabric.vmms(onHost: 1, instanceId: created.id).isEmpty, "the moved instance came back")
            #expect(try await client.instance("p").hostId == moved.hostId)
            _ = server
        }
    }

    @Test func aControllerRestartLosesNothingAndAgentsReconnect() async throws {
        let kernel = try Kernels.path("hello")
        try await withCluster(hosts: 1) { server, client, fabric, agentPort in
            try await fabric.join(1...1, client: client, agentPort: agentPort)
            _ = try await client.uploadImage(path: kernel, name: "hello")
            var request = CreateInstanceRequest(name: "r", image: "hello", wait: true)
            request.host = "node1"
            let created = try #require(try await client.createInstances(request).first)
            let vmm = fabric.vmms(onHost: 1, instanceId: created.id)
            #expect(vmm.count == 1)

            server.terminate()
            try await server.start()
            let fresh = server.client()
            defer { Task { try? await fresh.shutdown() } }
            try await eventually("node1 reconnected", timeout: .seconds(30)) {
                try await fresh.host("host-node1").status == .up
            }
            #expect(try await fresh.instance("r").state == .running)
            #expect(fabric.vmms(onHost: 1, instanceId: created.id) == vmm, "the same VM, re-attached")
            request.name = "r2"
            let second = try #require(try await fresh.createInstances(request).first)
            #expect(second.state == .running && second.hostId == "host-node1")
        }
    }
}
