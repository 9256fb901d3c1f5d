import Foundation
import SwiftletCore

/// What joins a host to the cluster: its name and the serial number of the client certificate
/// that alone speaks for it.
public struct HostCredential: Sendable, Equatable {
    public var hostId: String
    public var name: String
    public var certificateSerial: String
    public var revoked: Bool
    public var joinedAt: Date

    public init(hostId: String, name: String, certificateSerial: String, revoked: Bool = false, joinedAt: Date) {
        self.hostId = hostId
        self.name = name
        self.certificateSerial = certificateSerial
        self.revoked = revoked
        self.joinedAt = joinedAt
    }
}

/// Join tokens and host credentials (docs/agent-protocol.md, "Joining").
public protocol ClusterStore: Sendable {
    /// Stores the sha256 of a join token's secret; the secret itself is never stored.
    func createJoinToken(id: String, secretHash: String, expiresAt: Date) async throws(SwiftletError)
    /// In one transaction: the token must exist, match, be unexpired at `now` and unused; no other
    /// host that is not revoked may hold the name; then the token is spent and the credential
    /// recorded (replacing a revoked one of the same host). 401 `join.invalid_token` otherwise, or
    /// 409 `host.name_taken`.
    func joinHost(tokenId: String, secretHash: String, now: Date, credential: HostCredential)
        async throws(SwiftletError)
    func hostCredential(hostId: String) async throws(SwiftletError) -> HostCredential?
    /// Ends a host's access: its certificate is refused from now on. 404 for an unknown host.
    func revokeHost(hostId: String) async throws(SwiftletError)
}
