import CompressNIO
import NIOCore
import Synchronization

/// Encoded answers of hot read-only requests (instance lists), valid while the store's write
/// generation is unchanged: a list of 1,000 instances is decoded and encoded once per change,
/// not once per request. Large answers are also gzip-compressed once, the first time a client
/// that accepts gzip asks (as kube-apiserver does for big lists): 1,000 instances are 513 KB of
/// JSON and 57 KB compressed. Requests that arrive while an answer is being built or compressed
/// wait for that work instead of doing it again (single flight).
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
        /// The generation of the kept answer a request is compressing now, if any.
        var compressing: UInt64?
        /// Requests waiting for that work; woken when any work on this key ends, they look again.
        var waiters: [CheckedContinuation<Void, Never>] = []

        var isIdle: Bool { building == nil && compressing == nil }
    }

    private enum Step {
        case ready(Entry)
        case wait
        case build
        case compress(Entry)
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
    /// per key and generation, and an answer is compressed at most once; if `make` throws, the
    /// error is this request's, and a waiting request builds again.
    func body(for key: String, generation: UInt64, gzip allowed: Bool = false, make: () async throws -> ByteBuffer)
        async rethrows -> (body: ByteBuffer, gzipped: Bool)
    {
        while true {
            switch claim(key, generation: generation, gzip: allowed) {
            case .ready(let entry):
                return Self.reply(entry, gzip: allowed)
            case .wait:
                await waitForWork(key, generation: generation, gzip: allowed)
            case .compress(var entry):
                entry.gzip = Self.gzip(entry.identity)
                finish(key, keeping: entry, compressed: entry.generation)
                return Self.reply(entry, gzip: allowed)
            case .build:
                let identity: ByteBuffer
                do { identity = try await make() } catch {
                    finish(key, keeping: nil, built: generation)
                    throw error
                }
                var entry = Entry(generation: generation, identity: identity)
                if Self.wantsCompression(entry, gzip: allowed) { entry.gzip = Self.gzip(identity) }
                finish(key, keeping: entry, built: generation)
                return Self.reply(entry, gzip: allowed)
            }
        }
    }

    private static func wantsCompression(_ entry: Entry, gzip allowed: Bool) -> Bool {
        allowed && entry.gzip == nil && entry.identity.readableBytes >= compressionThreshold
    }

    private static func reply(_ entry: Entry, gzip allowed: Bool) -> (body: ByteBuffer, gzipped: Bool) {
        if allowed, let gzip = entry.gzip { return (gzip, true) }
        return (entry.identity, false)
    }

    /// What a request does next: use the kept answer, wait for work in progress, or do the work.
    private static func step(_ slot: Slot?, generation: UInt64, gzip allowed: Bool) -> Step {
        if let entry = slot?.entry, entry.generation >= generation {
            guard wantsCompression(entry, gzip: allowed) else { return .ready(entry) }
            return slot?.compressing == entry.generation ? .wait : .compress(entry)
        }
        return slot?.building == generation ? .wait : .build
    }

    private func claim(_ key: String, generation: UInt64, gzip allowed: Bool) -> Step {
        slots.withLock { slots in
            if slots[key] == nil && slots.count >= capacity { slots = slots.filter { !$0.value.isIdle } }
            let next = Self.step(slots[key], generation: generation, gzip: allowed)
            switch next {
            case .build: slots[key, default: Slot()].building = generation
            case .compress(let entry): slots[key, default: Slot()].compressing = entry.generation
            case .ready, .wait: break
            }
            return next
        }
    }

    private func waitForWork(_ key: String, generation: UInt64, gzip allowed: Bool) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let waiting = slots.withLock { slots in
                guard case .wait = Self.step(slots[key], generation: generation, gzip: allowed) else { return false }
                slots[key]?.waiters.append(waiter)
                return true
            }
            if !waiting { waiter.resume() }
        }
    }

    /// Keeps `entry` unless a newer one is kept (or the same one already compressed), ends the
    /// request's work (a build of `built`, with `entry` nil if it failed, or the compression of
    /// `compressed`) and wakes every waiter of the key, which looks again.
    private func finish(_ key: String, keeping entry: Entry?, built: UInt64? = nil, compressed: UInt64? = nil) {
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
            if let built, slot.building == built { slot.building = nil }
            if let compressed, slot.compressing == compressed { slot.compressing = nil }
            var waiters: [CheckedContinuation<Void, Never>] = []
            swap(&waiters, &slot.waiters)
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
