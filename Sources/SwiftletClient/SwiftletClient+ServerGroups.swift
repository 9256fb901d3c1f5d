import SwiftletCore

extension SwiftletClient {
    public func createServerGroup(_ request: CreateServerGroupRequest) async throws -> ServerGroup {
        try await send("POST", "/v1/server-groups", body: request)
    }

    public func serverGroups() async throws -> [ServerGroup] {
        let list: ServerGroupList = try await send("GET", "/v1/server-groups")
        return list.serverGroups
    }

    public func serverGroup(_ idOrName: String) async throws -> ServerGroup {
        try await send("GET", "/v1/server-groups/\(segment(idOrName))")
    }

    public func deleteServerGroup(_ idOrName: String) async throws {
        try await sendNoContent("DELETE", "/v1/server-groups/\(segment(idOrName))")
    }
}
