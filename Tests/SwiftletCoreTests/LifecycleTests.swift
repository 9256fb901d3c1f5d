import Testing

@testable import SwiftletCore

@Suite struct LifecycleTests {
    @Test func legalCommands() throws {
        #expect(try InstanceLifecycle.apply(.pause, to: .running) == .paused)
        #expect(try InstanceLifecycle.apply(.resume, to: .paused) == .running)
        #expect(try InstanceLifecycle.apply(.stop, to: .running) == .stopped)
        #expect(try InstanceLifecycle.apply(.start, to: .stopped) == .building)
        #expect(try InstanceLifecycle.apply(.start, to: .error) == .building)
        #expect(try InstanceLifecycle.apply(.delete, to: .error) == .deleted)
        #expect(InstanceCommand.stop.action == .shutdown)
    }

    @Test(arguments: [
        (InstanceCommand.pause, InstanceState.stopped), (.resume, .running), (.start, .running), (.reboot, .paused),
        (.stop, .stopped), (.delete, .deleted),
    ])
    func illegalCommandsAreConflicts(command: InstanceCommand, state: InstanceState) {
        #expect(throws: SwiftletError.self) { try InstanceLifecycle.apply(command, to: state) }
        do { _ = try InstanceLifecycle.apply(command, to: state) } catch {
            #expect(error.kind.httpStatus == 409)
        }
    }

    @Test func restartPolicies() {
        let crash = InstanceObservation.exited(clean: false, reason: "boom")
        let clean = InstanceObservation.exited(clean: true, reason: "poweroff")
        #expect(InstanceLifecycle.observe(crash, in: .running, policy: .no) == (.error, false))
        #expect(InstanceLifecycle.observe(clean, in: .running, policy: .no) == (.stopped, false))
        #expect(InstanceLifecycle.observe(crash, in: .running, policy: .onFailure) == (.building, true))
        #expect(InstanceLifecycle.observe(clean, in: .running, policy: .onFailure) == (.stopped, false))
        #expect(InstanceLifecycle.observe(clean, in: .running, policy: .always) == (.building, true))
        #expect(InstanceLifecycle.observe(.ready, in: .building, policy: .no) == (.running, false))
        // A user stop is not undone by the VM's exit.
        #expect(InstanceLifecycle.observe(crash, in: .stopped, policy: .always) == (.stopped, false))
    }

    @Test func publishedPorts() throws {
        #expect(try PublishedPort.parse("8080:80") == PublishedPort(hostPort: 8080, guestPort: 80))
        #expect(try PublishedPort.parse("5353:53/udp").proto == "udp")
        for bad in ["80", "0:80", "a:b", "1:2:3", "8080:80/sctp", "70000:80", ""] {
            #expect(throws: SwiftletError.self) { try PublishedPort.parse(bad) }
        }
    }

    @Test func names() throws {
        try ResourceID.validateName("web-1.a_b")
        for bad in ["", "a/b", "..", ".hidden", "a b", String(repeating: "x", count: 64), "../etc"] {
            #expect(throws: SwiftletError.self) { try ResourceID.validateName(bad) }
        }
    }

    @Test func timelineDurations() {
        var timeline = Timeline.starting(at: 1000)
        timeline.persisted = 1500
        timeline.vmmSpawned = 3000
        timeline.ready = 10000
        #expect(timeline.total == 9000)
        #expect(timeline.phaseDurations.map(\.1) == [500, 1500, 7000])
        // A VMM spawned before the record committed: phases follow time, not the enum's order.
        timeline.persisted = 4000
        #expect(timeline.phaseDurations.map(\.0) == [.vmmSpawned, .persisted, .ready])
        #expect(timeline.phaseDurations.map(\.1) == [2000, 1000, 6000])
        // The agent took the boot (scheduled) before the insert committed (persisted): each
        // duration is from the phase before it in time, never an unsigned wrap-around.
        timeline.scheduled = 1200
        #expect(timeline.phasesInTimeOrder.map(\.0) == [Phase.accepted, .scheduled, .vmmSpawned, .persisted, .ready])
        #expect(timeline.phaseDurations.map(\.1) == [200, 1800, 1000, 6000])
        #expect(Percentile.of([5, 1, 3, 2, 4], 50) == 3)
        #expect(Percentile.of([5, 1, 3, 2, 4], 90) == 5)
        #expect(Percentile.of([], 50) == nil)
    }
}
