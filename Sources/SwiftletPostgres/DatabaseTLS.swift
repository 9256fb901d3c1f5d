import Foundation
import NIOSSL
import PostgresNIO
import SwiftletCore

/// TLS to PostgreSQL, set in the database URL with libpq's parameters, so that a URL an operator
/// already uses with psql means the same here: `sslmode` (disable, prefer, require, verify-ca,
/// verify-full; libpq's default, prefer), `sslrootcert` (the CA to trust, PEM), and `sslcert` with
/// `sslkey` (a client certificate, for servers that ask for one).
struct DatabaseTLS: Equatable {
    enum Mode: String, CaseIterable {
        case disable, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    var mode: Mode = .prefer
    var rootCertificate: String?
    var clientCertificate: String?
    var clientKey: String?

    static let parameters: Set<String> = ["sslmode", "sslrootcert", "sslcert", "sslkey"]

    /// Reads the TLS parameters of a URL's query; `bad` says what is wrong with one.
    init(query: [URLQueryItem], bad: (String) -> SwiftletError) throws(SwiftletError) {
        for item in query {
            guard Self.parameters.contains(item.name) else {
                throw bad(
                    "unknown parameter '\(item.name)'; supported: \(Self.parameters.sorted().joined(separator: ", "))")
            }
            guard let value = item.value, !value.isEmpty else { throw bad("parameter '\(item.name)' has no value") }
            switch item.name {
            case "sslmode":
                guard let mode = Mode(rawValue: value) else {
                    throw bad(
                        "sslmode '\(value)' is not one of \(Mode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                self.mode = mode
            case "sslrootcert": rootCertificate = value
            case "sslcert": clientCertificate = value
            default: clientKey = value
            }
        }
        guard (clientCertificate == nil) == (clientKey == nil) else {
            throw bad("sslcert and sslkey go together")
        }
        for path in [rootCertificate, clientCertificate, clientKey].compactMap({ $0 }) {
            guard FileManager.default.isReadableFile(atPath: path) else { throw bad("cannot read '\(path)'") }
        }
        if mode == .disable, rootCertificate != nil || clientCertificate != nil {
            throw bad("sslmode=disable with certificates: say which is meant")
        }
    }

    /// The settings of NIOSSL for this mode. As libpq, `require` with a root certificate checks
    /// the server's chain as `verify-ca` does; `verify-full` also checks its name (or address).
    func configuration() throws(SwiftletError) -> TLSConfiguration? {
        guard mode != .disable else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        switch mode {
        case .disable: return nil
        case .prefer, .require:
            tls.certificateVerification = rootCertificate == nil ? .none : .noHostnameVerification
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        if let rootCertificate { tls.trustRoots = .file(rootCertificate) }
        if let clientCertificate, let clientKey {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(clientCertificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: clientKey, format: .pem))
            } catch {
                throw SwiftletError(
                    .badRequest, "store.bad_url", "the database client certificate or key cannot be read: \(error)")
            }
        }
        return tls
    }

    var client: PostgresClient.Configuration.TLS {
        get throws(SwiftletError) {
            guard let tls = try configuration() else { return .disable }
            return mode == .prefer ? .prefer(tls) : .require(tls)
        }
    }

    var connection: PostgresConnection.Configuration.TLS {
        get throws(SwiftletError) {
            guard let tls = try configuration() else { return .disable }
            let context: NIOSSLContext
            do { context = try NIOSSLContext(configuration: tls) } catch {
                throw SwiftletError(.badRequest, "store.bad_url", "the database TLS settings are not usable: \(error)")
            }
            return mode == .prefer ? .prefer(context) : .require(context)
        }
    }
}
