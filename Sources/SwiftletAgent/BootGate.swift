/// Bounds how many VMMs start at once on this host (Nova's `max_concurrent_builds`). A TCG QEMU
/// spends ~30 ms of CPU building its machine before the guest runs; with 16 creates in flight on
/// 2 cores they all slow each other down and the host's boot rate drops. Waiters go in order.
actor BootGate {
    let limit: Int
    private var running = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        precondition(limit > 0, "a boot gate needs at least one slot")
        self.limit = limit
    }

    /// Runs `body` once a slot is free.
    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        if running < limit {
            running += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Hands the slot straight to the next waiter, so `running` never overshoots `limit`.
    private func release() {
        if waiting.isEmpty {
            running -= 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}
