import Foundation
import Logging
import ServiceLifecycle
import SwiftletCore
import SwiftletStore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Elects, among the controllers that share a store, the one that does the work that must happen
/// once (evacuation): whoever holds the store's lease `leaseName`. Each controller tries to take
/// or renew it every `renewInterval`; a leader that dies stops renewing, and another takes over
/// once its lease expires by the database's clock (docs/design.md, "Leadership").
public final class LeaderElection: Service, Sendable {
    public static let leaseName = "controller-leader"

    /// This controller process among all that ever ran: `<host>-<pid>-<random>`.
    public let holder: String
    public let renewInterval: Duration
    public let leaseDuration: Duration
    /// How much earlier than the store's lease the local one ends: the store counts from when its
    /// statement ran, after the call started, but the clocks' rates may differ and an action takes
    /// time after its check.
    public let safetyMargin: Duration
    private let store: any LeadershipStore
    private let logger: Logger
    private let held = Mutex<Held?>(nil)

    private struct Held {
        var term: UInt64
        var until: ContinuousClock.Instant
    }

    public init(
        store: any LeadershipStore, holder: String = LeaderElection.makeHolder(),
        renewInterval: Duration = .milliseconds(250), leaseDuration: Duration = .milliseconds(1500),
        safetyMargin: Duration? = nil, logger: Logger
    ) {
        self.store = store
        self.holder = holder
        self.renewInterval = renewInterval
        self.leaseDuration = leaseDuration
        self.safetyMargin = safetyMargin ?? leaseDuration / 5
        self.logger = logger
    }

    public static func makeHolder() -> String {
        let random = (0..<4).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        return "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(random)"
    }

    /// The term while this controller leads, nil otherwise. It turns nil by itself once the
    /// lease was not renewed in time, so a stalled leader stops acting before another may start:
    /// check it right before each action that must happen once.
    public var currentTerm: UInt64? {
        held.withLock { held in
            guard let held, ContinuousClock.now < held.until else { return nil }
            return held.term
        }
    }

    /// Tries until a graceful shutdown, then releases the lease so that the next leader takes
    /// over at once. Only the wait between tries is cut short: a try in flight ends, so that
    /// what it did is known.
    public func run() async throws {
        var state = Outcome()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            state = await attempt(after: state)
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.renewInterval) }
        }
        held.withLock { $0 = nil }
        // Cancelled rather than shut down: no store call would run.
        guard state.mayHold, !Task.isCancelled else { return }
        do {
            try await store.releaseLease(name: Self.leaseName, holder: holder)
            logger.notice(
                "released leadership",
                metadata: ["leader.term": "\(state.term.map(String.init) ?? "-")", "leader.holder": "\(holder)"])
        } catch {
            logger.warning(
                "cannot release leadership: another controller takes over once the lease expires",
                metadata: ["leader.holder": "\(holder)", "error": "\(error)"])
        }
    }

    /// What the last try found.
    struct Outcome: Sendable {
        var term: UInt64?
        var failing = false
        /// Whether the store may still count this controller as the holder: it led, and no try
        /// since answered (a failed one may have renewed).
        var mayHold = false
    }

    /// One try to take or renew the lease. A store error means not leading until a try succeeds.
    func attempt(after previous: Outcome) async -> Outcome {
        var previous = previous
        if let term = previous.term, currentTerm == nil {
            logger.notice(
                "lost leadership: the lease was not renewed in time",
                metadata: ["leader.term": "\(term)", "leader.holder": "\(holder)"])
            previous.term = nil
        }
        let start = ContinuousClock.now
        var outcome = Outcome()
        do {
            outcome.term = try await store.acquireLease(name: Self.leaseName, holder: holder, duration: leaseDuration)
            outcome.mayHold = outcome.term != nil
        } catch {
            outcome.failing = true
            outcome.mayHold = previous.mayHold
            if !previous.failing {
                logger.warning(
                    "cannot reach the store for leadership: not leading until it answers",
                    metadata: ["leader.holder": "\(holder)", "error": "\(error)"])
            }
        }
        let until = start + leaseDuration - safetyMargin
        // A try that took too long leads to nothing: the next one renews.
        if ContinuousClock.now >= until { outcome.term = nil }
        held.withLock { held in held = outcome.term.map { Held(term: $0, until: until) } }
        if let term = outcome.term, term != previous.term {
            logger.notice("became leader", metadata: ["leader.term": "\(term)", "leader.holder": "\(holder)"])
        } else if let term = previous.term, outcome.term != term {
            logger.notice("lost leadership", metadata: ["leader.term": "\(term)", "leader.holder": "\(holder)"])
        }
        return outcome
    }
}
