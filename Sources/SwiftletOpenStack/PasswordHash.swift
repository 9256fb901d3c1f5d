import Crypto
import Foundation
import _CryptoExtras

/// Password records as `pbkdf2-sha256$<rounds>$<salt, base64>$<key, base64>`: PBKDF2-HMAC-SHA256
/// from swift-crypto, a random 16-byte salt each, 600,000 rounds (OWASP's figure for SHA-256).
public enum PasswordHash {
    static let scheme = "pbkdf2-sha256"
    public static let rounds = 600_000
    static let keyBytes = 32

    public static func make(password: String, rounds: Int = rounds) throws -> String {
        let salt = SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) }
        let key = try derive(password: password, salt: salt, rounds: rounds)
        return [
            scheme, String(rounds), salt.base64EncodedString(), key.withUnsafeBytes { Data($0) }.base64EncodedString(),
        ]
        .joined(separator: "$")
    }

    /// Whether `password` matches `record`; a record that does not parse matches nothing.
    public static func verify(password: String, record: String) -> Bool {
        let parts = record.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == scheme, let rounds = Int(parts[1]),
            let salt = Data(base64Encoded: String(parts[2])), let expected = Data(base64Encoded: String(parts[3])),
            expected.count == keyBytes,
            let key = try? derive(password: password, salt: salt, rounds: rounds)
        else { return false }
        // SymmetricKey's equality compares in constant time.
        return key == SymmetricKey(data: expected)
    }

    private static func derive(password: String, salt: Data, rounds: Int) throws -> SymmetricKey {
        try KDF.Insecure.PBKDF2.deriveKey(
            from: Data(password.utf8), salt: salt, using: .sha256, outputByteCount: keyBytes, rounds: rounds)
    }
}
