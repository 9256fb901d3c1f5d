import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// TLS to PostgreSQL, against a server of the test's own that takes TCP connections with TLS only.
@Suite(.serialized, .enabled(if: getuid() == 0, "runs PostgreSQL as its own user"))
struct DatabaseTLSTests {
    /// A server told to check the database's certificate against its CA works over TLS (the
    /// database sees its connections encrypted); a plain connection, and one that trusts another
    /// CA, stop `swiftlet server` at once with the cause.
    @Test func theServerTalksToPostgreSQLOverVerifiedTLSAndRefusesWhatIsNot() async throws {
        let postgres = try await PrivatePostgres(tls: true)
        defer { postgres.cleanUp() }
        let otherCA = postgres.directory + "/other-ca"
        try PrivatePostgres.makeCA(at: otherCA)
        let data = NSTemporaryDirectory() + "swiftlet-test-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: data) }
        let refused = [
            (postgres.url + "?sslmode=disable", "no encryption"),
            (postgres.url + "?sslmode=verify-full&sslrootcert=\(otherCA).pem", "TLS with the server failed"),
        ]
        for (url, expected) in refused {
            let result = try Shell.run(
                Repo.swiftletBinary,
                ["server", "--data", data, "--port", "\(try ServerProcess.freePort())", "--database", url],
                timeout: .seconds(30))
            #expect(result.status == 1, "\(result.output)")
            let lines = result.output.split(separator: "\n").filter { $0.hasPrefix("error: ") }
            #expect(lines.count == 1 && lines.first?.contains(expected) == true, "\(result.output)")
        }

        let verified = postgres.url + "?sslmode=verify-full&sslrootcert=\(postgres.caPath)"
        try await withServer(config: ["database": verified]) { server, client in
            _ = try await client.uploadImage(path: try await Kernels.path("hello"), name: "hello")
            let created = try await client.createInstances(
                CreateInstanceRequest(name: "over-tls", image: "hello", wait: true))
            #expect(created.first?.state == .running)
            // The database's own view: every connection of the server's is encrypted.
            let query = """
                SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_ssl s
                JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'swiftlet-%'
                """
            let result = try Shell.run(
                "/usr/bin/psql", [postgres.url + "?sslmode=require", "-qAtF", " ", "-c", query])
            let counts = result.output.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
            #expect(counts.count == 2 && counts[0] > 0 && counts[1] == 0, "\(result.output)")
            try await client.deleteInstance("over-tls")
        }
    }
}
