import Crypto
import Foundation
import SwiftletCore

/// Ed25519 image signatures: the signed message is the 32-byte sha256 digest of the image, so a
/// signature is checked without reading the image again.
public enum ImageSignature {
    /// Base64 signature of `sha256` (hex) with `privateKey`.
    public static func sign(sha256: String, privateKey: Curve25519.Signing.PrivateKey) throws -> String {
        try privateKey.signature(for: digestBytes(sha256)).base64EncodedString()
    }

    /// A new key pair, both raw and base64: (private, public).
    public static func generateKeyPair() -> (privateKey: String, publicKey: String) {
        let key = Curve25519.Signing.PrivateKey()
        return (key.rawRepresentation.base64EncodedString(), key.publicKey.rawRepresentation.base64EncodedString())
    }

    /// Hashes the file at `path` and signs the digest with a base64 raw private key.
    public static func sign(fileAt path: String, privateKey base64: String) throws -> (
        sha256: String, signature: String
    ) {
        guard let raw = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)),
            let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        else {
            throw SwiftletError.badRequest(
                "signing_key.invalid", "the private key must be a base64 raw 32-byte Ed25519 key")
        }
        let digest = try sha256(path: path)
        return (digest, try sign(sha256: digest, privateKey: key))
    }

    public static func sha256(path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw SwiftletError(.internal, "image.read_failed", "cannot read \(path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().hexString
    }

    /// Parses a base64 raw 32-byte Ed25519 public key.
    public static func publicKey(base64: String) throws(SwiftletError) -> Curve25519.Signing.PublicKey {
        guard let data = Data(base64Encoded: base64), data.count == 32,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: data)
        else {
            throw .badRequest("signing_key.invalid", "public key must be a base64 raw 32-byte Ed25519 key")
        }
        return key
    }

    /// The id of the first trusted key that verifies `signature`; throws a clear error otherwise.
    @discardableResult
    public static func verify(_ signature: String?, sha256: String, keys: [SigningKey], projectName: String)
        throws(SwiftletError)
        -> String
    {
        guard let signature else {
            throw SwiftletError(
                .forbidden, "image.unsigned",
                "project '\(projectName)' requires signed images and this image has no signature")
        }
        guard let bytes = Data(base64Encoded: signature), bytes.count == 64 else {
            throw .badRequest("image.bad_signature", "the signature must be a base64 64-byte Ed25519 signature")
        }
        guard !keys.isEmpty else {
            throw SwiftletError(
                .unprocessable, "image.no_trusted_keys",
                "project '\(projectName)' trusts no signing keys: add one first")
        }
        let message = (try? digestBytes(sha256)) ?? Data()
        for key in keys {
            if let publicKey = try? publicKey(base64: key.publicKey), publicKey.isValidSignature(bytes, for: message) {
                return key.id
            }
        }
        throw SwiftletError(
            .unprocessable, "image.signature_mismatch",
            "the signature does not verify for sha256 \(sha256) with any key trusted by project '\(projectName)'")
    }

    static func digestBytes(_ hex: String) throws -> Data {
        var data = Data()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) ?? hex.endIndex
            guard let byte = UInt8(hex[index..<next], radix: 16) else {
                throw SwiftletError.badRequest("image.bad_digest", "not a hex digest: \(hex)")
            }
            data.append(byte)
            index = next
        }
        return data
    }
}

extension ImageSignature {
    /// Hex sha256 of a string's UTF-8 bytes.
    public static func sha256(text: String) -> String { digestHex(Data(text.utf8)) }
}
