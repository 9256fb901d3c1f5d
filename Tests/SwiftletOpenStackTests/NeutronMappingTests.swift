import Foundation
import SwiftletCore
import Testing

@testable import SwiftletOpenStack

@Suite struct NeutronMappingTests {
    let group = SecurityGroup(
        id: "sg-1", projectId: "prj-1", name: "front", description: "",
        rules: [SecurityGroupRule(id: "rule-1", proto: .tcp, portMin: 80, portMax: 80, source: "0.0.0.0/0")],
        createdAt: Date(timeIntervalSince1970: 0))

    @Test func aSubnetIdNamesItsNetwork() {
        #expect(NeutronRoutes.subnetId("net-1") == "net-1-subnet")
        #expect(NeutronRoutes.networkId(ofSubnet: "net-1-subnet") == "net-1")
        #expect(NeutronRoutes.networkId(ofSubnet: "net-1") == nil)
    }

    @Test func poolsAreTheHostsLessTheGateway() throws {
        let block = try #require(CIDRBlock.parse("10.0.0.0/24"))
        #expect(
            NeutronRoutes.pools(block, gateway: block.network + 1)
                == .array([.object(["start": "10.0.0.2", "end": "10.0.0.254"])]))
        #expect(
            NeutronRoutes.pools(block, gateway: block.network + 10)
                == .array([
                    .object(["start": "10.0.0.1", "end": "10.0.0.9"]),
                    .object(["start": "10.0.0.11", "end": "10.0.0.254"]),
                ]))
    }

    @Test func errorTypesAreNeutrons() {
        #expect(OpenStackService.neutronType(404, code: "network.not_found") == "NetworkNotFound")
        #expect(OpenStackService.neutronType(409, code: "network.in_use") == "NetworkInUse")
        #expect(OpenStackService.neutronType(404, code: "security_group_rule.not_found") == "SecurityGroupRuleNotFound")
        #expect(OpenStackService.neutronType(400, code: "network.bad_cidr") == "HTTPBadRequest")
        let body = OpenStackService.network.body(status: 409, message: "busy", code: "security_group.in_use")
        #expect(
            body == .object(["NeutronError": .object(["type": "SecurityGroupInUse", "message": "busy", "detail": ""])]))
    }

    @Test func aGroupShowsItsRulesAndTheTwoFixedOnes() {
        let rules = NeutronSecurityGroupRoutes.rules(group)
        #expect(rules.compactMap { $0["id"]?.string } == ["rule-1", "sg-1-egress", "sg-1-members"])
        #expect(rules[0]["protocol"] == "tcp" && rules[0]["port_range_min"] == .number(80))
        #expect(rules[1]["direction"] == "egress" && rules[2]["remote_group_id"] == "sg-1")
    }

    @Test func ruleCreatesMapOntoSwiftletRules() throws {
        func create(_ fields: [String: JSONValue]) throws(SwiftletError) -> CreateSecurityGroupRuleRequest {
            var body = fields
            body["security_group_id"] = "sg-1"
            return try NeutronSecurityGroupRoutes.createRequest(.object(body), group: group)
        }
        let tcp = try create([
            "direction": "ingress", "ethertype": "IPv4", "protocol": "6", "port_range_min": .number(22),
            "port_range_max": .number(23), "remote_ip_prefix": "10.0.0.0/8",
        ])
        #expect(tcp.proto == .tcp && tcp.portMin == 22 && tcp.portMax == 23 && tcp.source == "10.0.0.0/8")
        #expect(try create(["direction": "ingress"]).proto == .any)
        for refused: [String: JSONValue] in [
            ["direction": "egress"], ["direction": "ingress", "ethertype": "IPv6"],
            ["direction": "ingress", "protocol": "gre"], ["direction": "ingress", "remote_group_id": "sg-2"],
            ["direction": "ingress", "protocol": "icmp", "port_range_min": .number(8)],
            ["direction": "ingress", "unknown": "x"],
        ] {
            #expect(throws: SwiftletError.self) { try create(refused) }
        }
        #expect { try create(["direction": "ingress", "remote_group_id": "sg-1"]) } throws: { error in
            (error as? SwiftletError)?.kind == .conflict
        }
    }

    @Test func imagePatchesSetAndRemoveProperties() throws {
        let patch = try ImagePatch(
            .array([
                .object(["op": "add", "path": "/os_distro", "value": "swiftlet"]),
                .object(["op": "remove", "path": "/old"]),
                .object(["op": "replace", "path": "/protected", "value": false]),
            ]))
        var entry = QueuedImages.Entry(
            id: "img-1", name: "a", projectId: "prj-1", visibility: .private, tags: [], properties: ["old": "1"],
            createdAt: Date())
        try patch.apply(to: &entry)
        #expect(entry.properties == ["os_distro": "swiftlet"])
        #expect(throws: SwiftletError.self) {
            try ImagePatch(.array([.object(["op": "replace", "path": "/size", "value": .number(1)])]))
        }
        #expect(throws: SwiftletError.self) { try ImagePatch(.array([.object(["op": "move", "path": "/a"])])) }
        let rename = try ImagePatch(.array([.object(["op": "replace", "path": "/name", "value": "b"])]))
        try rename.apply(to: &entry)
        #expect(entry.name == "b")
    }
}
