import Foundation
import Logging
import PostgresNIO
import SwiftletCore
import SwiftletPostgres
import Testing

/// A fresh database per test on the server `SWIFTLET_TEST_POSTGRES` names (a role with
/// CREATEDB), dropped when the test ends. Without that variable the tests fail, unless
/// `SWIFTLET_SKIP_POSTGRES=1` says to skip them.
enum PostgresTestDatabase {
    static let urlVariable = "SWIFTLET_TEST_POSTGRES"
    static let skipVariable = "SWIFTLET_SKIP_POSTGRES"

    static var adminURL: String? { ProcessInfo.processInfo.environment[urlVariable] }

    /// Suites that need a server run unless explicitly skipped: a missing server is a failure.
    static var enabled: Bool { adminURL != nil || ProcessInfo.processInfo.environment[skipVariable] != "1" }

    static var logger: Logger {
        var logger = Logger(label: "swiftlet.postgres.test")
        logger.logLevel = .warning
        return logger
    }

    /// Runs `body` with a migrated store on a new database.
    static func with(
        sourceLocation: SourceLocation = #_sourceLocation, _ body: (PostgresStore) async throws -> Void
    ) async throws {
        try await with(stores: 1, sourceLocation: sourceLocation) { stores in try await body(stores[0]) }
    }

    /// Runs `body` with `count` stores on one new database, each with its own connection pool
    /// (as separate controller processes would have), migrated unless `migrate` is false. A
    /// missing server is an issue recorded at `sourceLocation` (the test's call).
    static func with(
        stores count: Int, migrate: Bool = true, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: ([PostgresStore]) async throws -> Void
    ) async throws {
        guard let adminURL else {
            let example = "postgres://swiftlet:swiftlet@127.0.0.1:5432/swiftlet"
            Issue.record(
                """
                \(urlVariable) is not set: point it at a PostgreSQL server (a role with CREATEDB), e.g. \(example), \
                or set \(skipVariable)=1 to skip
                """, sourceLocation: sourceLocation)
            return
        }
        guard var components = URLComponents(string: adminURL), let user = components.user,
            let host = components.host
        else {
            Issue.record("\(urlVariable) is not a postgres:// URL", sourceLocation: sourceLocation)
            return
        }
        let admin = PostgresClient(
            configuration: .init(
                host: host, port: components.port ?? 5432, username: user, password: components.password,
                database: String(components.path.dropFirst()), tls: .disable))
        // Random hex only: a database name cannot be a bound parameter.
        let name = "swiftlet_t_" + (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        components.path = "/" + name
        let url = try #require(components.string)
        await slots.acquire()
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await admin.run() }
                try await execute(admin, "CREATE DATABASE \(unescaped: name)")
                do {
                    try await run(url: url, stores: count, migrate: migrate, body)
                } catch {
                    _ = try? await drop(admin, name)
                    throw error
                }
                try await drop(admin, name)
                group.cancelAll()
            }
        } catch {
            await slots.release()
            throw error
        }
        await slots.release()
    }

    /// How many test databases exist at once: every store is a connection pool, and the tests
    /// together would otherwise exhaust the server's `max_connections` (100 by default).
    private static let slots = Slots(4)

    /// Drops a test database once its stores have stopped. Plainly first: the server itself waits
    /// (up to 5 s) for backends still going away, among them connection attempts not yet
    /// authenticated, which `WITH (FORCE)` cannot terminate without `pg_signal_backend` (it fails
    /// with "must be a member of the role whose process is being terminated").
    private static func drop(_ admin: PostgresClient, _ name: String) async throws {
        do {
            try await execute(admin, "DROP DATABASE \(unescaped: name)")
        } catch {
            try await execute(admin, "DROP DATABASE \(unescaped: name) WITH (FORCE)")
        }
    }

    /// An administrative statement; a server error names its SQLSTATE and message (a
    /// `PSQLError`'s description hides both).
    private static func execute(_ admin: PostgresClient, _ query: PostgresQuery) async throws {
        do {
            try await admin.query(query)
        } catch let error as PSQLError {
            let state = error.serverInfo?[.sqlState] ?? "-"
            let message = error.serverInfo?[.message] ?? String(reflecting: error)
            throw AdminError(description: "\(query.sql): \(state) \(message)")
        }
    }

    struct AdminError: Error, CustomStringConvertible {
        var description: String
    }

    private static func run(
        url: String, stores count: Int, migrate: Bool, _ body: ([PostgresStore]) async throws -> Void
    ) async throws {
        // Correctness, not the deadline, is tested here: under make test's load many racing writers
        // may wait longer than the server's default for a connection.
        let stores = try (0..<count).map { _ in
            try PostgresStore(url: url, logger: logger, connectionTimeout: .seconds(30))
        }
        try await withThrowingDiscardingTaskGroup { group in
            for store in stores { group.addTask { try await store.run() } }
            if migrate { try await stores[0].migrate() }
            try await body(stores)
            group.cancelAll()
        }
    }
}

/// A counting semaphore for tests: `acquire` waits while all `count` slots are taken.
actor Slots {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = count }

    func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }
}
