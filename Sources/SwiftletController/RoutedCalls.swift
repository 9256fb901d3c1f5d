import Synchronization

/// Callers waiting for answers to calls routed through the store (their host's agent is
/// connected to another controller): the store's signal that an answer came in wakes the one
/// waiting for it.
final class RoutedCalls: Sendable {
    private struct State {
        var waiters: [String: CheckedContinuation<Void, Never>] = [:]
        /// Signals that came before their caller waited.
        var early: Set<String> = []
    }

    private let state = Mutex(State())

    /// Returns when `id` is signalled, or after `duration`, whichever is first.
    func wait(id: String, upTo duration: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let signalled = self.state.withLock { state in
                        if state.early.remove(id) != nil { return true }
                        state.waiters[id] = continuation
                        return false
                    }
                    if signalled { continuation.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(for: duration)
                if !Task.isCancelled { self.signal(id: id) }
            }
            await group.next()
            group.cancelAll()
        }
        // A signal that came after the wait ended must not linger.
        state.withLock { _ = $0.early.remove(id) }
    }

    func signal(id: String) {
        let waiter = state.withLock { state in
            guard let waiter = state.waiters.removeValue(forKey: id) else {
                state.early.insert(id)
                return nil as CheckedContinuation<Void, Never>?
            }
            return waiter
        }
        waiter?.resume()
    }

    /// Signals might have been missed: every caller looks again.
    func signalAll() {
        let waiters = state.withLock { state in
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}
