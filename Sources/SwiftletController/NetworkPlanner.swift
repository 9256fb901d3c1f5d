import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletNetwork
import SwiftletStore

/// Networking as the controller runs it: networks, ports and groups in the store, one device prefix
/// for every host, and this host's network (where new networks' CIDRs are checked against routes).
public struct ControllerNetworking: Sendable {
    public let store: any SwiftletStore & NetworkStore
    public let prefix: String
    public let local: HostNetwork

    public init(store: any SwiftletStore & NetworkStore, local: HostNetwork) {
        self.store = store
        self.prefix = local.prefix
        self.local = local
    }

    /// Whether a host can carry networks: it has networking, with the controller's device names.
    func carriesNetworks(_ host: ComputeHost) -> Bool { host.networkPrefix == prefix }

    /// What one host needs to carry every network: the segments, the other hosts to tunnel to, and
    /// the security-group policy of each instance assigned to it.
    func state(forHost hostId: String) throws(SwiftletError) -> HostNetworkState {
        let segments = try store.networks(projectId: nil).map { network in
            NetworkSegment(
                networkId: network.id, bridge: network.bridge, cidr: network.cidr, gateway: network.gateway,
                prefixLength: CIDRBlock.parse(network.cidr)?.prefixLength ?? 24, mtu: network.mtu, mode: network.mode,
                vni: network.vni, gatewayMac: Self.gatewayMac(networkId: network.id))
        }
        let hosts = try store.hosts().filter(carriesNetworks)
        let own = hosts.first { $0.id == hostId }?.fabricAddress
        let peers = Set(hosts.filter { $0.id != hostId }.compactMap(\.fabricAddress)).subtracting(
            [own].compactMap { $0 })
        return HostNetworkState(
            devicePrefix: prefix, segments: segments, peers: peers.sorted(), policies: try policies(hostId: hostId))
    }

    /// Each instance of the host that is in a group: its groups' rules, and the addresses of every
    /// member of those groups on any host (members let each other in).
    private func policies(hostId: String) throws(SwiftletError) -> [String: PortPolicy] {
        let membership = try store.securityGroupMembership()
        guard !membership.isEmpty else { return [:] }
        let here = try store.instances(projectId: nil, state: nil, name: nil, imageId: nil).filter {
            $0.hostId == hostId && membership[$0.id] != nil
        }
        guard !here.isEmpty else { return [:] }
        let groups = Dictionary(
            try store.securityGroups(projectId: nil).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let addresses = Dictionary(grouping: try store.ports(networkId: nil, instanceId: nil), by: \.instanceId)
            .mapValues { $0.map(\.address) }
        var members: [String: Set<String>] = [:]
        for (instanceId, groupIds) in membership {
            for groupId in groupIds { members[groupId, default: []].formUnion(addresses[instanceId] ?? []) }
        }
        var policies: [String: PortPolicy] = [:]
        for instance in here {
            let groupIds = membership[instance.id] ?? []
            let peers = groupIds.reduce(into: Set<String>()) { $0.formUnion(members[$1] ?? []) }
            policies[instance.id] = PortPolicy(
                rules: groupIds.flatMap { groups[$0]?.rules ?? [] }, peers: peers.sorted())
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
        let hosts: [String: ComputeHost]
        do {
            hosts = Dictionary(try networking.store.hosts().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        } catch {
            logger.error("cannot read hosts for network state", metadata: ["error": "\(error)"])
            return
        }
        for link in agents.all {
            guard let host = hosts[link.hostId], networking.carriesNetworks(host) else { continue }
            do {
                await link.apply(.networks(try networking.state(forHost: link.hostId)), pendingCommit: nil)
            } catch {
                logger.error(
                    "cannot make a host's network state", metadata: ["host.id": "\(link.hostId)", "error": "\(error)"])
            }
        }
    }
}
