import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletNetwork
import SwiftletStore
import Synchronization

/// Networking as the controller runs it: networks, ports and groups in the store, one device prefix
/// for every host, and this host's network when it has one (where new networks' CIDRs are checked
/// against routes).
public final class ControllerNetworking: Sendable {
    public let store: any SwiftletStore & NetworkStore
    public let prefix: String
    public let local: HostNetwork?
    /// The controller's own host: it carries networks even without a fabric address (alone, it
    /// needs no tunnels).
    private let localHost = Mutex<String?>(nil)

    public init(store: any SwiftletStore & NetworkStore, local: HostNetwork) {
        self.store = store
        self.prefix = local.prefix
        self.local = local
    }

    /// A controller without a host of its own: its hosts' agents carry the networks.
    public init(store: any SwiftletStore & NetworkStore, prefix: String) {
        self.store = store
        self.prefix = prefix
        self.local = nil
    }

    func setLocalHost(_ hostId: String) { localHost.withLock { $0 = hostId } }

    /// Whether a host can carry networks: it has networking with the controller's device names, and
    /// an address the other hosts' tunnels can reach (the controller's own host may lack one).
    func carriesNetworks(_ host: ComputeHost) -> Bool {
        host.networkPrefix == prefix && (host.fabricAddress != nil || host.id == localHost.withLock { $0 })
    }

    /// What every host's state is made from, read once per round.
    struct Snapshot {
        var version: UInt64
        var segments: [NetworkSegment]
        var carrying: [ComputeHost]
        /// Host id → its instances that are in a group, with their policies.
        var policies: [String: [String: PortPolicy]]
    }

    func snapshot() async throws(SwiftletError) -> Snapshot {
        let version = store.generation
        let segments = try await store.networks(projectId: nil).map { network in
            NetworkSegment(
                networkId: network.id, bridge: network.bridge, cidr: network.cidr, gateway: network.gateway,
                prefixLength: CIDRBlock.parse(network.cidr)?.prefixLength ?? 24, mtu: network.mtu, mode: network.mode,
                vni: network.vni, gatewayMac: Self.gatewayMac(networkId: network.id))
        }
        return Snapshot(
            version: version, segments: segments, carrying: try await store.hosts().filter(carriesNetworks),
            policies: try await policies())
    }

    /// What one host needs to carry every network: the segments, the other hosts to tunnel to, and
    /// the security-group policy of each instance assigned to it.
    func state(forHost hostId: String, in snapshot: Snapshot) -> HostNetworkState {
        let own = snapshot.carrying.first { $0.id == hostId }?.fabricAddress
        let peers = Set(snapshot.carrying.filter { $0.id != hostId }.compactMap(\.fabricAddress))
            .subtracting([own].compactMap { $0 })
        return HostNetworkState(
            version: snapshot.version, devicePrefix: prefix, segments: snapshot.segments, peers: peers.sorted(),
            policies: snapshot.policies[hostId] ?? [:])
    }

    func state(forHost hostId: String) async throws(SwiftletError) -> HostNetworkState {
        state(forHost: hostId, in: try await snapshot())
    }

    /// Each instance in a group, by host: its groups' rules, and the addresses of every member of
    /// those groups on any host (members let each other in).
    private func policies() async throws(SwiftletError) -> [String: [String: PortPolicy]] {
        let membership = try await store.securityGroupMembership()
        guard !membership.isEmpty else { return [:] }
        let grouped = try await store.instances(projectId: nil, state: nil, name: nil, imageId: nil).filter {
            membership[$0.id] != nil
        }
        let groups = Dictionary(
            try await store.securityGroups(projectId: nil).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let addresses = Dictionary(grouping: try await store.ports(networkId: nil, instanceId: nil), by: \.instanceId)
            .mapValues { $0.map(\.address) }
        var members: [String: Set<String>] = [:]
        for (instanceId, groupIds) in membership {
            for groupId in groupIds { members[groupId, default: []].formUnion(addresses[instanceId] ?? []) }
        }
        var policies: [String: [String: PortPolicy]] = [:]
        for instance in grouped {
            guard let hostId = instance.hostId else { continue }
            let groupIds = membership[instance.id] ?? []
            let peers = groupIds.reduce(into: Set<String>()) { $0.formUnion(members[$1] ?? []) }
            let policy = PortPolicy(rules: groupIds.flatMap { groups[$0]?.rules ?? [] }, peers: peers.sorted())
            policies[hostId, default: [:]][instance.id] = policy
            // A migration's target plugs the instance's ports before it takes over.
            if let task = instance.task, task.kind == .migrating {
                policies[task.to, default: [:]][instance.id] = policy
            }
        }
        return policies
    }

    /// A locally administered MAC derived from the network id: every host gives the network's
    /// gateway the same one, so a guest that moves keeps a valid neighbour entry.
    static func gatewayMac(networkId: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in networkId.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        let bytes = [0x02] + (0..<5).map { UInt8(truncatingIfNeeded: hash >> (8 * $0)) }
        return bytes.map { String(format: "%02x", $0) }.joined(separator: ":")
    }
}

/// Sends every host its network state after a change, one round at a time and in order, so that no
/// host applies an older state after a newer one. Changes made while a round runs share the next.
actor NetworkPublisher {
    private let networking: ControllerNetworking
    private let agents: AgentRegistry
    private let logger: Logger
    private var wanted = 0
    private var published = 0
    private var running = false
    private var waiters: [(round: Int, continuation: CheckedContinuation<Void, Never>)] = []

    init(networking: ControllerNetworking, agents: AgentRegistry, logger: Logger) {
        self.networking = networking
        self.agents = agents
        self.logger = logger
    }

    /// Returns once every connected host was handed a state made after this call.
    func publish() async {
        wanted += 1
        let mine = wanted
        if running {
            await withCheckedContinuation { waiters.append((mine, $0)) }
            return
        }
        running = true
        while published < wanted {
            let round = wanted
            await sendRound()
            published = round
            let done = waiters.filter { $0.round <= round }
            waiters.removeAll { $0.round <= round }
            for waiter in done { waiter.continuation.resume() }
        }
        running = false
    }

    private func sendRound() async {
        let snapshot: ControllerNetworking.Snapshot
        do { snapshot = try await networking.snapshot() } catch {
            logger.error("cannot read the network state", metadata: ["error": "\(error)"])
            return
        }
        let carrying = Set(snapshot.carrying.map(\.id))
        for link in agents.all where carrying.contains(link.hostId) {
            await link.apply(.networks(networking.state(forHost: link.hostId, in: snapshot)), pendingCommit: nil)
        }
    }
}
