import Foundation
import Logging
import SwiftletAgent
import SwiftletAgentProtocol
import SwiftletController
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages
import SwiftletStore
import Testing

/// A controller and one host agent in process, joined by the in-process link, over a real SQLite
/// file, with the fake driver (no QEMU): the controller↔agent seam in milliseconds. What only a
/// real VMM shows is tested against QEMU in the other suites.
final class FakeHost {
    static let hostId = "host-fake-a"
    let directory: String
    let store: SQLiteStore
    let blobs: BlobStore
    let controller: Controller
    let driver = FakeHypervisorDriver()
    private(set) var agent: HostAgent
    let logger = Logger(label: "test.agent-boundary")

    init() async throws {
        directory = NSTemporaryDirectory() + "swiftlet-boundary-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        store = try SQLiteStore(path: directory + "/swiftlet.sqlite")
        blobs = try BlobStore(root: directory + "/blobs")
        controller = Controller(
            store: store, blobs: blobs, uploadLimit: 1 << 20, hostMemoryMib: 4096, logger: logger)
        agent = HostAgent(
            hostId: Self.hostId, images: BlobStoreSource(blobs: blobs), driver: driver, runRoot: directory + "/run",
            logger: logger)
        let text = "not a kernel: the fake driver boots anything"
        let bytes = Data(text.utf8)
        let digest = ImageSignature.sha256(text: text)
        try FileManager.default.createDirectory(
            atPath: (blobs.path(sha256: digest) as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: blobs.path(sha256: digest), contents: bytes)
        try await store.createImage(
            Image(
                id: "img-fake", projectId: Project.adminProjectId, name: "fake", kind: .pvh, sha256: digest,
                sizeBytes: Int64(bytes.count), properties: [:], createdAt: Date()))
        try await store.upsertHost(
            ComputeHost(
                id: Self.hostId, name: "fake-a", cpus: 2, memoryMib: 4096, hypervisors: ["fake"],
                hypervisorVersion: "0", machineTypes: ["microvm", "pc", "q35"], accelerators: ["fake"],
                chosenAccelerator: "fake", calibrationMs: [:], instances: 0, updatedAt: Date()))
        try await controller.connectLocalAgent(LocalAgentLink(agent: agent))
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// A new agent process for the same host, as after `kill -9` of the old one: the VMs (the
    /// fake driver's) live on, the agent's memory does not.
    func restartAgent() async throws {
        agent = HostAgent(
            hostId: Self.hostId, images: BlobStoreSource(blobs: blobs), driver: driver, runRoot: directory + "/run",
            logger: logger)
        try await controller.connectLocalAgent(LocalAgentLink(agent: agent))
    }

    func create(_ name: String, image: String = "fake", restart: RestartPolicy = .no) async throws -> Instance {
        let created = try await controller.createInstances(
            CreateInstanceRequest(name: name, image: image, restartPolicy: restart, wait: true), by: .admin,
            accepted: monotonicNanos())
        return try #require(created.first)
    }

    /// Another image record on the same (fake) bytes, with its own launch properties.
    func addImage(_ name: String, properties: [String: String]) async throws {
        let fake = try #require(try await store.image(idOrName: "fake", projectId: nil))
        try await store.createImage(
            Image(
                id: "img-\(name)", projectId: Project.adminProjectId, name: name, kind: fake.kind, sha256: fake.sha256,
                sizeBytes: fake.sizeBytes, properties: properties, createdAt: Date()))
    }

    func instance(_ id: String) async throws -> Instance {
        try #require(try await store.instance(idOrName: id, projectId: nil))
    }

    /// The default deadline of `eventually`: `make test` runs this beside suites that boot VMs
    /// and load PostgreSQL, and every store call is a suspension that waits for a free thread.
    func waitFor(_ what: String, _ condition: () async throws -> Bool) async throws {
        try await eventually(what) { try await condition() }
    }
}

@Suite struct AgentBoundaryTests {
    @Test func createRunsOnTheAssignedHostAndTheControllerRecordsReady() async throws {
        let host = try await FakeHost()
        let created = try await host.create("web")
        #expect(created.state == .running)
        #expect(created.hostId == FakeHost.hostId)
        #expect(created.generation == 1)
        #expect(created.timeline.ready != nil && created.timeline.vmmUp != nil && created.timeline.persisted != nil)
        #expect(try await host.store.handle(instanceId: created.id) != nil)
        let events = try await host.store.events(instanceId: created.id).map(\.type)
        #expect(events.contains("image") && events.contains("ready"))
        #expect(host.driver.liveInstanceIds == [created.id])
        // Desired, observed and the host are kept apart.
        #expect(created.desired == .running && created.task == nil)
        #expect(created.observed?.phase == .running && created.observed?.hostId == FakeHost.hostId)
    }

    @Test func reportsOfAnOlderGenerationOrFromAnotherHostAreRefused() async throws {
        let host = try await FakeHost()
        let created = try await host.create("web")
        let stopped = try #require(
            try await host.controller.act(.stop, on: created.id, by: .admin, stopTimeout: .seconds(1)))
        #expect(stopped.state == .stopped)
        #expect(stopped.generation == 2)
        #expect(host.driver.liveInstanceIds.isEmpty)
        // A READY of the VM of generation 1 arriving late must not bring the instance back.
        await host.controller.instanceSync.observe(
            Observation(
                hostId: FakeHost.hostId, instanceId: created.id, generation: 1,
                report: .ready(timeline: created.timeline, handle: Data("{}".utf8), events: [])))
        #expect(try await host.instance(created.id).state == .stopped)
        #expect(try await host.store.handle(instanceId: created.id) == nil)
        // A host the instance is not on cannot report for it, whatever the generation.
        await host.controller.instanceSync.observe(
            Observation(
                hostId: "host-other", instanceId: created.id, generation: 2,
                report: .exited(clean: false, reason: "forged", timeline: nil)))
        let after = try await host.instance(created.id)
        #expect(after.state == .stopped && after.reason != "forged")
    }

    @Test func anExitIsRestartedThroughANewAssignment() async throws {
        let host = try await FakeHost()
        let created = try await host.create("svc", restart: .always)
        host.driver.crash(instanceId: created.id)
        try await host.waitFor("the restarted instance RUNNING again") {
            let instance = try await host.instance(created.id)
            return instance.state == .running && instance.restartCount == 1
        }
        #expect(try await host.instance(created.id).generation == 2)
        #expect(host.driver.spawnCount == 2)
        #expect(host.driver.liveInstanceIds == [created.id])
        #expect(try await host.store.events(instanceId: created.id).map(\.type).contains("restarting"))
    }

    @Test func anExitWithoutRestartLeavesErrorAndNoHandle() async throws {
        let host = try await FakeHost()
        let created = try await host.create("once")
        host.driver.crash(instanceId: created.id)
        try await host.waitFor("ERROR") { try await host.instance(created.id).state == .error }
        #expect(try await host.store.handle(instanceId: created.id) == nil)
        #expect(try await host.instance(created.id).generation == 2)
    }

    /// A run-to-completion unikernel powers off by its own convention (Solo5's `solo5_exit(0)`
    /// writes 41 to isa-debug-exit: QEMU exits 83). An image that says so ends STOPPED, not ERROR,
    /// and is not restarted on failure; without the property the same exit is an ERROR.
    @Test func anExitStatusTheImageCallsSuccessEndsStopped() async throws {
        let host = try await FakeHost()
        try await host.addImage("batch", properties: ["success_exit_statuses": "0,83"])
        let batch = try await host.create("batch", image: "batch", restart: .onFailure)
        host.driver.crash(instanceId: batch.id, guestStatus: 41)
        try await host.waitFor("the batch run settled") { try await host.instance(batch.id).state != .running }
        let done = try await host.instance(batch.id)
        #expect(done.state == .stopped, "\(done.state) \(done.reason ?? "")")
        #expect(done.restartCount == 0)
        #expect(try await host.store.handle(instanceId: batch.id) == nil)

        // The kit's own clean exit (status 1) is not success for this image: it says 0 and 83.
        let other = try await host.create("batch-kit", image: "batch")
        host.driver.crash(instanceId: other.id, guestStatus: 0)
        try await host.waitFor("ERROR") { try await host.instance(other.id).state == .error }

        let plain = try await host.create("plain")
        host.driver.crash(instanceId: plain.id, guestStatus: 41)
        try await host.waitFor("ERROR") { try await host.instance(plain.id).state == .error }
        let kit = try await host.create("kit")
        host.driver.crash(instanceId: kit.id, guestStatus: 0)
        try await host.waitFor("STOPPED") { try await host.instance(kit.id).state == .stopped }
    }

    /// A guest that explains why it gives up (`swiftlet: bad config: …`) has that line in the
    /// instance's reason, not only "exited with status 5"; the line is bounded in length.
    @Test func anErrorCarriesTheGuestsLastWords() async throws {
        let host = try await FakeHost()
        let created = try await host.create("no-nic")
        let complaint = "swiftlet: bad config: net: no virtio-net device on the virtio-mmio slots"
        host.driver.crash(instanceId: created.id, guestStatus: 2, printing: [complaint, "", "\u{1B}[0m  "])
        try await host.waitFor("ERROR") { try await host.instance(created.id).state == .error }
        let reason = try #require(try await host.instance(created.id).reason)
        #expect(reason.contains("guest exited with status 2"), "\(reason)")
        #expect(reason.hasSuffix("the guest said: \(complaint)"), "\(reason)")

        // Without a `swiftlet:` line, the last non-empty one that is not the kit's READY marker;
        // a long line is cut.
        let other = try await host.create("panics")
        let long = "PANIC " + String(repeating: "x", count: 500)
        host.driver.crash(instanceId: other.id, guestStatus: 3, printing: [long, "SWIFTLET-READY again"])
        try await host.waitFor("ERROR") { try await host.instance(other.id).state == .error }
        let cut = try #require(try await host.instance(other.id).reason)
        #expect(cut.contains("the guest said: PANIC xxxx"), "\(cut)")
        #expect(cut.count < 320 && cut.hasSuffix("…"), "\(cut)")

        // A clean exit needs no explanation.
        let clean = try await host.create("clean")
        host.driver.crash(instanceId: clean.id, guestStatus: 0, printing: ["swiftlet: poweroff"])
        try await host.waitFor("STOPPED") { try await host.instance(clean.id).state == .stopped }
        #expect(try await host.instance(clean.id).reason?.contains("the guest said") == false)
    }

    @Test func aRestartedAgentReattachesAndNothingRunsTwice() async throws {
        let host = try await FakeHost()
        let created = try await host.create("kept", restart: .always)
        try await host.restartAgent()
        #expect(host.driver.spawnCount == 1)
        #expect(try await host.instance(created.id).state == .running)
        // Both the old agent (still in memory here) and the new one see the exit: the first report
        // restarts the instance under a new generation, the other is refused as stale.
        host.driver.crash(instanceId: created.id)
        try await host.waitFor("restarted once") {
            let instance = try await host.instance(created.id)
            return instance.state == .running && instance.restartCount == 1
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await host.instance(created.id).restartCount == 1)
        #expect(host.driver.spawnCount == 2)
        #expect(host.driver.liveInstanceIds == [created.id])
    }

    @Test func stopStartPauseConsoleAndDeleteGoThroughTheLink() async throws {
        let host = try await FakeHost()
        let created = try await host.create("cycle")
        _ = try await host.controller.act(.pause, on: created.id, by: .admin, stopTimeout: .seconds(1))
        #expect(try await host.instance(created.id).state == .paused)
        let paused = try await host.instance(created.id)
        #expect(paused.desired == .paused && paused.observed?.phase == .paused)
        _ = try await host.controller.act(.resume, on: created.id, by: .admin, stopTimeout: .seconds(1))
        let link = try host.controller.link(for: try await host.instance(created.id))
        let console = try await link.readConsole(instanceId: created.id, from: 0)
        #expect(String(decoding: console.data, as: UTF8.self).contains("SWIFTLET-READY"))
        #expect(console.vmRunning)
        try await link.sendConsole(instanceId: created.id, line: "hello")
        #expect(host.driver.consoleInput(instanceId: created.id) == ["hello"])
        _ = try await host.controller.act(.stop, on: created.id, by: .admin, stopTimeout: .seconds(1))
        #expect(try await host.store.events(instanceId: created.id).map(\.type).contains("stopped"))
        let stopped = try await host.instance(created.id)
        #expect(stopped.desired == .stopped && stopped.observed?.phase == .stopped)
        // The console of the stopped VM is kept for `logs`.
        let kept = try await link.readConsole(instanceId: created.id, from: 0)
        #expect(!kept.vmRunning && !kept.data.isEmpty)
        _ = try await host.controller.act(.start, on: created.id, by: .admin, stopTimeout: .seconds(1))
        try await host.waitFor("RUNNING after start") { try await host.instance(created.id).state == .running }
        #expect(try await host.instance(created.id).generation == 3)
        _ = try await host.controller.act(.delete, on: created.id, by: .admin, stopTimeout: .seconds(1))
        #expect(try await host.store.instance(idOrName: created.id, projectId: nil) == nil)
        #expect(host.driver.liveInstanceIds.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: host.directory + "/run/" + created.id))
    }

    @Test func aStartDuringASlowStopBootsOnceTheStopIsDone() async throws {
        let host = try await FakeHost()
        let created = try await host.create("slow")
        host.driver.setStopDelay(.milliseconds(300))
        let controller = host.controller
        let stopping = Task {
            try await controller.act(.stop, on: created.id, by: .admin, stopTimeout: .seconds(1))
        }
        try await host.waitFor("STOPPED recorded") { try await host.instance(created.id).state == .stopped }
        // The old VMM is still stopping and owns the runtime directory: the start must wait for it.
        _ = try await controller.act(.start, on: created.id, by: .admin, stopTimeout: .seconds(1))
        _ = try await stopping.value
        try await host.waitFor("RUNNING after the start") { try await host.instance(created.id).state == .running }
        #expect(host.driver.liveInstanceIds == [created.id])
        #expect(host.driver.spawnCount == 2)
        // The new VM's files were not removed by the old VM's clean-up.
        #expect(FileManager.default.fileExists(atPath: host.directory + "/run/" + created.id + "/console.log"))
    }

    @Test func aSpawnFailureIsRecordedAsTheBootsError() async throws {
        let host = try await FakeHost()
        host.driver.failNextSpawn("no VMM today")
        let created = try await host.create("broken")
        #expect(created.state == .error)
        #expect(created.reason?.contains("no VMM today") == true)
        #expect(created.timeline.imageReady != nil)
    }

    @Test func theMessagesRoundTripAsJSON() async throws {
        let instance = Instance(
            id: "i-1", projectId: "prj", name: "a", imageId: "img", flavor: nil, vcpus: 1, memoryMib: 16, args: [],
            restartPolicy: .no, publishedPorts: [], state: .building, timeline: .starting(at: 1), createdAt: Date(),
            updatedAt: Date())
        let image = Image(
            id: "img", projectId: "prj", name: "x", kind: .pvh, sha256: "ab", sizeBytes: 1, properties: [:],
            createdAt: Date())
        let event = WatchEvent(
            revision: 7,
            change: .assign(
                Assignment(instance: instance, generation: 3, desired: .running, boot: BootImage(image: image))))
        let data = try SwiftletJSON.encoder().encode(event)
        let decoded = try SwiftletJSON.decoder().decode(WatchEvent.self, from: data)
        guard case .assign(let assignment) = decoded.change else {
            Issue.record("decoded \(decoded.change)")
            return
        }
        #expect(decoded.revision == 7 && assignment.generation == 3 && assignment.instance.id == "i-1")
        let report = Observation(
            hostId: "h", instanceId: "i-1", generation: 3,
            report: .exited(clean: true, reason: "done", timeline: nil))
        #expect(
            try SwiftletJSON.decoder().decode(Observation.self, from: SwiftletJSON.encoder().encode(report)) == report)
    }
}
