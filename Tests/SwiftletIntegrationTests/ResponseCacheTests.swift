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

    @Test func largeAnswersAreCompressedOncePerGeneration() throws {
        let cache = ResponseCache()
        let made = Atomic(0)
        let json = "[" + (0..<2_000).map { #"{"id":"i-\#($0)","state":"RUNNING"}"# }.joined(separator: ",") + "]"
        let make = {
            made.add(1, ordering: .relaxed)
            return ByteBuffer(string: json)
        }
        let first = cache.body(for: "list", generation: 1, make: make)
        var gzip = try #require(first.gzip)
        #expect(gzip.readableBytes < first.identity.readableBytes / 5)
        let restored = try gzip.decompress(with: .gzip())
        #expect(String(buffer: restored) == json)
        _ = cache.body(for: "list", generation: 1, make: make)
        #expect(made.load(ordering: .relaxed) == 1)
        _ = cache.body(for: "list", generation: 2, make: make)
        #expect(made.load(ordering: .relaxed) == 2)
    }

    @Test func smallAnswersStayUncompressed() {
        let body = ResponseCache().body(for: "small", generation: 1) { ByteBuffer(string: "[]") }
        #expect(body.gzip == nil && String(buffer: body.identity) == "[]")
    }
}
