import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Placement claims and server groups, checked by every engine in the transaction that writes,
/// also when several stores (controllers) race.
@Suite struct PlacementConformanceTests {
    @Test(arguments: StoreEngine.allCases)
    func aPlacementClaimIsCheckedWithTheInsertAndFollowsMoves(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let room = PlacementClaim(capacity: ["h1": HostCapacity(memoryMib: 32, vcpus: 8)])
            var placed = (0..<3).map { Fixtures.instance("p\($0)", image: image.id, host: "h1") }
            try await store.createInstances(Array(placed[0..<2]), claim: room)
            // A third 16 MiB instance does not fit in 32 MiB.
            #expect(
                await storeError { try await store.createInstances([placed[2]], claim: room) }?.code
                    == PlacementClaim.lostCode)
            #expect(try await store.instance(idOrName: placed[2].id, projectId: nil) == nil)
            #expect(try await store.hostUsage() == ["h1": HostUsage(memoryMib: 32, vcpus: 2, instances: 2)])
            // A move (evacuation) and a stop free the host's room; the claim then holds.
            try await store.updateInstance(id: placed[0].id) { $0.hostId = "h2" }
            try await store.updateInstance(id: placed[1].id) { $0.state = .stopped }
            #expect(try await store.hostUsage() == ["h2": HostUsage(memoryMib: 16, vcpus: 1, instances: 1)])
            placed[2].id = ResourceID.make("i")
            try await store.createInstances([placed[2]], claim: room)
            #expect(try await store.hostUsage()["h1"]?.memoryMib == 16)
            // A move claims its new host like an insert; a lost claim changes nothing.
            let full = PlacementClaim(capacity: ["h1": HostCapacity(memoryMib: 16, vcpus: 8)])
            let moved = await storeError {
                try await store.updateInstance(id: placed[0].id, events: [("moved", "h1")], handle: nil, claim: full) {
                    $0.hostId = "h1"
                }
            }
            #expect(moved?.code == PlacementClaim.lostCode)
            #expect(try await store.instance(idOrName: placed[0].id, projectId: nil)?.hostId == "h2")
            #expect(try await !store.events(instanceId: placed[0].id).map(\.type).contains("moved"))
        }
    }

    /// A project's quota holds under concurrent creates through several writers, and for images
    /// and networks; the quota and the usage read back as written.
    @Test(arguments: StoreEngine.allCases)
    func concurrentCreatesNeverTakeAProjectPastItsQuota(engine: StoreEngine) async throws {
        try await engine.withStores(count: 3) { stores in
            let project = Project.adminProjectId
            let quota = ProjectQuota(vcpus: 6, imageBytes: 15, networks: 0)
            try await stores[0].setProjectQuota(projectId: project, quota)
            #expect(try await stores[1].project(id: project)?.quota == quota)
            #expect(
                await storeError { try await stores[0].setProjectQuota(projectId: "prj-none", quota) }?.code
                    == "project.not_found")
            let image = Fixtures.image("img")
            try await stores[0].createImage(image, quota: quota)
            let claim = PlacementClaim(
                capacity: ["h1": HostCapacity(memoryMib: 4096, vcpus: 64)],
                quota: QuotaClaim(projectId: project, quota: quota))
            let outcomes = await withTaskGroup(of: String.self) { group in
                for index in 0..<10 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        let instance = Fixtures.instance("vm\(index)", image: image.id, host: "h1", vcpus: 2)
                        return await storeError { try await store.createInstances([instance], claim: claim) }?.code
                            ?? "ok"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["ok": 3, ProjectQuota.exceededCode: 7])
            #expect(
                try await stores[2].projectUsage(projectId: project)
                    == ProjectUsage(instances: 3, vcpus: 6, memoryMib: 48, imageBytes: 10, networks: 0))
            let second = await storeError { try await stores[1].createImage(Fixtures.image("more"), quota: quota) }
            #expect(second?.code == ProjectQuota.exceededCode && second?.kind == .forbidden)
            #expect(second?.message.contains("5 over its quota of 15") == true, "\(second?.message ?? "")")
            let network = await storeError {
                try await stores[2].createNetwork(
                    Fixtures.network("n", "10.77.0.0/24", gateway: "10.77.0.1"), quota: quota)
            }
            #expect(network?.code == ProjectQuota.exceededCode)
            #expect(try await stores[0].images(projectId: nil).count == 1)
            #expect(try await stores[0].networks(projectId: nil).isEmpty)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func concurrentCreatesAdmitExactlyTheCapacity(engine: StoreEngine) async throws {
        try await engine.withStores(count: 3) { stores in
            let image = Fixtures.image("img")
            try await stores[0].createImage(image)
            let claim = PlacementClaim(capacity: ["h1": HostCapacity(memoryMib: 64, vcpus: 8)])
            let outcomes = await withTaskGroup(of: String.self) { group in
                for index in 0..<12 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        let instance = Fixtures.instance("vm\(index)", image: image.id, host: "h1", memoryMib: 16)
                        return await storeError { try await store.createInstances([instance], claim: claim) }?.code
                            ?? "ok"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["ok": 4, PlacementClaim.lostCode: 8])
            #expect(try await stores[1].hostUsage()["h1"] == HostUsage(memoryMib: 64, vcpus: 4, instances: 4))
            #expect(try await stores[2].instances(projectId: nil, state: nil, name: nil, imageId: nil).count == 4)

            // A move onto a full host is refused the same way, and rolled back.
            let elsewhere = Fixtures.instance("mover", image: image.id, host: "h2", memoryMib: 16)
            try await stores[0].createInstances([elsewhere])
            let moved = await storeError {
                try await stores[1].updateInstance(id: elsewhere.id, events: [], handle: nil, claim: claim) {
                    $0.hostId = "h1"
                }
            }
            #expect(moved?.code == PlacementClaim.lostCode)
            #expect(try await stores[2].instance(idOrName: elsewhere.id, projectId: nil)?.hostId == "h2")
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func concurrentAntiAffinityClaimsKeepMembersApart(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            let image = Fixtures.image("img")
            try await stores[0].createImage(image)
            let group = ServerGroup(
                id: "sgrp-a", projectId: Project.adminProjectId, name: "apart", policy: .antiAffinity, members: [],
                createdAt: Fixtures.wholeSeconds())
            try await stores[0].createServerGroup(group)
            let claim = PlacementClaim(capacity: [:], group: group)
            let outcomes = await withTaskGroup(of: String.self) { tasks in
                for index in 0..<6 {
                    let store = stores[index % stores.count]
                    tasks.addTask {
                        var instance = Fixtures.instance("m\(index)", image: image.id, host: "h1")
                        instance.serverGroupId = group.id
                        return await storeError { try await store.createInstances([instance], claim: claim) }?.code
                            ?? "ok"
                    }
                }
                return await tasks.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["ok": 1, PlacementClaim.lostCode: 5])
            #expect(try await stores[1].serverGroup(idOrName: group.id, projectId: nil)?.members.count == 1)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func serverGroupsKeepTheirPolicyAndMembers(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let group = ServerGroup(
                id: "sgrp-1", projectId: Project.adminProjectId, name: "web", policy: .antiAffinity, members: [],
                createdAt: Fixtures.wholeSeconds())
            try await store.createServerGroup(group)
            #expect(
                await storeError { try await store.createServerGroup(group) }?.code == "server_group.duplicate_name")
            let members = (0..<2).map { index in
                var one = Fixtures.instance("m\(index)", image: image.id, host: "h1")
                one.serverGroupId = group.id
                return one
            }
            let claim = PlacementClaim(capacity: [:], group: group)
            // Two members on one host in one batch: the claim refuses the batch.
            #expect(
                await storeError { try await store.createInstances(members, claim: claim) }?.code
                    == PlacementClaim.lostCode)
            #expect(try await store.serverGroup(idOrName: "web", projectId: nil)?.members == [])
            try await store.createInstances([members[0]], claim: claim)
            let stored = try #require(try await store.serverGroup(idOrName: "web", projectId: nil))
            #expect(stored.members == [members[0].id] && stored.policy == .antiAffinity && stored.id == group.id)
            #expect(try await store.serverGroup(idOrName: "web", projectId: "prj-other") == nil)
            #expect(try await store.serverGroups(projectId: Project.adminProjectId).map(\.id) == [group.id])
            #expect(try await store.serverGroupHosts(id: group.id) == [members[0].id: "h1"])
            #expect(await storeError { try await store.deleteServerGroup(id: group.id) }?.code == "server_group.in_use")
            try await store.deleteInstance(id: members[0].id)
            try await store.deleteServerGroup(id: group.id)
            #expect(try await store.serverGroups(projectId: nil).isEmpty)
        }
    }
}
