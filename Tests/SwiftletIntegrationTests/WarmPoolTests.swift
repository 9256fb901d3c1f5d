import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Warm pools with real pre-booted kit unikernels: a create takes one, gives it its config over
/// the console, and the app serves under its own name and published port.
@Suite(.serialized) struct WarmPoolTests {
    @Test func createsTakePreBootedVMsAndThePoolRefills() async throws {
        let kernel = try await Kernels.path("http")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "http")
            let pool = try await client.createPool(CreatePoolRequest(image: "http", size: 2))
            try await eventually("pool filled", timeout: .seconds(60)) {
                try await client.pools().first?.ready == 2
            }
            let pooledPids = Set(processes(mentioning: server.dataDirectory + "/run/pool-"))
            #expect(pooledPids.count == 2)

            // Two creates at once: each gets its own pre-booted VM (never one VM for two).
            let ports = [try ServerProcess.freePort(), try ServerProcess.freePort()]
            async let first = client.createInstances(
                CreateInstanceRequest(name: "warm-a", image: "http", publish: ["\(ports[0]):80"], wait: true))
            async let second = client.createInstances(
                CreateInstanceRequest(name: "warm-b", image: "http", publish: ["\(ports[1]):80"], wait: true))
            let created = try await first + second
            for (instance, port) in zip(created, ports) {
                #expect(instance.state == .running, "\(instance.reason ?? "")")
                #expect(instance.timeline.bootPath == "warm-pool")
                let page = try await client.fetch("GET", url: "http://127.0.0.1:\(port)/")
                #expect(page.status == 200)
                #expect(page.body.contains(instance.name))
            }
            // The two instances run in the two VMs that were waiting in the pool.
            #expect(pooledPids.isSubset(of: Set(processes(mentioning: server.dataDirectory + "/run/pool-"))))

            // Refilled in the background, then an instance of another shape boots cold.
            try await eventually("pool refilled", timeout: .seconds(60)) { try await client.pools().first?.ready == 2 }
            let cold = try await client.createInstances(
                CreateInstanceRequest(name: "cold", image: "http", memoryMib: 32, args: ["ip=10.0.2.15/24"], wait: true)
            )
            #expect(cold.first?.timeline.bootPath == "cold")

            // Deleting the pool removes its idle VMs; instances taken from it keep running.
            try await client.deletePool(pool.id)
            try await eventually("idle pool VMs gone") {
                let live = Set(processes(mentioning: server.dataDirectory + "/run/pool-"))
                return live.count == 2
            }
            for instance in created { #expect(try await client.instance(instance.id).state == .running) }
            await expectAPIError(404, "pool.not_found") { try await client.deletePool(pool.id) }
            await expectAPIError(400, "pool.bad_size") {
                _ = try await client.createPool(CreatePoolRequest(image: "http", size: 0))
            }
            await expectAPIError(404, "image.not_found") {
                _ = try await client.createPool(CreatePoolRequest(image: "nope", size: 1))
            }
        }
    }
}
