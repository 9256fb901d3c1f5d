#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Monotonic nanoseconds (CLOCK_MONOTONIC): comparable across processes on one host, so the
/// driver's and the controller's timestamps line up.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// The phases of one instantiation, in order, as the published work measured them.
public enum Phase: String, Codable, Sendable, CaseIterable {
    case accepted, persisted, scheduled, imageReady, vmmSpawned, vmmUp, ready

    public var label: String {
        switch self {
        case .accepted: "accepted"
        case .persisted: "persisted"
        case .scheduled: "scheduled"
        case .imageReady: "image ready"
        case .vmmSpawned: "VMM spawned"
        case .vmmUp: "VMM up"
        case .ready: "guest READY"
        }
    }
}

/// Monotonic timestamps (ns) of each phase of the latest (re)start of an instance.
public struct Timeline: Codable, Sendable, Equatable {
    public var accepted: UInt64?
    public var persisted: UInt64?
    public var scheduled: UInt64?
    public var imageReady: UInt64?
    public var vmmSpawned: UInt64?
    public var vmmUp: UInt64?
    public var ready: UInt64?
    /// `cold` (a new VMM) or `warm-pool` (a pre-booted VM given its config late).
    public var bootPath: String?

    public init() {}

    public static func starting(at accepted: UInt64) -> Timeline {
        var timeline = Timeline()
        timeline.accepted = accepted
        return timeline
    }

    public subscript(phase: Phase) -> UInt64? {
        get {
            switch phase {
            case .accepted: accepted
            case .persisted: persisted
            case .scheduled: scheduled
            case .imageReady: imageReady
            case .vmmSpawned: vmmSpawned
            case .vmmUp: vmmUp
            case .ready: ready
            }
        }
        set {
            switch phase {
            case .accepted: accepted = newValue
            case .persisted: persisted = newValue
            case .scheduled: scheduled = newValue
            case .imageReady: imageReady = newValue
            case .vmmSpawned: vmmSpawned = newValue
            case .vmmUp: vmmUp = newValue
            case .ready: ready = newValue
            }
        }
    }

    /// The recorded phases and their times, in the order they happened (the enum's order between
    /// equal times). Phases may overlap: a VMM can be spawned, or the agent take the boot, before
    /// the record is persisted.
    public var phasesInTimeOrder: [(Phase, UInt64)] {
        Phase.allCases.compactMap { phase in self[phase].map { (phase, $0) } }
            .enumerated().sorted { ($0.element.1, $0.offset) < ($1.element.1, $1.offset) }.map(\.element)
    }

    /// Duration of each phase: from the phase recorded just before it in time to this one, in
    /// nanoseconds. Taken in time order, so never negative (never an unsigned wrap-around).
    public var phaseDurations: [(Phase, UInt64)] {
        let recorded = phasesInTimeOrder
        return zip(recorded, recorded.dropFirst()).map { previous, next in (next.0, next.1 - previous.1) }
    }

    /// accepted → READY, when both are known.
    public var total: UInt64? {
        guard let accepted, let ready, ready >= accepted else { return nil }
        return ready - accepted
    }
}

/// Percentile summary used by `swiftlet timeline`, the demo and benchmarks.
public enum Percentile {
    /// Nearest-rank percentile of unsorted samples; nil when empty.
    public static func of(_ samples: [UInt64], _ p: Double) -> UInt64? {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }
}
