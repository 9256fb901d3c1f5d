import Foundation
import NIOSSL
import SwiftletCore
import SwiftletStore
import Testing

@testable import SwiftletPostgres

@Suite struct PostgresURLTests {
    @Test(arguments: [
        "mysql://u@h/db", "postgres://h/db", "postgres://u@h/", "postgres://u@h", "postgres://u@h/db?sslmode=maybe",
        "postgres://u@h/db?timeout=3", "postgres://u@h/db?sslmode=", "postgres://u@h/db?sslrootcert=/nonexistent.pem",
        "postgres://u@h/db?sslmode=verify-full&sslcert=/etc/hostname", "postgres://u@h/db#x", "not a url",
    ])
    func badURLsAreRefused(url: String) async {
        let error = await storeError { _ = try PostgresStore(url: url, logger: PostgresTestDatabase.logger) }
        #expect(error?.code == "store.bad_url")
        #expect(error?.kind == .badRequest)
    }

    @Test func goodURLsParseWithoutConnecting() throws {
        _ = try PostgresStore(url: "postgres://u:p%40ss@db.example:6543/swiftlet", logger: PostgresTestDatabase.logger)
        _ = try PostgresStore(url: "postgresql://u@127.0.0.1/swiftlet", logger: PostgresTestDatabase.logger)
    }

    /// libpq's TLS parameters, and libpq's meaning for each mode.
    @Test func tlsParametersMeanWhatTheyMeanToLibpq() throws {
        func tls(_ query: String) throws -> DatabaseTLS {
            try PostgresStore.configuration(url: "postgres://u@h/db" + query).1
        }
        #expect(try tls("").mode == .prefer)
        #expect(try tls("?sslmode=disable").configuration() == nil)
        #expect(try tls("?sslmode=require").configuration()?.certificateVerification == CertificateVerification.none)
        // Only read when a connection is made.
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-root-\(UUID()).pem").path
        FileManager.default.createFile(atPath: root, contents: Data("not read here".utf8))
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(
            try tls("?sslmode=require&sslrootcert=\(root)").configuration()?.certificateVerification
                == .noHostnameVerification)
        #expect(try tls("?sslmode=verify-ca").configuration()?.certificateVerification == .noHostnameVerification)
        #expect(
            try tls("?sslmode=verify-full&sslrootcert=\(root)").configuration()?.certificateVerification
                == .fullVerification)
    }
}

@Suite(.enabled(if: PostgresTestDatabase.enabled)) struct PostgresStoreTests {
    @Test func migrateTwiceIsIdempotentAndConcurrentMigratesBothSucceed() async throws {
        try await PostgresTestDatabase.with(stores: 3, migrate: false) { stores in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for store in stores { group.addTask { try await store.migrate() } }
                try await group.waitForAll()
            }
            try await stores[0].migrate()
            #expect(try await stores[1].flavors().map(\.name) == Flavor.defaults.map(\.name))
            #expect(try await stores[2].projects().map(\.id) == [Project.adminProjectId])
        }
    }

    /// Every write to an instance bumps its revision; a refused one does not.
    @Test func instanceWritesBumpTheRevision() async throws {
        try await PostgresTestDatabase.with { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let net = Fixtures.network("n", "10.9.0.0/29", gateway: "10.9.0.1")
            try await store.createNetwork(net)
            let instance = Fixtures.instance("vm", image: image.id)
            try await store.createInstances([instance])
            func revision() async throws -> Int64? {
                let rows = try await store.client.query("SELECT revision FROM instance WHERE id = \(instance.id)")
                for try await value in rows.decode(Int64.self) { return value }
                return nil
            }
            #expect(try await revision() == 1)
            try await store.updateInstance(id: instance.id) { $0.state = .running }
            #expect(try await revision() == 2)
            _ = try await store.attach(
                ports: [PortRequest(instanceId: instance.id, network: net, address: nil, tapPrefix: "t")],
                groupIds: [], toInstances: [instance.id])
            #expect(try await revision() == 3)
            _ = await storeError {
                try await store.updateInstance(id: instance.id) { _ throws(SwiftletError) in
                    throw SwiftletError(.conflict, "test.refused", "no")
                }
            }
            #expect(try await revision() == 3)
        }
    }

    /// Two controllers on one database: what one commits moves the other's generations (so its
    /// cached lists and catalog are dropped), catalog changes only the catalog's.
    @Test func anotherWritersCommitsMoveTheGenerations() async throws {
        try await PostgresTestDatabase.with(stores: 2) { stores in
            let (writer, reader) = (stores[0], stores[1])
            // Until it hears changes, every read is a new generation.
            try await poll("the reader hears changes") { reader.generation == reader.generation }
            let (data, catalog) = (reader.generation, reader.catalogGeneration)
            let image = Fixtures.image("img")
            try await writer.createImage(image)
            try await poll("an image moves the catalog") { reader.catalogGeneration > catalog }
            #expect(reader.generation > data)
            let (afterImage, catalogAfterImage) = (reader.generation, reader.catalogGeneration)
            let instance = Fixtures.instance("vm", image: image.id)
            try await writer.createInstances([instance])
            try await poll("an instance moves the generation") { reader.generation > afterImage }
            #expect(reader.catalogGeneration == catalogAfterImage)
        }
    }

    private func poll(_ what: String, _ condition: () -> Bool) async throws {
        for _ in 0..<500 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("timed out waiting for: \(what)")
    }
}

@Suite struct PostgresUnavailableTests {
    /// Slow by design: a call answers only once the store gives up waiting for a connection (no
    /// wall-clock bound here: how long that is belongs to the store, not to this test).
    @Test func anUnreachableDatabaseIsUnavailable() async throws {
        // Nothing listens on port 1: every connection attempt is refused.
        let store = try PostgresStore(url: "postgres://u@127.0.0.1:1/db", logger: PostgresTestDatabase.logger)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await store.run() }
            let first = await storeError { _ = try await store.projects() }
            #expect(first?.code == "store.unavailable" && first?.kind == .unavailable)
            let second = await storeError {
                try await store.createProject(Project(id: "p", name: "p", createdAt: Date()))
            }
            #expect(second?.code == "store.unavailable")
            #expect(second?.kind == .unavailable)
            group.cancelAll()
        }
    }
}
