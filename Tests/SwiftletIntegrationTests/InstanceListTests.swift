import Foundation
import SwiftletCore
import Testing

@testable import SwiftletController

/// `GET /v1/instances` through a real server and real curl: a list large enough to compress
/// comes gzip-compressed only to a client that asks, and decompresses to the plain answer.
@Suite struct InstanceListTests {
    @Test func largeListIsGzippedOnlyForClientsThatAcceptIt() async throws {
        let kernel = try Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            // ~500 bytes per instance: 40 make a list over the compression threshold.
            _ = try await client.createInstances(
                CreateInstanceRequest(name: "many", image: "hello", count: 40, wait: true))
            let url = server.url + "/v1/instances"
            let auth = "Authorization: Bearer \(server.adminToken)"
            let plain = try Shell.run("/usr/bin/curl", ["-sS", "-D", "-", "-H", auth, url])
            let gzipped = try Shell.run("/usr/bin/curl", ["-sS", "-D", "-", "-H", auth, "--compressed", url])
            #expect(plain.status == 0 && gzipped.status == 0)
            let (plainHead, plainBody) = split(plain.output)
            let (gzipHead, gzipBody) = split(gzipped.output)
            #expect(!plainHead.contains("content-encoding"))
            #expect(gzipHead.contains("content-encoding: gzip"))
            #expect(plainBody.utf8.count > ResponseCache.compressionThreshold)
            #expect(gzipBody == plainBody)
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    /// Lowercased headers and the body of `curl -D -` output.
    private func split(_ output: String) -> (head: String, body: String) {
        guard let end = output.range(of: "\r\n\r\n") else { return (output.lowercased(), "") }
        return (String(output[..<end.lowerBound]).lowercased(), String(output[end.upperBound...]))
    }
}
