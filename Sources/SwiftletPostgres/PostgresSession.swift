import Foundation
import Logging
import PostgresNIO
import SwiftletCore

/// One leased connection (inside a transaction for writes) and the logger its queries log to:
/// what every store method's body works with.
struct PostgresSession: Sendable {
    let connection: PostgresConnection
    let logger: Logger
    let statements: StatementWatch

    func execute(_ query: PostgresQuery) async throws {
        _ = try await self.query(query)
    }

    func rows(_ query: PostgresQuery) async throws -> [PostgresRandomAccessRow] {
        try await self.query(query).map { $0.makeRandomAccess() }
    }

    /// Every statement goes through here: one on a connection already closed is refused at once,
    /// and one the driver drops as its connection closes is given up (`StatementWatch`).
    private func query(_ query: PostgresQuery) async throws -> [PostgresRow] {
        guard !connection.isClosed else { throw Self.closed }
        return try await statements.run(query, on: connection, logger: logger)
    }

    static let closed = SwiftletError(
        .unavailable, "store.unavailable", "the database is unreachable: its connection was closed")

    func row(_ query: PostgresQuery) async throws -> PostgresRandomAccessRow? {
        try await rows(query).first
    }

    /// The first column of every row.
    func values<Value: PostgresDecodable>(_ type: Value.Type, _ query: PostgresQuery) async throws -> [Value] {
        try await self.query(query).map { try $0.decode(Value.self) }
    }

    /// The first column of the first row, nil without rows.
    func value<Value: PostgresDecodable>(_ type: Value.Type, _ query: PostgresQuery) async throws -> Value? {
        try await values(Value.self, query).first
    }

    /// Runs an UPDATE or DELETE written with `RETURNING 1`: whether it touched a row.
    func changed(_ query: PostgresQuery) async throws -> Bool {
        try await !self.query(query).isEmpty
    }

    /// Serialises this transaction with every other one taking the same lock, until it ends.
    /// Two 32-bit keys: a key space of their own, apart from any application's single-key locks.
    func lock(_ key: AdvisoryLock) async throws {
        try await execute("SELECT pg_advisory_xact_lock(\(AdvisoryLock.namespace), \(key.rawValue))")
    }
}

/// The transaction-scoped advisory locks the store takes, one per critical section that rows
/// alone cannot guard (a check over many rows, or over rows that do not exist yet).
enum AdvisoryLock: Int32 {
    /// "Swft": the first key of every lock this store takes.
    static let namespace: Int32 = 0x5377_6674

    case migration = 1
    case placement = 2
    case networkRange = 3
    case hostJoin = 4
}

extension PostgresRandomAccessRow {
    func get<Value: PostgresDecodable>(_ column: String, as type: Value.Type = Value.self) throws -> Value {
        try self[column].decode(Value.self)
    }
}

/// A query assembled from optional filters, still with every value bound: only the SQL text
/// varies, so each filter combination gets a plan that can use its index.
struct QueryBuilder {
    private(set) var sql: String
    private var binds = PostgresBindings()

    init(_ sql: String) { self.sql = sql }

    /// Appends `fragment`, each `?` in it replaced by the next value's placeholder.
    mutating func append(_ fragment: String, _ values: String...) {
        var values = values.makeIterator()
        for character in fragment {
            if character == "?", let value = values.next() {
                binds.append(value)
                sql += "$\(binds.count)"
            } else {
                sql.append(character)
            }
        }
    }

    mutating func append(_ fragment: String, bigint value: Int) {
        binds.append(value)
        sql += fragment.replacingOccurrences(of: "?", with: "$\(binds.count)")
    }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
}
