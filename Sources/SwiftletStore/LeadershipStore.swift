import SwiftletCore

/// Leases kept in the store so that every controller sharing it agrees on them: the hosts' leases
/// (which host is UP) and named leases with a fencing term (which controller leads). Times are the
/// database's own clock, so the controllers' clocks need not agree.
///
/// These tables announce no changes and move no generation: they are written every few seconds,
/// and no cached answer depends on them.
public protocol LeadershipStore: Sendable {
    /// Stamps the host's lease as renewed now.
    func renewHostLease(hostId: String) async throws(SwiftletError)
    /// How long ago each host's lease was renewed, by host id (hosts never renewed are absent).
    func hostLeaseAges() async throws(SwiftletError) -> [String: Duration]
    /// Drops the host's lease (a revoked host).
    func forgetHostLease(hostId: String) async throws(SwiftletError)

    /// In one atomic step: takes the lease `name` for `duration` when no one holds it or its
    /// holder's lease has expired, or extends it when `holder` holds it already. Returns the term
    /// while `holder` holds it (it grows each time the lease changes hands, so an action stamped
    /// with an older term can be told apart), nil while another holder's unexpired lease stands.
    func acquireLease(name: String, holder: String, duration: Duration) async throws(SwiftletError) -> UInt64?
    /// Ends `holder`'s lease at once (the next one to try takes it), if it holds it.
    func releaseLease(name: String, holder: String) async throws(SwiftletError)
}
