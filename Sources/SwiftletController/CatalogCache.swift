import SwiftletCore
import Synchronization

/// What a create reads before it places (its image, the flavors, the hosts), kept while the
/// store's catalog generation is unchanged. Each read was a SQLite transaction on the create's
/// critical path; together they were a third of the control plane's time.
final class CatalogCache: Sendable {
    private struct State {
        var generation: UInt64 = .max
        var values: [String: any Sendable] = [:]
    }

    /// Distinct keys kept at most (image names looked up); the cache restarts beyond.
    static let capacity = 1024
    private let state = Mutex(State())

    /// The value under `key` for `generation`, made (and kept) on a miss. The generation is read
    /// before `make` runs, so a kept value is never older than the generation it is kept under.
    func value<Value: Sendable>(
        _ key: String, generation: UInt64, make: () async throws(SwiftletError) -> Value
    ) async throws(SwiftletError) -> Value {
        let hit = state.withLock { state in state.generation == generation ? state.values[key] as? Value : nil }
        if let hit { return hit }
        let value = try await make()
        state.withLock { state in
            if state.generation != generation || state.values.count >= Self.capacity {
                state = State(generation: generation)
            }
            state.values[key] = value
        }
        return value
    }
}
