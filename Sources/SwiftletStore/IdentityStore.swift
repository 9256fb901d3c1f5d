import Foundation
import SwiftletCore

/// Users with passwords and the expiring tokens the Identity API issues. Only hashes are stored:
/// a password's PBKDF2 record and a token secret's sha256.
public protocol IdentityStore: Sendable {
    /// 409 `user.duplicate_name` when the name is taken (names are global, as in one domain).
    func createUser(_ user: IdentityUser, passwordHash: String) async throws(SwiftletError)
    func user(name: String) async throws(SwiftletError) -> (user: IdentityUser, passwordHash: String)?
    func user(id: String) async throws(SwiftletError) -> IdentityUser?
    func users(projectId: String?) async throws(SwiftletError) -> [IdentityUser]
    /// Stores a token and, in the same transaction, deletes the tokens expired by its issue time:
    /// expired tokens never pile up.
    func createIdentityToken(_ token: IdentityToken, secretHash: String) async throws(SwiftletError)
    /// The token whose secret has this hash, expired or not (the caller checks the expiry).
    func identityToken(secretHash: String) async throws(SwiftletError) -> IdentityToken?
    /// Deletes the token; false when there was none.
    func revokeIdentityToken(secretHash: String) async throws(SwiftletError) -> Bool
}
