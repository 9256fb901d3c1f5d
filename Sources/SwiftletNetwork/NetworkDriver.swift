import SwiftletCore

/// A network as a host carries it: one L2 segment with the host's address on it.
public struct SegmentSpec: Sendable, Equatable {
    public var name: String
    public var gateway: String
    public var prefixLength: Int
    public var mtu: Int
    /// The segment's own MAC (the same on every host, so that the gateway is one neighbour).
    public var mac: String?

    public init(name: String, gateway: String, prefixLength: Int, mtu: Int, mac: String? = nil) {
        self.name = name
        self.gateway = gateway
        self.prefixLength = prefixLength
        self.mtu = mtu
        self.mac = mac
    }
}

/// The tunnel joining a segment to the same network on other hosts: broadcast and unknown
/// frames go to every peer, and learnt MACs to their own host.
public struct TunnelSpec: Sendable, Equatable {
    public var name: String
    public var segment: String
    public var vni: Int
    public var mtu: Int
    public var peers: [String]

    public init(name: String, segment: String, vni: Int, mtu: Int, peers: [String]) {
        self.name = name
        self.segment = segment
        self.vni = vni
        self.mtu = mtu
        self.peers = peers
    }
}

/// The devices of one deployment found on the host (by their name prefix).
public struct HostDevices: Sendable, Equatable {
    public var segments: Set<String>
    public var taps: Set<String>
    public var tunnels: Set<String>

    public init(segments: Set<String>, taps: Set<String>, tunnels: Set<String> = []) {
        self.segments = segments
        self.taps = taps
        self.tunnels = tunnels
    }
}

/// What the host side of networking needs from a platform. The Linux implementation uses
/// bridges, TAP devices and nftables; an overlay (VXLAN between hosts) can implement the same.
/// Every call is idempotent, so the service can re-run it after a crash.
public protocol NetworkDriver: Sendable {
    /// Device names of this deployment start with this (≤ 5 characters).
    var prefix: String { get }
    /// Creates the segment (or finds it) with exactly the gateway address; nothing is left
    /// behind when it throws.
    func ensureSegment(_ segment: SegmentSpec) async throws(SwiftletError)
    func removeSegment(name: String) async
    /// Creates the TAP (or finds it) attached to `segment`.
    func ensureTap(name: String, segment: String, mtu: Int) async throws(SwiftletError)
    func removeTap(name: String) async
    /// Creates the tunnel (or finds it) on its segment with exactly `peers` as flood destinations;
    /// a tunnel it made is removed again when it throws.
    func ensureTunnel(_ tunnel: TunnelSpec) async throws(SwiftletError)
    func removeTunnel(name: String) async
    func devices() async throws(SwiftletError) -> HostDevices
    /// Replaces the whole filtering and NAT state of this deployment at once.
    func apply(_ ruleset: Ruleset) async throws(SwiftletError)
    /// Host routes not made by this deployment that overlap `block` (e.g. the uplink's subnet):
    /// a network there would steal the host's own traffic.
    func conflictingRoutes(_ block: CIDRBlock) async -> [String]
}

/// Everything the rules are made from, rebuilt from the host's network state on every change.
public struct Ruleset: Sendable, Equatable {
    public struct Segment: Sendable, Equatable {
        public var device: String
        public var cidr: String
        public var mode: NetworkMode
        /// The segment's VXLAN device, if it spans hosts: the gateway's frames never leave by it.
        public var tunnel: String?
        public var gatewayMac: String?
        public init(device: String, cidr: String, mode: NetworkMode, tunnel: String? = nil, gatewayMac: String? = nil) {
            self.device = device
            self.cidr = cidr
            self.mode = mode
            self.tunnel = tunnel
            self.gatewayMac = gatewayMac
        }
    }

    /// A TAP whose inbound traffic is filtered by the groups its instance is in.
    public struct FilteredPort: Sendable, Equatable {
        public var tap: String
        /// Addresses of every instance sharing a group with this one (let in).
        public var peers: [String]
        public var rules: [SecurityGroupRule]
        public init(tap: String, peers: [String], rules: [SecurityGroupRule]) {
            self.tap = tap
            self.peers = peers
            self.rules = rules
        }
    }

    public var segments: [Segment]
    public var filteredPorts: [FilteredPort]

    public init(segments: [Segment], filteredPorts: [FilteredPort]) {
        self.segments = segments
        self.filteredPorts = filteredPorts
    }

    public var isEmpty: Bool { segments.isEmpty && filteredPorts.isEmpty }
}
