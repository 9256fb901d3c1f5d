import Foundation
import GRDB
import Testing

@testable import SwiftletCore
@testable import SwiftletStore

/// Against a real SQLite file, in a directory each test removes when it ends (`deinit`).
@Suite final class StoreTests {
    let directory: String
    let store: SQLiteStore

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-store-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        store = try SQLiteStore(path: directory + "/test.sqlite")
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func image(_ name: String) -> Image {
        Image(
            id: ResourceID.make("img"), projectId: Project.adminProjectId, name: name, kind: .pvh, sha256: "ab",
            sizeBytes: 10, properties: ["ready_pattern": "up"], createdAt: Date())
    }

    func instance(_ name: String, image: String) -> Instance {
        Instance(
            id: ResourceID.make("i"), projectId: Project.adminProjectId, name: name, imageId: image, flavor: "tiny",
            vcpus: 1, memoryMib: 16, args: ["a=b"], restartPolicy: .no, publishedPorts: [], state: .building,
            timeline: .starting(at: 1), createdAt: Date(), updatedAt: Date())
    }

    @Test func defaultsAndRoundTrip() throws {
        #expect(try store.flavors().map(\.name) == ["tiny", "small", "medium"])
        let img = image("hello")
        try store.createImage(img)
        let stored = try #require(try store.image(idOrName: "hello", projectId: nil))
        #expect(stored.id == img.id && stored.properties == img.properties && stored.kind == .pvh)
        // SQLite keeps dates to the millisecond.
        #expect(abs(stored.createdAt.timeIntervalSince(img.createdAt)) < 0.001)
        #expect(try store.image(idOrName: "hello", projectId: "prj-other") == nil)
        let one = instance("web", image: img.id)
        try store.createInstances([one])
        let updated = try store.updateInstance(id: one.id) { $0.state = .running }
        #expect(updated.state == .running)
        #expect(try store.instances(projectId: nil, state: .running, name: nil, imageId: nil).map(\.id) == [one.id])
    }

    @Test func pagesFollowCreationOrderAcrossEqualTimes() throws {
        let img = image("hello")
        try store.createImage(img)
        // One batch shares its creation time to the millisecond: the id breaks the tie.
        let created = Date()
        let batch = (0..<5).map { index in
            var one = instance("n\(index)", image: img.id)
            one.createdAt = created
            return one
        }
        var later = instance("later", image: img.id)
        later.createdAt = created.addingTimeInterval(1)
        try store.createInstances([later] + batch)
        let all = try store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
        #expect(all.map(\.id) == batch.map(\.id).sorted() + [later.id])
        var walked: [String] = []
        var marker: String?
        repeat {
            let page = try store.instances(
                projectId: nil, state: nil, name: nil, imageId: nil, after: marker, limit: 2)
            #expect(page.count <= 2)
            walked += page.map(\.id)
            marker = page.count == 2 ? page.last?.id : nil
        } while marker != nil
        #expect(walked == all.map(\.id))
        // A marker that is gone has no place in the order: nothing after it, not the first page.
        #expect(
            try store.instances(projectId: nil, state: nil, name: nil, imageId: nil, after: "i-gone", limit: 2).isEmpty)
    }

    @Test func constraintsKeepInvariants() throws {
        let img = image("hello")
        try store.createImage(img)
        #expect(throws: SwiftletError.self) { try store.createImage(image("hello")) }  // duplicate name
        // All-or-nothing: the second instance's duplicate name rolls back the first.
        let a = instance("a", image: img.id)
        #expect(throws: SwiftletError.self) {
            try store.createInstances([a, instance("a", image: img.id)])
        }
        #expect(try store.instances(projectId: nil, state: nil, name: nil, imageId: nil).isEmpty)
        try store.createInstances([a])
        do {
            _ = try store.deleteImage(id: img.id)
            Issue.record("deleting an image in use must fail")
        } catch { #expect(error.kind == .conflict) }
        try store.deleteInstance(id: a.id)
        #expect(try store.deleteImage(id: img.id) == false)
    }

    @Test func aPlacementClaimIsCheckedWithTheInsertAndFollowsMoves() throws {
        let img = image("hello")
        try store.createImage(img)
        let room = PlacementClaim(capacity: ["h1": HostCapacity(memoryMib: 32, vcpus: 8)])
        var placed = (0..<3).map { index in
            var one = instance("p\(index)", image: img.id)
            one.hostId = "h1"
            return one
        }
        try store.createInstances(Array(placed[0..<2]), claim: room)
        do {
            try store.createInstances([placed[2]], claim: room)
            Issue.record("a third 16 MiB instance must not fit in 32 MiB")
        } catch { #expect(error.code == PlacementClaim.lostCode) }
        #expect(try store.hostUsage() == ["h1": HostUsage(memoryMib: 32, vcpus: 2, instances: 2)])
        // A move (evacuation) and a stop free the host's room; the claim then holds.
        try store.updateInstance(id: placed[0].id) { $0.hostId = "h2" }
        try store.updateInstance(id: placed[1].id) { $0.state = .stopped }
        #expect(try store.hostUsage() == ["h2": HostUsage(memoryMib: 16, vcpus: 1, instances: 1)])
        placed[2].id = ResourceID.make("i")
        try store.createInstances([placed[2]], claim: room)
        #expect(try store.hostUsage()["h1"]?.memoryMib == 16)
        // A move (evacuation) claims its new host like an insert; a lost claim changes nothing.
        let full = PlacementClaim(capacity: ["h1": HostCapacity(memoryMib: 16, vcpus: 8)])
        do {
            try store.updateInstance(id: placed[0].id, events: [], handle: nil, claim: full) { $0.hostId = "h1" }
            Issue.record("the move must not fit")
        } catch { #expect(error.code == PlacementClaim.lostCode) }
        #expect(try store.instance(idOrName: placed[0].id, projectId: nil)?.hostId == "h2")
    }

    @Test func thePlacementMigrationFillsItsColumnsFromTheRecords() throws {
        let path = directory + "/v4.sqlite"
        var placed = instance("old", image: "img-old")
        (placed.hostId, placed.state) = ("h1", .running)
        do {
            let old = try DatabasePool(path: path)
            try SQLiteStore.migrator.migrate(old, upTo: "v2-pools")
            try old.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO image (id, project_id, name, kind, sha256, size_bytes, properties, created_at)
                        VALUES ('img-old', ?, 'old', 'pvh', 'ab', 1, '{}', ?)
                        """,
                    arguments: [Project.adminProjectId, Date()])
                try db.execute(
                    sql: """
                        INSERT INTO instance (id, project_id, name, image_id, state, body, created_at)
                        VALUES (?, ?, 'old', 'img-old', 'RUNNING', ?, ?)
                        """,
                    arguments: [placed.id, Project.adminProjectId, try SQLiteStore.json(placed), Date()])
            }
        }
        let migrated = try SQLiteStore(path: path)
        #expect(try migrated.hostUsage() == ["h1": HostUsage(memoryMib: 16, vcpus: 1, instances: 1)])
    }

    @Test func serverGroupsKeepTheirPolicyAndMembers() throws {
        let img = image("hello")
        try store.createImage(img)
        let group = ServerGroup(
            id: "sgrp-1", projectId: Project.adminProjectId, name: "web", policy: .antiAffinity, members: [],
            createdAt: Date())
        try store.createServerGroup(group)
        #expect(throws: SwiftletError.self) { try store.createServerGroup(group) }
        let members = ["h1", "h1"].enumerated().map { index, host in
            var one = instance("m\(index)", image: img.id)
            (one.hostId, one.serverGroupId) = (host, group.id)
            return one
        }
        let claim = PlacementClaim(capacity: [:], group: group)
        #expect(throws: SwiftletError.self) { try store.createInstances(members, claim: claim) }
        try store.createInstances([members[0]], claim: claim)
        #expect(try store.serverGroup(idOrName: "web", projectId: nil)?.members == [members[0].id])
        #expect(try store.serverGroupHosts(id: group.id) == [members[0].id: "h1"])
        #expect(throws: SwiftletError.self) { try store.deleteServerGroup(id: group.id) }
        try store.deleteInstance(id: members[0].id)
        try store.deleteServerGroup(id: group.id)
        #expect(try store.serverGroups(projectId: nil).isEmpty)
    }

    @Test func concurrentWritersDoNotLoseUpdates() async throws {
        let img = image("hello")
        try store.createImage(img)
        let one = instance("counter", image: img.id)
        try store.createInstances([one])
        let store = self.store
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask { _ = try? store.updateInstance(id: one.id) { $0.restartCount += 1 } }
            }
        }
        #expect(try store.instance(idOrName: one.id, projectId: nil)?.restartCount == 50)
    }

    @Test func updateWithEventsAndHandleIsOneTransaction() throws {
        let img = image("hello")
        try store.createImage(img)
        let one = instance("vm", image: img.id)
        try store.createInstances([one])
        let handle = Data("{\"pid\":1}".utf8)
        try store.updateInstance(id: one.id, events: [("image", "cached"), ("ready", "up")], handle: handle) {
            $0.state = .running
        }
        #expect(try store.handle(instanceId: one.id) == handle)
        #expect(try store.events(instanceId: one.id).map(\.type) == ["created", "image", "ready"])
        // A change that throws writes nothing: no state, no event, no handle.
        let other = instance("other", image: img.id)
        try store.createInstances([other])
        #expect(throws: SwiftletError.self) {
            try store.updateInstance(id: other.id, events: [("image", "cached")], handle: handle) {
                instance throws(SwiftletError) in
                instance.state = .running
                throw SwiftletError(.conflict, "test.abort", "abort")
            }
        }
        #expect(try store.instance(idOrName: other.id, projectId: nil)?.state == .building)
        #expect(try store.handle(instanceId: other.id) == nil)
        #expect(try store.events(instanceId: other.id).map(\.type) == ["created"])
    }

    @Test(arguments: [0.0, 1_700_000_000.123, 951_782_400.999, 4_102_444_799.5, -1.5])
    func databaseDateTextMatchesGRDBFormat(seconds: Double) throws {
        let date = Date(timeIntervalSince1970: seconds)
        // GRDB's own storage text for the same date, and it reads ours back to the millisecond.
        #expect(DatabaseDate.text(date) == date.databaseValue.storage.value as? String)
        let parsed = try #require(Date.fromDatabaseValue(DatabaseDate.text(date).databaseValue))
        #expect(abs(parsed.timeIntervalSince(date)) < 0.001)
    }

    @Test func catalogGenerationMovesWithCatalogChangesOnly() throws {
        let start = store.catalogGeneration
        let img = image("hello")
        try store.createImage(img)
        let afterImage = store.catalogGeneration
        #expect(afterImage > start)
        // Instance writes are not catalog changes.
        let one = instance("vm", image: img.id)
        try store.createInstances([one])
        try store.updateInstance(id: one.id) { $0.state = .running }
        #expect(store.catalogGeneration == afterImage)
        // A rolled-back catalog write is not one either.
        #expect(throws: SwiftletError.self) { try store.createImage(image("hello")) }
        #expect(store.catalogGeneration == afterImage)
        try store.createFlavor(Flavor(name: "huge", vcpus: 4, memoryMib: 4096))
        #expect(store.catalogGeneration > afterImage)
        let afterFlavor = store.catalogGeneration
        try store.deleteInstance(id: one.id)
        _ = try store.deleteImage(id: img.id)
        #expect(store.catalogGeneration > afterFlavor)
    }
}
