import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Migration records, the same on every engine: one unfinished per instance even when several
/// writers race, kept after they end, listed newest first, scoped to their project.
@Suite struct MigrationConformanceTests {
    /// One start time for the whole test, so that the order of the records never depends on how
    /// long the calls between them took.
    static let start = Fixtures.wholeSeconds()

    static func migration(_ id: String, instance: String, at offset: TimeInterval) -> InstanceMigration {
        InstanceMigration(
            id: id, instanceId: instance, instanceName: instance, projectId: Project.adminProjectId, mode: .live,
            sourceHostId: "h1", targetHostId: "h2", status: .preparing, createdAt: start.addingTimeInterval(offset))
    }

    @Test(arguments: StoreEngine.allCases)
    func anInstanceHasOneUnfinishedMigrationAtATimeAndRecordsAreKept(engine: StoreEngine) async throws {
        try await engine.withStores(count: 3) { stores in
            // Three writers start a migration of the same instance at once: one wins.
            let outcomes = await withTaskGroup(of: String.self) { group in
                for (index, store) in stores.enumerated() {
                    group.addTask {
                        let error = await storeError {
                            try await store.createMigration(Self.migration("mig-\(index)", instance: "i-a", at: 0))
                        }
                        return error?.code ?? "created"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["created": 1, "migration.in_progress": 2])
            let store = stores[0]
            let first = try #require(try await store.migrations(projectId: nil, instanceId: "i-a").first)
            // Once it ends, the next may start; the ended one is kept with its figures.
            let ended = try await store.updateMigration(id: first.id) {
                $0.status = .completed
                $0.downtimeMs = 4.5
                $0.transferredBytes = 1234
            }
            #expect(ended.status == .completed && ended.updatedAt >= first.createdAt)
            try await store.createMigration(Self.migration("mig-next", instance: "i-a", at: 10))
            try await store.createMigration(Self.migration("mig-other", instance: "i-b", at: 5))
            #expect(try await store.migrations(projectId: nil, instanceId: "i-a").map(\.id) == ["mig-next", first.id])
            #expect(
                try await store.migrations(projectId: nil, instanceId: nil).map(\.id) == [
                    "mig-next", "mig-other", first.id,
                ])
            let read = try #require(try await store.migration(id: first.id, projectId: nil))
            #expect(read.status == .completed && read.downtimeMs == 4.5 && read.transferredBytes == 1234)
            #expect(try await store.migration(id: first.id, projectId: "p-other") == nil)
            #expect(try await store.migrations(projectId: "p-other", instanceId: nil).isEmpty)
            #expect(
                await storeError { try await store.updateMigration(id: "mig-none") { $0.status = .failed } }?.code
                    == "migration.not_found")
        }
    }
}
