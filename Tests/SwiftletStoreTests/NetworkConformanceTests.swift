import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Networks, addresses, security groups and host joins, alike on every engine.
@Suite struct NetworkConformanceTests {
    @Test(arguments: StoreEngine.allCases)
    func concurrentAllocationsFromTwoStoresNeverShareAnAddress(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            let image = Fixtures.image("img")
            try await stores[0].createImage(image)
            // A /27: 30 host addresses, one of them the gateway.
            let net = Fixtures.network("n", "10.9.0.0/27", gateway: "10.9.0.1")
            try await stores[0].createNetwork(net)
            let instances = (0..<36).map { Fixtures.instance("vm\($0)", image: image.id) }
            try await stores[0].createInstances(instances)
            let outcomes = await withTaskGroup(of: String.self) { group in
                for (index, instance) in instances.enumerated() {
                    let store = stores[index % stores.count]
                    group.addTask {
                        let request = PortRequest(instanceId: instance.id, network: net, address: nil, tapPrefix: "t")
                        return await storeError {
                            _ = try await store.attach(ports: [request], groupIds: [], toInstances: [instance.id])
                        }?.code ?? "ok"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["ok": 29, "network.full": 7])
            let ports = try await stores[1].ports(networkId: net.id, instanceId: nil)
            #expect(ports.count == 29)
            #expect(Set(ports.map(\.address)).count == 29)
            #expect(!ports.contains { $0.address == "10.9.0.1" })

            let port = try #require(ports.first)
            let owner = try #require(try await stores[0].instance(idOrName: port.instanceId, projectId: nil))
            #expect(owner.ports == [port])
            #expect(try await stores[0].ports(networkId: nil, instanceId: port.instanceId) == [port])

            // A taken address is 409 and leaves nothing; deleting the instance frees its address.
            let extra = Fixtures.instance("x", image: image.id)
            try await stores[0].createInstances([extra])
            let request = PortRequest(
                instanceId: extra.id, network: net, address: IPv4.parse(port.address), tapPrefix: "t")
            let taken = await storeError {
                _ = try await stores[1].attach(ports: [request], groupIds: [], toInstances: [extra.id])
            }
            #expect(taken?.code == "port.address_in_use" && taken?.kind == .conflict)
            #expect(try await stores[0].ports(networkId: nil, instanceId: extra.id).isEmpty)
            try await stores[0].deleteInstance(id: port.instanceId)
            let reused = try await stores[1].attach(ports: [request], groupIds: [], toInstances: [extra.id])
            #expect(reused.first?.address == port.address)

            // A network with ports cannot go.
            #expect(await storeError { try await stores[0].deleteNetwork(id: net.id) }?.code == "network.in_use")
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func overlappingNetworksAreRefusedEvenConcurrently(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            let outcomes = await withTaskGroup(of: String.self) { group in
                for index in 0..<6 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        // Nested blocks around 10.0.0.0: every pair overlaps.
                        let network = Fixtures.network("n\(index)", "10.0.0.0/\(16 + index)", gateway: "10.0.0.1")
                        return await storeError { try await store.createNetwork(network) }?.code ?? "ok"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["ok": 1, "network.overlap": 5])
            let networks = try await stores[0].networks(projectId: nil)
            #expect(networks.count == 1 && networks.first?.vni == 1)
            let first = try #require(networks.first)
            let duplicate = await storeError {
                try await stores[1].createNetwork(
                    Fixtures.network(first.name, "192.168.0.0/24", gateway: "192.168.0.1"))
            }
            #expect(duplicate?.code == "network.duplicate_name")
            #expect(try await stores[1].network(idOrName: first.name, projectId: nil) == first)
            // A disjoint block is fine, and gets the next segment id; an empty network can go.
            let other = Fixtures.network("other", "192.168.0.0/24", gateway: "192.168.0.1")
            try await stores[1].createNetwork(other)
            #expect(try await stores[0].network(idOrName: other.id, projectId: nil)?.vni == 2)
            try await stores[0].deleteNetwork(id: other.id)
            #expect(try await stores[1].networks(projectId: nil) == [first])
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func securityGroupsAndRules(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let group = SecurityGroup(
                id: "secg-1", projectId: Project.adminProjectId, name: "web", description: "d", rules: [],
                createdAt: Fixtures.wholeSeconds())
            try await store.createSecurityGroup(group)
            #expect(
                await storeError { try await store.createSecurityGroup(group) }?.code
                    == "security_group.duplicate_name")
            try await store.addRule(
                SecurityGroupRule(id: "r1", proto: .tcp, portMin: 80, portMax: 80, source: "0.0.0.0/0"),
                groupId: group.id)
            try await store.addRule(
                SecurityGroupRule(id: "r2", proto: .icmp, portMin: nil, portMax: nil, source: "10.0.0.0/8"),
                groupId: group.id)
            #expect(try await store.securityGroup(idOrName: "web", projectId: nil)?.rules.map(\.id) == ["r1", "r2"])
            #expect(await storeError { try await store.deleteRule(id: "r9", groupId: group.id) }?.kind == .notFound)
            try await store.deleteRule(id: "r2", groupId: group.id)
            #expect(try await store.securityGroups(projectId: nil).map { $0.rules.map(\.id) } == [["r1"]])

            let instance = Fixtures.instance("vm", image: image.id)
            try await store.createInstances([instance])
            _ = try await store.attach(ports: [], groupIds: [group.id], toInstances: [instance.id])
            #expect(try await store.securityGroupMembership() == [instance.id: [group.id]])
            #expect(try await store.instance(idOrName: "vm", projectId: nil)?.securityGroups == ["web"])
            #expect(
                await storeError { try await store.deleteSecurityGroup(id: group.id) }?.code == "security_group.in_use")
            try await store.deleteInstance(id: instance.id)
            try await store.deleteSecurityGroup(id: group.id)
            #expect(try await store.securityGroups(projectId: nil).isEmpty)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func joinTokensAreSpentOnceAndNamesHeldOnce(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let hash = String(repeating: "a", count: 64)
            let now = Fixtures.wholeSeconds()
            try await store.createJoinToken(id: "jt-1", secretHash: hash, expiresAt: now + 600)
            try await store.createJoinToken(id: "jt-2", secretHash: hash, expiresAt: now + 600)
            try await store.createJoinToken(id: "jt-old", secretHash: hash, expiresAt: now - 1)
            let credential = HostCredential(hostId: "h1", name: "node1", certificateSerial: "01", joinedAt: now)

            let wrong = await storeError {
                try await store.joinHost(
                    tokenId: "jt-1", secretHash: String(repeating: "b", count: 64), now: now, credential: credential)
            }
            #expect(wrong?.code == "join.invalid_token" && wrong?.kind == .unauthorized)
            let unknown = await storeError {
                try await store.joinHost(tokenId: "jt-none", secretHash: hash, now: now, credential: credential)
            }
            #expect(unknown?.code == "join.invalid_token")
            let expired = await storeError {
                try await store.joinHost(tokenId: "jt-old", secretHash: hash, now: now, credential: credential)
            }
            #expect(expired?.code == "join.token_expired" && expired?.kind == .unauthorized)
            #expect(try await store.hostCredential(hostId: "h1") == nil)

            try await store.joinHost(tokenId: "jt-1", secretHash: hash, now: now, credential: credential)
            #expect(try await store.hostCredential(hostId: "h1") == credential)
            let reused = await storeError {
                try await store.joinHost(tokenId: "jt-1", secretHash: hash, now: now, credential: credential)
            }
            #expect(reused?.code == "join.token_used" && reused?.kind == .unauthorized)

            // Another host cannot take a name a live host holds; once that one is revoked, it can.
            let other = HostCredential(hostId: "h2", name: "node1", certificateSerial: "02", joinedAt: now)
            let taken = await storeError {
                try await store.joinHost(tokenId: "jt-2", secretHash: hash, now: now, credential: other)
            }
            #expect(taken?.code == "host.name_taken" && taken?.kind == .conflict)
            try await store.revokeHost(hostId: "h1")
            #expect(try await store.hostCredential(hostId: "h1")?.revoked == true)
            try await store.joinHost(tokenId: "jt-2", secretHash: hash, now: now, credential: other)
            #expect(try await store.hostCredential(hostId: "h2") == other)
            #expect(await storeError { try await store.revokeHost(hostId: "h9") }?.kind == .notFound)
        }
    }
}
