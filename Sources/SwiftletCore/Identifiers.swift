/// Resource ids: a short kind prefix and 16 random hex digits, e.g. `i-3f9a0c1b2d4e5f60`.
public enum ResourceID {
    public static func make(_ prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return prefix + "-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// A resource name users choose: 1–63 characters of letters, digits, `-`, `_`, `.`, not
    /// starting with `.` (so never `..`), never containing `/`.
    public static func validateName(_ name: String, field: String = "name") throws(SwiftletError) {
        let allowed = name.unicodeScalars.allSatisfy {
            ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9")
                || $0 == "-" || $0 == "_" || $0 == "."
        }
        guard !name.isEmpty, name.count <= 63, allowed, !name.hasPrefix(".") else {
            throw .badRequest(
                "\(field).invalid",
                "\(field) '\(name)' must be 1-63 characters of letters, digits, '-', '_' or '.', not starting with '.'"
            )
        }
    }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hex, two digits per byte (digests, token hashes). `String(format:)` costs a
    /// Foundation format parse per byte: 32 of them were most of an authenticated request's CPU.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
