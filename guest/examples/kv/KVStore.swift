// The key-value state: keys kept sorted (binary search, no Dictionary) and a
// counter. `exported()` and `init?(imported:)` carry the whole state as one
// compact blob:
//   "SKV1" | counter u64 | entry count u32 | entries (key length u16, key,
//   value length u32, value), keys strictly ascending; all big-endian.

struct KVStore {
    static let maxKeyBytes = 256
    static let maxValueBytes = 64 * 1024
    static let magic: [UInt8] = Array("SKV1".utf8)

    private(set) var keys: [[UInt8]] = []
    private(set) var values: [[UInt8]] = []
    private(set) var counter: UInt64 = 0

    init() {}

    func value(for key: ArraySlice<UInt8>) -> [UInt8]? {
        let (found, index) = search(key)
        return found ? values[index] : nil
    }

    mutating func set(_ value: [UInt8], for key: ArraySlice<UInt8>) {
        let (found, index) = search(key)
        if found {
            values[index] = value
        } else {
            keys.insert(Array(key), at: index)
            values.insert(value, at: index)
        }
    }

    /// False when the key was not there.
    mutating func remove(_ key: ArraySlice<UInt8>) -> Bool {
        let (found, index) = search(key)
        if !found { return false }
        keys.remove(at: index)
        values.remove(at: index)
        return true
    }

    mutating func incrementCounter() -> UInt64 {
        counter &+= 1
        return counter
    }

    func exported() -> [UInt8] {
        var out = Self.magic
        var size = 16
        for index in keys.indices { size += 6 + keys[index].count + values[index].count }
        out.reserveCapacity(size)
        Self.appendBigEndian(&out, counter, bytes: 8)
        Self.appendBigEndian(&out, UInt64(keys.count), bytes: 4)
        for index in keys.indices {
            Self.appendBigEndian(&out, UInt64(keys[index].count), bytes: 2)
            out.append(contentsOf: keys[index])
            Self.appendBigEndian(&out, UInt64(values[index].count), bytes: 4)
            out.append(contentsOf: values[index])
        }
        return out
    }

    /// Decodes a blob from `exported()`; nil if it is malformed in any way.
    init?(imported blob: [UInt8]) {
        var reader = BlobReader(bytes: blob)
        guard reader.take(4) == Self.magic[...], let counter = reader.number(bytes: 8),
            let count = reader.number(bytes: 4)
        else { return nil }
        self.counter = counter
        var remaining = count
        while remaining > 0 {
            guard let keyLength = reader.number(bytes: 2), keyLength > 0, keyLength <= UInt64(Self.maxKeyBytes),
                let key = reader.take(Int(keyLength)), let valueLength = reader.number(bytes: 4),
                valueLength <= UInt64(Self.maxValueBytes), let value = reader.take(Int(valueLength))
            else { return nil }
            if let last = keys.last, !Self.less(last[...], key) { return nil }
            keys.append(Array(key))
            values.append(Array(value))
            remaining -= 1
        }
        guard reader.isAtEnd else { return nil }
    }

    /// Whether `key` is present, and where it is or would go.
    private func search(_ key: ArraySlice<UInt8>) -> (Bool, Int) {
        var low = 0
        var high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if Self.less(keys[middle][...], key) {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return (low < keys.count && keys[low][...] == key, low)
    }

    static func less(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
        var indexA = a.startIndex
        var indexB = b.startIndex
        while indexA < a.endIndex && indexB < b.endIndex {
            if a[indexA] != b[indexB] { return a[indexA] < b[indexB] }
            indexA += 1
            indexB += 1
        }
        return a.count < b.count
    }

    private static func appendBigEndian(_ out: inout [UInt8], _ value: UInt64, bytes: Int) {
        var shift = (bytes - 1) * 8
        while shift >= 0 {
            out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
            shift -= 8
        }
    }
}

private struct BlobReader {
    let bytes: [UInt8]
    var position = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { position == bytes.count }

    mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
        guard count <= bytes.count - position else { return nil }
        defer { position += count }
        return bytes[position..<position + count]
    }

    mutating func number(bytes count: Int) -> UInt64? {
        guard let field = take(count) else { return nil }
        var value: UInt64 = 0
        for byte in field { value = value << 8 | UInt64(byte) }
        return value
    }
}
