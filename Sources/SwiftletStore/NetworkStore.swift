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

/// Persistent state of networks, ports (IPAM) and security groups.
public protocol NetworkStore: Sendable {
    /// 409 `network.overlap` when the CIDR overlaps another network's, checked in the same
    /// transaction as the insert.
    func createNetwork(_ network: Network) throws(SwiftletError)
    func networks(projectId: String?) throws(SwiftletError) -> [Network]
    func network(idOrName: String, projectId: String?) throws(SwiftletError) -> Network?
    /// 409 `network.in_use` while ports are on it.
    func deleteNetwork(id: String) throws(SwiftletError)

    /// Allocates every port (all or none), binds the instances to `groupIds` and writes the
    /// ports and group names into the instance records. A requested address that is taken is
    /// 409 `port.address_in_use`; a full network is 409 `network.full`.
    func attach(ports: [PortRequest], groupIds: [String], toInstances instanceIds: [String]) throws(SwiftletError)
        -> [NetworkPort]
    func ports(networkId: String?, instanceId: String?) throws(SwiftletError) -> [NetworkPort]

    func createSecurityGroup(_ group: SecurityGroup) throws(SwiftletError)
    func securityGroups(projectId: String?) throws(SwiftletError) -> [SecurityGroup]
    func securityGroup(idOrName: String, projectId: String?) throws(SwiftletError) -> SecurityGroup?
    /// 409 `security_group.in_use` while instances are in it.
    func deleteSecurityGroup(id: String) throws(SwiftletError)
    func addRule(_ rule: SecurityGroupRule, groupId: String) throws(SwiftletError)
    func deleteRule(id: String, groupId: String) throws(SwiftletError)
    /// Instance id → ids of its groups, for every instance in at least one group.
    func securityGroupMembership() throws(SwiftletError) -> [String: [String]]
}
