import CompressNIO
import Foundation
import NIOCore
import Synchronization
import Testing

@testable import SwiftletController

@Suite struct ResponseCacheTests {
    @Test(arguments: [
        ("gzip", true), ("gzip, deflate, br", true), ("deflate, GZIP;q=0.5", true), ("*", true),
        ("gzip;q=0", false), ("gzip; q=0.0", false), ("deflate", false), ("", false), ("identity", false),
    ])
    func acceptEncoding(header: String, accepted: Bool) {
        #expect(ResponseCache.acceptsGzip(header) == accepted)
    }

    @Test func missingHeaderMeansIdentity() {
        #expect(!ResponseCache.acceptsGzip(nil))
    }

    @Test func keysOfDifferentQueriesDiffer() {
        let keys = [
            ResponseCache.key("instances", "a|b", nil), ResponseCache.key("instances", "a", "b"),
            ResponseCache.key("instances", "a", ""), ResponseCache.key("instances", "a", nil),
            ResponseCache.key("instances", "1:a", nil), ResponseCache.key("instances", "1", "a"),
        ]
        #expect(Set(keys).count == keys.count)
        #expect(ResponseCache.key("instances", "a", nil) == ResponseCache.key("instances", "a", nil))
    }

    @Test func largeAnswersAreCompressedOncePerGeneration() async throws {
        let cache = ResponseCache()
        let made = Atomic(0)
        let json = "[" + (0..<2_000).map { #"{"id":"i-\#($0)","state":"RUNNING"}"# }.joined(separator: ",") + "]"
        let make = {
            made.add(1, ordering: .relaxed)
            return ByteBuffer(string: json)
        }
        // A client without gzip gets the JSON as it is.
        let plain = await cache.body(for: "list", generation: 1, make: make)
        #expect(!plain.gzipped && String(buffer: plain.body) == json)
        var first = await cache.body(for: "list", generation: 1, gzip: true, make: make)
        #expect(first.gzipped)
        #expect(first.body.readableBytes < json.utf8.count / 5)
        let restored = try first.body.decompress(with: .gzip())
        #expect(String(buffer: restored) == json)
        _ = await cache.body(for: "list", generation: 1, gzip: true, make: make)
        #expect(made.load(ordering: .relaxed) == 1)
        _ = await cache.body(for: "list", generation: 2, gzip: true, make: make)
        #expect(made.load(ordering: .relaxed) == 2)
    }

    @Test func smallAnswersStayUncompressed() async {
        let answer = await ResponseCache().body(for: "small", generation: 1, gzip: true) { ByteBuffer(string: "[]") }
        #expect(!answer.gzipped && String(buffer: answer.body) == "[]")
    }

    /// Requests that arrive while an answer is being built wait for it: one build, not one each.
    /// A failed build is the builder's error; a waiter then builds again.
    @Test func concurrentRequestsShareOneBuild() async throws {
        let cache = ResponseCache()
        let made = Counter()
        let answers = await withTaskGroup(of: String.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    let answer = await cache.body(for: "list", generation: 7) {
                        made.add()
                        try? await Task.sleep(for: .milliseconds(200))  // a slow build: the others arrive meanwhile
                        return ByteBuffer(string: "[1,2,3]")
                    }
                    return String(buffer: answer.body)
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(answers == Array(repeating: "[1,2,3]", count: 16))
        #expect(made.value == 1)

        struct BuildFailed: Error {}
        let attempts = Counter()
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    do {
                        _ = try await cache.body(for: "list", generation: 8) {
                            let attempt = attempts.add()
                            try? await Task.sleep(for: .milliseconds(100))
                            if attempt == 1 { throw BuildFailed() }
                            return ByteBuffer(string: "[4]")
                        }
                        return true
                    } catch { return false }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.filter { !$0 }.count == 1, "\(outcomes)")
        #expect(attempts.value == 2)
        #expect(String(buffer: await cache.body(for: "list", generation: 8) { ByteBuffer() }.body) == "[4]")
    }

    /// A large answer kept uncompressed is compressed once for the gzip requests that arrive
    /// together: all of them get the same buffer, not one compression each.
    @Test func concurrentGzipRequestsShareOneCompression() async throws {
        let cache = ResponseCache()
        // About 6 MB of JSON: its compression takes long enough for the others to arrive meanwhile.
        let json = "[" + (0..<120_000).map { #"{"id":"i-\#($0)","state":"RUNNING"}"# }.joined(separator: ",") + "]"
        _ = await cache.body(for: "big", generation: 1) { ByteBuffer(string: json) }
        let bodies = await withTaskGroup(of: ByteBuffer.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let answer = await cache.body(for: "big", generation: 1, gzip: true) { ByteBuffer() }
                    return answer.gzipped ? answer.body : ByteBuffer()
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let storages = Set(bodies.map { $0.withUnsafeReadableBytes { Int(bitPattern: $0.baseAddress) } })
        #expect(bodies.allSatisfy { $0.readableBytes > 0 && $0.readableBytes < json.utf8.count / 5 })
        #expect(storages.count == 1, "\(storages.count) distinct compressed buffers")
        var first = bodies[0]
        #expect(String(buffer: try first.decompress(with: .gzip())) == json)
    }
}

/// A count that concurrent tasks share.
private final class Counter: Sendable {
    private let count = Atomic(0)
    var value: Int { count.load(ordering: .relaxed) }
    /// Counts one more; returns the new count.
    @discardableResult func add() -> Int { count.add(1, ordering: .relaxed).newValue }
}
