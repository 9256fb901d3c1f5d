import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore {
    /// How many rows one table received.
    public struct ImportedTable: Sendable, Equatable {
        public var table: String
        public var rows: Int
    }

    /// Moves a stopped single-host deployment's whole state from its SQLite file into this
    /// database, which must hold nothing but what its migrations seed (`swiftlet admin
    /// migrate-store`). The source is checked first (no process has it open, its schema is this
    /// version's), this database is migrated, then every table is copied in one transaction, so a
    /// failure leaves this database as it was. Returns the rows copied per table.
    public func importSQLite(path: String) async throws(SwiftletError) -> [ImportedTable] {
        let source = try SQLiteExport(path: path)
        let sourceTables = try source.tables().filter { !Self.notMoved.contains($0.key) }
        try await migrate()
        let result = try await write(catalog: true) { db in
            // Migrations and imports take turns; a second import then finds this one's rows.
            try await db.lock(.migration)
            let target = try await Self.targetSchema(db)
            try Self.checkCompatible(source: sourceTables, target: target)
            try await Self.refuseUnlessEmpty(db, tables: target.columns.keys.sorted())
            // The migrations' seeds (flavors, the admin project) give way to the source's own.
            try await db.execute("DELETE FROM flavor")
            try await db.execute("DELETE FROM project")
            var imported: [ImportedTable] = []
            for table in try Self.insertionOrder(target) {
                let columns = sourceTables[table] ?? []
                let count = try await Self.copy(
                    table, columns: columns, types: target.columns[table] ?? [:], source, db)
                imported.append(ImportedTable(table: table, rows: count))
            }
            try await Self.advanceSequences(db)
            return imported
        }
        return result
    }

    /// Each store's own running state, not moved: its identity (agents that saw another store's
    /// feeds resync from a full sync), the hosts' feeds, routed calls, host leases and leadership.
    public static let notMoved: Set<String> = [
        "store_identity", "host_feed", "host_change", "watch_holder", "agent_call", "host_lease", "leader_lease",
    ]

    /// The tables of this database (bookkeeping aside, and what is not moved): each column's type,
    /// and which tables each one's foreign keys reference.
    struct TargetSchema: Sendable {
        var columns: [String: [String: String]] = [:]
        var references: [String: Set<String>] = [:]
    }

    private static func targetSchema(_ db: PostgresSession) async throws -> TargetSchema {
        var schema = TargetSchema()
        let columns = try await db.rows(
            """
            SELECT table_name::text AS table_name, column_name::text AS column_name, data_type::text AS data_type
            FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name <> 'schema_migration'
            """)
        for row in columns {
            let table: String = try row.get("table_name")
            if notMoved.contains(table) { continue }
            schema.columns[table, default: [:]][try row.get("column_name")] = try row.get("data_type")
        }
        let references = try await db.rows(
            """
            SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent FROM pg_constraint
            WHERE contype = 'f' AND connamespace = current_schema()::regnamespace
            """)
        for row in references {
            schema.references[try row.get("child"), default: []].insert(try row.get("parent"))
        }
        return schema
    }

    /// Every source table and column must have a place here: a copy that dropped one would lose
    /// state silently.
    private static func checkCompatible(source: [String: [String]], target: TargetSchema) throws(SwiftletError) {
        for (table, columns) in source.sorted(by: { $0.key < $1.key }) {
            guard let types = target.columns[table] else {
                throw schemaMismatch("the SQLite table \(table) has no PostgreSQL counterpart")
            }
            if let missing = columns.first(where: { types[$0] == nil }) {
                throw schemaMismatch("the SQLite column \(table).\(missing) has no PostgreSQL counterpart")
            }
        }
    }

    private static func schemaMismatch(_ detail: String) -> SwiftletError {
        SwiftletError(.internal, "store.schema_mismatch", "the two engines' schemas differ: \(detail)")
    }

    /// A database with more than its migrations' seeds was used already: refused, never merged.
    private static func refuseUnlessEmpty(_ db: PostgresSession, tables: [String]) async throws {
        let defaults = Flavor.defaults.map(\.name)
        for table in tables {
            let count: Int
            switch table {
            case "flavor":
                count =
                    try await db.value(Int.self, "SELECT COUNT(*) FROM flavor WHERE NOT (name = ANY(\(defaults)))") ?? 0
            case "project":
                count =
                    try await db.value(
                        Int.self, "SELECT COUNT(*) FROM project WHERE id <> \(Project.adminProjectId)") ?? 0
            default:
                count =
                    try await db.value(Int.self, PostgresQuery(unsafeSQL: "SELECT COUNT(*) FROM \(identifier(table))"))
                    ?? 0
            }
            guard count == 0 else {
                throw SwiftletError(
                    .conflict, "store.target_not_empty",
                    """
                    the target database already holds data (\(count) row(s) in \(table)): migrate-store only \
                    fills a database no server has used
                    """)
            }
        }
    }

    /// Parents before children, so that every foreign key finds its row.
    private static func insertionOrder(_ schema: TargetSchema) throws(SwiftletError) -> [String] {
        var order: [String] = []
        var placed = Set<String>()
        var pending = schema.columns.keys.sorted()
        while !pending.isEmpty {
            let ready = pending.filter { schema.references[$0, default: []].subtracting([$0]).isSubset(of: placed) }
            guard !ready.isEmpty else { throw schemaMismatch("the foreign keys of \(pending) form a cycle") }
            order += ready
            placed.formUnion(ready)
            pending.removeAll { placed.contains($0) }
        }
        return order
    }

    /// Names come from the catalogs, not from input; quoted all the same.
    private static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Rows per INSERT: a few statements per table instead of one per row, well under the
    /// protocol's limit of bound values.
    private static let batchRows = 500

    private static func copy(
        _ table: String, columns: [String], types: [String: String], _ source: SQLiteExport, _ db: PostgresSession
    ) async throws -> Int {
        guard !columns.isEmpty else { return 0 }
        let head = "INSERT INTO \(identifier(table)) (\(columns.map(identifier).joined(separator: ", "))) VALUES "
        var after: Int64?
        var count = 0
        while true {
            let page = try source.rows(table: table, columns: columns, after: after, limit: batchRows)
            guard !page.rows.isEmpty else { return count }
            var binds = PostgresBindings(capacity: page.rows.count * columns.count)
            var tuples: [String] = []
            for row in page.rows {
                var placeholders: [String] = []
                for (column, value) in zip(columns, row) {
                    try bind(value, as: types[column] ?? "", column: "\(table).\(column)", into: &binds)
                    placeholders.append("$\(binds.count)")
                }
                tuples.append("(" + placeholders.joined(separator: ", ") + ")")
            }
            try await db.execute(PostgresQuery(unsafeSQL: head + tuples.joined(separator: ", "), binds: binds))
            count += page.rows.count
            after = page.last
        }
    }

    /// SQLite's value as the target column's type: its integers as booleans, its date text as
    /// timestamps; a value the column cannot take stops the copy.
    private static func bind(_ value: StoredValue, as type: String, column: String, into binds: inout PostgresBindings)
        throws
    {
        func refuse() -> SwiftletError {
            SwiftletError(.internal, "store.bad_value", "\(column) holds \(value), which a \(type) column cannot take")
        }
        switch (type, value) {
        case (_, .null): binds.appendNull()
        case ("text", .text(let text)): binds.append(text)
        case ("boolean", .integer(let number)) where number == 0 || number == 1: binds.append(number == 1)
        case ("bigint", .integer(let number)): binds.append(number)
        case ("integer", .integer(let number)):
            guard let narrow = Int32(exactly: number) else { throw refuse() }
            binds.append(narrow)
        case ("double precision", .real(let number)): binds.append(number)
        case ("double precision", .integer(let number)): binds.append(Double(number))
        case ("timestamp with time zone", _):
            guard let date = value.date else { throw refuse() }
            binds.append(date)
        case ("bytea", .blob(let data)): try binds.append(data)
        default: throw refuse()
        }
    }

    /// Serial columns (event ids) continue after the copied ids instead of colliding with them.
    private static func advanceSequences(_ db: PostgresSession) async throws {
        let serials = try await db.rows(
            """
            SELECT table_name::text AS table_name, column_name::text AS column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'
            """)
        for row in serials {
            let table: String = try row.get("table_name")
            let column: String = try row.get("column_name")
            try await db.execute(
                """
                SELECT setval(pg_get_serial_sequence(\(table), \(column)), COALESCE(MAX(\(unescaped: identifier(column))), 0) + 1,
                false) FROM \(unescaped: identifier(table))
                """)
        }
    }
}
