import Foundation
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages

// The agent's side of a stateful migration (docs/migration.md, "Stateful migration"): the
// target boots a fresh guest that stays silent, the source's guest is quiesced and its state
// taken, the target's guest gets it and takes over (`finishIncoming`). The two guests never
// answer for the address at once: the source is paused before the target is activated.
extension HostAgent {
    /// Target: boots a fresh VM of the assignment with the instance's ports (same names and MACs
    /// as on the source) and the `standby=1` word, and returns once it is READY.
    public func prepareStandby(_ assignment: Assignment) async throws(SwiftletError) {
        let instanceId = assignment.instanceId
        try checkMoveTarget(assignment)
        let prepared: ImageCache.Prepared
        do { prepared = try await imageCache.prepare(assignment.boot) } catch {
            throw SwiftletError(.conflict, "migration.image_not_ready", "image not ready: \(error.message)")
        }
        guard prepared.profile.stateInterface == .kitConsole else {
            throw SwiftletError(
                .conflict, "migration.no_state_interface", "the image declares no state interface this host can use")
        }
        var silent = assignment
        silent.instance.args.append("standby=1")
        let spec = vmSpec(for: silent, prepared: prepared)
        let handle: VMHandle
        do {
            handle = try await driver.spawn(spec).0
        } catch {
            throw SwiftletError(.internal, "migration.prepare_failed", "cannot boot the standby guest: \(error)")
        }
        incoming[instanceId] = IncomingVM(
            handle: handle, restartPolicy: assignment.instance.restartPolicy,
            successExitStatuses: prepared.profile.successExitStatuses, standby: true)
        let ready = await waitForReady(
            events: driver.consoleEvents(handle), pattern: spec.readyPattern, timeout: .seconds(30))
        guard ready != nil, incoming[instanceId]?.handle == handle else {
            if incoming[instanceId]?.handle == handle { incoming[instanceId] = nil }
            await driver.destroy(handle)
            throw SwiftletError(.conflict, "migration.prepare_failed", "the standby guest did not become READY")
        }
        logger.info(
            "prepared a standby guest", metadata: ["instance.id": "\(instanceId)", "vm.pid": "\(handle.pid)"])
    }

    /// Source: quiesces the instance's guest, takes its state, and pauses it (it answers nothing
    /// more). A failure lets the guest serve on.
    public func exportState(instanceId: String) async throws(SwiftletError) -> StateExport {
        guard case .running(let vm) = slots[instanceId] else {
            throw SwiftletError(
                .conflict, "instance.not_running", "instance '\(instanceId)' has no running VM on host '\(hostId)'")
        }
        let channel = GuestStateChannel(driver: driver, handle: vm.handle)
        let started = ContinuousClock.now
        quiesced.insert(instanceId)
        do {
            let state = try await channel.quiesceAndExport()
            try await pauseQuiesced(vm.handle)
            let elapsed = ContinuousClock.now - started
            return StateExport(
                state: state,
                exportMs: Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
        } catch {
            quiesced.remove(instanceId)
            try? await channel.resume()
            throw error
        }
    }

    private func pauseQuiesced(_ handle: VMHandle) async throws(SwiftletError) {
        do { try await driver.pause(handle) } catch {
            throw SwiftletError(.internal, "hypervisor.failed", "cannot pause the quiesced source: \(error)")
        }
    }

    /// Target: hands the source's state to the standby guest.
    public func importState(instanceId: String, state: Data) async throws(SwiftletError) {
        guard let vm = incoming[instanceId], vm.standby else {
            throw SwiftletError(
                .conflict, "migration.not_prepared",
                "host '\(hostId)' has no standby guest for instance '\(instanceId)'")
        }
        try await GuestStateChannel(driver: driver, handle: vm.handle).importState(state)
        incoming[instanceId]?.stateImported = true
    }
}
