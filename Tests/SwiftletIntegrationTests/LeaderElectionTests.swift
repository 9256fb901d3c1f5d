import Foundation
import Logging
import ServiceLifecycle
import SwiftletCore
import SwiftletStore
import Synchronization
import Testing

@testable import SwiftletController

/// Two controllers' elections on one store, in process, with short leases.
@Suite struct LeaderElectionTests {
    // Long enough that a loaded machine (make test runs suites in parallel) does not stall a
    // renewal past the lease, short enough to keep the takeover quick.
    static let renew: Duration = .milliseconds(50)
    static let lease: Duration = .seconds(5)

    /// A leader whose store calls hang (a stalled process, a cut link) stops leading by its own
    /// clock before the other takes over, and the other does within a bound.
    @Test func aStalledLeaderStopsBeforeAnotherTakesOver() async throws {
        try await withStore { base in
            let stores = [StallingStore(base), StallingStore(base)]
            let elections = (0..<2).map {
                LeaderElection(
                    store: stores[$0], holder: "c\($0)", renewInterval: Self.renew, leaseDuration: Self.lease,
                    logger: Self.logger)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for election in elections { group.addTask { try await election.run() } }
                let leader = try await Self.until("one leads") {
                    elections.firstIndex { $0.currentTerm != nil }
                }
                let term = try #require(elections[leader].currentTerm)
                // Renewals keep it; the other never leads meanwhile.
                for _ in 0..<20 {
                    #expect(elections[1 - leader].currentTerm == nil)
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(elections[leader].currentTerm == term)

                stores[leader].stalled.store(true, ordering: .sequentiallyConsistent)
                let stalled = ContinuousClock.now
                var both = false
                let next = try await Self.until("the other takes over") { () -> UInt64? in
                    let terms = elections.map(\.currentTerm)
                    if terms[0] != nil && terms[1] != nil { both = true }
                    return terms[1 - leader]
                }
                let takeover = ContinuousClock.now - stalled
                #expect(!both, "two leaders at once")
                #expect(next > term)
                // A bound for "it happens", not a figure: make test loads the machine (bench/controllers.py
                // measures failover).
                #expect(takeover < Self.lease + .seconds(15), "\(takeover)")
                #expect(elections[leader].currentTerm == nil)
                group.cancelAll()
            }
        }
    }

    /// A graceful shutdown releases the lease: the other takes over long before it would expire.
    @Test func aGracefulShutdownHandsOverAtOnce() async throws {
        try await withStore { store in
            // So long that only the release lets the other in while the test waits: no wall-clock
            // bound is needed, which a loaded `make test` (suites in parallel) cannot keep.
            let long: Duration = .seconds(600)
            let first = LeaderElection(
                store: store, holder: "first", renewInterval: Self.renew, leaseDuration: long, logger: Self.logger)
            let second = LeaderElection(
                store: store, holder: "second", renewInterval: Self.renew, leaseDuration: long, logger: Self.logger)
            let group = ServiceGroup(
                configuration: .init(services: [.init(service: first)], logger: Self.logger))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let term = try await Self.until("the first leads") { first.currentTerm }
                tasks.addTask { try await second.run() }
                try await Task.sleep(for: .milliseconds(100))
                #expect(second.currentTerm == nil)

                await group.triggerGracefulShutdown()
                let next = try await Self.until("the second takes over", within: .seconds(120)) {
                    second.currentTerm
                }
                #expect(next == term + 1)
                #expect(first.currentTerm == nil)
                tasks.cancelAll()
            }
        }
    }

    static var logger: Logger {
        var logger = Logger(label: "test.leader")
        logger.logLevel = .notice
        return logger
    }

    private func withStore(_ body: (SQLiteStore) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-leader-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await body(try SQLiteStore(path: directory + "/store.sqlite"))
    }

    /// Polls `value` until it is not nil.
    static func until<T>(_ what: String, within limit: Duration = .seconds(30), _ value: () -> T?) async throws -> T {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < limit {
            if let found = value() { return found }
            try await Task.sleep(for: .milliseconds(2))
        }
        Issue.record("timed out waiting until \(what)")
        throw CancellationError()
    }
}

/// Passes calls on to a store until stalled; then each call hangs until cancelled.
final class StallingStore: LeadershipStore {
    let base: any LeadershipStore
    let stalled = Atomic(false)

    init(_ base: any LeadershipStore) { self.base = base }

    private func pass() async throws(SwiftletError) {
        while stalled.load(ordering: .sequentiallyConsistent) {
            do { try await Task.sleep(for: .seconds(1)) } catch {
                throw SwiftletError(.unavailable, "test.stalled", "cancelled while stalled")
            }
        }
    }

    func renewHostLease(hostId: String) async throws(SwiftletError) {
        try await pass()
        try await base.renewHostLease(hostId: hostId)
    }

    func hostLeaseAges() async throws(SwiftletError) -> [String: Duration] {
        try await pass()
        return try await base.hostLeaseAges()
    }

    func forgetHostLease(hostId: String) async throws(SwiftletError) {
        try await pass()
        try await base.forgetHostLease(hostId: hostId)
    }

    func acquireLease(name: String, holder: String, duration: Duration) async throws(SwiftletError) -> UInt64? {
        try await pass()
        return try await base.acquireLease(name: name, holder: holder, duration: duration)
    }

    func releaseLease(name: String, holder: String) async throws(SwiftletError) {
        try await pass()
        try await base.releaseLease(name: name, holder: holder)
    }
}
