import Crypto
import Foundation
import SwiftASN1
import SwiftletCore
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// The cluster's certificate authority, kept in the controller's data directory: it signs the
/// controller's server certificate for the agent link and each joined host's client certificate.
/// Every certificate operation is swift-certificates' (no hand-written crypto).
public struct ClusterCA: Sendable {
    public let certificate: Certificate
    private let key: Certificate.PrivateKey
    public let certificatePEM: String

    /// The SAN URI prefix that names a host in its client certificate: `swiftlet-host:<host id>`.
    public static let hostURIPrefix = "swiftlet-host:"

    /// Loads `<directory>/ca.pem` and `ca.key` (mode 0600), creating both on first use.
    public static func loadOrCreate(directory: String) throws(SwiftletError) -> ClusterCA {
        let certPath = directory + "/ca.pem"
        let keyPath = directory + "/ca.key"
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            // Controllers sharing a data directory may start at once: one creates, the others load.
            let lock = open(directory + "/.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
            guard lock >= 0, flock(lock, LOCK_EX) == 0 else {
                throw SwiftletError(.internal, "pki.ca_failed", "cannot lock the cluster CA in \(directory)")
            }
            defer { close(lock) }
            if let certPEM = try? String(contentsOfFile: certPath, encoding: .utf8),
                let keyPEM = try? String(contentsOfFile: keyPath, encoding: .utf8)
            {
                return ClusterCA(
                    certificate: try Certificate(pemEncoded: certPEM),
                    key: try Certificate.PrivateKey(pemEncoded: keyPEM),
                    certificatePEM: certPEM)
            }
            let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
            let name = try DistinguishedName {
                OrganizationName("swiftlet")
                CommonName("swiftlet cluster CA")
            }
            let now = Date()
            let certificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: key.publicKey,
                notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
                issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                }, issuerPrivateKey: key)
            let certPEM = try certificate.serializeAsPEM().pemString
            try writePrivate(try key.serializeAsPEM().pemString, to: keyPath)
            try certPEM.write(toFile: certPath, atomically: true, encoding: .utf8)
            return ClusterCA(certificate: certificate, key: key, certificatePEM: certPEM)
        } catch let error as SwiftletError {
            throw error
        } catch {
            throw SwiftletError(
                .internal, "pki.ca_failed", "cannot load or create the cluster CA in \(directory): \(error)")
        }
    }

    /// sha256 of the CA certificate's DER, hex: the pin a join token carries, so that a joining
    /// agent can tell the real controller before it sends the token (kubeadm's CA hash).
    public var fingerprint: String { Self.fingerprint(ofPEM: certificatePEM) ?? "" }

    public static func fingerprint(ofPEM pem: String) -> String? {
        guard let document = try? PEMDocument(pemString: pem) else { return nil }
        return SHA256.hash(data: Data(document.derBytes)).map { String(format: "%02x", $0) }.joined()
    }

    /// A server certificate for the controller's agent listener, valid for `names` (DNS names or
    /// IP addresses), with a new key. Returns both as PEM.
    public func issueServerCertificate(names: [String]) throws(SwiftletError) -> (certificate: String, key: String) {
        do {
            let serverKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
            let alternativeNames = names.map { name -> GeneralName in
                if let bytes = IPAddressBytes(name) { return .ipAddress(ASN1OctetString(contentBytes: bytes[...])) }
                return .dnsName(name)
            }
            let certificate = try sign(
                subject: try DistinguishedName { CommonName("swiftlet controller") }, publicKey: serverKey.publicKey,
                validity: 365 * 86400,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth])
                    SubjectAlternativeNames(alternativeNames)
                })
            return (try certificate.serializeAsPEM().pemString, try serverKey.serializeAsPEM().pemString)
        } catch {
            throw SwiftletError(.internal, "pki.issue_failed", "cannot issue the controller's certificate: \(error)")
        }
    }

    /// The two ends of one live migration's TLS stream: a server certificate for the target, named
    /// `targetName`, and a client certificate for the source, each with a new key and good for an
    /// hour, so that a VMM never holds a host's own key.
    public func issueMigrationCredentials(targetName: String) throws(SwiftletError)
        -> (target: MigrationCredentials, source: MigrationCredentials)
    {
        func issue(_ purpose: ExtendedKeyUsage.Usage, _ name: String) throws -> (certificate: String, key: String) {
            let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
            let certificate = try sign(
                subject: try DistinguishedName {
                    OrganizationName("swiftlet migrations")
                    CommonName(name)
                }, publicKey: key.publicKey, validity: 3600,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                    try ExtendedKeyUsage([purpose])
                    SubjectAlternativeNames([.dnsName(name)])
                })
            return (try certificate.serializeAsPEM().pemString, try key.serializeAsPEM().pemString)
        }
        do {
            let server = try issue(.serverAuth, targetName)
            let client = try issue(.clientAuth, "migration-source")
            return (
                MigrationCredentials(
                    caCertificate: certificatePEM, certificate: server.certificate, key: server.key,
                    serverName: targetName),
                MigrationCredentials(
                    caCertificate: certificatePEM, certificate: client.certificate, key: client.key,
                    serverName: targetName)
            )
        } catch {
            throw SwiftletError(.internal, "pki.issue_failed", "cannot issue a migration's certificates: \(error)")
        }
    }

    /// Signs a joining host's certificate signing request: the certificate names the host by id
    /// (SAN URI `swiftlet-host:<id>`) and is good for client authentication only. The request's
    /// own signature must verify (the agent holds the key). Returns the PEM and the serial number.
    public func issueHostCertificate(hostId: String, requestPEM: String, validity: TimeInterval = 365 * 86400)
        throws(SwiftletError) -> (certificate: String, serial: String)
    {
        let request: CertificateSigningRequest
        do { request = try CertificateSigningRequest(pemEncoded: requestPEM) } catch {
            throw .badRequest("join.bad_csr", "the certificate signing request is not valid PEM: \(error)")
        }
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw .badRequest("join.bad_csr", "the certificate signing request's signature does not verify")
        }
        do {
            let certificate = try sign(
                subject: try DistinguishedName {
                    OrganizationName("swiftlet hosts")
                    CommonName(hostId)
                }, publicKey: request.publicKey, validity: validity,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.clientAuth])
                    SubjectAlternativeNames([.uniformResourceIdentifier(Self.hostURIPrefix + hostId)])
                })
            return (try certificate.serializeAsPEM().pemString, Self.serial(of: certificate))
        } catch {
            throw SwiftletError(.internal, "pki.issue_failed", "cannot issue the host's certificate: \(error)")
        }
    }

    /// The host id a client certificate speaks for, and its serial number, or nil if it names none.
    public static func hostIdentity(ofDER der: [UInt8]) -> (hostId: String, serial: String)? {
        guard let certificate = try? Certificate(derEncoded: der),
            let names = try? certificate.extensions.subjectAlternativeNames
        else { return nil }
        for name in names {
            if case .uniformResourceIdentifier(let uri) = name, uri.hasPrefix(hostURIPrefix) {
                return (String(uri.dropFirst(hostURIPrefix.count)), serial(of: certificate))
            }
        }
        return nil
    }

    static func serial(of certificate: Certificate) -> String {
        certificate.serialNumber.bytes.map { String(format: "%02x", $0) }.joined()
    }

    private func sign(
        subject: DistinguishedName, publicKey: Certificate.PublicKey, validity: TimeInterval,
        extensions: Certificate.Extensions
    ) throws -> Certificate {
        let now = Date()
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: publicKey, notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(validity), issuer: certificate.subject, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: key)
    }
}

/// A host's key and certificate signing request, made by `swiftlet agent` when it joins.
public struct HostKey: Sendable {
    public let privateKeyPEM: String
    public let requestPEM: String

    public init(hostName: String) throws(SwiftletError) {
        do {
            let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
            let request = try CertificateSigningRequest(
                version: .v1, subject: try DistinguishedName { CommonName(hostName) }, privateKey: key,
                attributes: CertificateSigningRequest.Attributes(), signatureAlgorithm: .ecdsaWithSHA256)
            privateKeyPEM = try key.serializeAsPEM().pemString
            requestPEM = try request.serializeAsPEM().pemString
        } catch {
            throw SwiftletError(.internal, "pki.key_failed", "cannot make the host's key: \(error)")
        }
    }
}

/// Writes a secret file that is mode 0600 from its creation (never readable by others, not even
/// for a moment); an existing file is replaced.
public func writePrivate(_ text: String, to path: String) throws(SwiftletError) {
    unlink(path)
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw SwiftletError(.internal, "pki.write_failed", "cannot create \(path): errno \(errno)") }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let result = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard result > 0 else {
            throw SwiftletError(.internal, "pki.write_failed", "cannot write \(path): errno \(errno)")
        }
        written += result
    }
}

/// The bytes of a dotted IPv4 address or an IPv6 address, or nil for a DNS name.
func IPAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}
