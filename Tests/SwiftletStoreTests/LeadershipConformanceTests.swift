import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Host leases and the leader's lease, by the database's clock, shared by every store (controller)
/// on one database.
@Suite struct LeadershipConformanceTests {
    @Test(arguments: StoreEngine.allCases)
    func hostLeasesAgeByTheDatabasesClockForEveryController(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            #expect(try await stores[0].hostLeaseAges().isEmpty)
            try await stores[0].renewHostLease(hostId: "h1")
            try await stores[1].renewHostLease(hostId: "h2")
            try await Task.sleep(for: .milliseconds(300))
            try await stores[1].renewHostLease(hostId: "h2")
            let ages = try await stores[1].hostLeaseAges()
            #expect(Set(ages.keys) == ["h1", "h2"])
            let (h1, h2) = try (#require(ages["h1"]), #require(ages["h2"]))
            #expect(h1 >= .milliseconds(250) && h1 < .seconds(30), "\(h1)")
            #expect(h2 < h1, "a renewal makes the lease young again: \(h2) against \(h1)")

            try await stores[1].forgetHostLease(hostId: "h1")
            #expect(try await Set(stores[0].hostLeaseAges().keys) == ["h2"])
            try await stores[0].forgetHostLease(hostId: "unknown")
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func racingControllersHoldTheLeaseOneAtATimeAndExpiryHandsItOver(engine: StoreEngine) async throws {
        try await engine.withStores(count: 3) { stores in
            let holders = ["c0", "c1", "c2"]
            /// Every store but `except` tries at once: the holder of each try that won, with its term.
            func race(_ duration: Duration, except: Int? = nil) async throws -> [(holder: Int, term: UInt64)] {
                try await withThrowingTaskGroup(of: (Int, UInt64?).self) { group in
                    for index in stores.indices where index != except {
                        for _ in 0..<4 {
                            group.addTask {
                                let term = try await stores[index].acquireLease(
                                    name: "leader", holder: holders[index], duration: duration)
                                return (index, term)
                            }
                        }
                    }
                    var won: [(holder: Int, term: UInt64)] = []
                    for try await (index, term) in group { if let term { won.append((index, term)) } }
                    return won
                }
            }
            let first = try await race(.seconds(60))
            let leader = try #require(first.first?.holder)
            #expect(first.allSatisfy { $0.holder == leader && $0.term == 1 }, "\(first)")
            #expect(first.count == 4, "the holder's own tries renew")
            // Unexpired, it stands against the others.
            let others = try await race(.seconds(60), except: leader)
            #expect(others.isEmpty, "\(others)")

            // A renewal sets a new end; once it passes, the lease is anyone's.
            #expect(
                try await stores[leader].acquireLease(
                    name: "leader", holder: holders[leader], duration: .milliseconds(300)) == 1)
            try await Task.sleep(for: .milliseconds(600))
            let second = try await race(.seconds(60), except: leader)
            let next = try #require(second.first?.holder)
            #expect(next != leader)
            #expect(second.allSatisfy { $0.holder == next && $0.term == 2 }, "\(second)")
            #expect(
                try await stores[leader].acquireLease(name: "leader", holder: holders[leader], duration: .seconds(1))
                    == nil, "the old leader's lease is over")
            // Another name is another lease.
            #expect(
                try await stores[leader].acquireLease(name: "other", holder: holders[leader], duration: .seconds(1))
                    == 1)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func aReleaseHandsTheLeaseOverAtOnce(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            #expect(try await stores[0].acquireLease(name: "leader", holder: "a", duration: .seconds(60)) == 1)
            #expect(try await stores[1].acquireLease(name: "leader", holder: "b", duration: .seconds(60)) == nil)
            // Only its holder releases it.
            try await stores[1].releaseLease(name: "leader", holder: "b")
            #expect(try await stores[1].acquireLease(name: "leader", holder: "b", duration: .seconds(60)) == nil)
            try await stores[0].releaseLease(name: "leader", holder: "a")
            #expect(try await stores[1].acquireLease(name: "leader", holder: "b", duration: .seconds(60)) == 2)
            #expect(try await stores[1].acquireLease(name: "leader", holder: "b", duration: .seconds(60)) == 2)
            #expect(try await stores[0].acquireLease(name: "leader", holder: "a", duration: .seconds(60)) == nil)
            try await stores[1].releaseLease(name: "leader", holder: "b")
            #expect(try await stores[0].acquireLease(name: "leader", holder: "a", duration: .seconds(60)) == 3)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func aLeadersWriteCommitsOnlyWhileItsTermHoldsTheLease(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            let image = Fixtures.image("img")
            try await stores[0].createImage(image)
            let instance = Fixtures.instance("moved", image: image.id, host: "h1")
            try await stores[0].createInstances([instance], claim: nil)
            let room = [
                "h2": HostCapacity(memoryMib: 1024, vcpus: 8), "h3": HostCapacity(memoryMib: 1024, vcpus: 8),
            ]
            /// The evacuation a leader `holder` with `term` would write: the instance moves to `host`.
            func move(to host: String, by store: any ControllerStore, holder: String, term: UInt64) async -> String {
                let claim = PlacementClaim(
                    capacity: room, leader: LeaderFence(lease: "leader", holder: holder, term: term))
                return await storeError {
                    _ = try await store.updateInstance(
                        id: instance.id, events: [("evacuated", host)], handle: nil, claim: claim
                    ) { $0.hostId = host }
                }?.code ?? "ok"
            }
            #expect(try await stores[0].acquireLease(name: "leader", holder: "a", duration: .milliseconds(300)) == 1)
            #expect(await move(to: "h2", by: stores[0], holder: "a", term: 1) == "ok")
            // Its lease ran out and another controller took it: the old leader's write is refused.
            try await Task.sleep(for: .milliseconds(600))
            #expect(try await stores[1].acquireLease(name: "leader", holder: "b", duration: .seconds(60)) == 2)
            #expect(await move(to: "h3", by: stores[0], holder: "a", term: 1) == LeaderFence.lostCode)
            // An older term of the holder is refused too; the holder's term commits.
            #expect(await move(to: "h3", by: stores[1], holder: "b", term: 1) == LeaderFence.lostCode)
            let kept = try await stores[1].instance(idOrName: instance.id, projectId: nil)
            #expect(kept?.hostId == "h2")
            #expect(try await stores[1].events(instanceId: instance.id).filter { $0.type == "evacuated" }.count == 1)
            #expect(await move(to: "h3", by: stores[1], holder: "b", term: 2) == "ok")
            #expect(try await stores[0].instance(idOrName: instance.id, projectId: nil)?.hostId == "h3")
        }
    }
}
