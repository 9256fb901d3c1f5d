import AsyncHTTPClient
import Foundation
import NIOCore
import SwiftletCore

/// Users and tokens of the OpenStack Identity API (`/identity/v3`), which answers Keystone's
/// shapes rather than `/v1`'s.
extension SwiftletClient {
    /// Who the Identity API says this client's token is: a project's id and name.
    public struct IdentityScope: Sendable {
        public var projectId: String
        public var projectName: String
        public var admin: Bool
    }

    /// Creates a user in a project (id or name); admin only.
    public func createUser(name: String, project: String, password: String) async throws -> IdentityUser {
        let body: [String: [String: String]] = [
            "user": ["name": name, "default_project_id": project, "password": password, "domain_id": "default"]
        ]
        let answer = try await identityCall("POST", "/identity/v3/users", body: body)
        return try Self.user(from: answer["user"] as? [String: Any])
    }

    public func users() async throws -> [IdentityUser] {
        let answer = try await identityCall("GET", "/identity/v3/users", body: nil)
        return try (answer["users"] as? [[String: Any]] ?? []).map { try Self.user(from: $0) }
    }

    /// Exchanges this client's token for an Identity token once, to learn its project, then
    /// revokes that token.
    public func identityScope() async throws -> IdentityScope {
        let body: [String: Any] = [
            "auth": ["identity": ["methods": ["token"], "token": ["id": token ?? ""]]]
        ]
        let (answer, subject) = try await identityExchange("POST", "/identity/v3/auth/tokens", body: body)
        let tokenBody = answer["token"] as? [String: Any]
        let project = tokenBody?["project"] as? [String: Any]
        guard let id = project?["id"] as? String, let name = project?["name"] as? String else {
            throw ClientError(.invalidResponse("the token answer names no project"))
        }
        let roles = (tokenBody?["roles"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        if let subject {
            var revoke = try makeRequest("DELETE", "/identity/v3/auth/tokens")
            revoke.headers.add(name: "X-Subject-Token", value: subject)
            _ = try? await execute(revoke, timeout: Self.shortTimeout)
        }
        return IdentityScope(projectId: id, projectName: name, admin: roles.contains("admin"))
    }

    private static func user(from fields: [String: Any]?) throws -> IdentityUser {
        guard let fields, let id = fields["id"] as? String, let name = fields["name"] as? String,
            let project = fields["default_project_id"] as? String
        else { throw ClientError(.invalidResponse("the answer carries no user")) }
        return IdentityUser(id: id, name: name, projectId: project, createdAt: Date())
    }

    private func identityCall(_ method: String, _ path: String, body: Any?) async throws -> [String: Any] {
        try await identityExchange(method, path, body: body).0
    }

    private func identityExchange(_ method: String, _ path: String, body: Any?) async throws
        -> ([String: Any], String?)
    {
        var request = try makeRequest(method, path)
        if let body {
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await execute(request, timeout: Self.shortTimeout)
        let bytes = try await response.body.collect(upTo: 1 << 20)
        let object = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any]
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            if status == 401 { throw ClientError(.unauthorized) }
            let error = object?["error"] as? [String: Any]
            let message = error?["message"] as? String ?? response.status.reasonPhrase
            throw ClientError(.api(status: status, code: "identity.\(status)", message: message))
        }
        return (object ?? [:], response.headers.first(name: "X-Subject-Token"))
    }
}
