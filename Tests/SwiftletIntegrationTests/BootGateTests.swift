import Synchronization
import Testing

@testable import SwiftletAgent

private final class Counters: Sendable {
    let running = Atomic(0)
    let peak = Atomic(0)
    let finished = Atomic(0)
}

@Suite struct BootGateTests {
    @Test func neverRunsMoreThanTheLimitAndRunsEveryone() async {
        let gate = BootGate(limit: 2)
        let counters = Counters()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<12 {
                group.addTask {
                    await gate.run {
                        let now = counters.running.add(1, ordering: .sequentiallyConsistent).newValue
                        counters.peak.max(now, ordering: .sequentiallyConsistent)
                        try? await Task.sleep(for: .milliseconds(5))
                        counters.running.subtract(1, ordering: .sequentiallyConsistent)
                        counters.finished.add(1, ordering: .sequentiallyConsistent)
                    }
                }
            }
        }
        #expect(counters.finished.load(ordering: .sequentiallyConsistent) == 12)
        #expect(counters.peak.load(ordering: .sequentiallyConsistent) == 2)
    }

    @Test func aThrowingBodyGivesItsSlotBack() async {
        struct Boom: Error {}
        let gate = BootGate(limit: 1)
        await #expect(throws: Boom.self) { try await gate.run { throw Boom() } }
        // The only slot is free again: this would wait forever otherwise.
        #expect(await gate.run { 42 } == 42)
    }
}
