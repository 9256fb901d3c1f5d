import Logging
import SwiftletCore
import SwiftletPostgres
import SwiftletStore

/// Where the controller keeps its state: the embedded SQLite file (one host), or PostgreSQL (a
/// cluster; several controllers on one database are not finished, docs/store.md).
public enum StoreLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(url: String)

    /// `sqlite:PATH`, a path, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    public static func parse(_ text: String) throws(SwiftletError) -> StoreLocation {
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            try PostgresStore.validate(url: text)
            return .postgres(url: text)
        }
        let path = text.hasPrefix("sqlite:") ? String(text.dropFirst("sqlite:".count)) : text
        guard !path.isEmpty, !path.contains("://") else {
            throw SwiftletError.badRequest(
                "store.bad_location", "'\(text)' is neither sqlite:PATH nor postgres://USER@HOST/DB")
        }
        return .sqlite(path: path)
    }

    /// Opens the store and runs `body` with it. PostgreSQL's connection pool runs beside `body`
    /// (once one connection proved the database reachable, and its migrations applied first)
    /// and ends with it.
    public func withStore<Result: Sendable>(
        logger: Logger, _ body: @Sendable (any ControllerStore) async throws -> Result
    ) async throws -> Result {
        switch self {
        case .sqlite(let path):
            return try await body(try SQLiteStore(path: path))
        case .postgres(let url):
            let store = try PostgresStore(url: url, logger: logger)
            try await store.checkConnection()
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                try await store.migrate()
                return try await body(store)
            }
        }
    }
}

extension StoreLocation {
    /// Moves a stopped single host's SQLite store into an empty PostgreSQL database (`swiftlet
    /// admin migrate-store`; refusals: `PostgresStore.importSQLite`): the rows copied per table.
    public static func migrate(from source: StoreLocation, to target: StoreLocation, logger: Logger)
        async throws -> [(table: String, rows: Int)]
    {
        guard case .sqlite(let path) = source else {
            throw SwiftletError.badRequest("store.bad_location", "the source must be sqlite:PATH")
        }
        guard case .postgres(let url) = target else {
            throw SwiftletError.badRequest("store.bad_location", "the target must be postgres://USER@HOST/DB")
        }
        let store = try PostgresStore(url: url, logger: logger)
        try await store.checkConnection()
        let imported = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await store.run() }
            defer { group.cancelAll() }
            return try await store.importSQLite(path: path)
        }
        return imported.map { ($0.table, $0.rows) }
    }
}
