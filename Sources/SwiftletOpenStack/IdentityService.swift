import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOPosix
import SwiftletController
import SwiftletCore
import SwiftletStore

/// Users with passwords and the expiring tokens issued to them (and in exchange for Swiftlet API
/// tokens), on the Controller's projects. Only hashes are stored.
final class IdentityService: Sendable {
    let controller: Controller
    /// Keystone's default token lifetime.
    static let tokenLifetime: TimeInterval = 3600

    init(controller: Controller) { self.controller = controller }

    var store: any IdentityStore {
        get throws(SwiftletError) {
            guard let store = controller.store as? any IdentityStore else {
                throw SwiftletError(.unavailable, "identity.unsupported", "this store keeps no users")
            }
            return store
        }
    }

    // MARK: Users

    /// Admin only. The project is named by id or name.
    func createUser(name: String, project: String, password: String, by principal: Principal)
        async throws(SwiftletError) -> IdentityUser
    {
        try controller.requireAdmin(principal)
        try ResourceID.validateName(name)
        guard password.utf8.count >= 8, password.utf8.count <= 1024 else {
            throw SwiftletError.badRequest("user.bad_password", "the password must be 8 to 1,024 bytes long")
        }
        let found = try await self.project(project)
        let record: String
        do {
            record = try await NIOThreadPool.singleton.runIfActive { try PasswordHash.make(password: password) }
        } catch {
            throw SwiftletError(.internal, "user.hash_failed", "cannot hash the password: \(error)")
        }
        let user = IdentityUser(id: ResourceID.make("usr"), name: name, projectId: found.id, createdAt: Date())
        try await store.createUser(user, passwordHash: record)
        return user
    }

    func project(_ idOrName: String) async throws(SwiftletError) -> Project {
        if let project = try await controller.store.project(id: idOrName) { return project }
        guard let project = try await controller.store.projects().first(where: { $0.name == idOrName }) else {
            throw .notFound("project", idOrName)
        }
        return project
    }

    /// The user with this name and password; 401 alike for an unknown name and a wrong password.
    func verifyPassword(name: String, password: String) async throws(SwiftletError) -> IdentityUser {
        let found = try await store.user(name: name)
        let stored = found?.passwordHash
        // An unknown name costs a derivation too, so the answer's time does not tell names apart
        // (the decoy is made off the event loops too, on first use).
        let matches =
            (try? await NIOThreadPool.singleton.runIfActive {
                PasswordHash.verify(password: password, record: stored ?? Self.decoyRecord)
            }) ?? false
        guard let found, matches else {
            throw SwiftletError(
                .unauthorized, "auth.bad_credentials", "The request you have made requires authentication.")
        }
        return found.user
    }

    private static let decoyRecord = (try? PasswordHash.make(password: "swiftlet-decoy")) ?? ""

    // MARK: Tokens

    /// Issues a token; the secret is returned once and only its hash is kept.
    /// `notAfter`: the token it was exchanged for expires then, and this one no later.
    func issue(userId: String?, projectId: String, admin: Bool, methods: [String], notAfter: Date? = nil)
        async throws(SwiftletError) -> (secret: String, token: IdentityToken)
    {
        let secret = "swk_" + SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.hexString
        let now = Date()
        let expiresAt = min(now.addingTimeInterval(Self.tokenLifetime), notAfter ?? .distantFuture)
        let token = IdentityToken(
            id: ResourceID.make("tok"), userId: userId, projectId: projectId, admin: admin, methods: methods,
            issuedAt: now, expiresAt: expiresAt)
        try await store.createIdentityToken(token, secretHash: Controller.hash(secret: secret))
        return (secret, token)
    }

    /// The live token with this secret, or nil (unknown, revoked or expired).
    func token(secret: String) async throws(SwiftletError) -> IdentityToken? {
        guard let token = try await store.identityToken(secretHash: Controller.hash(secret: secret)),
            token.expiresAt > Date()
        else { return nil }
        return token
    }

    /// An API token's expiry or revocation is said as such; anything else is Keystone's 401.
    static func refusal(_ error: SwiftletError) -> SwiftletError {
        if error.code == "auth.token_expired" || error.code == "auth.token_revoked" { return error }
        return SwiftletError(.unauthorized, "auth.invalid_token", "The request you have made requires authentication.")
    }

    func revoke(secret: String) async throws(SwiftletError) -> Bool {
        try await store.revokeIdentityToken(secretHash: Controller.hash(secret: secret))
    }

    /// Who a request is: `X-Auth-Token` (an Identity token, or a Swiftlet API token), else
    /// `Authorization: Bearer` as on /v1. 401 without a valid one.
    func principal(_ request: Request) async throws(SwiftletError) -> Principal {
        if let secret = request.headers[HTTPField.Name("X-Auth-Token")!]?.trimmingCharacters(in: .whitespaces),
            !secret.isEmpty
        {
            if let token = try await token(secret: secret) {
                AuditNote.authenticated(tokenId: token.id, userId: token.userId, projectId: token.projectId)
                return token.principal
            }
            do { return try await controller.authenticate(authorization: "Bearer " + secret) } catch {
                throw Self.refusal(error)
            }
        }
        guard let authorization = request.headers[.authorization] else {
            throw SwiftletError(
                .unauthorized, "auth.missing_token", "The request you have made requires authentication (X-Auth-Token)."
            )
        }
        return try await controller.authenticate(authorization: authorization)
    }
}
