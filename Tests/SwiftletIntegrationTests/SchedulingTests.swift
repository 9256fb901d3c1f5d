import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// The controller places instances with the scheduler on the real host the server registered.
@Suite(.serialized) struct SchedulingTests {
    @Test func placesOnTheRegisteredHostAndRefusesWhatNoHostFits() async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer { _, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let host = try #require(try await client.hosts().first)
            let created = try await client.createInstances(
                CreateInstanceRequest(name: "placed", image: "hello", flavor: "tiny", wait: true))
            let instance = try #require(created.first)
            #expect(instance.state == .running, "\(instance.reason ?? "")")
            #expect(instance.hostId == host.id)

            // The whole host's memory passes validation but no longer fits next to the running instance.
            do {
                _ = try await client.createInstances(
                    CreateInstanceRequest(name: "too-big", image: "hello", memoryMib: host.memoryMib))
                Issue.record("expected 409 scheduler.no_host, got success")
            } catch let error as ClientError {
                guard case .api(let status, let code, let message) = error.kind else {
                    Issue.record("expected an API error, got \(error)")
                    return
                }
                #expect(status == 409)
                #expect(code == "scheduler.no_host")
                #expect(message == "no host fits: 1 lacked memory", "\(message)")
            }
            // Nothing half-made: the refused request left no record.
            #expect(try await client.instances().map(\.name) == ["placed"])
            try await client.deleteInstance("placed")
        }
    }
}
