import Foundation
import SwiftletCore

/// Server groups. Membership is the instance record's `server_group_id`: an instance joins when
/// it is created with the group and leaves when it is deleted.
public protocol ServerGroupStore: Sendable {
    /// 409 `server_group.duplicate_name` when the project has a group of that name.
    func createServerGroup(_ group: ServerGroup) throws(SwiftletError)
    func serverGroups(projectId: String?) throws(SwiftletError) -> [ServerGroup]
    /// By id or by name within the project (nil project = any, for admins).
    func serverGroup(idOrName: String, projectId: String?) throws(SwiftletError) -> ServerGroup?
    /// 409 `server_group.in_use` while it has members.
    func deleteServerGroup(id: String) throws(SwiftletError)
    /// Member instance id → its host, for the members placed on one.
    func serverGroupHosts(id: String) throws(SwiftletError) -> [String: String]
}

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
