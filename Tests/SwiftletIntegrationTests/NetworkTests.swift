import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// Networks end to end, as root: real bridges, TAPs, nftables, QEMU and kit unikernels.
@Suite(.serialized) struct NetworkTests {
    @Test func hostReachesAnHTTPInstanceAndEverythingGoesWithIt() async throws {
        let kernel = try await Kernels.path("http")
        try await withNetworkServer { _, client, prefix in
            _ = try await client.uploadImage(path: kernel, name: "http")
            let cidr = randomCIDRs(1)[0]
            let network = try await client.createNetwork(CreateNetworkRequest(name: "web", cidr: cidr))
            #expect(network.gateway == cidr.replacingOccurrences(of: ".0/24", with: ".1"))
            #expect(network.bridge.hasPrefix(prefix + "-") && network.bridge.count <= 15)
            #expect(HostNet.ip(["-o", "addr", "show", "dev", network.bridge]).output.contains("\(network.gateway)/24"))
            // The bridge brings only its connected route: the host's default route is untouched.
            #expect(!HostNet.ip(["route", "show", "default"]).output.contains(network.bridge))

            var request = CreateInstanceRequest(name: "w1", image: "http", wait: true)
            request.networks = [NetworkAttachment(network: "web")]
            let instance = try #require(try await client.createInstances(request).first)
            #expect(instance.state == .running, "\(instance.reason ?? "")")
            let port = try #require(instance.ports?.first)
            #expect(port.address == cidr.replacingOccurrences(of: ".0/24", with: ".2"))
            #expect(HostNet.ip(["-o", "link", "show", "dev", port.tap]).output.contains("master \(network.bridge)"))
            let page = HostNet.curl("http://\(port.address)/")
            #expect(page.status == 0 && page.output.contains("<h1>w1</h1>"), "curl: \(page)")

            // A fixed address, and the same one again: 409, and no instance left from the refusal.
            let fixed = cidr.replacingOccurrences(of: ".0/24", with: ".77")
            request.name = "w2"
            request.networks = [NetworkAttachment(network: "web", ip: fixed)]
            let second = try #require(try await client.createInstances(request).first)
            #expect(second.ports?.first?.address == fixed)
            #expect(HostNet.curl("http://\(fixed)/").output.contains("<h1>w2</h1>"))
            request.name = "w3"
            await expectAPIError(409, "port.address_in_use") { _ = try await client.createInstances(request) }
            await expectAPIError(404, "instance.not_found") { _ = try await client.instance("w3") }
            await expectAPIError(409, "network.in_use") { try await client.deleteNetwork("web") }

            // The TAP lives with the VM: gone on stop, back on start.
            _ = try await client.stop("w2", timeout: 1)
            #expect(HostNet.links(prefix: prefix + "t").count == 1)
            _ = try await client.start("w2")
            try await eventually("w2 serving again") {
                HostNet.curl("http://\(fixed)/", seconds: 1).output.contains("<h1>w2</h1>")
            }
            #expect(HostNet.links(prefix: prefix + "t").count == 2)

            try await client.deleteInstance("w1")
            try await client.deleteInstance("w2")
            #expect(HostNet.links(prefix: prefix + "t").isEmpty, "TAPs left: \(HostNet.links(prefix: prefix + "t"))")
            #expect(!(HostNet.table("bridge", prefix: prefix) ?? "").contains("port_"))
            #expect(try await client.networkPorts("web").isEmpty)
            try await client.deleteNetwork("web")
            #expect(HostNet.links(prefix: prefix).isEmpty)
            #expect(HostNet.table("inet", prefix: prefix) == nil && HostNet.table("bridge", prefix: prefix) == nil)
        }
    }

    /// The kit's apps only answer, so instance A is made to receive traffic from instance B:
    /// a namespace on the bridge sends B (UDP echo) a datagram whose source is A's address. B
    /// resolves A by ARP and sends the echo to A's MAC, bridge port to bridge port; A has no UDP
    /// listener, so its `udp_no_listener` counter (read over HTTP) goes up by one.
    @Test func twoInstancesOnOneNetworkReachEachOther() async throws {
        let http = try await Kernels.path("http")
        let echo = try await Kernels.path("echo")
        try await withNetworkServer { _, client, prefix in
            _ = try await client.uploadImage(path: http, name: "http")
            _ = try await client.uploadImage(path: echo, name: "echo")
            let cidr = randomCIDRs(1)[0]
            let network = try await client.createNetwork(CreateNetworkRequest(name: "lan", cidr: cidr, mode: .isolated))
            var request = CreateInstanceRequest(name: "a", image: "http", wait: true)
            request.networks = [NetworkAttachment(network: "lan")]
            let a = try #require(try await client.createInstances(request).first?.ports?.first?.address)
            request = CreateInstanceRequest(name: "b", image: "echo", wait: true)
            request.networks = [NetworkAttachment(network: "lan")]
            let b = try #require(try await client.createInstances(request).first?.ports?.first?.address)
            let base = cidr.replacingOccurrences(of: ".0/24", with: "")
            let probe = try Namespace(
                prefix: prefix, index: 1, bridge: network.bridge, address: base + ".250", prefixLength: 24,
                gateway: network.gateway)

            let before = try #require(HostNet.counter("udp_no_listener", at: a))
            let sent = probe.sendUDP(from: a, sourcePort: 40000, to: b, port: 7)
            #expect(sent.status == 0, "\(sent.output)")
            try await eventually("A counts B's echo", timeout: .seconds(10)) {
                (HostNet.counter("udp_no_listener", at: a) ?? before) > before
            }
            // And the namespace itself reaches A over the same bridge.
            #expect(probe.curl("http://\(a)/").output.contains("<h1>a</h1>"))
        }
    }

    /// Same forged-echo probe with groups: A (http) and E (echo) are in group "g", F (echo) is in
    /// none. E's echo reaches A (a member), F's does not (A's group has no rule for it).
    @Test func onlyMembersOfTheGroupGetIn() async throws {
        let http = try await Kernels.path("http")
        let echo = try await Kernels.path("echo")
        try await withNetworkServer { _, client, prefix in
            _ = try await client.uploadImage(path: http, name: "http")
            _ = try await client.uploadImage(path: echo, name: "echo")
            let cidr = randomCIDRs(1)[0]
            let network = try await client.createNetwork(CreateNetworkRequest(name: "lan", cidr: cidr))
            _ = try await client.createSecurityGroup(CreateSecurityGroupRequest(name: "g"))
            // The host reads A's counters over HTTP.
            _ = try await client.addRule(
                CreateSecurityGroupRuleRequest(proto: .tcp, portMin: 80, source: network.gateway + "/32"), to: "g")
            func make(_ name: String, _ image: String, groups: [String]?) async throws -> NetworkPort {
                var request = CreateInstanceRequest(name: name, image: image, wait: true)
                request.networks = [NetworkAttachment(network: "lan")]
                request.securityGroups = groups
                return try #require(try await client.createInstances(request).first?.ports?.first)
            }
            let aPort = try await make("a", "http", groups: ["g"])
            let a = aPort.address
            let e = try await make("e", "echo", groups: ["g"]).address
            let f = try await make("f", "echo", groups: nil).address
            let probe = try Namespace(
                prefix: prefix, index: 1, bridge: network.bridge,
                address: cidr.replacingOccurrences(of: ".0/24", with: ".250"), prefixLength: 24,
                gateway: network.gateway)
            // The namespace itself is no member: A is closed to it.
            #expect(probe.curl("http://\(a)/", seconds: 2).status != 0)

            let start = try #require(HostNet.counter("udp_no_listener", at: a))
            #expect(probe.sendUDP(from: a, sourcePort: 40001, to: e, port: 7).status == 0)
            try await eventually("A counts E's echo", timeout: .seconds(10)) {
                (HostNet.counter("udp_no_listener", at: a) ?? start) > start
            }
            let afterMember = try #require(HostNet.counter("udp_no_listener", at: a))
            let droppedBefore = try #require(HostNet.dropped(prefix: prefix, tap: aPort.tap))
            for port in 40002...40004 {
                #expect(probe.sendUDP(from: a, sourcePort: port, to: f, port: 7).status == 0)
            }
            try await Task.sleep(for: .seconds(2))
            #expect(HostNet.counter("udp_no_listener", at: a) == afterMember, "a non-member's echo got in")
            // F did answer: A's group dropped the three echoes on A's port.
            #expect((HostNet.dropped(prefix: prefix, tap: aPort.tap) ?? 0) >= droppedBefore + 3)
        }
    }

    @Test func isolatedNetworksDoNotReachEachOther() async throws {
        let kernel = try await Kernels.path("http")
        try await withNetworkServer { _, client, prefix in
            _ = try await client.uploadImage(path: kernel, name: "http")
            let cidrs = randomCIDRs(3)
            // A NAT network turns routing on: the isolation below is the rules' doing.
            _ = try await client.createNetwork(CreateNetworkRequest(name: "uplinked", cidr: cidrs[2], mode: .nat))
            #expect(HostNet.ip(["netns", "list"]).status == 0)
            let forwarding = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_forward", encoding: .utf8)
            #expect(forwarding.hasPrefix("1"))
            var addresses: [String] = []
            var namespaces: [Namespace] = []
            for (index, cidr) in cidrs.prefix(2).enumerated() {
                let network = try await client.createNetwork(
                    CreateNetworkRequest(name: "iso\(index)", cidr: cidr, mode: .isolated))
                var request = CreateInstanceRequest(name: "s\(index)", image: "http", wait: true)
                request.networks = [NetworkAttachment(network: network.name)]
                addresses.append(try #require(try await client.createInstances(request).first?.ports?.first?.address))
                namespaces.append(
                    try Namespace(
                        prefix: prefix, index: index, bridge: network.bridge,
                        address: cidr.replacingOccurrences(of: ".0/24", with: ".250"), prefixLength: 24,
                        gateway: network.gateway))
            }
            for index in 0..<2 {
                // The host reaches both; each namespace reaches its own network's instance only.
                #expect(HostNet.curl("http://\(addresses[index])/").output.contains("<h1>s\(index)</h1>"))
                #expect(namespaces[index].curl("http://\(addresses[index])/").output.contains("<h1>s\(index)</h1>"))
                let other = namespaces[index].curl("http://\(addresses[1 - index])/", seconds: 2)
                #expect(other.status != 0, "crossed from network \(index): \(other)")
            }
        }
    }

    /// A namespace plugged into each network stands in for an instance (same bridge, same
    /// forward and postrouting hooks). The "uplink" is another namespace behind a veth with no
    /// route back to the networks: its answers arrive only if the host masqueraded the sender.
    @Test func natNetworkReachesTheUplinkMasqueradedAndIsolatedDoesNot() async throws {
        try await withNetworkServer { _, client, prefix in
            let cidrs = randomCIDRs(3)
            let nat = try await client.createNetwork(CreateNetworkRequest(name: "out", cidr: cidrs[0], mode: .nat))
            let isolated = try await client.createNetwork(
                CreateNetworkRequest(name: "in", cidr: cidrs[1], mode: .isolated))
            let uplink = cidrs[2].replacingOccurrences(of: ".0/24", with: "")
            let uplinkNamespace = "\(prefix)up"
            for step in [
                ["netns", "add", uplinkNamespace],
                ["link", "add", "\(prefix)u0", "type", "veth", "peer", "name", "\(prefix)u1"],
                ["link", "set", "\(prefix)u1", "netns", uplinkNamespace],
                ["addr", "add", uplink + ".1/24", "dev", "\(prefix)u0"],
                ["link", "set", "\(prefix)u0", "up"],
                ["-n", uplinkNamespace, "addr", "add", uplink + ".2/24", "dev", "\(prefix)u1"],
                ["-n", uplinkNamespace, "link", "set", "\(prefix)u1", "up"],
            ] {
                let result = HostNet.ip(step)
                #expect(result.status == 0, "ip \(step): \(result.output)")
            }
            let behindNAT = try Namespace(
                prefix: prefix, index: 1, bridge: nat.bridge,
                address: cidrs[0].replacingOccurrences(of: ".0/24", with: ".250"), prefixLength: 24,
                gateway: nat.gateway)
            let behindIsolation = try Namespace(
                prefix: prefix, index: 2, bridge: isolated.bridge,
                address: cidrs[1].replacingOccurrences(of: ".0/24", with: ".250"), prefixLength: 24,
                gateway: isolated.gateway)
            let out = behindNAT.run("/usr/bin/ping", ["-c", "1", "-W", "2", uplink + ".2"])
            #expect(out.status == 0, "nat network did not reach the uplink: \(out.output)")
            let blocked = behindIsolation.run("/usr/bin/ping", ["-c", "1", "-W", "2", uplink + ".2"])
            #expect(blocked.status != 0, "isolated network reached the uplink: \(blocked.output)")
        }
    }

    @Test func securityGroupRuleOpensAndClosesAPortWhileRunning() async throws {
        let kernel = try await Kernels.path("http")
        try await withNetworkServer { _, client, prefix in
            _ = try await client.uploadImage(path: kernel, name: "http")
            _ = try await client.createNetwork(CreateNetworkRequest(name: "web", cidr: randomCIDRs(1)[0]))
            _ = try await client.createSecurityGroup(CreateSecurityGroupRequest(name: "front"))
            var request = CreateInstanceRequest(name: "guarded", image: "http", wait: true)
            request.networks = [NetworkAttachment(network: "web")]
            request.securityGroups = ["front"]
            let instance = try #require(try await client.createInstances(request).first)
            #expect(instance.securityGroups == ["front"])
            let address = try #require(instance.ports?.first?.address)
            let url = "http://\(address)/"

            #expect(HostNet.curl(url, seconds: 2).status != 0, "open before any rule")
            let opened = try await client.addRule(CreateSecurityGroupRuleRequest(proto: .tcp, portMin: 80), to: "front")
            let rule = try #require(opened.rules.last)
            #expect(HostNet.curl(url).output.contains("<h1>guarded</h1>"))
            try await client.deleteRule(rule.id, from: "front")
            #expect(HostNet.curl(url, seconds: 2).status != 0, "still open after the rule went")
            #expect(try await client.instance("guarded").state == .running)
            await expectAPIError(409, "security_group.in_use") { try await client.deleteSecurityGroup("front") }

            try await client.deleteInstance("guarded")
            #expect(!(HostNet.table("bridge", prefix: prefix) ?? "").contains("port_"))
            try await client.deleteSecurityGroup("front")
        }
    }

    /// 100 creates in parallel (one request each, so IPAM really races), then 100 deletes.
    @Test func hundredConcurrentInstancesLeaveNoDuplicateAndNoLeak() async throws {
        let kernel = try await Kernels.path("hello")
        try await withNetworkServer { _, client, prefix in
            // hello accepts only `name=`: the image's command-line template drops the address.
            _ = try await client.uploadImage(
                path: kernel, name: "hello", properties: ["cmdline_template": "name={name}"])
            _ = try await client.createNetwork(CreateNetworkRequest(name: "many", cidr: randomCIDRs(1)[0]))
            let started = ContinuousClock.now
            let instances = try await withThrowingTaskGroup(of: Instance.self) { group in
                for index in 1...100 {
                    group.addTask {
                        var request = CreateInstanceRequest(name: "h\(index)", image: "hello", flavor: "tiny")
                        request.networks = [NetworkAttachment(network: "many")]
                        return try #require(try await client.createInstances(request).first)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let addresses = instances.compactMap { $0.ports?.first?.address }
            #expect(addresses.count == 100)
            #expect(Set(addresses).count == 100, "duplicate addresses")
            try await eventually("100 running", timeout: .seconds(240)) {
                try await client.instances().filter { $0.state == .running }.count == 100
            }
            print("network: 100 instances created and running in \(ContinuousClock.now - started)")
            #expect(HostNet.links(prefix: prefix + "t").count == 100)
            let ports = try await client.networkPorts("many")
            #expect(Set(ports.map(\.address)).count == 100 && Set(ports.map(\.mac)).count == 100)

            let deleting = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for instance in instances { group.addTask { try await client.deleteInstance(instance.id) } }
                try await group.waitForAll()
            }
            print("network: 100 instances deleted in \(ContinuousClock.now - deleting)")
            #expect(HostNet.links(prefix: prefix + "t").isEmpty, "leaked TAPs")
            #expect(try await client.networkPorts("many").isEmpty)
            #expect(!(HostNet.table("bridge", prefix: prefix) ?? "").contains("port_"))
            try await client.deleteNetwork("many")
            #expect(HostNet.links(prefix: prefix).isEmpty, "leaked devices: \(HostNet.links(prefix: prefix))")
            #expect(HostNet.table("inet", prefix: prefix) == nil)
        }
    }

    @Test func badInputIsRefusedAndLeavesNothingOnTheHost() async throws {
        let kernel = try await Kernels.path("http")
        try await withNetworkServer { _, client, prefix in
            _ = try await client.uploadImage(path: kernel, name: "http")
            let cidr = randomCIDRs(1)[0]
            let base = cidr.replacingOccurrences(of: ".0/24", with: "")
            _ = try await client.createNetwork(CreateNetworkRequest(name: "n1", cidr: cidr))
            let devices = HostNet.links(prefix: prefix)
            await expectAPIError(409, "network.overlap") {
                _ = try await client.createNetwork(CreateNetworkRequest(name: "n2", cidr: base + ".128/25"))
            }
            await expectAPIError(400, "network.gateway_outside") {
                _ = try await client.createNetwork(
                    CreateNetworkRequest(name: "n3", cidr: "10.1.2.0/24", gateway: "10.1.3.1"))
            }
            await expectAPIError(400, "network.prefix_too_long") {
                _ = try await client.createNetwork(CreateNetworkRequest(name: "n4", cidr: "10.1.2.0/31"))
            }
            await expectAPIError(400, "network.bad_cidr") {
                _ = try await client.createNetwork(CreateNetworkRequest(name: "n5", cidr: "10.1.2.7/24"))
            }
            await expectAPIError(409, "network.duplicate_name") {
                _ = try await client.createNetwork(CreateNetworkRequest(name: "n1", cidr: "10.1.9.0/24"))
            }
            #expect(HostNet.links(prefix: prefix) == devices, "a refused network left a device")
            #expect(try await client.networks().map(\.name) == ["n1"])

            var request = CreateInstanceRequest(name: "x", image: "http")
            request.networks = [NetworkAttachment(network: "n1", ip: "10.1.2.3")]
            await expectAPIError(400, "port.address_outside") { _ = try await client.createInstances(request) }
            request.networks = [NetworkAttachment(network: "nope")]
            await expectAPIError(404, "network.not_found") { _ = try await client.createInstances(request) }
            request.networks = [NetworkAttachment(network: "n1")]
            request.securityGroups = ["nope"]
            await expectAPIError(404, "security_group.not_found") { _ = try await client.createInstances(request) }
            #expect(try await client.instances().isEmpty)
            #expect(HostNet.links(prefix: prefix + "t").isEmpty)

            _ = try await client.createSecurityGroup(CreateSecurityGroupRequest(name: "g"))
            await expectAPIError(400, "rule.bad_ports") {
                _ = try await client.addRule(CreateSecurityGroupRuleRequest(proto: .tcp, portMin: 0), to: "g")
            }
            await expectAPIError(400, "rule.ports_need_protocol") {
                _ = try await client.addRule(CreateSecurityGroupRuleRequest(proto: .icmp, portMin: 80), to: "g")
            }
            await expectAPIError(400, "rule.bad_source") {
                _ = try await client.addRule(CreateSecurityGroupRuleRequest(proto: .tcp, source: "10.0.0.1/8"), to: "g")
            }
            #expect(try await client.securityGroup("g").rules.isEmpty)
        }
    }

    /// The server is killed: its bridge, TAP and rules are found again by name on restart, the
    /// VM keeps serving, and a TAP without an owner is removed.
    @Test func devicesAreFoundAgainAfterACrash() async throws {
        let kernel = try await Kernels.path("http")
        try await withNetworkServer { server, client, prefix in
            _ = try await client.uploadImage(path: kernel, name: "http")
            _ = try await client.createNetwork(CreateNetworkRequest(name: "web", cidr: randomCIDRs(1)[0]))
            var request = CreateInstanceRequest(name: "survivor", image: "http", wait: true)
            request.networks = [NetworkAttachment(network: "web")]
            let instance = try #require(try await client.createInstances(request).first)
            let port = try #require(instance.ports?.first)
            let stray = prefix + "tdeadbeef"
            #expect(HostNet.ip(["tuntap", "add", "dev", stray, "mode", "tap"]).status == 0)

            server.crash()
            try await server.start()
            #expect(HostNet.links(prefix: prefix + "t") == [port.tap])
            #expect(HostNet.curl("http://\(port.address)/").output.contains("<h1>survivor</h1>"))
            try await client.deleteInstance("survivor")
            try await client.deleteNetwork("web")
            #expect(HostNet.links(prefix: prefix).isEmpty)
        }
    }
}
