import Foundation
import SwiftletCore

extension SwiftletClient {
    public func updateImage(_ idOrName: String, _ request: UpdateImageRequest) async throws -> Image {
        try await send("PATCH", "/v1/images/\(segment(idOrName))", body: request)
    }

    public func updateProject(_ idOrName: String, _ request: UpdateProjectRequest) async throws -> Project {
        try await send("PATCH", "/v1/projects/\(segment(idOrName))", body: request)
    }

    /// A project with what it holds now.
    public func project(_ idOrName: String) async throws -> Project {
        try await send("GET", "/v1/projects/\(segment(idOrName))")
    }

    public func addSigningKey(project: String, _ request: AddSigningKeyRequest) async throws -> SigningKey {
        try await send("POST", "/v1/projects/\(segment(project))/signing-keys", body: request)
    }

    public func signingKeys(project: String) async throws -> [SigningKey] {
        let list: SigningKeyList = try await send("GET", "/v1/projects/\(segment(project))/signing-keys")
        return list.keys
    }

    public func deleteSigningKey(project: String, key: String) async throws {
        try await sendNoContent("DELETE", "/v1/projects/\(segment(project))/signing-keys/\(segment(key))")
    }
}
