import SwiftletCore
import Synchronization

/// How long a store call waits for a connection before it answers 503 `store.unavailable`: the
/// pool keeps retrying a database that is down for much longer, and a request must not hang.
/// Only the wait for a connection is bounded; work that has its connection runs to its end, so
/// a write the caller was told failed never commits afterwards.
final class ConnectionDeadline: Sendable {
    private enum State { case waiting, connected, expired }
    private let state = Mutex(State.waiting)

    /// Called by the work once it holds a connection: false when the deadline has passed (the
    /// work must then do nothing, the caller has its 503 already).
    func connect() -> Bool {
        state.withLock { state in
            guard case .waiting = state else { return false }
            state = .connected
            return true
        }
    }

    /// True when the deadline wins: no connection came in time.
    fileprivate func expire() -> Bool {
        state.withLock { state in
            guard case .waiting = state else { return false }
            state = .expired
            return true
        }
    }

    static let expiredError = SwiftletError(
        .unavailable, "store.unavailable", "the database is unreachable: no connection within the deadline")

    /// Runs `work` (which calls `connect()` first thing once it has a connection), failing with
    /// 503 when no connection comes within `timeout`.
    static func run<T: Sendable>(
        timeout: Duration, _ work: @escaping @Sendable (ConnectionDeadline) async throws -> T
    ) async throws -> T {
        let deadline = ConnectionDeadline()
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await work(deadline) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                if deadline.expire() { throw expiredError }
                return nil
            }
            while let next = try await group.next() {
                if let value = next {
                    group.cancelAll()
                    return value
                }
            }
            throw expiredError
        }
    }
}
