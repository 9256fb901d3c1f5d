import Foundation
import Synchronization

/// Each remote host's lease (Kubernetes' node lease): renewed by its agent, and the host is DOWN
/// once it is older than `duration`. The controller's own host needs none: it is UP while the
/// controller runs.
public final class HostLeases: Sendable {
    private struct State {
        /// A host not heard from since the controller started counts as UP for one lease: its agent
        /// renewed with the controller before and is reconnecting (nothing is evacuated meanwhile).
        let started = ContinuousClock.now
        var duration: Duration = .seconds(10)
        var leases: [String: (renewed: ContinuousClock.Instant, seenAt: Date)] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public var duration: Duration {
        get { state.withLock { $0.duration } }
        set { state.withLock { $0.duration = newValue } }
    }

    func renew(hostId: String) {
        state.withLock { $0.leases[hostId] = (.now, Date()) }
    }

    func forget(hostId: String) {
        _ = state.withLock { $0.leases.removeValue(forKey: hostId) }
    }

    /// Whether the host's lease holds now (before its agent renewed it in this controller's life:
    /// for the first lease after the start), and when the host was last heard from.
    func status(hostId: String) -> (up: Bool, lastSeen: Date?) {
        state.withLock { state in
            guard let lease = state.leases[hostId] else {
                return (ContinuousClock.now - state.started <= state.duration, nil)
            }
            return (ContinuousClock.now - lease.renewed <= state.duration, lease.seenAt)
        }
    }
}
