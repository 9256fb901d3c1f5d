import SwiftletCore

/// What a host offers to instances (after overcommit): the most its live instances may hold.
public struct HostCapacity: Sendable, Equatable {
    public var memoryMib: Int
    public var vcpus: Int

    public init(memoryMib: Int, vcpus: Int) {
        self.memoryMib = memoryMib
        self.vcpus = vcpus
    }
}

/// What an insert re-checks inside its write transaction, with the new instances counted: that
/// every host it places on still holds its live instances, and that the server group's policy
/// still holds. Placement reads usage before the insert; this closes the gap in which concurrent
/// creates could all take a host's last room.
public struct PlacementClaim: Sendable {
    /// The error code of a claim that no longer holds (a retry may place elsewhere).
    public static let lostCode = "scheduler.no_host"

    /// Host id → its capacity, for each host the instances are placed on.
    public var capacity: [String: HostCapacity]
    /// The group the instances join.
    public var group: ServerGroup?

    public init(capacity: [String: HostCapacity], group: ServerGroup? = nil) {
        self.capacity = capacity
        self.group = group
    }

    static func lost(_ message: String) -> SwiftletError { SwiftletError(.conflict, lostCode, message) }
}
