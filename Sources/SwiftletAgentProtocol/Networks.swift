import SwiftletCore

/// A network as each host carries it: a bridge with the network's gateway address (the same on
/// every host, with the same MAC, so a guest's gateway is always its own host), joined to the other
/// hosts' bridges by a VXLAN device with the network's VNI.
public struct NetworkSegment: Codable, Sendable, Equatable {
    public var networkId: String
    public var bridge: String
    public var cidr: String
    public var gateway: String
    public var prefixLength: Int
    public var mtu: Int
    public var mode: NetworkMode
    public var vni: Int
    public var gatewayMac: String

    public init(
        networkId: String, bridge: String, cidr: String, gateway: String, prefixLength: Int, mtu: Int,
        mode: NetworkMode, vni: Int, gatewayMac: String
    ) {
        self.networkId = networkId
        self.bridge = bridge
        self.cidr = cidr
        self.gateway = gateway
        self.prefixLength = prefixLength
        self.mtu = mtu
        self.mode = mode
        self.vni = vni
        self.gatewayMac = gatewayMac
    }
}

/// What lets traffic into one instance's ports: its security groups' rules and the addresses of
/// every member of those groups, wherever they run.
public struct PortPolicy: Codable, Sendable, Equatable {
    public var rules: [SecurityGroupRule]
    public var peers: [String]

    public init(rules: [SecurityGroupRule], peers: [String]) {
        self.rules = rules
        self.peers = peers
    }
}

/// Everything about networks one host needs: the segments, the other hosts to tunnel to, and the
/// policy of each instance assigned here that is in a security group.
public struct HostNetworkState: Codable, Sendable, Equatable {
    /// Grows with the controller's store: a host ignores a state older than the one it applied
    /// (a full sync starts the count again, as after a controller restart).
    public var version: UInt64
    /// The prefix of every device and nftables table name (the controller's; an agent with another
    /// one is not given networks).
    public var devicePrefix: String
    public var segments: [NetworkSegment]
    /// Fabric addresses of the other hosts that carry networks (VXLAN destinations).
    public var peers: [String]
    /// Instance id → policy, for instances in at least one security group.
    public var policies: [String: PortPolicy]

    public init(
        version: UInt64, devicePrefix: String, segments: [NetworkSegment], peers: [String],
        policies: [String: PortPolicy]
    ) {
        self.version = version
        self.devicePrefix = devicePrefix
        self.segments = segments
        self.peers = peers
        self.policies = policies
    }
}
