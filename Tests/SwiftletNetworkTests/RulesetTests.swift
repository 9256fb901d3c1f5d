import SwiftletCore
import Testing

@testable import SwiftletNetwork

@Suite struct RulesetTests {
    @Test func emptyRulesetOnlyDeletesTheTables() {
        let text = NFTablesRuleset.render(
            Ruleset(segments: [], filteredPorts: []), table: "swiftlet", segmentPrefix: "swl-")
        #expect(
            text
                == "table inet swiftlet {}\ndelete table inet swiftlet\ntable bridge swiftlet {}\ndelete table bridge swiftlet\n"
        )
    }

    @Test func natIsolatedAndSecurityGroups() {
        let ruleset = Ruleset(
            segments: [
                .init(device: "swl-aaaa0001", cidr: "10.9.0.0/24", mode: .nat),
                .init(device: "swl-aaaa0002", cidr: "10.9.1.0/24", mode: .isolated),
            ],
            filteredPorts: [
                .init(
                    tap: "swltbbbb0001", peers: ["10.9.0.2", "10.9.0.3"],
                    rules: [
                        SecurityGroupRule(id: "r1", proto: .tcp, portMin: 80, portMax: 80, source: "0.0.0.0/0"),
                        SecurityGroupRule(id: "r2", proto: .udp, portMin: 5000, portMax: 5010, source: "10.0.0.0/8"),
                        SecurityGroupRule(id: "r3", proto: .icmp, portMin: nil, portMax: nil, source: "10.9.0.0/24"),
                    ])
            ])
        let text = NFTablesRuleset.render(ruleset, table: "swiftlet_t1", segmentPrefix: "swl-")
        #expect(text.contains("ip saddr 10.9.0.0/24 oifname != \"swl-aaaa0001\" masquerade"))
        #expect(!text.contains("ip saddr 10.9.1.0/24 oifname != \"swl-aaaa0002\" masquerade"))
        #expect(text.contains("iifname \"swl-aaaa0002\" drop"))
        #expect(text.contains("iifname \"swl-aaaa0002\" oifname \"swl-aaaa0002\" accept"))
        #expect(text.contains("iifname \"swl-aaaa0001\" oifname \"swl-*\" drop"))
        #expect(text.contains("oifname \"swltbbbb0001\" jump port_swltbbbb0001"))
        #expect(text.contains("ip saddr { 10.9.0.2, 10.9.0.3 } accept"))
        #expect(text.contains("ip saddr 0.0.0.0/0 tcp dport 80 accept"))
        #expect(text.contains("ip saddr 10.0.0.0/8 udp dport 5000-5010 accept"))
        #expect(text.contains("ip saddr 10.9.0.0/24 ip protocol icmp accept"))
        #expect(text.hasSuffix("    counter drop\n  }\n}\n"))
    }

    @Test func aSegmentThatSpansHostsKeepsItsGatewayOnEachHost() {
        let ruleset = Ruleset(
            segments: [
                .init(
                    device: "swl-aaaa0001", cidr: "10.9.0.0/24", mode: .isolated, tunnel: "swlxaaaa0001",
                    gatewayMac: "02:11:22:33:44:55"),
                .init(device: "swl-aaaa0002", cidr: "10.9.1.0/24", mode: .isolated),
            ],
            filteredPorts: [])
        let text = NFTablesRuleset.render(ruleset, table: "swiftlet", segmentPrefix: "swl-")
        #expect(text.contains("type filter hook output priority 0; policy accept;"))
        #expect(text.contains("oifname \"swlxaaaa0001\" ether saddr 02:11:22:33:44:55 drop"))
        // A network on one host only has no tunnel and no such rule.
        #expect(
            !NFTablesRuleset.render(
                Ruleset(segments: [ruleset.segments[1]], filteredPorts: []), table: "swiftlet", segmentPrefix: "swl-"
            ).contains("hook output"))
    }

    @Test func cidrArithmetic() {
        #expect(CIDRBlock.parse("10.1.2.0/24")?.broadcast == IPv4.parse("10.1.2.255"))
        #expect(CIDRBlock.parse("10.1.2.1/24") == nil)
        #expect(CIDRBlock.parse("10.1.2.0/33") == nil)
        #expect(IPv4.parse("256.1.1.1") == nil)
        let a = CIDRBlock.parse("10.1.0.0/16")!
        #expect(a.overlaps(CIDRBlock.parse("10.1.200.0/24")!))
        #expect(!a.overlaps(CIDRBlock.parse("10.2.0.0/24")!))
        #expect(!a.isHost(a.network) && !a.isHost(a.broadcast) && a.isHost(a.network + 1))
    }
}
