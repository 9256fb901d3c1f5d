import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOSSL
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletPKI

/// A joined host's identity, kept in `<data>/identity`: its id, its key, the client certificate
/// the controller issued for that key, and the cluster CA it trusts.
struct HostIdentity: Sendable {
    var hostId: String
    var keyPEM: String
    var certificatePEM: String
    var caPEM: String

    static func load(directory: String) -> HostIdentity? {
        func read(_ name: String) -> String? { try? String(contentsOfFile: directory + "/" + name, encoding: .utf8) }
        guard let hostId = read("host-id"), let key = read("host.key"), let certificate = read("host.pem"),
            let ca = read("ca.pem")
        else { return nil }
        return HostIdentity(
            hostId: hostId.trimmingCharacters(in: .whitespacesAndNewlines), keyPEM: key, certificatePEM: certificate,
            caPEM: ca)
    }

    private func save(directory: String) throws {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try writePrivate(keyPEM, to: directory + "/host.key")
        try certificatePEM.write(toFile: directory + "/host.pem", atomically: true, encoding: .utf8)
        try caPEM.write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        // Written last: its presence says the identity is complete.
        try hostId.write(toFile: directory + "/host-id", atomically: true, encoding: .utf8)
    }

    /// Mutual TLS: the host's certificate, and only the cluster CA trusted for the controller's.
    func tlsConfiguration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = [.certificate(try NIOSSLCertificate(bytes: Array(certificatePEM.utf8), format: .pem))]
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem))
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: Array(caPEM.utf8), format: .pem)])
        tls.minimumTLSVersion = .tlsv12
        return tls
    }

    /// kubeadm's discovery: fetch the CA certificate without trusting anyone, keep it only if its
    /// hash is the token's pin, then send the token over TLS verified by that CA.
    static func join(
        controller: String, token: JoinToken, name: String, capabilities: HostCapabilities, directory: String,
        logger: Logger
    ) async throws -> HostIdentity {
        let base = controller.hasSuffix("/") ? String(controller.dropLast()) : controller
        var discovery = TLSConfiguration.makeClientConfiguration()
        discovery.certificateVerification = .none
        let (caStatus, caBody) = try await withClient(discovery) { client in
            let response = try await client.execute(
                HTTPClientRequest(url: base + "/agent/v1/ca"), timeout: .seconds(10))
            return (response.status, try await response.body.collect(upTo: 1 << 16))
        }
        let caPEM = String(buffer: caBody)
        guard caStatus == .ok, let fingerprint = ClusterCA.fingerprint(ofPEM: caPEM) else {
            throw SwiftletError(
                .unavailable, "join.no_ca", "the controller at \(controller) gave no CA certificate (\(caStatus))")
        }
        guard fingerprint == token.caFingerprint else {
            throw SwiftletError(
                .forbidden, "join.ca_mismatch",
                "the controller's CA (sha256 \(fingerprint)) is not the one the join token pins (\(token.caFingerprint)): refusing to join"
            )
        }
        let key = try HostKey(hostName: name)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: Array(caPEM.utf8), format: .pem)])
        var request = HTTPClientRequest(url: base + "/agent/v1/join")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(
            ByteBuffer(
                data: try SwiftletJSON.encoder().encode(
                    JoinRequest(
                        token: token.credential, hostName: name, certificateRequest: key.requestPEM,
                        capabilities: capabilities))))
        let (status, body) = try await withClient(tls) { client in
            let response = try await client.execute(request, timeout: .seconds(30))
            return (response.status, try await response.body.collect(upTo: 1 << 20))
        }
        guard status == .created else {
            let message =
                (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any])
                .flatMap { ($0["error"] as? [String: Any])?["message"] as? String } ?? String(buffer: body)
            throw SwiftletError(.forbidden, "join.refused", "the controller refused to join this host: \(message)")
        }
        let joined = try SwiftletJSON.decoder().decode(JoinResponse.self, from: body)
        let identity = HostIdentity(
            hostId: joined.hostId, keyPEM: key.privateKeyPEM, certificatePEM: joined.certificate,
            caPEM: joined.caCertificate)
        try identity.save(directory: directory)
        logger.notice("joined the cluster", metadata: ["host.id": "\(joined.hostId)"])
        return identity
    }

    /// Runs `body` with a client that is shut down after, whatever happens.
    private static func withClient<T: Sendable>(
        _ tls: TLSConfiguration, _ body: (HTTPClient) async throws -> T
    ) async throws -> T {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
