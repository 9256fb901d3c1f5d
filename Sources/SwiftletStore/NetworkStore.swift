import Foundation
import SwiftletCore

/// A port the controller wants for a new instance: on `network`, at `address` when the user
/// asked for one, else the lowest free host address.
public struct PortRequest: Sendable {
    public var instanceId: String
    public var network: Network
    public var address: UInt32?
    /// TAP device names are this prefix and 8 hex digits of the port id (≤ 15 characters).
    public var tapPrefix: String

    public init(instanceId: String, network: Network, address: UInt32?, tapPrefix: String) {
        self.instanceId = instanceId
        self.network = network
        self.address = address
        self.tapPrefix = tapPrefix
    }
}

/// A port chosen before its insert: its address (the requested one, else the lowest free) and a
/// fresh id, MAC and TAP name. The insert's UNIQUE constraints decide; a clash draws again.
public struct PortDraft: Sendable {
    public var id: String
    public var address: UInt32
    public var mac: String
    public var tap: String
    var prefixLength: Int

    public func port(for request: PortRequest) -> NetworkPort {
        NetworkPort(
            id: id, networkId: request.network.id, networkName: request.network.name, instanceId: request.instanceId,
            address: IPv4.format(address), prefixLength: prefixLength, gateway: request.network.gateway, mac: mac,
            tap: tap)
    }
}

extension PortRequest {
    /// How many drafts an engine tries before giving up with 409 `port.allocation_failed`.
    public static let draftAttempts = 8

    /// A draft given the addresses `used` on the network: 409 `port.address_in_use` when the
    /// requested address is taken (or the gateway), 409 `network.full` when none is free.
    public func draft(used: Set<UInt32>) throws(SwiftletError) -> PortDraft {
        guard let block = CIDRBlock.parse(network.cidr), let gateway = IPv4.parse(network.gateway) else {
            throw SwiftletError(.internal, "network.corrupt", "network '\(network.id)' has no valid CIDR")
        }
        let chosen: UInt32
        if let address {
            if used.contains(address) || address == gateway {
                throw SwiftletError(
                    .conflict, "port.address_in_use",
                    "address \(IPv4.format(address)) is already in use on network '\(network.name)'")
            }
            chosen = address
        } else {
            guard
                let free = stride(from: block.network + 1, to: block.broadcast, by: 1).first(where: {
                    $0 != gateway && !used.contains($0)
                })
            else {
                throw SwiftletError(.conflict, "network.full", "network '\(network.name)' has no free address left")
            }
            chosen = free
        }
        let id = ResourceID.make("port")
        var generator = SystemRandomNumberGenerator()
        // Locally administered, unicast: 02:xx:xx:xx:xx:xx.
        let mac = (["02"] + (0..<5).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) })
            .joined(separator: ":")
        return PortDraft(
            id: id, address: chosen, mac: mac, tap: tapPrefix + id.suffix(8), prefixLength: block.prefixLength)
    }

    /// 409 `port.allocation_failed`: every draft clashed.
    public var allocationFailed: SwiftletError {
        SwiftletError(.conflict, "port.allocation_failed", "could not allocate a port on '\(network.name)'; retry")
    }
}

/// Persistent state of networks, ports (IPAM) and security groups.
public protocol NetworkStore: Sendable {
    /// 409 `network.overlap` when the CIDR overlaps another network's, checked in the same
    /// transaction as the insert.
    /// With `quota`, refused (403 `quota.exceeded`) past the project's number of networks.
    func createNetwork(_ network: Network, quota: ProjectQuota?) async throws(SwiftletError)
    func networks(projectId: String?) async throws(SwiftletError) -> [Network]
    func network(idOrName: String, projectId: String?) async throws(SwiftletError) -> Network?
    /// 409 `network.in_use` while ports are on it.
    func deleteNetwork(id: String) async throws(SwiftletError)

    /// Allocates every port (all or none), binds the instances to `groupIds` and writes the
    /// ports and group names into the instance records. A requested address that is taken is
    /// 409 `port.address_in_use`; a full network is 409 `network.full`.
    func attach(ports: [PortRequest], groupIds: [String], toInstances instanceIds: [String]) async throws(SwiftletError)
        -> [NetworkPort]
    func ports(networkId: String?, instanceId: String?) async throws(SwiftletError) -> [NetworkPort]

    func createSecurityGroup(_ group: SecurityGroup) async throws(SwiftletError)
    func securityGroups(projectId: String?) async throws(SwiftletError) -> [SecurityGroup]
    func securityGroup(idOrName: String, projectId: String?) async throws(SwiftletError) -> SecurityGroup?
    /// 409 `security_group.in_use` while instances are in it.
    func deleteSecurityGroup(id: String) async throws(SwiftletError)
    func addRule(_ rule: SecurityGroupRule, groupId: String) async throws(SwiftletError)
    func deleteRule(id: String, groupId: String) async throws(SwiftletError)
    /// Instance id → ids of its groups, for every instance in at least one group.
    func securityGroupMembership() async throws(SwiftletError) -> [String: [String]]
}

extension NetworkStore {
    public func createNetwork(_ network: Network) async throws(SwiftletError) {
        try await createNetwork(network, quota: nil)
    }
}
