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
        var handle: VMHandle
        var times: BootTimestamps
        let held = await loadIntoHeldVMM(state, snapshot: snapshot, spec: spec)
        if let held {
            (handle, times) = held
        } else {
            do {
                let driver = self.driver
                (handle, times) = try await bootGate.run { _ in try await driver.restore(spec, from: state) }
            } catch {
                await bootFailed(
                    instanceId, "cannot restore snapshot '\(snapshot.name)': \(error)", timeline: timeline, after: nil)
                return
            }
        }
        // The next restore of this snapshot here skips the VMM's start.
        holdVMM(like: spec, for: snapshot.sha256)
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
        let startMs = Double(restored - times.spawned) / 1e6
        let restoreEvent = EventNote(
            type: "restore",
            message: "restored from snapshot '\(snapshot.name)' (\(snapshot.sizeBytes) bytes) instead of a boot, "
                + (held == nil ? "into a new VMM" : "into a VMM held ready")
                + " in \(String(format: "%.1f", startMs)) ms")
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

    // MARK: VMMs held for a restore

    /// Starts, in the background, a VMM like `spec`'s held for the next restore of the snapshot
    /// `sha256` on this host, unless one is held or starting. Not for VMs with ports on networks
    /// (their TAPs are named after the instance) nor published ports (given when one is taken).
    func holdVMM(like spec: VMSpec, for sha256: String) {
        guard spec.networkPorts.isEmpty, heldForRestore[sha256] == nil, !holding.contains(sha256) else { return }
        holding.insert(sha256)
        var held = spec
        held.instanceID = ResourceID.make("held")
        held.runtimeDirectory = runRoot + "/" + held.instanceID
        held.userNetwork = spec.userNetwork || !spec.publishedPorts.isEmpty
        held.publishedPorts = []
        let driver = self.driver
        // Off the restore's path: the instance that asked is RUNNING already.
        Task {
            let handle = try? await driver.prepareRestore(held)
            await self.heldVMMStarted(handle, for: sha256, like: spec)
        }
    }

    private func heldVMMStarted(_ handle: VMHandle?, for sha256: String, like spec: VMSpec) async {
        guard holding.remove(sha256) != nil, let handle else {
            // The snapshot was dropped meanwhile.
            if let handle { await driver.destroy(handle) }
            return
        }
        heldForRestore[sha256] = HeldVMM(handle: handle, spec: spec)
    }

    /// The held VMM for the snapshot, if its shape is the spec's, with the state loaded into it
    /// and the spec's ports published; nil (the caller starts a VMM) when there is none or the
    /// load failed (the held VMM is ended).
    private func loadIntoHeldVMM(_ state: VMSnapshot, snapshot: Snapshot, spec: VMSpec) async -> (
        VMHandle, BootTimestamps
    )? {
        guard let held = heldForRestore[snapshot.sha256], held.fits(spec) else { return nil }
        heldForRestore[snapshot.sha256] = nil
        let started = monotonicNanos()
        do {
            try await driver.loadState(held.handle, from: state)
            for port in spec.publishedPorts { try await driver.publishPort(held.handle, port) }
        } catch {
            logger.warning(
                "a held VMM did not take the state, starting a new one",
                metadata: ["instance.id": "\(spec.instanceID)", "error": "\(error)"])
            await driver.destroy(held.handle)
            return nil
        }
        return (held.handle, BootTimestamps(spawned: started, vmmUp: monotonicNanos()))
    }

    /// Ends the VMM held for the snapshot `sha256` (its bytes are gone, or the agent stops).
    func dropHeldVMM(sha256: String) async {
        holding.remove(sha256)
        if let held = heldForRestore.removeValue(forKey: sha256) { await driver.destroy(held.handle) }
    }
}

/// A VMM started ahead and paused, waiting for a saved state, and the spec it was started like.
struct HeldVMM {
    var handle: VMHandle
    var spec: VMSpec

    /// Whether a restore of `spec` can use it: the same kernel, shape and devices.
    func fits(_ other: VMSpec) -> Bool {
        spec.kernelPath == other.kernelPath && spec.initrdPath == other.initrdPath
            && spec.memoryMiB == other.memoryMiB && spec.vcpus == other.vcpus && spec.machineType == other.machineType
            && spec.bootKind == other.bootKind && other.networkPorts.isEmpty
            && (spec.userNetwork || !spec.publishedPorts.isEmpty)
                == (other.userNetwork || !other.publishedPorts.isEmpty)
    }
}
