import Foundation

/// Nova's server-group policies: all members on one host, or each on a different one.
public enum GroupPolicy: String, Sendable, Codable, CaseIterable {
    case affinity
    case antiAffinity = "anti-affinity"
}

/// A set of instances placed by one policy (Nova's server group). Members join when they are
/// created with the group and leave when they are deleted.
public struct ServerGroup: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var name: String
    public var policy: GroupPolicy
    /// Ids of the member instances, in creation order.
    public var members: [String]
    public var createdAt: Date

    public init(id: String, projectId: String, name: String, policy: GroupPolicy, members: [String], createdAt: Date) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.policy = policy
        self.members = members
        self.createdAt = createdAt
    }
}

public struct CreateServerGroupRequest: Codable, Sendable {
    public var name: String
    /// `affinity` or `anti-affinity`; text so that another word is a 400 that names the choices.
    public var policy: String

    public init(name: String, policy: String) {
        self.name = name
        self.policy = policy
    }
}

public struct ServerGroupList: Codable, Sendable {
    public var serverGroups: [ServerGroup]
    public init(_ serverGroups: [ServerGroup]) { self.serverGroups = serverGroups }
}
