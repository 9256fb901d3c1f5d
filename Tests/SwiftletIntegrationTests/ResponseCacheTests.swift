import CompressNIO
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

    @Test func largeAnswersAreCompressedOncePerGeneration() throws {
        let cache = ResponseCache()
        let made = Atomic(0)
        let json = "[" + (0..<2_000).map { #"{"id":"i-\#($0)","state":"RUNNING"}"# }.joined(separator: ",") + "]"
        let make = {
            made.add(1, ordering: .relaxed)
            return ByteBuffer(string: json)
        }
        // A client without gzip gets the JSON as it is.
        let plain = cache.body(for: "list", generation: 1, make: make)
        #expect(!plain.gzipped && String(buffer: plain.body) == json)
        var first = cache.body(for: "list", generation: 1, gzip: true, make: make)
        #expect(first.gzipped)
        #expect(first.body.readableBytes < json.utf8.count / 5)
        let restored = try first.body.decompress(with: .gzip())
        #expect(String(buffer: restored) == json)
        _ = cache.body(for: "list", generation: 1, gzip: true, make: make)
        #expect(made.load(ordering: .relaxed) == 1)
        _ = cache.body(for: "list", generation: 2, gzip: true, make: make)
        #expect(made.load(ordering: .relaxed) == 2)
    }

    @Test func smallAnswersStayUncompressed() {
        let answer = ResponseCache().body(for: "small", generation: 1, gzip: true) { ByteBuffer(string: "[]") }
        #expect(!answer.gzipped && String(buffer: answer.body) == "[]")
    }
}
