import Foundation
import GRDB
import Testing

@testable import SwiftletCore
@testable import SwiftletStore

/// What only the SQLite engine has: its migrations from older files and its date text.
@Suite struct SQLiteStoreTests {
    @Test func thePlacementMigrationFillsItsColumnsFromTheRecords() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-v4-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/v4.sqlite"
        let placed = Fixtures.instance("old", image: "img-old", host: "h1", state: .running)
        let record = placed
        do {
            let old = try DatabasePool(path: path)
            try SQLiteStore.migrator.migrate(old, upTo: "v2-pools")
            try await old.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO image (id, project_id, name, kind, sha256, size_bytes, properties, created_at)
                        VALUES ('img-old', ?, 'old', 'pvh', 'ab', 1, '{}', ?)
                        """,
                    arguments: [Project.adminProjectId, Date()])
                try db.execute(
                    sql: """
                        INSERT INTO instance (id, project_id, name, image_id, state, body, created_at)
                        VALUES (?, ?, 'old', 'img-old', 'RUNNING', ?, ?)
                        """,
                    arguments: [record.id, Project.adminProjectId, try RecordCoding.json(record), Date()])
            }
        }
        let migrated = try SQLiteStore(path: path)
        #expect(try await migrated.hostUsage() == ["h1": HostUsage(memoryMib: 16, vcpus: 1, instances: 1)])
        #expect(try await migrated.instance(idOrName: "old", projectId: nil) == record)
    }

    @Test(arguments: [0.0, 1_700_000_000.123, 951_782_400.999, 4_102_444_799.5, -1.5])
    func databaseDateTextMatchesGRDBFormat(seconds: Double) async throws {
        let date = Date(timeIntervalSince1970: seconds)
        // GRDB's own storage text for the same date, and it reads ours back to the millisecond.
        #expect(DatabaseDate.text(date) == date.databaseValue.storage.value as? String)
        let parsed = try #require(Date.fromDatabaseValue(DatabaseDate.text(date).databaseValue))
        #expect(abs(parsed.timeIntervalSince(date)) < 0.001)
    }
}
