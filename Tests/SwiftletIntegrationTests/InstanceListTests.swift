import Foundation
import SwiftletCore
import Testing

@testable import SwiftletController

/// `GET /v1/instances` through a real server and real curl: a list large enough to compress
/// comes gzip-compressed only to a client that asks, and decompresses to the plain answer.
@Suite struct InstanceListTests {
    @Test func largeListIsGzippedOnlyForClientsThatAcceptIt() async throws {
        let kernel = try await Kernels.path("hello")
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

    @Test(arguments: StoreEngine.allCases) func pagesWalkTheListInOrderAndRejectBadMarkers(engine: StoreEngine)
        async throws
    {
        let kernel = try await Kernels.path("hello")
        try await withServer(engine: engine) { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            _ = try await client.createInstances(
                CreateInstanceRequest(name: "paged", image: "hello", count: 5, wait: true))
            let all = try await client.instances(pageSize: Controller.maxPageSize)
            #expect(all.count == 5)
            // Pages of 2: 2, 2 and a last one of 1 without `next`.
            var pages: [InstanceList] = []
            var marker: String?
            repeat {
                let page = try get(server, "/v1/instances?limit=2" + (marker.map { "&marker=\($0)" } ?? ""))
                pages.append(try SwiftletJSON.decoder().decode(InstanceList.self, from: Data(page.body.utf8)))
                marker = pages.last?.next
            } while marker != nil && pages.count < 10
            #expect(pages.map(\.instances.count) == [2, 2, 1])
            #expect(pages.flatMap(\.instances).map(\.id) == all.map(\.id))
            #expect(try await client.instances(pageSize: 2).map(\.id) == all.map(\.id))
            // The unpaginated answer is cached now: it must not stand in for a bad query.
            #expect(try get(server, "/v1/instances").status == 200)
            for bad in ["limit=0", "limit=-1", "limit=two", "limit=2&marker=i-0000000000000000", "marker=paged-1"] {
                let answer = try get(server, "/v1/instances?" + bad)
                #expect(answer.status == 400, "\(bad): \(answer.body)")
            }
            for instance in all { try await client.deleteInstance(instance.id) }
        }
    }

    /// Status and body of an authenticated GET through curl.
    private func get(_ server: ServerProcess, _ path: String) throws -> (status: Int, body: String) {
        let result = try Shell.run(
            "/usr/bin/curl",
            ["-sS", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(server.adminToken)", server.url + path])
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    /// Lowercased headers and the body of `curl -D -` output.
    private func split(_ output: String) -> (head: String, body: String) {
        guard let end = output.range(of: "\r\n\r\n") else { return (output.lowercased(), "") }
        return (String(output[..<end.lowerBound]).lowercased(), String(output[end.upperBound...]))
    }
}
