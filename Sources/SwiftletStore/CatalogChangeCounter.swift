import GRDB
import Synchronization

/// Counts committed transactions that changed the catalog tables, seen by SQLite itself (GRDB
/// transaction observation), so no write path can forget to report one.
final class CatalogChangeCounter: TransactionObserver, Sendable {
    static let tables: Set<String> = ["image", "flavor", "host", "project", "signing_key"]

    private let changed = Atomic<Bool>(false)
    private let commits = Atomic<UInt64>(0)

    var generation: UInt64 { commits.load(ordering: .acquiring) }

    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool {
        Self.tables.contains(eventKind.tableName)
    }

    func databaseDidChange(with event: DatabaseEvent) {
        changed.store(true, ordering: .relaxed)
    }

    func databaseDidCommit(_ db: Database) {
        if changed.exchange(false, ordering: .relaxed) { commits.add(1, ordering: .releasing) }
    }

    func databaseDidRollback(_ db: Database) {
        changed.store(false, ordering: .relaxed)
    }
}
