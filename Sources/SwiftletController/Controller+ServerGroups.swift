import Foundation
import Hummingbird
import SwiftletCore
import SwiftletStore

extension Controller {
    var serverGroupStore: any ServerGroupStore {
        get throws(SwiftletError) {
            guard let groups = store as? any ServerGroupStore else {
                throw SwiftletError(.internal, "server_group.unsupported", "this store has no server groups")
            }
            return groups
        }
    }

    public func createServerGroup(_ request: CreateServerGroupRequest, by principal: Principal)
        async throws(SwiftletError) -> ServerGroup
    {
        try ResourceID.validateName(request.name)
        guard let policy = GroupPolicy(rawValue: request.policy) else {
            let choices = GroupPolicy.allCases.map(\.rawValue).joined(separator: " or ")
            throw .badRequest("server_group.bad_policy", "policy must be \(choices), got '\(request.policy)'")
        }
        let group = ServerGroup(
            id: ResourceID.make("sgrp"), projectId: principal.projectId, name: request.name, policy: policy,
            members: [], createdAt: Date())
        try await serverGroupStore.createServerGroup(group)
        return group
    }

    public func serverGroups(by principal: Principal) async throws(SwiftletError) -> [ServerGroup] {
        try await serverGroupStore.serverGroups(projectId: scope(principal))
    }

    public func serverGroup(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> ServerGroup {
        guard let group = try await serverGroupStore.serverGroup(idOrName: idOrName, projectId: scope(principal)) else {
            throw .notFound("server_group", idOrName)
        }
        return group
    }

    /// Refused (409 `server_group.in_use`) while the group has members, unlike Nova, which lets
    /// the members outlive their group: a member's placement policy should not vanish unseen.
    public func deleteServerGroup(_ idOrName: String, by principal: Principal) async throws(SwiftletError) {
        try await serverGroupStore.deleteServerGroup(id: serverGroup(idOrName, by: principal).id)
    }

    /// The group an instance was created in, for placing it again.
    func serverGroup(of instance: Instance) async throws(SwiftletError) -> ServerGroup? {
        guard let id = instance.serverGroupId else { return nil }
        return try await serverGroupStore.serverGroup(idOrName: id, projectId: nil)
    }
}

/// `/v1/server-groups`: placement policies over sets of instances (docs/api.md).
enum ServerGroupRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        v1.post("server-groups") { request, context in
            let body = try await APIRouter.decode(CreateServerGroupRequest.self, request, context)
            return APIRouter.json(
                try await controller.createServerGroup(body, by: try context.requirePrincipal()), status: .created)
        }
        v1.get("server-groups") { _, context in
            APIRouter.json(ServerGroupList(try await controller.serverGroups(by: try context.requirePrincipal())))
        }
        v1.get("server-groups/:id") { _, context in
            APIRouter.json(
                try await controller.serverGroup(
                    try context.parameters.require("id"), by: try context.requirePrincipal()))
        }
        v1.delete("server-groups/:id") { _, context in
            try await controller.deleteServerGroup(
                try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
    }
}
