import Foundation
import SwiftletCore

/// Server groups. Membership is the instance record's `server_group_id`: an instance joins when
/// it is created with the group and leaves when it is deleted.
public protocol ServerGroupStore: Sendable {
    /// 409 `server_group.duplicate_name` when the project has a group of that name.
    func createServerGroup(_ group: ServerGroup) async throws(SwiftletError)
    func serverGroups(projectId: String?) async throws(SwiftletError) -> [ServerGroup]
    /// By id or by name within the project (nil project = any, for admins).
    func serverGroup(idOrName: String, projectId: String?) async throws(SwiftletError) -> ServerGroup?
    /// 409 `server_group.in_use` while it has members.
    func deleteServerGroup(id: String) async throws(SwiftletError)
    /// Member instance id → its host, for the members placed on one.
    func serverGroupHosts(id: String) async throws(SwiftletError) -> [String: String]
}
