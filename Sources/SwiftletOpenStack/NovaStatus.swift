import SwiftletCore

/// How a Swiftlet instance state reads in Nova's terms: `status`, `OS-EXT-STS:vm_state`,
/// `OS-EXT-STS:power_state` and `OS-EXT-STS:task_state`.
public struct NovaStatus: Equatable, Sendable {
    public var status: String
    public var vmState: String
    /// Nova's power states: 0 no state, 1 running, 3 paused, 4 shut down.
    public var powerState: Int
    public var taskState: String?

    public init(_ state: InstanceState) {
        switch state {
        case .building: self = .init(status: "BUILD", vmState: "building", powerState: 0, taskState: "spawning")
        case .running: self = .init(status: "ACTIVE", vmState: "active", powerState: 1, taskState: nil)
        case .paused: self = .init(status: "PAUSED", vmState: "paused", powerState: 3, taskState: nil)
        case .stopped: self = .init(status: "SHUTOFF", vmState: "stopped", powerState: 4, taskState: nil)
        case .error: self = .init(status: "ERROR", vmState: "error", powerState: 0, taskState: nil)
        case .deleted: self = .init(status: "DELETED", vmState: "deleted", powerState: 0, taskState: nil)
        // The host is DOWN: Nova says UNKNOWN when it cannot reach a server's compute service.
        case .unknown: self = .init(status: "UNKNOWN", vmState: "active", powerState: 0, taskState: nil)
        }
    }

    /// A running server that moves live to another host.
    public static let migrating = NovaStatus(
        status: "MIGRATING", vmState: "active", powerState: 1, taskState: "migrating")

    init(status: String, vmState: String, powerState: Int, taskState: String?) {
        self.status = status
        self.vmState = vmState
        self.powerState = powerState
        self.taskState = taskState
    }

    /// The Swiftlet states a `status` filter of `GET /servers/detail` selects (nil: no such status).
    public static func states(forStatus status: String) -> [InstanceState]? {
        let matching = InstanceState.allCases.filter { NovaStatus($0).status == status.uppercased() }
        return matching.isEmpty ? nil : matching
    }
}
