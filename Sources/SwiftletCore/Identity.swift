import Foundation

/// A user who signs in with a password (the OpenStack Identity API): a member of one project,
/// and an admin when that project is the built-in admin project.
public struct IdentityUser: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var projectId: String
    public var createdAt: Date

    public init(id: String, name: String, projectId: String, createdAt: Date) {
        self.id = id
        self.name = name
        self.projectId = projectId
        self.createdAt = createdAt
    }

    public var isAdmin: Bool { projectId == Project.adminProjectId }
}

/// An expiring token issued by the Identity API. `userId` is nil for a token issued in exchange
/// for a Swiftlet API token (token authentication), which names no user.
public struct IdentityToken: Codable, Sendable, Equatable {
    public var id: String
    public var userId: String?
    public var projectId: String
    public var admin: Bool
    public var methods: [String]
    public var issuedAt: Date
    public var expiresAt: Date

    public init(
        id: String, userId: String?, projectId: String, admin: Bool, methods: [String], issuedAt: Date,
        expiresAt: Date
    ) {
        self.id = id
        self.userId = userId
        self.projectId = projectId
        self.admin = admin
        self.methods = methods
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
    }

    public var principal: Principal { admin ? .admin : .project(projectId) }
}
