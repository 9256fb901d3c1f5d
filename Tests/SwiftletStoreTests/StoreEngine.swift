import Foundation
import SwiftletCore
import SwiftletPostgres
import SwiftletStore
import Testing

/// The store engines one conformance test runs against: `@Test(arguments: StoreEngine.allCases)`.
enum StoreEngine: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String {
        switch self {
        case .sqlite: "SQLite"
        case .postgres: "PostgreSQL"
        }
    }

    /// Runs `body` with one migrated store on a fresh database.
    func withStore(
        sourceLocation: SourceLocation = #_sourceLocation, _ body: (any ControllerStore) async throws -> Void
    ) async throws {
        try await withStores(count: 1, sourceLocation: sourceLocation) { stores in try await body(stores[0]) }
    }

    /// Runs `body` with `count` stores on one fresh database, each with its own connections (as
    /// separate controller processes would have); the database is removed afterwards.
    ///
    /// SQLite: `count` `SQLiteStore`s (each its own connection pool) on one file in a temporary
    /// directory. PostgreSQL: `count` `PostgresStore`s on a new database (`PostgresTestDatabase`).
    func withStores(
        count: Int = 1, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: ([any ControllerStore]) async throws -> Void
    ) async throws {
        switch self {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("swiftlet-store-\(UUID())").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/test.sqlite"
            // One at a time: the first migrates the new file, the others find it migrated.
            var stores: [any ControllerStore] = []
            for _ in 0..<count { stores.append(try SQLiteStore(path: path)) }
            try await body(stores)
        case .postgres:
            if !PostgresTestDatabase.enabled {
                try Test.cancel(
                    "\(PostgresTestDatabase.skipVariable)=1: PostgreSQL is not tested", sourceLocation: sourceLocation)
            }
            try await PostgresTestDatabase.with(stores: count, sourceLocation: sourceLocation) { stores in
                try await body(stores)
            }
        }
    }
}
