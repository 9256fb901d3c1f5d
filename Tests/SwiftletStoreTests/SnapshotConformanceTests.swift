import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Snapshot records, the same on every engine: names unique per project even when writers race,
/// found by id or name within the project, and the last record of a digest says so on delete.
@Suite struct SnapshotConformanceTests {
    static let start = Fixtures.wholeSeconds()

    static func snapshot(
        _ name: String, image: String, project: String = Project.adminProjectId, sha: String = "s1",
        at offset: TimeInterval = 0
    ) -> Snapshot {
        Snapshot(
            id: ResourceID.make("snap"), projectId: project, name: name, instanceId: "i-a", imageId: image, sha256: sha,
            sizeBytes: 4096, memoryMib: 16, vcpus: 1, machineType: "microvm", hypervisor: "qemu",
            hypervisorVersion: "7.2.0", args: ["a=b"], publishedPorts: [PublishedPort(hostPort: 8080, guestPort: 80)],
            hostId: "h1", pausedMs: 3.5, createdAt: start.addingTimeInterval(offset))
    }

    @Test(arguments: StoreEngine.allCases)
    func namesAreUniquePerProjectAndTheLastRecordOfADigestSaysSo(engine: StoreEngine) async throws {
        try await engine.withStores(count: 3) { stores in
            let store = stores[0]
            let image = Fixtures.image("kv")
            try await store.createImage(image)
            let other = Project(id: "p-other", name: "other", createdAt: Self.start)
            try await store.createProject(other)
            // Three writers save a snapshot of the same name at once: one wins.
            let outcomes = await withTaskGroup(of: String.self) { group in
                for store in stores {
                    group.addTask {
                        let error = await storeError {
                            try await store.createSnapshot(Self.snapshot("warm", image: image.id))
                        }
                        return error?.code ?? "created"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tally(outcomes) == ["created": 1, "snapshot.duplicate_name": 2])
            let first = try #require(try await store.snapshot(idOrName: "warm", projectId: Project.adminProjectId))
            #expect(first.publishedPorts == [PublishedPort(hostPort: 8080, guestPort: 80)] && first.pausedMs == 3.5)
            #expect(try await store.snapshot(idOrName: first.id, projectId: nil) == first)
            // Another project may use the name; it sees only its own.
            try await store.createSnapshot(Self.snapshot("warm", image: image.id, project: "p-other", at: 5))
            try await store.createSnapshot(Self.snapshot("later", image: image.id, sha: "s2", at: 10))
            #expect(try await store.snapshots(projectId: nil).count == 3)
            #expect(
                try await store.snapshots(projectId: Project.adminProjectId).map(\.name) == ["warm", "later"])
            let theirs = try #require(try await store.snapshot(idOrName: "warm", projectId: "p-other"))
            #expect(theirs.id != first.id)
            #expect(try await store.snapshot(idOrName: first.id, projectId: "p-other") == nil)
            // The image stays while a snapshot needs its kernel.
            #expect(await storeError { _ = try await store.deleteImage(id: image.id) }?.code == "image.in_use")
            // `warm` twice names s1: the first delete keeps the bytes, the second frees them.
            #expect(try await store.deleteSnapshot(id: first.id) == true)
            #expect(try await store.deleteSnapshot(id: theirs.id) == false)
            #expect(
                await storeError { _ = try await store.deleteSnapshot(id: first.id) }?.code == "snapshot.not_found")
            #expect(try await store.snapshots(projectId: nil).map(\.name) == ["later"])
        }
    }
}
