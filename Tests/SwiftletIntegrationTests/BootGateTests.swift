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
                    await gate.run { _ in
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
        await #expect(throws: Boom.self) { try await gate.run { _ in throw Boom() } }
        // The only slot is free again: this would wait forever otherwise.
        #expect(await gate.run { _ in 42 } == 42)
    }

    /// The agent lets a boot use huge pages only when it is alone on the host.
    @Test func tellsABootWhetherItIsAlone() async {
        let gate = BootGate(limit: 2)
        #expect(await gate.run { alone in alone })
        let (entered, enteredContinuation) = AsyncStream<Void>.makeStream()
        let (release, releaseContinuation) = AsyncStream<Void>.makeStream()
        let first = Task {
            await gate.run { alone in
                enteredContinuation.yield()
                for await _ in release { break }
                return alone
            }
        }
        for await _ in entered { break }
        #expect(await gate.run { alone in alone } == false, "another boot is in flight")
        releaseContinuation.yield()
        #expect(await first.value, "the first boot was alone when it started")
    }
}
