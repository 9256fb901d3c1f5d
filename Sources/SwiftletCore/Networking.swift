import Foundation

// Networks, ports and security groups as the API shows them (docs/networking.md).

/// `isolated`: instances reach each other and the host only. `nat`: also the host's uplink,
/// masqueraded behind the host's address.
public enum NetworkMode: String, Codable, Sendable, CaseIterable {
    case isolated
    case nat
}

public struct Network: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var name: String
    /// `a.b.c.d/prefix`, the network address (host bits zero).
    public var cidr: String
    /// The host's address on the network (the bridge address); instances route through it.
    public var gateway: String
    public var mtu: Int
    public var mode: NetworkMode
    /// The Linux bridge that carries the network on each host.
    public var bridge: String
    /// The VXLAN segment id joining the network's bridges across hosts (0 until stored).
    public var vni: Int
    public var createdAt: Date

    public init(
        id: String, projectId: String, name: String, cidr: String, gateway: String, mtu: Int, mode: NetworkMode,
        bridge: String, vni: Int = 0, createdAt: Date
    ) {
        self.vni = vni
        self.id = id
        self.projectId = projectId
        self.name = name
        self.cidr = cidr
        self.gateway = gateway
        self.mtu = mtu
        self.mode = mode
        self.bridge = bridge
        self.createdAt = createdAt
    }
}

/// An address on a network, bound to one instance, carried by one TAP device.
public struct NetworkPort: Codable, Sendable, Equatable {
    public var id: String
    public var networkId: String
    public var networkName: String
    public var instanceId: String
    public var address: String
    public var prefixLength: Int
    public var gateway: String
    public var mac: String
    public var tap: String

    public init(
        id: String, networkId: String, networkName: String, instanceId: String, address: String, prefixLength: Int,
        gateway: String, mac: String, tap: String
    ) {
        self.id = id
        self.networkId = networkId
        self.networkName = networkName
        self.instanceId = instanceId
        self.address = address
        self.prefixLength = prefixLength
        self.gateway = gateway
        self.mac = mac
        self.tap = tap
    }
}

public enum RuleProtocol: String, Codable, Sendable, CaseIterable {
    case tcp, udp, icmp, any
}

/// Lets traffic in: from `source` (CIDR), by protocol and, for tcp/udp, destination ports.
public struct SecurityGroupRule: Codable, Sendable, Equatable {
    public var id: String
    public var proto: RuleProtocol
    /// First port of the range (tcp/udp only; nil = every port).
    public var portMin: Int?
    public var portMax: Int?
    public var source: String

    public init(id: String, proto: RuleProtocol, portMin: Int?, portMax: Int?, source: String) {
        self.id = id
        self.proto = proto
        self.portMin = portMin
        self.portMax = portMax
        self.source = source
    }
}

/// Inbound traffic to a member is denied unless it comes from another member of the group or
/// a rule lets it in; outbound traffic is allowed.
public struct SecurityGroup: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var name: String
    public var description: String
    public var rules: [SecurityGroupRule]
    public var createdAt: Date

    public init(
        id: String, projectId: String, name: String, description: String, rules: [SecurityGroupRule], createdAt: Date
    ) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.description = description
        self.rules = rules
        self.createdAt = createdAt
    }
}

// MARK: - Requests and lists

public struct CreateNetworkRequest: Codable, Sendable {
    public var name: String
    public var cidr: String
    /// Default: the first host address of the CIDR.
    public var gateway: String?
    public var mtu: Int?
    public var mode: NetworkMode?

    public init(name: String, cidr: String, gateway: String? = nil, mtu: Int? = nil, mode: NetworkMode? = nil) {
        self.name = name
        self.cidr = cidr
        self.gateway = gateway
        self.mtu = mtu
        self.mode = mode
    }
}

/// One NIC of a new instance: a network (id or name) and optionally the address it wants.
public struct NetworkAttachment: Codable, Sendable, Equatable {
    public var network: String
    public var ip: String?

    public init(network: String, ip: String? = nil) {
        self.network = network
        self.ip = ip
    }
}

public struct CreateSecurityGroupRequest: Codable, Sendable {
    public var name: String
    public var description: String?

    public init(name: String, description: String? = nil) {
        self.name = name
        self.description = description
    }
}

public struct CreateSecurityGroupRuleRequest: Codable, Sendable {
    public var proto: RuleProtocol
    public var portMin: Int?
    public var portMax: Int?
    /// Default `0.0.0.0/0`.
    public var source: String?

    public init(proto: RuleProtocol, portMin: Int? = nil, portMax: Int? = nil, source: String? = nil) {
        self.proto = proto
        self.portMin = portMin
        self.portMax = portMax
        self.source = source
    }
}

public struct NetworkList: Codable, Sendable {
    public var networks: [Network]
    public init(_ networks: [Network]) { self.networks = networks }
}

public struct NetworkPortList: Codable, Sendable {
    public var ports: [NetworkPort]
    public init(_ ports: [NetworkPort]) { self.ports = ports }
}

public struct SecurityGroupList: Codable, Sendable {
    public var securityGroups: [SecurityGroup]
    public init(_ securityGroups: [SecurityGroup]) { self.securityGroups = securityGroups }
}

// MARK: - IPv4 arithmetic

/// IPv4 addresses as host-order integers, and CIDR blocks.
public enum IPv4 {
    public static func parse(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let byte = UInt8(part) else { return nil }
            value = value << 8 | UInt32(byte)
        }
        return value
    }

    public static func format(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }
}

public struct CIDRBlock: Sendable, Equatable {
    public var network: UInt32
    public var prefixLength: Int

    public init(network: UInt32, prefixLength: Int) {
        self.network = network
        self.prefixLength = prefixLength
    }

    public var mask: UInt32 { prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength) }
    public var broadcast: UInt32 { network | ~mask }
    public var description: String { "\(IPv4.format(network))/\(prefixLength)" }

    public func contains(_ address: UInt32) -> Bool { address & mask == network }

    /// An address instances may use: inside, not the network or broadcast address.
    public func isHost(_ address: UInt32) -> Bool { contains(address) && address != network && address != broadcast }

    public func overlaps(_ other: CIDRBlock) -> Bool { network <= other.broadcast && other.network <= broadcast }

    /// `a.b.c.d/n` with host bits zero; any prefix 0-32 (callers bound it further).
    public static func parse(_ text: String) -> CIDRBlock? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4.parse(String(parts[0])), parts[1].allSatisfy(\.isASCII),
            let prefix = Int(parts[1]), (0...32).contains(prefix)
        else { return nil }
        let block = CIDRBlock(network: address, prefixLength: prefix)
        return block.network & block.mask == block.network ? block : nil
    }
}
