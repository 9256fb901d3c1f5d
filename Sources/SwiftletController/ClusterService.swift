import Crypto
import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletNetwork
import SwiftletPKI
import SwiftletStore
import Synchronization

/// Hosts that join over the network: join tokens, the certificates that alone speak for each
/// host, host leases, and the agents' side of the link (watch, observations, replies, images).
public final class ClusterService: Sendable {
    public let ca: ClusterCA
    let store: any SwiftletStore & ClusterStore & HostFeedStore & LeadershipStore
    let controller: Controller
    let settings: Settings
    private let logger: Logger
    /// The store's revision sequences (see `RemoteAgentLink`).
    let epoch: String
    /// Names this controller process as the holder of its agents' watch streams.
    let controllerId = ResourceID.make("ctl")
    /// Calls on agents connected to other controllers, waiting for their answers.
    private let routed = RoutedCalls()
    /// Set on graceful shutdown: watch streams end and new ones are refused.
    private let closing = Atomic(false)

    public struct Settings: Sendable {
        public var leaseDuration: Duration
        public var leaseRenewInterval: Duration

        public init(leaseDuration: Duration = .seconds(10), leaseRenewInterval: Duration = .seconds(2)) {
            self.leaseDuration = leaseDuration
            self.leaseRenewInterval = leaseRenewInterval
        }
    }

    public init(
        ca: ClusterCA, store: any SwiftletStore & ClusterStore & HostFeedStore & LeadershipStore,
        controller: Controller,
        settings: Settings, logger: Logger
    ) async throws(SwiftletError) {
        self.ca = ca
        self.store = store
        self.controller = controller
        self.settings = settings
        self.logger = logger
        epoch = try await store.feedIdentity()
        controller.leases.duration = settings.leaseDuration
        // A host that joined through another controller gets its link when first needed: what is
        // sent to it goes into its feed, whichever controller its agent is connected to.
        let (epoch, agents, routed, controllerId) = (epoch, controller.agents, routed, controllerId)
        let sync = controller.instanceSync
        agents.makeLink = { hostId in
            RemoteAgentLink(
                hostId: hostId, epoch: epoch, feed: store, controllerId: controllerId, routed: routed, logger: logger)
        }
        store.observeHostFeeds { signal in
            switch signal {
            case .appended(let hostId): (agents.registered(hostId) as? RemoteAgentLink)?.wake()
            case .called(let hostId): (agents.registered(hostId) as? RemoteAgentLink)?.wakeForCalls()
            case .answered(let callId): routed.signal(id: callId)
            case .settled(let instanceId): sync.releaseWaiters(instanceId)
            case .missed:
                for case let link as RemoteAgentLink in agents.all {
                    link.wake()
                    link.wakeForCalls()
                }
                routed.signalAll()
                sync.recheckWaits()
            }
        }
        try await registerJoinedHosts()
    }

    /// Gives every joined host that is not revoked a link (hosts that joined through another
    /// controller among them), so that changes for all hosts reach each one's feed.
    func registerJoinedHosts() async throws(SwiftletError) {
        for host in try await store.hosts() where controller.agents.registered(host.id) == nil {
            if let credential = try await store.hostCredential(hostId: host.id), !credential.revoked {
                _ = try controller.agents.link(for: host.id)
            }
        }
    }

    // MARK: - Join tokens (admin API)

    public static let maxTokenTTL: Duration = .seconds(7 * 86400)

    public func createJoinToken(ttl: Duration?, by principal: Principal) async throws(SwiftletError) -> JoinTokenInfo {
        try controller.requireAdmin(principal)
        let ttl = ttl ?? .seconds(600)
        guard ttl > .zero, ttl <= Self.maxTokenTTL else {
            throw .badRequest(
                "join_token.bad_ttl", "ttlSeconds must be between 1 and \(Self.maxTokenTTL.components.seconds)")
        }
        var generator = SystemRandomNumberGenerator()
        let hex = { (bytes: Int) in
            (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        }
        let token = JoinToken(id: hex(6), secret: hex(16), caFingerprint: ca.fingerprint)
        let expiresAt = Date().addingTimeInterval(TimeInterval(ttl.components.seconds))
        try await store.createJoinToken(
            id: token.id, secretHash: Controller.hash(secret: token.secret), expiresAt: expiresAt)
        return JoinTokenInfo(id: token.id, token: token.text, expiresAt: expiresAt)
    }

    public func revoke(host: String, by principal: Principal) async throws(SwiftletError) {
        try controller.requireAdmin(principal)
        let hostId = try await controller.hostId(for: host)
        try await store.revokeHost(hostId: hostId)
        if let link = try? controller.agents.link(for: hostId) as? RemoteAgentLink { link.disconnect() }
        try await store.forgetHostLease(hostId: hostId)
        controller.leases.forget(hostId: hostId)
        // No longer a tunnel peer of any network: the other hosts stop flooding to it.
        if var record = try await store.hosts().first(where: { $0.id == hostId }), record.networkPrefix != nil {
            record.networkPrefix = nil
            record.fabricAddress = nil
            try await store.upsertHost(record)
            await controller.publishNetworks()
        }
        logger.notice("host revoked", metadata: ["host.id": "\(hostId)"])
    }

    // MARK: - The agents' side

    /// A valid, unused, unexpired token gets the agent a client certificate bound to a host id.
    func join(_ request: JoinRequest) async throws(SwiftletError) -> JoinResponse {
        let parts = request.token.split(separator: ".").map(String.init)
        guard parts.count == 2 else {
            throw SwiftletError(.unauthorized, "join.invalid_token", "the join token is not valid")
        }
        try ResourceID.validateName(request.hostName)
        let hostId = "host-" + request.hostName
        guard hostId != controller.localHostId else {
            throw SwiftletError(
                .conflict, "host.name_taken", "host name '\(request.hostName)' is the controller's own host")
        }
        try Self.validate(request.capabilities)
        let issued = try ca.issueHostCertificate(hostId: hostId, requestPEM: request.certificateRequest)
        try await store.joinHost(
            tokenId: parts[0], secretHash: Controller.hash(secret: parts[1]), now: Date(),
            credential: HostCredential(
                hostId: hostId, name: request.hostName, certificateSerial: issued.serial, joinedAt: Date()))
        try await record(hostId: hostId, name: request.hostName, capabilities: request.capabilities)
        _ = try controller.agents.link(for: hostId)
        // The join is recorded: a lease the store did not take now is renewed by the agent's watch.
        try? await renewLease(hostId: hostId)
        logger.notice("host joined", metadata: ["host.id": "\(hostId)", "host.serial": "\(issued.serial)"])
        return JoinResponse(hostId: hostId, certificate: issued.certificate, caCertificate: ca.certificatePEM)
    }

    private static func validate(_ capabilities: HostCapabilities) throws(SwiftletError) {
        guard capabilities.cpus > 0, capabilities.cpus <= 4096, capabilities.memoryMib > 0,
            !capabilities.machineTypes.isEmpty
        else {
            throw .badRequest(
                "host.bad_capabilities", "a host reports at least one CPU, some memory and a machine type")
        }
        if let prefix = capabilities.networkPrefix { try LinuxNetworkDriver.validatePrefix(prefix) }
        if let address = capabilities.fabricAddress, IPv4.parse(address) == nil {
            throw .badRequest("host.bad_fabric_address", "fabric address '\(address)' is not an IPv4 address")
        }
    }

    /// Records what a host reports; true when its part in networks changed (the other hosts then need
    /// new tunnel peers).
    @discardableResult
    private func record(hostId: String, name: String, capabilities: HostCapabilities) async throws(SwiftletError)
        -> Bool
    {
        let before = try await store.hosts().first { $0.id == hostId }
        var host = ComputeHost(
            id: hostId, name: name, cpus: capabilities.cpus, memoryMib: capabilities.memoryMib,
            hypervisors: capabilities.hypervisors, hypervisorVersion: capabilities.hypervisorVersion,
            machineTypes: capabilities.machineTypes, accelerators: capabilities.accelerators,
            chosenAccelerator: capabilities.chosenAccelerator, calibrationMs: capabilities.calibrationMs,
            instances: 0, updatedAt: Date())
        host.networkPrefix = capabilities.networkPrefix
        host.fabricAddress = capabilities.fabricAddress
        try await store.upsertHost(host)
        return before?.networkPrefix != host.networkPrefix || before?.fabricAddress != host.fabricAddress
    }

    /// The host a verified client certificate speaks for: it must name a host whose credential
    /// carries that very certificate's serial and is not revoked.
    func authenticate(certificateDER: [UInt8]?) async throws(SwiftletError) -> String {
        guard let certificateDER else {
            throw SwiftletError(.unauthorized, "agent.no_certificate", "this call needs the host's client certificate")
        }
        guard let identity = ClusterCA.hostIdentity(ofDER: certificateDER) else {
            throw SwiftletError(.forbidden, "agent.bad_certificate", "the certificate names no host")
        }
        guard let credential = try await store.hostCredential(hostId: identity.hostId),
            credential.certificateSerial == identity.serial
        else {
            throw SwiftletError(
                .forbidden, "agent.unknown_certificate",
                "the certificate is not the one host '\(identity.hostId)' holds")
        }
        guard !credential.revoked else {
            throw SwiftletError(.forbidden, "agent.revoked", "host '\(identity.hostId)' was revoked")
        }
        return identity.hostId
    }

    func link(hostId: String) throws(SwiftletError) -> RemoteAgentLink {
        guard let link = try controller.agents.link(for: hostId) as? RemoteAgentLink else {
            throw SwiftletError(.conflict, "agent.not_remote", "host '\(hostId)' has no network link")
        }
        return link
    }

    /// Ends every watch stream and refuses new ones, so the agent listener can shut down (the
    /// agents reconnect to the next controller).
    func close() {
        closing.store(true, ordering: .sequentiallyConsistent)
        for link in controller.agents.all { (link as? RemoteAgentLink)?.disconnect() }
    }

    func watch(hostId: String, _ request: WatchRequest) async throws(SwiftletError) -> RemoteAgentLink.WatchSession {
        guard !closing.load(ordering: .sequentiallyConsistent) else {
            throw SwiftletError(.unavailable, "controller.closing", "the controller is shutting down")
        }
        try Self.validate(request.capabilities)
        let name = try await store.hostCredential(hostId: hostId)?.name ?? hostId
        let networkingChanged = try await record(hostId: hostId, name: name, capabilities: request.capabilities)
        try await renewLease(hostId: hostId)
        let sync = controller.instanceSync
        let session = try await link(hostId: hostId).open(request) { () async throws(SwiftletError) in
            try await sync.hostSync(hostId: hostId)
        }
        // The other hosts tunnel to this one (a join recorded it already, so "changed" is not enough).
        if networkingChanged || request.capabilities.networkPrefix != nil { await controller.publishNetworks() }
        return session
    }

    /// Records a batch in order, each report on its own: one refused report (a stale generation, an
    /// instance deleted meanwhile) loses none of the others. Answers with the first refusal, once
    /// all were tried. A batch in another host's name is refused whole.
    func observe(hostId: String, _ observations: [Observation]) async throws(SwiftletError) -> ObservationReceipt {
        if let forged = observations.first(where: { $0.hostId != hostId }) {
            throw SwiftletError(
                .forbidden, "report.forged_host",
                "host '\(hostId)' sent a report in the name of host '\(forged.hostId)'")
        }
        var receipt = ObservationReceipt(taken: 0)
        for (index, observation) in observations.enumerated() {
            do throws(SwiftletError) { try await controller.instanceSync.record(observation) } catch {
                // The agent keeps what the store cannot take now, and sends it again.
                if error.kind == .unavailable { return receipt }
                receipt.refused.append(.init(index: index, code: error.code, message: error.message))
            }
            receipt.taken += 1
        }
        return receipt
    }

    /// In the store, where every controller reads it, and in this controller's copy at once.
    func renewLease(hostId: String) async throws(SwiftletError) {
        try await store.renewHostLease(hostId: hostId)
        controller.leases.renew(hostId: hostId)
    }

    var leaseGrant: LeaseGrant {
        LeaseGrant(
            durationMs: settings.leaseDuration.milliseconds, renewEveryMs: settings.leaseRenewInterval.milliseconds)
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int {
        Int(components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000)
    }
}
