import Foundation
import GRDB
import SwiftletCore

#if canImport(Glibc)
    import Glibc
#endif

/// One column's value as SQLite stored it, for another engine to take (`PostgresStore.importSQLite`).
public enum StoredValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)

    /// The value as a date, read as this store wrote it (`DatabaseDate`, GRDB's format, UTC).
    public var date: Date? {
        switch self {
        case .null: nil
        case .integer(let value): Date.fromDatabaseValue(value.databaseValue)
        case .real(let value): Date.fromDatabaseValue(value.databaseValue)
        case .text(let value): Date.fromDatabaseValue(value.databaseValue)
        case .blob: nil
        }
    }

    init(_ value: DatabaseValue) {
        switch value.storage {
        case .null: self = .null
        case .int64(let value): self = .integer(value)
        case .double(let value): self = .real(value)
        case .string(let value): self = .text(value)
        case .blob(let value): self = .blob(value)
        }
    }
}

/// A stopped single-host deployment's SQLite file, read table by table for a move to another
/// engine. Opening it refuses a file another process has open (a server still running on it) and
/// a schema that is not exactly this version's.
public final class SQLiteExport: Sendable {
    private let queue: DatabaseQueue
    public let path: String

    public init(path: String) throws(SwiftletError) {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw SwiftletError(.notFound, "store.not_found", "there is no SQLite database at \(path)")
        }
        // Before this process opens the file: closing any descriptor of it would drop this
        // process's own SQLite locks on it.
        try Self.refuseIfOpenElsewhere(path)
        do {
            queue = try DatabaseQueue(path: path)
        } catch {
            throw SwiftletError(.internal, "store.open_failed", "cannot open database \(path): \(error)")
        }
        try checkSchema()
    }

    /// SQLite locks its files with POSIX record locks: every connection in WAL mode (the server's)
    /// holds a shared lock on the `-shm` file as long as it is open, even idle, and one in
    /// exclusive or rollback mode locks the database file itself. Any lock another process holds
    /// on either means a server (or another tool) still has the database open.
    static func refuseIfOpenElsewhere(_ path: String) throws(SwiftletError) {
        for file in [path + "-shm", path] {
            guard let holder = lockHolder(file) else { continue }
            throw SwiftletError(
                .conflict, "store.in_use",
                "process \(holder) has \(path) open (a swiftlet server still running on it?): stop it first")
        }
    }

    /// The process holding a lock on `file` that would conflict with an exclusive one, if any.
    private static func lockHolder(_ file: String) -> pid_t? {
        let descriptor = open(file, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var probe = flock()
        probe.l_type = Int16(F_WRLCK)
        probe.l_whence = Int16(SEEK_SET)
        probe.l_start = 0
        probe.l_len = 0
        guard fcntl(descriptor, F_GETLK, &probe) == 0, probe.l_type != Int16(F_UNLCK) else { return nil }
        return probe.l_pid
    }

    private func checkSchema() throws(SwiftletError) {
        let migrator = SQLiteStore.migrator
        let (applied, completed) = try read { db in
            (try migrator.appliedIdentifiers(db), try migrator.hasCompletedMigrations(db))
        }
        if let error = SQLiteStore.newerSchemaError(path: path, applied: applied, known: migrator.migrations) {
            throw error
        }
        guard completed else {
            throw SwiftletError(
                .conflict, "store.old_schema",
                """
                \(path) has an older schema than this swiftlet's: start this version's server on it once (it \
                migrates the file), stop it, then move it
                """)
        }
    }

    /// Every table of the store with its columns, GRDB's and SQLite's own bookkeeping left out.
    public func tables() throws(SwiftletError) -> [String: [String]] {
        try read { db in
            var tables: [String: [String]] = [:]
            let names = try String.fetchAll(
                db,
                sql: """
                    SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                    AND name != 'grdb_migrations'
                    """)
            for name in names { tables[name] = try db.columns(in: name).map(\.name) }
            return tables
        }
    }

    /// Up to `limit` rows of `table` after the row `rowid` (nil: from the first), in rowid order:
    /// the values of `columns`, and the rowid to continue after.
    public func rows(table: String, columns: [String], after rowid: Int64?, limit: Int) throws(SwiftletError)
        -> (rows: [[StoredValue]], last: Int64?)
    {
        try read { db in
            let list = columns.map { $0.quotedDatabaseIdentifier }.joined(separator: ", ")
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT rowid AS swiftlet_rowid, \(list) FROM \(table.quotedDatabaseIdentifier)
                    WHERE ? IS NULL OR rowid > ? ORDER BY rowid LIMIT ?
                    """,
                arguments: [rowid, rowid, limit])
            let values = rows.map { row in columns.indices.map { StoredValue(row[$0 + 1] as DatabaseValue) } }
            return (values, rows.last.map { $0["swiftlet_rowid"] })
        }
    }

    private func read<T>(_ body: (Database) throws -> T) throws(SwiftletError) -> T {
        do { return try queue.read(body) } catch { throw SQLiteStore.map(error) }
    }
}
