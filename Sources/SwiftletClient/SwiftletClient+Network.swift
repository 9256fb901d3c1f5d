import SwiftletCore

/// Networks and security groups (docs/networking.md).
extension SwiftletClient {
    public func createNetwork(_ request: CreateNetworkRequest) async throws -> Network {
        try await send("POST", "/v1/networks", body: request)
    }

    public func networks() async throws -> [Network] {
        let list: NetworkList = try await send("GET", "/v1/networks")
        return list.networks
    }

    public func network(_ idOrName: String) async throws -> Network {
        try await send("GET", "/v1/networks/\(segment(idOrName))")
    }

    public func networkPorts(_ idOrName: String) async throws -> [NetworkPort] {
        let list: NetworkPortList = try await send("GET", "/v1/networks/\(segment(idOrName))/ports")
        return list.ports
    }

    public func deleteNetwork(_ idOrName: String) async throws {
        try await sendNoContent("DELETE", "/v1/networks/\(segment(idOrName))")
    }

    public func createSecurityGroup(_ request: CreateSecurityGroupRequest) async throws -> SecurityGroup {
        try await send("POST", "/v1/security-groups", body: request)
    }

    public func securityGroups() async throws -> [SecurityGroup] {
        let list: SecurityGroupList = try await send("GET", "/v1/security-groups")
        return list.securityGroups
    }

    public func securityGroup(_ idOrName: String) async throws -> SecurityGroup {
        try await send("GET", "/v1/security-groups/\(segment(idOrName))")
    }

    public func deleteSecurityGroup(_ idOrName: String) async throws {
        try await sendNoContent("DELETE", "/v1/security-groups/\(segment(idOrName))")
    }

    /// Returns the group with its rules; the new rule is the last one.
    public func addRule(_ request: CreateSecurityGroupRuleRequest, to group: String) async throws -> SecurityGroup {
        try await send("POST", "/v1/security-groups/\(segment(group))/rules", body: request)
    }

    public func deleteRule(_ ruleId: String, from group: String) async throws {
        try await sendNoContent("DELETE", "/v1/security-groups/\(segment(group))/rules/\(segment(ruleId))")
    }
}
