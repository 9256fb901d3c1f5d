import Foundation

/// Who can see and boot an image: its own project only, or every project.
public enum ImageVisibility: String, Codable, Sendable, CaseIterable {
    case `private`
    case `public`
}

/// An Ed25519 public key a project trusts for image signatures.
public struct SigningKey: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var name: String
    /// The raw 32-byte Ed25519 public key, base64.
    public var publicKey: String
    public var createdAt: Date

    public init(id: String, projectId: String, name: String, publicKey: String, createdAt: Date) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.publicKey = publicKey
        self.createdAt = createdAt
    }
}

public struct SigningKeyList: Codable, Sendable {
    public var keys: [SigningKey]
    public init(_ keys: [SigningKey]) { self.keys = keys }
}

public struct AddSigningKeyRequest: Codable, Sendable {
    public var name: String
    public var publicKey: String
    public init(name: String, publicKey: String) {
        self.name = name
        self.publicKey = publicKey
    }
}

/// PATCH /v1/images/{id}: visibility, tags and properties change without a new upload.
public struct UpdateImageRequest: Codable, Sendable {
    public var visibility: ImageVisibility?
    public var tags: [String]?
    /// Properties to set; an empty value removes the property.
    public var properties: [String: String]?
    public init(visibility: ImageVisibility? = nil, tags: [String]? = nil, properties: [String: String]? = nil) {
        self.visibility = visibility
        self.tags = tags
        self.properties = properties
    }
}

/// PATCH /v1/projects/{id}: the image-signing policy.
public struct UpdateProjectRequest: Codable, Sendable {
    public var requireSignedImages: Bool?
    /// Replaces the project's quota (a limit left out: none).
    public var quota: ProjectQuota?
    public init(requireSignedImages: Bool? = nil, quota: ProjectQuota? = nil) {
        self.requireSignedImages = requireSignedImages
        self.quota = quota
    }
}

extension Image {
    /// The HTTP header (or `signature` query parameter) carrying an upload's signature: base64 Ed25519
    /// over the 32-byte sha256 digest of the image.
    public static let signatureHeader = "X-Swiftlet-Signature"
}
