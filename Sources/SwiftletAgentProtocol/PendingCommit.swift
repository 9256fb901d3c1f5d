import Synchronization

/// The commit of a new instance's record, which a boot started before it waits for: the VMM
/// starts (~25 ms of QEMU building its machine) while the controller commits the insert, and the
/// guest runs, or a failure is recorded, only once the record exists. Resolved once.
public final class PendingCommit: Sendable {
    private enum State {
        case waiting([CheckedContinuation<UInt64?, Never>])
        case resolved(UInt64?)
    }

    private let state = Mutex(State.waiting([]))

    public init() {}

    /// The insert committed at `time` (monotonic ns).
    public func committed(at time: UInt64) { resolve(time) }

    /// The insert failed: the boot ends its VMM and records nothing.
    public func failed() { resolve(nil) }

    /// Whether the insert is known to have failed (a boot checks before it spawns).
    public var hasFailed: Bool {
        state.withLock { if case .resolved(nil) = $0 { true } else { false } }
    }

    /// When the insert committed, or nil if it failed.
    public func wait() async -> UInt64? {
        await withCheckedContinuation { continuation in
            let resolved: UInt64?? = state.withLock { state in
                switch state {
                case .resolved(let time): return .some(time)
                case .waiting(var waiters):
                    waiters.append(continuation)
                    state = .waiting(waiters)
                    return .none
                }
            }
            if case .some(let time) = resolved { continuation.resume(returning: time) }
        }
    }

    private func resolve(_ time: UInt64?) {
        let waiters: [CheckedContinuation<UInt64?, Never>] = state.withLock { state in
            guard case .waiting(let waiters) = state else { return [] }
            state = .resolved(time)
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: time) }
    }
}
