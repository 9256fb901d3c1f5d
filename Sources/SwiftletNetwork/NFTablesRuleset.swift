import SwiftletCore

/// Renders a `Ruleset` as one nftables transaction that replaces this deployment's two tables
/// (`inet` for routing and NAT, `bridge` for security groups) and touches nothing else.
///
/// Security groups are enforced where frames leave the bridge into an instance's TAP (bridge
/// postrouting), so they apply alike to traffic from the host, from other networks and from
/// instances on the same bridge. The bridge family has no connection tracking on every kernel,
/// so "replies are let in" is stateless: TCP segments that are not a bare SYN, and ICMP
/// errors and echo replies.
public enum NFTablesRuleset {
    public static func render(_ ruleset: Ruleset, table: String, segmentPrefix: String) -> String {
        var lines = [
            "table inet \(table) {}", "delete table inet \(table)",
            "table bridge \(table) {}", "delete table bridge \(table)",
        ]
        guard !ruleset.isEmpty else { return lines.joined(separator: "\n") + "\n" }
        let ours = quote(segmentPrefix + "*")
        lines.append("table inet \(table) {")
        lines.append("  chain forward {")
        lines.append("    type filter hook forward priority filter; policy accept;")
        for segment in ruleset.segments {
            let device = quote(segment.device)
            // Bridged traffic inside one network shows up here too when br_netfilter is loaded.
            lines.append("    iifname \(device) oifname \(device) accept")
            switch segment.mode {
            case .isolated:
                lines.append("    iifname \(device) drop")
                lines.append("    oifname \(device) drop")
            case .nat:
                lines.append("    iifname \(device) oifname \(ours) drop")
                lines.append("    oifname \(device) iifname \(ours) drop")
                lines.append("    iifname \(device) accept")
                lines.append("    oifname \(device) ct state established,related accept")
                lines.append("    oifname \(device) drop")
            }
        }
        lines.append("  }")
        lines.append("  chain postrouting {")
        lines.append("    type nat hook postrouting priority srcnat; policy accept;")
        for segment in ruleset.segments where segment.mode == .nat {
            lines.append("    ip saddr \(segment.cidr) oifname != \(quote(segment.device)) masquerade")
        }
        lines.append("  }")
        lines.append("}")
        lines.append("table bridge \(table) {")
        let tunnelled = ruleset.segments.compactMap { segment in
            segment.tunnel.flatMap { tunnel in segment.gatewayMac.map { (tunnel: tunnel, mac: $0) } }
        }
        if !tunnelled.isEmpty {
            // Every host is the gateway of its own instances (same address and MAC everywhere): the
            // gateway's frames, ARP answers included, must not reach the other hosts.
            lines.append("  chain output {")
            lines.append("    type filter hook output priority 0; policy accept;")
            for (tunnel, mac) in tunnelled { lines.append("    oifname \(quote(tunnel)) ether saddr \(mac) drop") }
            lines.append("  }")
        }
        lines.append("  chain postrouting {")
        lines.append("    type filter hook postrouting priority 0; policy accept;")
        for port in ruleset.filteredPorts {
            lines.append("    oifname \(quote(port.tap)) jump \(chain(port.tap))")
        }
        lines.append("  }")
        for port in ruleset.filteredPorts {
            lines.append("  chain \(chain(port.tap)) {")
            lines.append("    ether type arp accept")
            lines.append("    ether type != ip drop")
            if !port.peers.isEmpty {
                lines.append("    ip saddr { \(port.peers.joined(separator: ", ")) } accept")
            }
            for rule in port.rules { lines.append("    " + render(rule)) }
            lines.append("    tcp flags & (syn | ack) != syn accept")
            lines.append("    icmp type { echo-reply, destination-unreachable, time-exceeded } accept")
            // Counted, so that what a group keeps out can be seen (`nft list chain bridge …`).
            lines.append("    counter drop")
            lines.append("  }")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    static func render(_ rule: SecurityGroupRule) -> String {
        let source = "ip saddr \(rule.source)"
        switch rule.proto {
        case .tcp, .udp:
            guard let low = rule.portMin else { return "\(source) ip protocol \(rule.proto.rawValue) accept" }
            let high = rule.portMax ?? low
            let ports = high == low ? "\(low)" : "\(low)-\(high)"
            return "\(source) \(rule.proto.rawValue) dport \(ports) accept"
        case .icmp: return "\(source) ip protocol icmp accept"
        case .any: return "\(source) accept"
        }
    }

    static func chain(_ tap: String) -> String { "port_" + tap }

    static func quote(_ name: String) -> String { "\"" + name + "\"" }
}
