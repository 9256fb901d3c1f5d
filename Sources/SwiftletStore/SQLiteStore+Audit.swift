import Foundation
import GRDB
import SwiftletCore

extension SQLiteStore: AuditStore {
    /// Tokens' expiry and revocation, and the audit log (the same as PostgresStore's).
    static func registerAuditMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("token-expiry-audit") { db in
            try db.execute(
                sql: """
                    ALTER TABLE token ADD COLUMN expires_at DATETIME;
                    ALTER TABLE token ADD COLUMN revoked_at DATETIME;
                    CREATE TABLE audit_log (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, time DATETIME NOT NULL,
                        token_id TEXT, user_id TEXT, project_id TEXT, method TEXT NOT NULL, route TEXT NOT NULL,
                        resource_id TEXT, status INTEGER NOT NULL, code TEXT);
                    CREATE INDEX audit_log_time ON audit_log(time);
                    """)
        }
    }

    /// Not counted in `generation`: the audit log is in no cached answer, and each change it
    /// records moved the generation already.
    public func appendAudit(_ entries: [AuditEntry]) async throws(SwiftletError) {
        guard !entries.isEmpty else { return }
        do {
            try await pool.write { db in
                for entry in entries {
                    try db.cachedExecute(
                        sql: """
                            INSERT INTO audit_log
                                (time, token_id, user_id, project_id, method, route, resource_id, status, code)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            DatabaseDate.text(entry.time), entry.tokenId, entry.userId, entry.projectId, entry.method,
                            entry.route, entry.resourceId, entry.status, entry.code,
                        ])
                }
            }
        } catch { throw Self.map(error) }
    }

    public func auditEntries(since: Date?, limit: Int) async throws(SwiftletError) -> [AuditEntry] {
        try await read { db in
            try db.cachedRows(
                sql: """
                    SELECT * FROM audit_log WHERE ? IS NULL OR time >= ? ORDER BY time DESC, id DESC LIMIT ?
                    """,
                arguments: [since.map(DatabaseDate.text), since.map(DatabaseDate.text), limit]
            ).map { row in
                AuditEntry(
                    id: row["id"], time: row["time"], tokenId: row["token_id"], userId: row["user_id"],
                    projectId: row["project_id"], method: row["method"], route: row["route"],
                    resourceId: row["resource_id"], status: row["status"], code: row["code"])
            }
        }
    }
}
