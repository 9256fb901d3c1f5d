import Foundation
import PostgresNIO
import SwiftletCore
import SwiftletStore

extension PostgresStore: AuditStore {
    /// The same as SQLiteStore's `token-expiry-audit`.
    static var tokenExpiryAudit: Migration {
        Migration(
            version: "token-expiry-audit",
            statements: [
                "ALTER TABLE token ADD COLUMN expires_at timestamptz",
                "ALTER TABLE token ADD COLUMN revoked_at timestamptz",
                """
                CREATE TABLE audit_log (
                    id bigserial PRIMARY KEY, time timestamptz NOT NULL,
                    token_id text, user_id text, project_id text, method text NOT NULL, route text NOT NULL,
                    resource_id text, status integer NOT NULL, code text)
                """,
                "CREATE INDEX audit_log_time ON audit_log(time)",
            ])
    }

    /// One statement for the whole batch; not counted in `generation` (no cached answer holds
    /// the audit log, and the table announces no change).
    public func appendAudit(_ entries: [AuditEntry]) async throws(SwiftletError) {
        guard !entries.isEmpty else { return }
        var binds = PostgresBindings(capacity: entries.count * 9)
        var tuples: [String] = []
        func optional(_ text: String?) {
            if let text { binds.append(text) } else { binds.appendNull() }
        }
        for entry in entries {
            let first = binds.count + 1
            binds.append(entry.time)
            optional(entry.tokenId)
            optional(entry.userId)
            optional(entry.projectId)
            binds.append(entry.method)
            binds.append(entry.route)
            optional(entry.resourceId)
            binds.append(Int32(clamping: entry.status))
            optional(entry.code)
            tuples.append("(" + (first..<first + 9).map { "$\($0)" }.joined(separator: ", ") + ")")
        }
        let query = PostgresQuery(
            unsafeSQL: """
                INSERT INTO audit_log (time, token_id, user_id, project_id, method, route, resource_id, status, code)
                VALUES \(tuples.joined(separator: ", "))
                """, binds: binds)
        try await read { db in try await db.execute(query) }
    }

    public func auditEntries(since: Date?, limit: Int) async throws(SwiftletError) -> [AuditEntry] {
        try await read { db in
            try await db.rows(
                """
                SELECT * FROM audit_log WHERE \(since)::timestamptz IS NULL OR time >= \(since)
                ORDER BY time DESC, id DESC LIMIT \(limit)
                """
            ).map { row in
                AuditEntry(
                    id: try row.get("id"), time: try row.get("time"), tokenId: try row.get("token_id"),
                    userId: try row.get("user_id"), projectId: try row.get("project_id"),
                    method: try row.get("method"), route: try row.get("route"),
                    resourceId: try row.get("resource_id"), status: Int(try row.get("status", as: Int32.self)),
                    code: try row.get("code"))
            }
        }
    }
}
