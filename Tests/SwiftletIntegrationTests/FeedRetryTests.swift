import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletStore
import Synchronization
import Testing

@testable import SwiftletController

/// A real SQLite store whose feed appends fail while `failing` is set (a fault injector, named
/// as such): the database going away between a record's commit and its feed append.
final class FailingFeedStore: HostFeedStore {
    let base: SQLiteStore
    let failing = Atomic(false)

    init(base: SQLiteStore) { self.base = base }

    func feedIdentity() async throws(SwiftletError) -> String { try await base.feedIdentity() }
    func appendHostChanges(_ changes: [HostChange]) async throws(SwiftletError) -> [UInt64] {
        if failing.load(ordering: .acquiring) {
            throw SwiftletError(.unavailable, "store.unavailable", "the database is unreachable (injected)")
        }
        return try await base.appendHostChanges(changes)
    }
    func hostChanges(hostId: String, after revision: UInt64, limit: Int) async throws(SwiftletError)
        -> HostFeedPage
    {
        try await base.hostChanges(hostId: hostId, after: revision, limit: limit)
    }
    func observeHostFeeds(_ observer: @escaping @Sendable (HostFeedSignal) -> Void) {
        base.observeHostFeeds(observer)
    }
    var routesAgentCalls: Bool { base.routesAgentCalls }
    func setWatchHolder(hostId: String, holder: String?, releasing: String?) async throws(SwiftletError) {
        try await base.setWatchHolder(hostId: hostId, holder: holder, releasing: releasing)
    }
    func watchHolder(hostId: String) async throws(SwiftletError) -> String? {
        try await base.watchHolder(hostId: hostId)
    }
    func sendAgentCall(id: String, hostId: String, body: Data) async throws(SwiftletError) {
        try await base.sendAgentCall(id: id, hostId: hostId, body: body)
    }
    func takeAgentCalls(hostId: String) async throws(SwiftletError) -> [(id: String, body: Data)] {
        try await base.takeAgentCalls(hostId: hostId)
    }
    func answerAgentCall(id: String, body: Data) async throws(SwiftletError) -> Bool {
        try await base.answerAgentCall(id: id, body: body)
    }
    func takeAgentCallAnswer(id: String) async throws(SwiftletError) -> Data? {
        try await base.takeAgentCallAnswer(id: id)
    }
    func endAgentCall(id: String) async throws(SwiftletError) { try await base.endAgentCall(id: id) }
}

/// Desired changes the store could not take are kept and appended later, in order, before any
/// change made after them: none is lost while the database is away.
@Suite struct FeedRetryTests {
    /// Host h1's link, with the watch stream of a new agent open on it.
    static func openLink(feed: any HostFeedStore) async throws -> (RemoteAgentLink, RemoteAgentLink.WatchSession) {
        let link = RemoteAgentLink(
            hostId: "h1", epoch: try await feed.feedIdentity(), feed: feed, controllerId: "c1",
            routed: RoutedCalls(), logger: Logger(label: "test"))
        let capabilities = HostCapabilities(
            cpus: 1, memoryMib: 64, hypervisors: [], hypervisorVersion: "", machineTypes: [], accelerators: [],
            chosenAccelerator: "tcg", calibrationMs: [:])
        let session = try await link.open(
            WatchRequest(revision: nil, epoch: nil, running: [:], capabilities: capabilities),
            sync: { HostSync(revision: 0, assignments: [], pools: [], imageDigests: []) })
        return (link, session)
    }

    @Test func changesTheStoreCouldNotTakeAreAppendedLaterInOrder() async throws {
        let directory = NSTemporaryDirectory() + "swiftlet-feed-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = FailingFeedStore(base: try SQLiteStore(path: directory + "/swiftlet.db"))
        let (link, session) = try await Self.openLink(feed: store)
        var received = session.stream.makeAsyncIterator()
        guard case .sync = await received.next() else { throw TestFailure("a new agent gets a full sync first") }

        store.failing.store(true, ordering: .releasing)
        await link.apply(.removePool(id: "a"), pendingCommit: nil)
        await link.apply(.removePool(id: "b"), pendingCommit: nil)
        await link.appendUnappended()
        #expect(try await store.hostChanges(hostId: "h1", after: 0, limit: 10).latest == 0)
        // The store is back: a new change waits behind the kept ones.
        store.failing.store(false, ordering: .releasing)
        await link.apply(.removePool(id: "c"), pendingCommit: nil)
        #expect(try await store.hostChanges(hostId: "h1", after: 0, limit: 10).latest == 0)
        await link.appendUnappended()

        var events: [WatchEvent] = []
        while events.count < 3, case .event(let event) = await received.next() { events.append(event) }
        #expect(events.map(\.revision) == [1, 2, 3])
        #expect(events.map(\.change) == [.removePool(id: "a"), .removePool(id: "b"), .removePool(id: "c")])
        let feed = try await store.hostChanges(hostId: "h1", after: 0, limit: 10)
        let decoder = SwiftletJSON.decoder()
        #expect(try feed.entries.map { try decoder.decode(DesiredChange.self, from: $0.body) } == events.map(\.change))
        link.disconnect()
        await session.end()
    }

    /// Appends racing each other (and the pump) reach the agent once each, in the order of their
    /// revisions, and an assignment committed with its record carries the time of that commit.
    @Test func racingAppendsReachTheAgentInOrderOfRevision() async throws {
        let directory = NSTemporaryDirectory() + "swiftlet-feed-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteStore(path: directory + "/swiftlet.db")
        let (link, session) = try await Self.openLink(feed: store)
        var received = session.stream.makeAsyncIterator()
        guard case .sync = await received.next() else { throw TestFailure("a new agent gets a full sync first") }
        let pump = Task { await session.pump() }
        // Ends the stream should a change never come, so that the test fails instead of hanging.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(30))
            link.disconnect()
        }

        let total = 40
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<total {
                group.addTask {
                    await link.apply(.removePool(id: "p\(index)"), pendingCommit: nil)
                    // Now and then the pump is woken as by another controller's append.
                    if index % 7 == 0 { link.wake() }
                }
            }
        }
        let image = Image(
            id: "img", projectId: Project.adminProjectId, name: "img", kind: .pvh,
            sha256: String(repeating: "0", count: 64),
            sizeBytes: 1, properties: [:], createdAt: Date())
        let instance = Instance(
            id: "i-1", projectId: Project.adminProjectId, name: "one", imageId: image.id, flavor: nil, vcpus: 1,
            memoryMib: 16, args: [], restartPolicy: .no, publishedPorts: [], state: .building, hostId: "h1",
            timeline: .starting(at: monotonicNanos()), createdAt: Date(), updatedAt: Date())
        try await store.createImage(image)
        let assignment = Assignment(
            instance: instance, generation: 1, desired: .running,
            boot: BootImage(image: image))
        let before = monotonicNanos()
        try await RemoteAgentLink.commit([(link, .assign(assignment))]) { feed throws(SwiftletError) in
            try await store.createInstances([instance], claim: nil, feed: feed)
        }

        var events: [WatchEvent] = []
        while events.count < total + 1, case .event(let event) = await received.next() { events.append(event) }
        #expect(events.map(\.revision) == Array(1...UInt64(total + 1)))
        #expect(Set(events.prefix(total).map { "\($0.change)" }).count == total)
        guard case .assign(let delivered) = events.last?.change else { throw TestFailure("the assignment comes last") }
        let persisted = try #require(delivered.instance.timeline.persisted)
        #expect(persisted >= before && persisted <= monotonicNanos())
        #expect(try await store.instance(idOrName: "i-1", projectId: nil) != nil)
        watchdog.cancel()
        link.disconnect()
        await pump.value
        await session.end()
    }
}
