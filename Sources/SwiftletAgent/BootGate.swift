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

    /// Runs `body` once a slot is free; `body` learns whether it is the only boot in flight.
    func run<T: Sendable>(_ body: @Sendable (_ alone: Bool) async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body(running == 1 && waiting.isEmpty)
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

/// Whether cold VMMs may back guest RAM with transparent huge pages. Measured on a 2-vCPU host
/// (docs/qemu-driver.md): a `hello` boot alone had 665 fewer page faults and used 0.9–3.0 ms less
/// CPU with them, while 200 creates from 16 clients went from 44 to 38 per second and each idle VM
/// kept ~3 MiB more.
public enum VMMHugePages: String, Codable, Sendable, CaseIterable {
    /// Only for a boot that is alone on the host: less CPU per boot when idle, throughput and
    /// density in bursts.
    case auto
    case always
    case never
}
