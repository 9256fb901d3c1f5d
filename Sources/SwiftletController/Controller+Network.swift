import Foundation
import SwiftletCore
import SwiftletNetwork
import SwiftletStore

/// Networks, ports and security groups: validation and persistence; every host then gets its
/// share through the network publisher. Every bad request is refused before anything is made.
extension Controller {
    /// What a create-instances request asks of networking, validated before anything is stored.
    struct NetworkPlan {
        /// One NIC per attachment, in guest order, each with the address it asked for.
        var attachments: [(network: Network, address: UInt32?)]
        var groups: [SecurityGroup]
    }

    /// An instance has at most this many NICs (what the guest kit drives).
    static let maxNetworksPerInstance = 4

    private func enabledNetworking() throws(SwiftletError) -> ControllerNetworking {
        guard let networking else {
            throw SwiftletError(.unavailable, "network.unavailable", "networking is not enabled on this server")
        }
        return networking
    }

    private var networkStore: any SwiftletStore & NetworkStore {
        get throws(SwiftletError) { try enabledNetworking().store }
    }

    /// Hands every connected host its network state; returns once each was handed it.
    func publishNetworks() async { await networkPublisher?.publish() }

    private func scopeOf(_ principal: Principal) -> String? { principal.isAdmin ? nil : principal.projectId }

    // MARK: - Networks

    public static let minimumPrefix = 8
    public static let maximumPrefix = 30

    /// `id`: the id to give it (the OpenStack API's, a network made before its subnet); default a new one.
    public func createNetwork(_ request: CreateNetworkRequest, id given: String? = nil, by principal: Principal)
        async throws(SwiftletError) -> Network
    {
        let networking = try enabledNetworking()
        try ResourceID.validateName(request.name)
        let block = try Self.parseCIDR(request.cidr)
        var gateway = block.network + 1
        if let text = request.gateway {
            guard let parsed = IPv4.parse(text) else {
                throw .badRequest("network.bad_gateway", "gateway '\(text)' is not an IPv4 address")
            }
            guard block.isHost(parsed) else {
                throw .badRequest(
                    "network.gateway_outside", "gateway \(text) is not a host address of \(block.description)")
            }
            gateway = parsed
        }
        let mtu = request.mtu ?? 1500
        guard (576...9000).contains(mtu) else {
            throw .badRequest("network.bad_mtu", "mtu must be 576-9000, got \(mtu)")
        }
        try await networking.local?.checkHostRoutes(block)
        let id = given ?? ResourceID.make("net")
        let network = Network(
            id: id, projectId: principal.projectId, name: request.name, cidr: block.description,
            gateway: IPv4.format(gateway), mtu: mtu, mode: request.mode ?? .nat,
            bridge: HostNetwork.bridgeName(prefix: networking.prefix, networkId: id),
            createdAt: Date())
        try await networking.store.createNetwork(network, quota: try await quota(of: principal.projectId))
        await publishNetworks()
        return try await networking.store.network(idOrName: id, projectId: nil) ?? network
    }

    static func parseCIDR(_ text: String) throws(SwiftletError) -> CIDRBlock {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4.parse(String(parts[0])), let prefix = Int(parts[1]),
            (0...32).contains(prefix)
        else { throw .badRequest("network.bad_cidr", "cidr '\(text)' must be a.b.c.d/prefix") }
        guard prefix <= maximumPrefix else {
            throw .badRequest(
                "network.prefix_too_long",
                "prefix /\(prefix) is longer than /\(maximumPrefix): no room for a gateway and an instance")
        }
        guard prefix >= minimumPrefix else {
            throw .badRequest("network.prefix_too_short", "prefix /\(prefix) is shorter than /\(minimumPrefix)")
        }
        let masked = CIDRBlock(network: address, prefixLength: prefix)
        let block = CIDRBlock(network: address & masked.mask, prefixLength: prefix)
        guard block.network == address else {
            throw .badRequest(
                "network.bad_cidr", "cidr '\(text)' has host bits set; did you mean \(block.description)?")
        }
        return block
    }

    public func networks(by principal: Principal) async throws(SwiftletError) -> [Network] {
        try await networkStore.networks(projectId: scopeOf(principal))
    }

    public func network(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> Network {
        guard let network = try await networkStore.network(idOrName: idOrName, projectId: scopeOf(principal)) else {
            throw .notFound("network", idOrName)
        }
        return network
    }

    public func networkPorts(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> [NetworkPort] {
        try await networkStore.ports(networkId: network(idOrName, by: principal).id, instanceId: nil)
    }

    public func deleteNetwork(_ idOrName: String, by principal: Principal) async throws(SwiftletError) {
        try await networkStore.deleteNetwork(id: network(idOrName, by: principal).id)
        await publishNetworks()
    }

    // MARK: - Security groups

    public func createSecurityGroup(_ request: CreateSecurityGroupRequest, by principal: Principal)
        async throws(SwiftletError)
        -> SecurityGroup
    {
        try ResourceID.validateName(request.name)
        let group = SecurityGroup(
            id: ResourceID.make("sg"), projectId: principal.projectId, name: request.name,
            description: request.description ?? "", rules: [], createdAt: Date())
        try await networkStore.createSecurityGroup(group)
        return group
    }

    public func securityGroups(by principal: Principal) async throws(SwiftletError) -> [SecurityGroup] {
        try await networkStore.securityGroups(projectId: scopeOf(principal))
    }

    public func securityGroup(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> SecurityGroup
    {
        guard let group = try await networkStore.securityGroup(idOrName: idOrName, projectId: scopeOf(principal)) else {
            throw .notFound("security_group", idOrName)
        }
        return group
    }

    public func deleteSecurityGroup(_ idOrName: String, by principal: Principal) async throws(SwiftletError) {
        try await networkStore.deleteSecurityGroup(id: securityGroup(idOrName, by: principal).id)
    }

    public func addRule(_ request: CreateSecurityGroupRuleRequest, to idOrName: String, by principal: Principal)
        async throws(SwiftletError)
        -> SecurityGroup
    {
        let group = try await securityGroup(idOrName, by: principal)
        let source = request.source ?? "0.0.0.0/0"
        guard CIDRBlock.parse(source) != nil else {
            throw .badRequest("rule.bad_source", "source '\(source)' must be a CIDR block such as 10.0.0.0/8")
        }
        if request.portMin != nil || request.portMax != nil {
            guard request.proto == .tcp || request.proto == .udp else {
                throw .badRequest("rule.ports_need_protocol", "ports apply to tcp or udp rules only")
            }
            let low = request.portMin ?? request.portMax ?? 0
            let high = request.portMax ?? low
            guard (1...65535).contains(low), (1...65535).contains(high), low <= high else {
                throw .badRequest("rule.bad_ports", "ports must be 1-65535 with portMin ≤ portMax")
            }
        }
        let rule = SecurityGroupRule(
            id: ResourceID.make("rule"), proto: request.proto, portMin: request.portMin ?? request.portMax,
            portMax: request.portMax ?? request.portMin, source: source)
        try await networkStore.addRule(rule, groupId: group.id)
        await publishNetworks()
        return try await securityGroup(group.id, by: principal)
    }

    public func deleteRule(_ ruleId: String, from idOrName: String, by principal: Principal) async throws(SwiftletError)
    {
        let group = try await securityGroup(idOrName, by: principal)
        try await networkStore.deleteRule(id: ruleId, groupId: group.id)
        await publishNetworks()
    }

    // MARK: - Instances

    /// Checks the networking part of a create request; nothing is stored yet.
    func planNetworks(_ request: CreateInstanceRequest, by principal: Principal, count: Int) async throws(SwiftletError)
        -> NetworkPlan
    {
        let attachments = request.networks ?? []
        let groupNames = request.securityGroups ?? []
        if attachments.isEmpty && groupNames.isEmpty { return NetworkPlan(attachments: [], groups: []) }
        guard attachments.count <= Self.maxNetworksPerInstance else {
            throw .badRequest(
                "instance.too_many_networks",
                "an instance has at most \(Self.maxNetworksPerInstance) networks, got \(attachments.count)")
        }
        guard !attachments.isEmpty else {
            throw .badRequest("instance.groups_without_network", "security groups need a network (--network)")
        }
        if !(request.publish ?? []).isEmpty {
            throw .badRequest(
                "instance.network_with_publish", "use either a network or published ports (user-mode NAT), not both")
        }
        for arg in request.args ?? [] where arg.hasPrefix("ip=") || arg.hasPrefix("gw=") {
            throw .badRequest("instance.network_with_ip_arg", "'\(arg)': the address comes from the network; use --ip")
        }
        var planned: [(network: Network, address: UInt32?)] = []
        for attachment in attachments {
            let network = try await network(attachment.network, by: principal)
            guard !planned.contains(where: { $0.network.id == network.id }) else {
                throw .badRequest(
                    "instance.duplicate_network", "network '\(network.name)' is given twice: one NIC per network")
            }
            planned.append((network, try plannedAddress(attachment, on: network, count: count)))
        }
        var groups: [SecurityGroup] = []
        for name in groupNames { groups.append(try await securityGroup(name, by: principal)) }
        return NetworkPlan(attachments: planned, groups: groups)
    }

    /// The fixed address an attachment asks for, checked against its network (nil: any free one).
    private func plannedAddress(_ attachment: NetworkAttachment, on network: Network, count: Int)
        throws(SwiftletError) -> UInt32?
    {
        guard let text = attachment.ip else { return nil }
        guard count == 1 else {
            throw .badRequest("port.address_with_count", "a fixed address cannot be shared by \(count) instances")
        }
        guard let parsed = IPv4.parse(text) else {
            throw .badRequest("port.bad_address", "'\(text)' is not an IPv4 address")
        }
        guard let block = CIDRBlock.parse(network.cidr), block.isHost(parsed), IPv4.format(parsed) != network.gateway
        else {
            throw .badRequest(
                "port.address_outside",
                "\(text) is not a free host address of network '\(network.name)' (\(network.cidr), gateway \(network.gateway))"
            )
        }
        return parsed
    }

    /// Allocates the planned ports for freshly stored instances; on failure deletes them so
    /// that nothing half-made remains.
    func attachNetworks(_ plan: NetworkPlan, to instances: [Instance]) async throws(SwiftletError) {
        guard !plan.attachments.isEmpty else { return }
        let networking = try enabledNetworking()
        let tapPrefix = HostNetwork.tapPrefix(networking.prefix)
        let requests = instances.flatMap { instance in
            plan.attachments.map {
                PortRequest(instanceId: instance.id, network: $0.network, address: $0.address, tapPrefix: tapPrefix)
            }
        }
        do {
            _ = try await networking.store.attach(
                ports: requests, groupIds: plan.groups.map(\.id), toInstances: instances.map(\.id))
        } catch {
            for instance in instances { try? await store.deleteInstance(id: instance.id) }
            throw error
        }
    }
}
