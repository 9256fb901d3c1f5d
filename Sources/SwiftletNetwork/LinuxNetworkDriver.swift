import Foundation
import SwiftletCore

/// Linux: one bridge per network (`<prefix>-<8 hex>`), one TAP per port (`<prefix>t<8 hex>`), one
/// VXLAN device per network that spans hosts (`<prefix>x<8 hex>`), and nftables tables named after
/// the prefix (`swiftlet` for the default `swl`).
public struct LinuxNetworkDriver: NetworkDriver {
    public let prefix: String
    public let table: String
    private let ip: String
    private let nft: String
    private let bridge: String
    /// IANA's VXLAN port.
    static let vxlanPort = 4789

    public init(
        prefix: String = "swl", ip: String = "/usr/sbin/ip", nft: String = "/usr/sbin/nft",
        bridge: String = "/usr/sbin/bridge"
    ) {
        self.prefix = prefix
        table = prefix == "swl" ? "swiftlet" : "swiftlet_" + prefix
        self.ip = ip
        self.nft = nft
        self.bridge = bridge
    }

    /// 1-5 lowercase letters or digits, so every device name stays ≤ 15 characters.
    public static func validatePrefix(_ prefix: String) throws(SwiftletError) {
        guard (1...5).contains(prefix.count),
            prefix.unicodeScalars.allSatisfy({ ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") })
        else {
            throw SwiftletError.badRequest("network.bad_prefix", "device prefix '\(prefix)' must be 1-5 of a-z, 0-9")
        }
    }

    public var segmentPrefix: String { prefix + "-" }
    public var tapPrefix: String { prefix + "t" }
    public var tunnelPrefix: String { prefix + "x" }

    private func exists(_ name: String) async -> Bool {
        (try? await Command.run(ip, ["link", "show", "dev", name]))?.status == 0
    }

    public func ensureSegment(_ segment: SegmentSpec) async throws(SwiftletError) {
        let made = !(await exists(segment.name))
        do {
            if made { try await Command.check(ip, ["link", "add", segment.name, "type", "bridge"]) }
            try await Command.check(ip, ["link", "set", segment.name, "mtu", "\(segment.mtu)"])
            if let mac = segment.mac { try await Command.check(ip, ["link", "set", segment.name, "address", mac]) }
            // Only the connected route of the CIDR comes with it: never a default route.
            try await Command.check(
                ip, ["addr", "replace", "\(segment.gateway)/\(segment.prefixLength)", "dev", segment.name])
            try await Command.check(ip, ["link", "set", segment.name, "up"])
        } catch {
            if made { await removeSegment(name: segment.name) }
            throw error
        }
    }

    public func removeSegment(name: String) async {
        _ = try? await Command.run(ip, ["link", "del", name])
    }

    public func ensureTap(name: String, segment: String, mtu: Int) async throws(SwiftletError) {
        let made = !(await exists(name))
        do {
            if made { try await Command.check(ip, ["tuntap", "add", "dev", name, "mode", "tap"]) }
            try await Command.check(ip, ["link", "set", name, "master", segment, "mtu", "\(mtu)", "up"])
        } catch {
            if made { await removeTap(name: name) }
            throw error
        }
    }

    public func removeTap(name: String) async {
        _ = try? await Command.run(ip, ["link", "del", name])
    }

    public func ensureTunnel(_ tunnel: TunnelSpec) async throws(SwiftletError) {
        let made = !(await exists(tunnel.name))
        do {
            if made {
                try await Command.check(
                    ip,
                    [
                        "link", "add", tunnel.name, "type", "vxlan", "id", "\(tunnel.vni)", "dstport",
                        "\(Self.vxlanPort)",
                    ])
            }
            try await Command.check(
                ip, ["link", "set", tunnel.name, "master", tunnel.segment, "mtu", "\(tunnel.mtu)", "up"])
            // All-zero entries are where broadcast and unknown unicast go: one per peer.
            let flood = "00:00:00:00:00:00"
            struct Entry: Decodable {
                var mac: String
                var dst: String?
            }
            let output = try await Command.check(bridge, ["-j", "fdb", "show", "dev", tunnel.name])
            let entries = (try? JSONDecoder().decode([Entry].self, from: Data(output.utf8))) ?? []
            let current = Set(entries.filter { $0.mac == flood }.compactMap(\.dst))
            let wanted = Set(tunnel.peers)
            for peer in wanted.subtracting(current).sorted() {
                try await Command.check(bridge, ["fdb", "append", flood, "dev", tunnel.name, "dst", peer])
            }
            for peer in current.subtracting(wanted).sorted() {
                try await Command.check(bridge, ["fdb", "del", flood, "dev", tunnel.name, "dst", peer])
            }
        } catch {
            if made { await removeTunnel(name: tunnel.name) }
            throw error
        }
    }

    public func removeTunnel(name: String) async {
        _ = try? await Command.run(ip, ["link", "del", name])
    }

    public func devices() async throws(SwiftletError) -> HostDevices {
        struct Link: Decodable {
            struct Info: Decodable { var info_kind: String? }
            var ifname: String
            var linkinfo: Info?
        }
        let output = try await Command.check(ip, ["-j", "-d", "link", "show"])
        let links: [Link]
        do { links = try JSONDecoder().decode([Link].self, from: Data(output.utf8)) } catch {
            throw SwiftletError(.internal, "network.host_failed", "cannot parse 'ip -j link' output: \(error)")
        }
        var devices = HostDevices(segments: [], taps: [])
        for link in links {
            if link.linkinfo?.info_kind == "bridge" && link.ifname.hasPrefix(segmentPrefix) {
                devices.segments.insert(link.ifname)
            }
            if link.linkinfo?.info_kind == "tun" && link.ifname.hasPrefix(tapPrefix) {
                devices.taps.insert(link.ifname)
            }
            if link.linkinfo?.info_kind == "vxlan" && link.ifname.hasPrefix(tunnelPrefix) {
                devices.tunnels.insert(link.ifname)
            }
        }
        return devices
    }

    public func apply(_ ruleset: Ruleset) async throws(SwiftletError) {
        if ruleset.segments.contains(where: { $0.mode == .nat }) {
            // Routing must be on for NAT; Swiftlet never turns it off again (others may rely on it).
            try? "1\n".write(toFile: "/proc/sys/net/ipv4/ip_forward", atomically: false, encoding: .utf8)
        }
        try await Command.check(
            nft, ["-f", "-"], input: NFTablesRuleset.render(ruleset, table: table, segmentPrefix: segmentPrefix))
    }

    public func conflictingRoutes(_ block: CIDRBlock) async -> [String] {
        struct Route: Decodable {
            var dst: String
            var dev: String?
        }
        guard let output = try? await Command.check(ip, ["-j", "-4", "route", "show", "table", "main"]),
            let routes = try? JSONDecoder().decode([Route].self, from: Data(output.utf8))
        else { return [] }
        return routes.compactMap { route in
            guard route.dst != "default", !(route.dev ?? "").hasPrefix(segmentPrefix) else { return nil }
            let cidr = route.dst.contains("/") ? route.dst : route.dst + "/32"
            guard let other = CIDRBlock.parse(cidr), other.overlaps(block) else { return nil }
            return "\(cidr) on \(route.dev ?? "?")"
        }
    }
}
