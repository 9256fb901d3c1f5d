import Foundation
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages

#if canImport(Glibc)
    import Glibc
#endif

// Snapshots on the agent's side (docs/snapshots.md): the running VM's state saved to a file the
// controller takes into its blob store, and a VM started from such a state instead of a boot.
extension HostAgent {
    /// Where saved states wait until the controller has their bytes.
    var savedStateDirectory: String { (runRoot as NSString).deletingLastPathComponent + "/saved-states" }

    /// Saves the instance's running VM's whole state; the guest is paused only while it is
    /// written and runs on. The caller takes the file (and removes it).
    public func saveSnapshot(instanceId: String) async throws(SwiftletError) -> SavedSnapshot {
        guard case .running(let vm) = slots[instanceId] else {
            throw SwiftletError(
                .conflict, "instance.not_running", "instance '\(instanceId)' has no running VM on host '\(hostId)'")
        }
        guard await driver.moves().snapshot else {
            throw SwiftletError(
                .conflict, "snapshot.unsupported", "the hypervisor of host '\(hostId)' cannot save a VM's state")
        }
        try? FileManager.default.createDirectory(atPath: savedStateDirectory, withIntermediateDirectories: true)
        let path = savedStateDirectory + "/" + ResourceID.make("state")
        let saved: VMSnapshot
        do { saved = try await driver.saveState(vm.handle, to: path, resume: true) } catch {
            unlink(path)
            throw SwiftletError(.conflict, "snapshot.save_failed", "cannot save the VM's state: \(error)")
        }
        let sha256: String
        do { sha256 = try ImageSignature.sha256(path: path) } catch {
            unlink(path)
            throw SwiftletError(.internal, "snapshot.read_failed", "cannot hash the saved state: \(error)")
        }
        logger.info(
            "saved a VM's state",
            metadata: [
                "instance.id": "\(instanceId)", "snapshot.bytes": "\(saved.sizeBytes)",
                "snapshot.paused_ms": "\(Double(saved.pausedNanoseconds) / 1e6)",
            ])
        return SavedSnapshot(
            path: path, sha256: sha256, sizeBytes: saved.sizeBytes, hypervisor: saved.hypervisor,
            hypervisorVersion: saved.hypervisorVersion, memoryMib: saved.memoryMiB, vcpus: saved.vcpus,
            machineType: saved.machineType, pausedMs: Double(saved.pausedNanoseconds) / 1e6)
    }

    /// The boot of an assignment with a snapshot: the state's bytes fetched by digest and checked,
    /// then a VMM started from them. The guest runs on from where it was saved, so it is READY the
    /// moment its state is in (it prints no READY line again).
    func restoreBoot(
        _ assignment: Assignment, snapshot: Snapshot, spec: VMSpec, prepared: ImageCache.Prepared, timeline: Timeline,
        imageEvent: EventNote, pendingCommit: PendingCommit?
    ) async {
        let instanceId = assignment.instanceId
        var timeline = timeline
        // The restored guest runs at once: only for a committed record.
        if let pendingCommit {
            guard let persisted = await pendingCommit.wait() else {
                slots[instanceId] = nil
                return
            }
            timeline.persisted = persisted
        }
        let statePath: String
        do { statePath = try await fetchSavedState(snapshot) } catch {
            await bootFailed(instanceId, "snapshot not ready: \(error.message)", timeline: timeline, after: nil)
            return
        }
        timeline.imageReady = monotonicNanos()
        let state = VMSnapshot(
            path: statePath, sizeBytes: snapshot.sizeBytes, hypervisor: snapshot.hypervisor,
            hypervisorVersion: snapshot.hypervisorVersion, memoryMiB: snapshot.memoryMib, vcpus: snapshot.vcpus,
            machineType: snapshot.machineType, pausedNanoseconds: 0)
        let handle: VMHandle
        let times: BootTimestamps
        do {
            let driver = self.driver
            (handle, times) = try await bootGate.run { _ in try await driver.restore(spec, from: state) }
        } catch {
            await bootFailed(
                instanceId, "cannot restore snapshot '\(snapshot.name)': \(error)", timeline: timeline, after: nil)
            return
        }
        let restored = monotonicNanos()
        timeline.vmmSpawned = times.spawned
        timeline.vmmUp = times.vmmUp
        timeline.ready = restored
        timeline.bootPath = "snapshot"
        guard let (generation, encodedHandle) = await keepStartedVM(instanceId, handle, timeline: timeline) else {
            return
        }
        slots[instanceId] = .running(
            RunningVM(
                generation: generation, handle: handle, supervisor: supervise(instanceId: instanceId, handle: handle),
                unreported: nil, successExitStatuses: prepared.profile.successExitStatuses))
        let loadMs = Double(restored - max(times.vmmUp, times.spawned)) / 1e6
        let restoreEvent = EventNote(
            type: "restore",
            message: "restored from snapshot '\(snapshot.name)' (\(snapshot.sizeBytes) bytes) instead of a boot; "
                + "VMM up to running in \(String(format: "%.1f", loadMs)) ms")
        await report(
            instanceId, generation,
            .ready(timeline: timeline, handle: encodedHandle, events: [imageEvent, restoreEvent]))
    }

    /// The snapshot's bytes on this host, fetched by digest into the image cache, with their size
    /// and sha256 checked: a state cut short or altered is refused before a VMM starts.
    private func fetchSavedState(_ snapshot: Snapshot) async throws(SwiftletError) -> String {
        let path = try await imageCache.fetch(sha256: snapshot.sha256).path
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw SwiftletError(.internal, "snapshot.read_failed", "cannot read the snapshot's bytes at \(path)")
        }
        guard Int64(info.st_size) == snapshot.sizeBytes else {
            imageCache.evict(sha256: snapshot.sha256)
            throw SwiftletError(
                .unprocessable, "snapshot.truncated",
                "the snapshot's bytes are \(info.st_size) long, not the \(snapshot.sizeBytes) saved: cut short")
        }
        let digest = try? ImageSignature.sha256(path: path)
        guard digest == snapshot.sha256 else {
            imageCache.evict(sha256: snapshot.sha256)
            throw SwiftletError(
                .unprocessable, "snapshot.digest_mismatch",
                "the snapshot's bytes hash to \(digest ?? "nothing"), not the saved \(snapshot.sha256): refused")
        }
        return path
    }
}
