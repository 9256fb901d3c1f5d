// Boot configuration: `key=value` words on the kernel command line.
//
// An app names the keys it accepts with Config.load(allowed:). Anything
// wrong — an unknown key, a word without `=`, an empty or malformed value, a
// key given twice — prints `swiftlet: bad config: <key>: <reason>` and exits
// with the bad-config status at once: a guest never hangs on bad config.

public enum Config {
    nonisolated(unsafe) static var words: [(key: String, value: String)] = []

    /// QEMU microvm without ACPI appends `virtio_mmio.device=512@0x…:irq`
    /// words for Linux; they describe the VMM's devices, not the app's
    /// config, so they are skipped.
    static let vmmDevicePrefix: [UInt8] = Array("virtio_mmio.".utf8)

    /// Value kinds the kit checks for well-known keys as soon as they are loaded.
    static let addressKeys = ["gw", "dns", "netmask"]
    /// Per NIC, in order: `ip`/`mac` for the first, `ip<i>`/`mac<i>` for NIC i.
    static let interfaceAddressKeys = ["ip", "ip1", "ip2", "ip3"]
    static let macKeys = ["mac", "mac1", "mac2", "mac3"]

    /// Splits the raw command line; called by the kit before the app starts.
    static func parse(commandLine: UnsafeBufferPointer<UInt8>) {
        var current: [UInt8] = []
        var collected: [[UInt8]] = []
        for byte in commandLine {
            if byte == 0x20 || byte == 0x09 || byte == 0x0A {
                if !current.isEmpty { collected.append(current) }
                current.removeAll()
            } else {
                current.append(byte)
            }
        }
        if !current.isEmpty { collected.append(current) }
        for word in collected where !word.starts(with: vmmDevicePrefix) {
            guard let equals = word.firstIndex(of: 0x3D) else {
                fail(key: String(decoding: word, as: UTF8.self), reason: "expected key=value")
            }
            let key = String(decoding: word[..<equals], as: UTF8.self)
            let value = String(decoding: word[(equals + 1)...], as: UTF8.self)
            if key.isEmpty { fail(key: String(decoding: word, as: UTF8.self), reason: "empty key") }
            if words.contains(where: { same($0.key, key) }) { fail(key: key, reason: "given twice") }
            words.append((key, value))
        }
    }

    /// Checks every word against the app's allowed keys and validates the
    /// values of well-known keys (`ip`, `ip1`–`ip3`, `mac`, `mac1`–`mac3`, `gw`,
    /// `dns`, `netmask`, `port`).
    public static func load(allowed: [String]) {
        for (key, value) in words {
            guard allowed.contains(where: { same($0, key) }) else { fail(key: key, reason: "unknown key") }
            guard !value.isEmpty else { fail(key: key, reason: "empty value") }
            if interfaceAddressKeys.contains(where: { same($0, key) }) { _ = ipv4(key) }
            if macKeys.contains(where: { same($0, key) }) { _ = mac(key) }
            if addressKeys.contains(where: { same($0, key) }) { _ = ipv4Address(key) }
            if same(key, "port") { _ = port(key, default: 0) }
        }
    }

    /// The raw value of `key`, or nil when it was not given.
    public static func string(_ key: String) -> String? {
        words.first(where: { same($0.key, key) })?.value
    }

    public static func string(_ key: String, default fallback: String) -> String {
        string(key) ?? fallback
    }

    /// A TCP/UDP port 1...65535.
    public static func port(_ key: String = "port", default fallback: UInt16) -> UInt16 {
        guard let value = string(key) else { return fallback }
        guard let number = parseDecimal(value.utf8), number >= 1, number <= 65535 else {
            fail(key: key, reason: "not a port (1-65535): \(value)")
        }
        return UInt16(number)
    }

    /// A decimal integer within `range`.
    public static func integer(_ key: String, default fallback: Int, range: ClosedRange<Int>) -> Int {
        guard let value = string(key) else { return fallback }
        guard let number = parseDecimal(value.utf8), number <= UInt64(range.upperBound), Int(number) >= range.lowerBound
        else {
            fail(key: key, reason: "not an integer in \(range.lowerBound)...\(range.upperBound): \(value)")
        }
        return Int(number)
    }

    /// An interface address `a.b.c.d/prefix`. The address is in host order
    /// (a is the most significant byte).
    public static func ipv4(_ key: String = "ip") -> (address: UInt32, prefixLength: Int)? {
        guard let value = string(key) else { return nil }
        let parts = value.utf8.split(separator: 0x2F, omittingEmptySubsequences: false)
        guard parts.count == 2, let address = parseAddress(parts[0]),
            let prefix = parseDecimal(parts[1]), prefix <= 32
        else {
            fail(key: key, reason: "expected a.b.c.d/prefix: \(value)")
        }
        return (address, Int(prefix))
    }

    /// A plain address `a.b.c.d`, host order.
    public static func ipv4Address(_ key: String) -> UInt32? {
        guard let value = string(key) else { return nil }
        guard let address = parseAddress(value.utf8[...]) else {
            fail(key: key, reason: "expected a.b.c.d: \(value)")
        }
        return address
    }

    /// An Ethernet address `xx:xx:xx:xx:xx:xx` (hex digits, either case).
    static func mac(_ key: String) -> MACAddress? {
        guard let value = string(key) else { return nil }
        let reason = "expected xx:xx:xx:xx:xx:xx: \(value)"
        let parts = value.utf8.split(separator: 0x3A, omittingEmptySubsequences: false)
        guard parts.count == 6 else { fail(key: key, reason: reason) }
        var bits: UInt64 = 0
        for part in parts {
            guard part.count == 2, let high = hexDigit(part.first!), let low = hexDigit(part.last!) else {
                fail(key: key, reason: reason)
            }
            bits = bits << 8 | UInt64(high << 4 | low)
        }
        return MACAddress(bits)
    }

    /// Prints the bad-config line and exits with the bad-config status.
    public static func fail(key: String, reason: String) -> Never {
        print("swiftlet: bad config: \(key): \(reason)")
        Kit.exit(status: .badConfig)
    }

    /// Byte-wise equality. String's == compares canonical equivalence, which
    /// links ~30 KiB of Unicode normalisation tables into every kernel.
    static func same(_ left: String, _ right: String) -> Bool {
        left.utf8.elementsEqual(right.utf8)
    }

    static func parseAddress(_ text: Substring.UTF8View) -> UInt32? {
        let octets = text.split(separator: 0x2E, omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var address: UInt32 = 0
        for octet in octets {
            guard octet.count <= 3, let value = parseDecimal(octet), value <= 255 else { return nil }
            address = address << 8 | UInt32(value)
        }
        return address
    }

    static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }

    static func parseDecimal<Digits: Collection>(_ digits: Digits) -> UInt64? where Digits.Element == UInt8 {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value: UInt64 = 0
        for digit in digits {
            guard digit >= 0x30, digit <= 0x39 else { return nil }
            value = value * 10 + UInt64(digit - 0x30)
        }
        return value
    }
}
