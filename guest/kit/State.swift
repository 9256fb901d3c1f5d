// Application state over the console, for stateful migration: an app says
// how to export and import its state, and the control plane moves it as
// CRC-32-checked base64 lines (guest/README.md, "Stateful migration"). The
// console input ring holds 1 KiB, so an import arrives one acknowledged line
// at a time.

/// How the kit reads and replaces an app's whole state.
public struct StateInterface {
    let export: () -> [UInt8]
    /// Replaces the state with a blob from `export`; false (state untouched) if it refuses it.
    let `import`: ([UInt8]) -> Bool

    public init(export: @escaping () -> [UInt8], import: @escaping ([UInt8]) -> Bool) {
        self.export = export
        self.import = `import`
    }
}

extension Kit {
    /// Set by an app that supports stateful migration; `state-*` console commands use it.
    public nonisolated(unsafe) static var stateInterface: StateInterface? = nil {
        didSet { if oldValue == nil { Console.subsystemHandlers.append(StateTransfer.handle) } }
    }
}

enum StateTransfer {
    /// Bounds both directions, so a transfer stays a few hundred console lines.
    static let maxBytes = 65536
    /// 288 bytes encode to 384 base64 characters, the longest line the host sends or reads.
    static let bytesPerLine = 288

    private struct Import {
        let byteCount: Int
        let crc: UInt32
        var bytes: [UInt8] = []
    }
    nonisolated(unsafe) private static var pending: Import? = nil

    /// Handles every `state-` line; false for any other line.
    static func handle(_ line: String) -> Bool {
        let words = line.utf8.split(separator: 0x20)
        guard let command = words.first else { return false }
        if command.elementsEqual("state-export".utf8) {
            if words.count == 1 { export() } else { fail("malformed command") }
        } else if command.elementsEqual("state-import-begin".utf8) {
            if words.count == 3, let byteCount = Config.parseDecimal(words[1]), let crc = parseHex(words[2]) {
                begin(byteCount: byteCount, crc: crc)
            } else {
                fail("malformed command")
            }
        } else if command.elementsEqual("state-import".utf8) {
            if words.count == 2 { append(base64: words[1]) } else { fail("malformed command") }
        } else if command.elementsEqual("state-import-end".utf8) {
            if words.count == 1 { end() } else { fail("malformed command") }
        } else if command.starts(with: "state-".utf8) {
            fail("unknown command")
        } else {
            return false
        }
        return true
    }

    private static func export() {
        guard let interface = Kit.stateInterface else { return fail("no state interface") }
        let bytes = interface.export()
        guard bytes.count <= maxBytes else { return fail("too large \(bytes.count)") }
        Console.writeStatic("swiftlet: state-begin ")
        Console.writeDecimal(UInt64(bytes.count))
        Console.writeStatic(" ")
        writeHex8(crc32(bytes))
        Console.writeStatic("\n")
        var encoded: [UInt8] = []
        encoded.reserveCapacity(bytesPerLine / 3 * 4)
        var start = 0
        while start < bytes.count {
            let end = min(start + bytesPerLine, bytes.count)
            encoded.removeAll(keepingCapacity: true)
            base64Encode(bytes[start..<end], into: &encoded)
            Console.writeStatic("swiftlet: state ")
            encoded.withUnsafeBytes { Console.write($0) }
            Console.writeStatic("\n")
            start = end
        }
        Console.writeStatic("swiftlet: state-end\n")
    }

    private static func begin(byteCount: UInt64, crc: UInt32) {
        pending = nil  // a new begin abandons any import in progress
        guard Kit.stateInterface != nil else { return fail("no state interface") }
        guard byteCount <= UInt64(maxBytes) else { return fail("too large \(byteCount)") }
        var started = Import(byteCount: Int(byteCount), crc: crc)
        started.bytes.reserveCapacity(Int(byteCount))
        pending = started
        print("swiftlet: state-import ready")
    }

    private static func append(base64 chunk: Substring.UTF8View) {
        guard var current = pending else { return fail("no import begun") }
        pending = nil  // any error abandons the import; the host starts again with a begin
        guard base64Decode(chunk, into: &current.bytes) else { return fail("bad base64") }
        guard current.bytes.count <= current.byteCount else {
            return fail("size mismatch \(current.bytes.count) \(current.byteCount)")
        }
        pending = current
        print("swiftlet: state-import \(current.bytes.count)")
    }

    private static func end() {
        guard let current = pending, let interface = Kit.stateInterface else { return fail("no import begun") }
        pending = nil
        guard current.bytes.count == current.byteCount else {
            return fail("size mismatch \(current.bytes.count) \(current.byteCount)")
        }
        let crc = crc32(current.bytes)
        guard crc == current.crc else {
            Console.writeStatic("swiftlet: state-error crc mismatch ")
            writeHex8(crc)
            Console.writeStatic(" ")
            writeHex8(current.crc)
            Console.writeStatic("\n")
            return
        }
        guard interface.import(current.bytes) else { return fail("importer refused") }
        print("swiftlet: state-imported \(current.byteCount)")
    }

    private static func fail(_ reason: String) {
        print("swiftlet: state-error \(reason)")
    }

    /// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`), so the host checks it with zlib.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    /// 8 lowercase hex digits, without Console.writeHex's `0x`.
    private static func writeHex8(_ value: UInt32) {
        var shift = 28
        while shift >= 0 {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt32(shift)) & 0xF
            Console.write(byte: nibble < 10 ? 0x30 + nibble : 0x57 + nibble)
            shift -= 4
        }
    }

    private static func parseHex(_ text: Substring.UTF8View) -> UInt32? {
        guard !text.isEmpty, text.count <= 8 else { return nil }
        var value: UInt32 = 0
        for byte in text {
            guard let digit = Config.hexDigit(byte) else { return nil }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Standard base64 with `=` padding.
    static func base64Encode(_ bytes: ArraySlice<UInt8>, into out: inout [UInt8]) {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let count = min(3, bytes.endIndex - index)
            var group = UInt32(bytes[index]) << 16
            if count > 1 { group |= UInt32(bytes[index + 1]) << 8 }
            if count > 2 { group |= UInt32(bytes[index + 2]) }
            for position in 0..<4 {
                out.append(
                    position <= count ? alphabet[Int(group >> UInt32(18 - 6 * position) & 0x3F)] : UInt8(ascii: "="))
            }
            index += count
        }
    }

    /// Appends the decoded bytes of whole 4-character groups; `=` only ends the
    /// chunk. False (with `out` possibly extended) on anything else.
    static func base64Decode(_ text: Substring.UTF8View, into out: inout [UInt8]) -> Bool {
        guard text.count % 4 == 0 else { return false }
        var group: UInt32 = 0
        var filled = 0
        var padding = 0
        for byte in text {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="):
                padding += 1
                value = 0
            default: return false
            }
            if padding > 0 && byte != UInt8(ascii: "=") { return false }  // data after padding
            group = group << 6 | UInt32(value)
            filled += 1
            if filled == 4 {
                guard padding <= 2 else { return false }
                out.append(UInt8(truncatingIfNeeded: group >> 16))
                if padding < 2 { out.append(UInt8(truncatingIfNeeded: group >> 8)) }
                if padding < 1 { out.append(UInt8(truncatingIfNeeded: group)) }
                group = 0
                filled = 0
            }
        }
        return true
    }
}
