import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletController

/// Where the server is and how to authenticate; every client command takes these.
struct Connection: ParsableArguments {
    static let defaultURL = "http://127.0.0.1:7420"

    @Option(help: ArgumentHelp("Server URL (env SWIFTLET_URL).", valueName: "url"))
    var url: String?

    @Option(
        help: ArgumentHelp(
            "Bearer token (env SWIFTLET_TOKEN; default: the local admin token file).",
            valueName: "token"))
    var token: String?

    @Option(
        name: .customLong("ca-cert"),
        help: ArgumentHelp(
            "Trust this CA (PEM) for an https server, instead of the system's (env SWIFTLET_CA_CERT).",
            valueName: "path"))
    var caCertificate: String?

    var resolvedCACertificate: String? {
        if let caCertificate { return caCertificate }
        guard let environment = ProcessInfo.processInfo.environment["SWIFTLET_CA_CERT"], !environment.isEmpty else {
            return nil
        }
        return environment
    }

    var resolvedURL: String {
        url ?? ProcessInfo.processInfo.environment["SWIFTLET_URL"] ?? Self.defaultURL
    }

    var resolvedToken: String? {
        if let token { return token }
        if let token = ProcessInfo.processInfo.environment["SWIFTLET_TOKEN"], !token.isEmpty { return token }
        let file = ServerConfiguration.defaultDataDirectory + "/admin.token"
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs `body` with a client that is shut down afterwards, whatever happens.
    func withClient<T: Sendable>(_ body: (SwiftletClient) async throws -> T) async throws -> T {
        try await SwiftletClient.withClient(
            baseURL: resolvedURL, token: resolvedToken, caCertificate: resolvedCACertificate, body)
    }
}

/// `--json` for read commands.
struct JSONOption: ParsableArguments {
    @Flag(help: "Print the API's JSON instead of a table.")
    var json = false
}
