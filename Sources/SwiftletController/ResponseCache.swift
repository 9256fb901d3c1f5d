import NIOCore
import Synchronization

/// Encoded answers of hot read-only requests (instance lists), valid while the store's write
/// generation is unchanged: a list of 1,000 instances is decoded and encoded once per change,
/// not once per request.
final class ResponseCache: Sendable {
    private struct Entry {
        var generation: UInt64
        var body: ByteBuffer
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Distinct queries kept at most; the whole cache is dropped beyond (queries are few in practice).
    private let capacity = 256

    func body(for key: String, generation: UInt64, make: () throws -> ByteBuffer) rethrows -> ByteBuffer {
        if let hit = entries.withLock({ $0[key] }), hit.generation == generation { return hit.body }
        let body = try make()
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = Entry(generation: generation, body: body)
        }
        return body
    }
}
