import CompressNIO
import NIOCore
import Synchronization

/// Encoded answers of hot read-only requests (instance lists), valid while the store's write
/// generation is unchanged: a list of 1,000 instances is decoded and encoded once per change,
/// not once per request. Large answers are also gzip-compressed once, the first time a client
/// that accepts gzip asks (as kube-apiserver does for big lists): 1,000 instances are 513 KB of
/// JSON and 57 KB compressed. Concurrent requests for an answer that is being built wait for
/// that build instead of building it again (single flight).
final class ResponseCache: Sendable {
    private struct Entry {
        var generation: UInt64
        var identity: ByteBuffer
        /// Made on the first gzip request; nil until then, and for answers too small to compress.
        var gzip: ByteBuffer?
    }

    private struct Slot {
        var entry: Entry?
        /// The generation a request is building now, if any.
        var building: UInt64?
        /// Requests waiting for that build; woken when any build of this key ends, they look again.
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private enum Step {
        case ready(Entry)
        case wait
        case build
    }

    /// Answers smaller than this go out as they are: compression would save less than it costs.
    static let compressionThreshold = 16 * 1024

    private let slots = Mutex<[String: Slot]>([:])
    /// Distinct queries kept at most; beyond, the idle ones are dropped (queries are few in practice).
    private let capacity = 256

    /// A key naming one query: each part with its length, so that no two queries share one
    /// (`name=a|b` against `name=a&image=b`), and an absent part apart from an empty one.
    static func key(_ parts: String?...) -> String {
        var key = ""
        for part in parts {
            if let part { key += "\(part.utf8.count):\(part)" } else { key += "-" }
        }
        return key
    }

    /// The answer for `key` at `generation` (or newer), and whether it is gzip-compressed (only
    /// when `gzip` is allowed and the answer is large enough). `make` runs at most once at a time
    /// per key and generation; if it throws, the error is this request's, and a waiting request
    /// builds again.
    func body(for key: String, generation: UInt64, gzip allowed: Bool = false, make: () throws -> ByteBuffer)
        async rethrows -> (body: ByteBuffer, gzipped: Bool)
    {
        while true {
            switch claim(key, generation: generation) {
            case .ready(let entry):
                return answer(entry, key: key, gzip: allowed, built: false)
            case .wait:
                await waitForBuild(key, generation: generation)
            case .build:
                let identity: ByteBuffer
                do { identity = try make() } catch {
                    keep(nil, key: key, generation: generation, endingBuild: true)
                    throw error
                }
                return answer(Entry(generation: generation, identity: identity), key: key, gzip: allowed, built: true)
            }
        }
    }

    private func claim(_ key: String, generation: UInt64) -> Step {
        slots.withLock { slots in
            if let slot = slots[key] {
                if let entry = slot.entry, entry.generation >= generation { return .ready(entry) }
                if slot.building == generation { return .wait }
            } else if slots.count >= capacity {
                slots = slots.filter { $0.value.building != nil }
            }
            slots[key, default: Slot()].building = generation
            return .build
        }
    }

    private func waitForBuild(_ key: String, generation: UInt64) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let waiting = slots.withLock { slots in
                guard slots[key]?.building == generation else { return false }
                slots[key]?.waiters.append(waiter)
                return true
            }
            if !waiting { waiter.resume() }
        }
    }

    /// Compresses `entry` if this request wants it; keeps what is new (a build, or its gzip).
    private func answer(_ entry: Entry, key: String, gzip allowed: Bool, built: Bool) -> (
        body: ByteBuffer, gzipped: Bool
    ) {
        var current = entry
        let compress = allowed && current.identity.readableBytes >= Self.compressionThreshold
        if compress && current.gzip == nil { current.gzip = Self.gzip(current.identity) }
        if built || (current.gzip != nil && entry.gzip == nil) {
            keep(current, key: key, generation: current.generation, endingBuild: built)
        }
        if compress, let gzip = current.gzip { return (gzip, true) }
        return (current.identity, false)
    }

    /// Keeps `entry` unless a newer one is kept (or the same one already compressed). The request
    /// that built `generation` (with `entry` nil if the build failed) ends its build and wakes
    /// every waiter of the key, which looks again.
    private func keep(_ entry: Entry?, key: String, generation: UInt64, endingBuild: Bool) {
        let waiters: [CheckedContinuation<Void, Never>] = slots.withLock { slots in
            var slot = slots[key] ?? Slot()
            if let entry {
                let better =
                    slot.entry.map { kept in
                        entry.generation > kept.generation
                            || (entry.generation == kept.generation && kept.gzip == nil && entry.gzip != nil)
                    } ?? true
                if better { slot.entry = entry }
            }
            var waiters: [CheckedContinuation<Void, Never>] = []
            if endingBuild {
                if slot.building == generation { slot.building = nil }
                swap(&waiters, &slot.waiters)
            }
            slots[key] = slot
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private static func gzip(_ buffer: ByteBuffer) -> ByteBuffer? {
        var input = buffer
        // zlib's default level: the answer is compressed once per store change, sent many times.
        return try? input.compress(with: .gzip())
    }

    /// Whether an `Accept-Encoding` header value admits gzip (RFC 9110 §12.5.3: a q of 0 refuses).
    /// Runs on every list request, so it walks the bytes without allocating.
    static func acceptsGzip(_ header: String?) -> Bool {
        guard var header else { return false }
        header.makeContiguousUTF8()  // a no-op for native strings
        return header.utf8.withContiguousStorageIfAvailable { acceptsGzip($0) } ?? false
    }

    private static func acceptsGzip(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: ",") { end += 1 }
            let item = UnsafeBufferPointer(rebasing: bytes[start..<end])
            let coding = trimmed(item, upTo: item.firstIndex(of: UInt8(ascii: ";")) ?? item.count)
            if matches(coding, "gzip") || matches(coding, "x-gzip") || matches(coding, "*") {
                return !refusesByQuality(item)
            }
            start = end + 1
        }
        return false
    }

    /// The bytes of `item[..<end]` without surrounding spaces and tabs.
    private static func trimmed(_ item: UnsafeBufferPointer<UInt8>, upTo end: Int) -> UnsafeBufferPointer<UInt8> {
        var low = 0
        var high = end
        while low < high && (item[low] == 0x20 || item[low] == 0x09) { low += 1 }
        while high > low && (item[high - 1] == 0x20 || item[high - 1] == 0x09) { high -= 1 }
        return UnsafeBufferPointer(rebasing: item[low..<high])
    }

    /// ASCII case-insensitive equality with a lowercase literal.
    private static func matches(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        for index in 0..<bytes.count {
            let byte = bytes[index]
            let lower = (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
            if lower != expected[index] { return false }
        }
        return true
    }

    /// Whether a coding's parameters include `q=0` (or 0.0, 0.00, 0.000).
    private static func refusesByQuality(_ item: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = item.firstIndex(of: UInt8(ascii: ";")) ?? item.count
        while index < item.count {
            var end = index + 1
            while end < item.count && item[end] != UInt8(ascii: ";") { end += 1 }
            let parameter = trimmed(UnsafeBufferPointer(rebasing: item[(index + 1)..<end]), upTo: end - index - 1)
            if parameter.count >= 2 && (parameter[0] | 0x20) == UInt8(ascii: "q") && parameter[1] == UInt8(ascii: "=") {
                let value = parameter.dropFirst(2)
                return !value.isEmpty && value.allSatisfy { $0 == UInt8(ascii: "0") || $0 == UInt8(ascii: ".") }
                    && value.first == UInt8(ascii: "0")
            }
            index = end
        }
        return false
    }
}
