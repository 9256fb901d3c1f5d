import Foundation
import Synchronization

/// Each remote host's lease (Kubernetes' node lease): renewed by its agent through any controller,
/// kept in the store, and the host is DOWN once it is older than `duration`. This is the
/// controller's copy, refreshed from the store's ages, so that asking is synchronous and cheap.
/// The controller's own host needs none: it is UP while the controller runs.
public final class HostLeases: Sendable {
    private struct State {
        /// A host with no lease in the store counts as UP for one lease after the controller
        /// started (it may have joined before leases were kept there, and its agent is
        /// reconnecting), and any host does until the store's leases were read once.
        let started = ContinuousClock.now
        var refreshed = false
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

    /// Takes the store's lease ages (renewals through every controller); a renewal seen here
    /// later than the store's stays.
    func refresh(ages: [String: Duration]) {
        let (now, date) = (ContinuousClock.now, Date())
        state.withLock { state in
            state.refreshed = true
            for (hostId, age) in ages {
                let renewed = now - age
                if let known = state.leases[hostId], known.renewed >= renewed { continue }
                state.leases[hostId] = (renewed, date.addingTimeInterval(-age.totalSeconds))
            }
        }
    }

    /// Whether the host's lease holds now (for a host without one: see `State.started`), and
    /// when the host was last heard from.
    func status(hostId: String) -> (up: Bool, lastSeen: Date?) {
        state.withLock { state in
            guard let lease = state.leases[hostId] else {
                return (!state.refreshed || ContinuousClock.now - state.started <= state.duration, nil)
            }
            return (ContinuousClock.now - lease.renewed <= state.duration, lease.seenAt)
        }
    }
}

extension Duration {
    /// In seconds, with the fraction.
    var totalSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
