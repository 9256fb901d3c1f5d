import CompressNIO
import NIOCore
import Synchronization

/// Encoded answers of hot read-only requests (instance lists), valid while the store's write
/// generation is unchanged: a list of 1,000 instances is decoded and encoded once per change,
/// not once per request. Large answers are also kept gzip-compressed, once, for clients that
/// accept it (as kube-apiserver does for big lists): 1,000 instances are ~750 KB of JSON and
/// ~10× less compressed.
final class ResponseCache: Sendable {
    /// An answer in the encodings a client may ask for.
    struct Body: Sendable {
        var identity: ByteBuffer
        /// nil when the answer is too small to be worth compressing.
        var gzip: ByteBuffer?
    }

    private struct Entry {
        var generation: UInt64
        var body: Body
    }

    /// Answers smaller than this go out as they are: compression would save less than it costs.
    static let compressionThreshold = 16 * 1024

    private let entries = Mutex<[String: Entry]>([:])
    /// Distinct queries kept at most; the whole cache is dropped beyond (queries are few in practice).
    private let capacity = 256

    func body(for key: String, generation: UInt64, make: () throws -> ByteBuffer) rethrows -> Body {
        if let hit = entries.withLock({ $0[key] }), hit.generation == generation { return hit.body }
        let identity = try make()
        let body = Body(identity: identity, gzip: Self.gzip(identity))
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = Entry(generation: generation, body: body)
        }
        return body
    }

    private static func gzip(_ buffer: ByteBuffer) -> ByteBuffer? {
        guard buffer.readableBytes >= compressionThreshold else { return nil }
        var input = buffer
        // zlib's default level: the answer is compressed once per store change, sent many times.
        return try? input.compress(with: .gzip())
    }

    /// Whether an `Accept-Encoding` header value admits gzip (RFC 9110 §12.5.3: a q of 0 refuses).
    static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let coding = parts.first, coding == "gzip" || coding == "x-gzip" || coding == "*" else { continue }
            let refused = parts.dropFirst().contains { parameter in
                guard parameter.hasPrefix("q=") else { return false }
                return (Double(parameter.dropFirst(2)) ?? 1) == 0
            }
            return !refused
        }
        return false
    }
}
