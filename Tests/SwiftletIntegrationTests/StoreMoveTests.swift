import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// From one host to many: `swiftlet admin migrate-store` with a real server, real QEMU VMs and
/// a real PostgreSQL database; and a server refusing a database it cannot use.
@Suite(.serialized) struct StoreMoveTests {
    @Test func runningInstancesKeepRunningAcrossTheMoveToPostgreSQL() async throws {
        let kernel = try await Kernels.path("hello")
        let server = try ServerProcess()
        defer { server.cleanUp() }
        let database = try #require(try StoreEngine.postgres.freshDatabase())
        defer { database.drop() }
        let sqlite = "sqlite:" + server.dataDirectory + "/swiftlet.sqlite"
        try await server.start()
        var client = server.client()
        let image = try await client.uploadImage(path: kernel, name: "hello")
        let created = try await client.createInstances(
            CreateInstanceRequest(name: "keep", image: "hello", wait: true))
        let instance = try #require(created.first)
        #expect(instance.state == .running, "\(instance.reason ?? "")")
        let vmm = processes(mentioning: server.dataDirectory + "/run/" + instance.id)
        #expect(vmm.count == 1)

        // Refused while the server still has the file open; the target is not even migrated.
        let early = try migrateStore(from: sqlite, to: database.url)
        #expect(early.status != 0)
        #expect(early.output.contains("store.in_use"), "\(early.output)")
        #expect(try psql(database.url, "SELECT to_regclass('instance') IS NULL") == "t")

        try? await client.shutdown()
        server.terminate()
        #expect(processes(mentioning: server.dataDirectory + "/run/" + instance.id) == vmm)

        let moved = try migrateStore(from: sqlite, to: database.url)
        #expect(moved.status == 0, "\(moved.output)")
        #expect(moved.output.contains("instance"), "\(moved.output)")
        #expect(try psql(database.url, "SELECT COUNT(*) FROM instance") == "1")

        try server.writeConfig(["database": database.url])
        try await server.start()
        client = server.client()  // the admin token file of the same data directory
        do {
            try await eventually("the moved instance re-attached", timeout: .seconds(30)) {
                try await client.instance("keep").state == .running
            }
            #expect(processes(mentioning: server.dataDirectory + "/run/" + instance.id) == vmm)
            #expect(try await client.images().map(\.id) == [image.id])
            let after = try await client.createInstances(
                CreateInstanceRequest(name: "after", image: "hello", wait: true))
            #expect(after.first?.state == .running, "\(after.first?.reason ?? "")")
            #expect(try psql(database.url, "SELECT COUNT(*) FROM instance") == "2")
            #expect(server.log.contains("swiftlet server listening"))

            // The database is in use now: a second move into it is refused and changes nothing.
            let again = try migrateStore(from: sqlite, to: database.url)
            #expect(again.status != 0)
            #expect(again.output.contains("store.target_not_empty"), "\(again.output)")
            #expect(try psql(database.url, "SELECT COUNT(*) FROM instance") == "2")

            for name in ["keep", "after"] { try await client.deleteInstance(name) }
        } catch {
            print("---- server log ----\n\(server.log.suffix(4000))")
            throw error
        }
        try? await client.shutdown()
    }

    /// A wrong password or a closed port stops `swiftlet server` at once with the cause on one
    /// line, instead of a server that waits for a database it will never get.
    @Test func serverRefusesADatabaseItCannotUse() async throws {
        let admin = try #require(
            ProcessInfo.processInfo.environment["SWIFTLET_TEST_POSTGRES"],
            "SWIFTLET_TEST_POSTGRES is not set: `make test` sets it (scripts/setup-postgres.sh)")
        var wrongPassword = try #require(URLComponents(string: admin))
        wrongPassword.password = "not-the-password"
        var closedPort = try #require(URLComponents(string: admin))
        closedPort.port = try ServerProcess.freePort()
        let cases = [
            (try #require(wrongPassword.string), "password authentication failed"),
            (try #require(closedPort.string), "cannot connect to database"),
        ]
        let data = NSTemporaryDirectory() + "swiftlet-test-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: data) }
        for (url, expected) in cases {
            let started = ContinuousClock.now
            let result = try Shell.run(
                Repo.swiftletBinary,
                ["server", "--data", data, "--port", "\(try ServerProcess.freePort())", "--database", url],
                timeout: .seconds(30))
            #expect(ContinuousClock.now - started < .seconds(15), "\(result.output)")
            #expect(result.status == 1, "\(result.output)")
            let lines = result.output.split(separator: "\n").filter { $0.hasPrefix("error: ") }
            #expect(lines.count == 1, "\(result.output)")
            #expect(lines.first?.contains(expected) == true, "\(result.output)")
            #expect(!result.output.contains("not-the-password"), "the password must not be printed")
        }
    }
}

private func migrateStore(from source: String, to target: String) throws -> (status: Int32, output: String) {
    try Shell.run(
        Repo.swiftletBinary, ["admin", "migrate-store", "--from", source, "--to", target], timeout: .seconds(60))
}

/// One value from the database, as psql prints it.
private func psql(_ url: String, _ query: String) throws -> String {
    let result = try Shell.run("/usr/bin/psql", [url, "-qAtc", query])
    guard result.status == 0 else { throw TestFailure("psql \(query): \(result.output)") }
    return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
}
