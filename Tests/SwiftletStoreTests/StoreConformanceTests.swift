import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// What every store engine must do alike: each test runs once per engine, on a fresh database.
@Suite struct StoreConformanceTests {
    @Test(arguments: StoreEngine.allCases)
    func projectsAndTokens(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let project = Project(id: "prj-a", name: "a", createdAt: Fixtures.wholeSeconds())
            try await store.createProject(project)
            #expect(try await store.project(id: "prj-a") == project)
            #expect(try await store.projects().map(\.id).sorted() == [Project.adminProjectId, "prj-a"].sorted())
            #expect(await storeError { try await store.createProject(project) }?.kind == .conflict)

            try await store.createToken(
                TokenInfo(id: "tok-1", projectId: "prj-a", admin: false, token: nil, createdAt: Date()),
                secretHash: "hash-1")
            try await store.createToken(
                TokenInfo(id: "tok-2", projectId: Project.adminProjectId, admin: true, token: nil, createdAt: Date()),
                secretHash: "hash-2")
            #expect(try await store.principal(forSecretHash: "hash-1") == .project("prj-a"))
            #expect(try await store.principal(forSecretHash: "hash-2") == .admin)
            #expect(try await store.principal(forSecretHash: "nope") == nil)

            try await store.setRequireSignedImages(projectId: "prj-a", true)
            #expect(try await store.project(id: "prj-a")?.requireSignedImages == true)
            #expect(
                await storeError { try await store.setRequireSignedImages(projectId: "nope", true) }?.code
                    == "project.not_found")
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func imagesRoundTripWithVisibilityAndSharedBlobs(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            #expect(try await store.flavors().map(\.name) == Flavor.defaults.map(\.name))
            try await store.createProject(Project(id: "prj-a", name: "a", createdAt: Fixtures.wholeSeconds()))
            var own = Fixtures.image("hello", project: "prj-a")
            // Sub-second: both engines keep at least milliseconds in a date column.
            own.createdAt = Date()
            let adminImage = Fixtures.image("hello")
            try await store.createImage(own)
            try await store.createImage(adminImage)
            var stored = try #require(try await store.image(idOrName: "hello", projectId: "prj-a"))
            #expect(stored.id == own.id && stored.properties == own.properties && stored.kind == .pvh)
            #expect(stored.visibility == .private)
            #expect(abs(stored.createdAt.timeIntervalSince(own.createdAt)) < 0.001)
            #expect(try await store.image(idOrName: "hello", projectId: "prj-other") == nil)
            #expect(try await store.images(projectId: "prj-a").map(\.id) == [own.id])

            var published = adminImage
            published.visibility = .public
            published.tags = ["x"]
            try await store.updateImageCatalog(published)
            #expect(try await store.images(projectId: "prj-a").count == 2)
            stored = try #require(try await store.image(idOrName: adminImage.id, projectId: "prj-a"))
            #expect(stored.tags == ["x"] && stored.visibility == .public)
            // The project's own image before another's public one of the same name.
            #expect(try await store.image(idOrName: "hello", projectId: "prj-a")?.id == own.id)

            let instance = Fixtures.instance("vm", image: own.id)
            try await store.createInstances([instance])
            let inUse = await storeError { _ = try await store.deleteImage(id: own.id) }
            #expect(inUse?.code == "image.in_use" && inUse?.kind == .conflict)
            try await store.deleteInstance(id: instance.id)
            // Both records share the blob: the first delete leaves it referenced, the second not.
            #expect(try await store.deleteImage(id: own.id))
            #expect(try await !store.deleteImage(id: adminImage.id))
            #expect(try await store.images(projectId: nil).isEmpty)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func instancesPageByMarkerUpdateAndDelete(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let base = Fixtures.wholeSeconds()
            // Pairs share a creation time: the id breaks the tie.
            let made = (0..<7).map { Fixtures.instance("vm\($0)", image: image.id, createdAt: base + Double($0 / 2)) }
            try await store.createInstances(made.reversed())
            let ordered = made.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }

            let all = try await store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
            #expect(all == ordered)
            let first = try await store.instances(
                projectId: Project.adminProjectId, state: .building, name: nil, imageId: image.id, after: nil,
                limit: 2)
            #expect(first.map(\.id) == ordered.prefix(2).map(\.id))
            var walked: [String] = []
            var marker: String?
            repeat {
                let page = try await store.instances(
                    projectId: nil, state: nil, name: nil, imageId: nil, after: marker, limit: 2)
                #expect(page.count <= 2)
                walked += page.map(\.id)
                marker = page.count == 2 ? page.last?.id : nil
            } while marker != nil
            #expect(walked == ordered.map(\.id))
            // A marker that is gone has no place in the order: nothing after it, not the first page.
            let gone = try await store.instances(
                projectId: nil, state: nil, name: nil, imageId: nil, after: "i-missing", limit: 2)
            #expect(gone.isEmpty)
            #expect(
                try await store.instances(projectId: nil, state: nil, name: "vm3", imageId: nil).map(\.id) == [
                    made[3].id
                ])
            #expect(try await store.instances(projectId: "prj-other", state: nil, name: nil, imageId: nil).isEmpty)

            let generation = store.generation
            let updated = try await store.updateInstance(id: made[0].id) { $0.state = .running }
            #expect(updated.state == .running)
            #expect(store.generation > generation)
            #expect(try await store.instanceState(id: made[0].id) == .running)
            #expect(try await store.instanceState(id: "i-none") == nil)
            #expect(
                try await store.instanceStates(ids: [made[0].id, made[1].id, "i-none"]) == [
                    made[0].id: .running, made[1].id: made[1].state,
                ])
            #expect(try await store.instanceStates(ids: []).isEmpty)
            #expect(try await store.instance(idOrName: "vm0", projectId: Project.adminProjectId)?.state == .running)
            #expect(try await store.instance(idOrName: "vm0", projectId: "prj-other") == nil)
            #expect(
                try await store.instances(projectId: nil, state: .running, name: nil, imageId: nil).map(\.id) == [
                    made[0].id
                ])

            let refused = await storeError {
                try await store.updateInstance(id: made[1].id) { _ throws(SwiftletError) in
                    throw SwiftletError(.conflict, "test.refused", "no")
                }
            }
            #expect(refused?.code == "test.refused")
            #expect(await storeError { try await store.updateInstance(id: "i-none") { _ in } }?.kind == .notFound)

            try await store.deleteInstance(id: made[0].id)
            #expect(try await store.instance(idOrName: made[0].id, projectId: nil) == nil)
            #expect(try await store.events(instanceId: made[0].id).isEmpty)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func duplicatesReferencesAndRangesKeepInvariants(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let duplicateImage = await storeError { try await store.createImage(Fixtures.image("img")) }
            #expect(duplicateImage?.code == "store.duplicate" && duplicateImage?.kind == .conflict)
            try await store.createInstances([Fixtures.instance("vm", image: image.id)])
            let duplicate = await storeError {
                try await store.createInstances([
                    Fixtures.instance("other", image: image.id), Fixtures.instance("vm", image: image.id),
                ])
            }
            #expect(duplicate?.code == "store.duplicate" && duplicate?.kind == .conflict)
            // All or none: the first of the batch is not there either.
            #expect(try await store.instance(idOrName: "other", projectId: nil) == nil)

            let orphan = await storeError {
                try await store.createInstances([Fixtures.instance("x", image: "img-none")])
            }
            #expect(orphan?.code == "store.in_use" && orphan?.kind == .conflict)
            #expect(try await store.instances(projectId: nil, state: nil, name: nil, imageId: nil).count == 1)

            // Out of range (a CHECK constraint): 400, nothing written.
            let invalid = await storeError {
                try await store.createFlavor(Flavor(name: "zero", vcpus: 0, memoryMib: 1))
            }
            #expect(invalid?.code == "store.invalid" && invalid?.kind == .badRequest)
            #expect(try await !store.flavors().contains { $0.name == "zero" })
            let duplicateFlavor = await storeError {
                try await store.createFlavor(Flavor(name: "tiny", vcpus: 1, memoryMib: 1))
            }
            #expect(duplicateFlavor?.code == "store.duplicate")
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func hostUsageSumsLiveInstances(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            #expect(try await store.hostUsage().isEmpty)
            try await store.createInstances([
                Fixtures.instance("a", image: image.id, host: "h1", memoryMib: 128, vcpus: 2),
                Fixtures.instance("b", image: image.id, host: "h1", memoryMib: 64, vcpus: 1, state: .running),
                Fixtures.instance("c", image: image.id, host: "h1", memoryMib: 512, vcpus: 4, state: .stopped),
                Fixtures.instance("d", image: image.id, host: "h2", memoryMib: 32, vcpus: 1, state: .paused),
                Fixtures.instance("e", image: image.id, memoryMib: 32, vcpus: 1),
            ])
            #expect(
                try await store.hostUsage() == [
                    "h1": HostUsage(memoryMib: 192, vcpus: 3, instances: 2),
                    "h2": HostUsage(memoryMib: 32, vcpus: 1, instances: 1),
                ])
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func handlesAndEvents(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let instance = Fixtures.instance("vm", image: image.id)
            try await store.createInstances([instance])
            let handle = Data([0, 1, 2, 255])
            try await store.updateInstance(
                id: instance.id, events: [("started", "up"), ("note", "hi")], handle: handle
            ) { $0.state = .running }
            #expect(try await store.handle(instanceId: instance.id) == handle)
            try await store.updateInstance(id: instance.id, events: [], handle: Data([9])) { _ in }
            let all = try await store.allHandles()
            #expect(all.count == 1 && all.first?.instanceId == instance.id && all.first?.handle == Data([9]))
            try await store.removeHandle(instanceId: instance.id)
            #expect(try await store.handle(instanceId: instance.id) == nil)
            #expect(try await store.allHandles().isEmpty)

            try await store.addEvent(instanceId: instance.id, type: "custom", message: "m")
            let events = try await store.events(instanceId: instance.id)
            #expect(events.map(\.type) == ["created", "started", "note", "custom"])
            #expect(events.map(\.message).suffix(3) == ["up", "hi", "m"])
            #expect(events.allSatisfy { $0.instanceId == instance.id })
            #expect(events.map(\.id) == events.map(\.id).sorted())
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func updateWithEventsAndHandleIsOneTransaction(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let one = Fixtures.instance("vm", image: image.id)
            try await store.createInstances([one])
            let handle = Data("{\"pid\":1}".utf8)
            try await store.updateInstance(id: one.id, events: [("image", "cached"), ("ready", "up")], handle: handle) {
                $0.state = .running
            }
            #expect(try await store.handle(instanceId: one.id) == handle)
            #expect(try await store.events(instanceId: one.id).map(\.type) == ["created", "image", "ready"])
            // A change that throws writes nothing: no state, no event, no handle.
            let other = Fixtures.instance("other", image: image.id)
            try await store.createInstances([other])
            let aborted = await storeError {
                try await store.updateInstance(id: other.id, events: [("image", "cached")], handle: handle) {
                    instance throws(SwiftletError) in
                    instance.state = .running
                    throw SwiftletError(.conflict, "test.abort", "abort")
                }
            }
            #expect(aborted?.code == "test.abort")
            #expect(try await store.instance(idOrName: other.id, projectId: nil)?.state == .building)
            #expect(try await store.handle(instanceId: other.id) == nil)
            #expect(try await store.events(instanceId: other.id).map(\.type) == ["created"])
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func concurrentWritersFromTwoStoresDoNotLoseUpdates(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            let image = Fixtures.image("img")
            try await stores[0].createImage(image)
            let one = Fixtures.instance("counter", image: image.id)
            try await stores[0].createInstances([one])
            let failures = await withTaskGroup(of: String?.self) { group in
                for index in 0..<50 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        await storeError { try await store.updateInstance(id: one.id) { $0.restartCount += 1 } }?.code
                    }
                }
                return await group.reduce(into: [String]()) { if let code = $1 { $0.append(code) } }
            }
            #expect(failures.isEmpty)
            #expect(try await stores[1].instance(idOrName: one.id, projectId: nil)?.restartCount == 50)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func catalogGenerationMovesWithCatalogChangesOnly(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let start = store.catalogGeneration
            let image = Fixtures.image("img")
            try await store.createImage(image)
            let afterImage = store.catalogGeneration
            #expect(afterImage > start)
            // Instance writes are not catalog changes.
            let one = Fixtures.instance("vm", image: image.id)
            try await store.createInstances([one])
            try await store.updateInstance(id: one.id) { $0.state = .running }
            try await store.addEvent(instanceId: one.id, type: "note", message: "m")
            #expect(store.catalogGeneration == afterImage)
            // A rolled-back catalog write is not one either.
            #expect(await storeError { try await store.createImage(Fixtures.image("img")) } != nil)
            #expect(store.catalogGeneration == afterImage)
            try await store.createFlavor(Flavor(name: "huge", vcpus: 4, memoryMib: 4096))
            #expect(store.catalogGeneration > afterImage)
            let afterFlavor = store.catalogGeneration
            try await store.createProject(Project(id: "prj-a", name: "a", createdAt: Fixtures.wholeSeconds()))
            #expect(store.catalogGeneration > afterFlavor)
            let afterProject = store.catalogGeneration
            try await store.deleteInstance(id: one.id)
            #expect(store.catalogGeneration == afterProject)
            _ = try await store.deleteImage(id: image.id)
            #expect(store.catalogGeneration > afterProject)
            // Every other catalog write moves it too, each on its own.
            let host = ComputeHost(
                id: "h1", name: "node1", cpus: 4, memoryMib: 4096, hypervisors: ["qemu"], hypervisorVersion: "9",
                machineTypes: ["q35"], accelerators: ["kvm"], chosenAccelerator: "kvm", calibrationMs: [:],
                instances: 0, updatedAt: Fixtures.wholeSeconds())
            let key = SigningKey(
                id: "key-1", projectId: "prj-a", name: "k",
                publicKey: Data(repeating: 1, count: 32).base64EncodedString(), createdAt: Fixtures.wholeSeconds())
            var published = Fixtures.image("published")
            try await store.createImage(published)
            published.visibility = .public
            let writes: [(String, () async throws -> Void)] = [
                ("upsertHost", { try await store.upsertHost(host) }),
                ("setCordoned", { try await store.setCordoned(hostId: host.id, true) }),
                ("addSigningKey", { try await store.addSigningKey(key) }),
                ("deleteSigningKey", { _ = try await store.deleteSigningKey(idOrName: "k", projectId: "prj-a") }),
                ("setRequireSignedImages", { try await store.setRequireSignedImages(projectId: "prj-a", true) }),
                ("updateImageCatalog", { try await store.updateImageCatalog(published) }),
            ]
            for (name, write) in writes {
                let before = store.catalogGeneration
                try await write()
                #expect(store.catalogGeneration > before, "\(name)")
            }
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func buildsAndSigningKeys(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            try await store.createProject(Project(id: "prj-a", name: "a", createdAt: Fixtures.wholeSeconds()))
            let first = Build(
                id: "bld-1", projectId: "prj-a", name: "hello", recipe: "c", flags: ["-O2"],
                createdAt: Fixtures.wholeSeconds())
            var second = Build(
                id: "bld-0", projectId: Project.adminProjectId, name: "web", recipe: "c", flags: [],
                createdAt: Fixtures.wholeSeconds(1))
            try await store.createBuild(second)
            try await store.createBuild(first)
            #expect(try await store.builds(projectId: nil) == [first, second])
            #expect(try await store.builds(projectId: "prj-a") == [first])
            second.state = .succeeded
            second.imageId = "img-x"
            second.stages.compile = 12.5
            second.finishedAt = Fixtures.wholeSeconds(2)
            try await store.updateBuild(second)
            #expect(try await store.build(id: second.id, projectId: nil) == second)
            #expect(try await store.build(id: second.id, projectId: "prj-a") == nil)
            #expect(await storeError { try await store.createBuild(first) }?.kind == .conflict)

            let key = SigningKey(
                id: "key-1", projectId: "prj-a", name: "release",
                publicKey: Data(repeating: 1, count: 32).base64EncodedString(), createdAt: Fixtures.wholeSeconds())
            let other = SigningKey(
                id: "key-2", projectId: "prj-a", name: "nightly",
                publicKey: Data(repeating: 2, count: 32).base64EncodedString(), createdAt: Fixtures.wholeSeconds(1)
            )
            try await store.addSigningKey(key)
            try await store.addSigningKey(other)
            #expect(try await store.signingKeys(projectId: "prj-a") == [key, other])
            #expect(try await store.signingKeys(projectId: Project.adminProjectId).isEmpty)
            #expect(await storeError { try await store.addSigningKey(key) }?.kind == .conflict)
            // By name or by id, and only within the project.
            #expect(try await !store.deleteSigningKey(idOrName: "release", projectId: Project.adminProjectId))
            #expect(try await store.deleteSigningKey(idOrName: "release", projectId: "prj-a"))
            #expect(try await store.deleteSigningKey(idOrName: other.id, projectId: "prj-a"))
            #expect(try await !store.deleteSigningKey(idOrName: other.id, projectId: "prj-a"))
            #expect(try await store.signingKeys(projectId: "prj-a").isEmpty)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func hostsFlavorsPoolsAndBuildCache(engine: StoreEngine) async throws {
        try await engine.withStore { store in
            let host = ComputeHost(
                id: "h1", name: "node1", cpus: 4, memoryMib: 4096, hypervisors: ["qemu"], hypervisorVersion: "9",
                machineTypes: ["q35"], accelerators: ["kvm"], chosenAccelerator: "kvm", calibrationMs: [:],
                instances: 0, updatedAt: Fixtures.wholeSeconds())
            try await store.upsertHost(host)
            try await store.setCordoned(hostId: "h1", true)
            // A report replaces what the host says, and keeps the cordon.
            var reported = host
            reported.instances = 3
            try await store.upsertHost(reported)
            let hosts = try await store.hosts()
            #expect(hosts.map(\.cordoned) == [true])
            #expect(hosts.first?.instances == 3 && hosts.first?.hypervisors == ["qemu"])
            #expect(await storeError { try await store.setCordoned(hostId: "h9", true) }?.kind == .notFound)

            try await store.createFlavor(Flavor(name: "huge", vcpus: 8, memoryMib: 8192))
            #expect(try await store.flavors().last == Flavor(name: "huge", vcpus: 8, memoryMib: 8192))

            let image = Fixtures.image("img")
            try await store.createImage(image)
            let pool = WarmPool(
                id: "pool-1", projectId: Project.adminProjectId, imageId: image.id, memoryMib: 64, vcpus: 1, size: 2,
                createdAt: Fixtures.wholeSeconds())
            try await store.createPool(pool)
            #expect(try await store.pools(projectId: Project.adminProjectId) == [pool])
            #expect(try await store.pools(projectId: "prj-other").isEmpty)
            try await store.deletePool(id: pool.id)
            #expect(try await store.pools(projectId: nil).isEmpty)

            let digest = String(repeating: "d", count: 64)
            #expect(try await store.cachedImage(projectId: Project.adminProjectId, inputsDigest: digest) == nil)
            try await store.cacheImage(projectId: Project.adminProjectId, inputsDigest: digest, imageId: image.id)
            try await store.cacheImage(projectId: Project.adminProjectId, inputsDigest: digest, imageId: image.id)
            #expect(try await store.cachedImage(projectId: Project.adminProjectId, inputsDigest: digest) == image.id)
            #expect(try await store.cachedImage(projectId: "prj-other", inputsDigest: digest) == nil)
        }
    }
}
