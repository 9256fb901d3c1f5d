import Foundation
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletStore

#if canImport(Glibc)
    import Glibc
#endif

// Snapshots as resources (docs/snapshots.md): the agent of an instance's host saves its VM's state
// while the guest runs on, the bytes reach the blob store by digest, and a new instance created
// from the snapshot restores that state on any host instead of booting.
extension Controller {
    var snapshotStore: any SnapshotStore {
        get throws(SwiftletError) {
            guard let store = store as? any SnapshotStore else {
                throw SwiftletError(.internal, "snapshot.unsupported_store", "this store keeps no snapshots")
            }
            return store
        }
    }

    /// Saves a RUNNING instance's VM state as a snapshot of its project (201, synchronous: a
    /// unikernel's state is written in milliseconds). The instance runs on.
    public func createSnapshot(of idOrName: String, _ request: CreateSnapshotRequest, by principal: Principal)
        async throws(SwiftletError) -> Snapshot
    {
        let snapshots = try snapshotStore
        let instance = try await self.instance(idOrName, by: principal)
        let name = request.name ?? "\(instance.name)-\(Int(Date().timeIntervalSince1970))"
        try ResourceID.validateName(name)
        guard instance.state == .running, let hostId = instance.hostId else {
            throw SwiftletError(
                .conflict, "snapshot.not_running",
                "only a RUNNING instance is snapshotted; '\(instance.name)' is \(instance.state.rawValue)")
        }
        if let task = instance.task {
            throw SwiftletError(
                .conflict, "snapshot.instance_moving",
                "instance '\(instance.name)' is moving to '\(task.to)': snapshot it once it is there")
        }
        guard (instance.ports ?? []).isEmpty else {
            throw SwiftletError(
                .conflict, "snapshot.networks_unsupported",
                "instance '\(instance.name)' has ports on networks, whose addresses a restored copy would share")
        }
        // Checked before the state is saved; the store's unique index settles a race.
        if try await snapshots.snapshot(idOrName: name, projectId: instance.projectId)?.name == name {
            throw SwiftletError(
                .conflict, "snapshot.duplicate_name", "a snapshot named '\(name)' already exists in the project")
        }
        let saved = try await link(for: instance).saveSnapshot(instanceId: instance.id)
        try takeSavedState(saved)
        let snapshot = Snapshot(
            id: ResourceID.make("snap"), projectId: instance.projectId, name: name, instanceId: instance.id,
            imageId: instance.imageId, sha256: saved.sha256, sizeBytes: saved.sizeBytes, memoryMib: saved.memoryMib,
            vcpus: saved.vcpus, machineType: saved.machineType, hypervisor: saved.hypervisor,
            hypervisorVersion: saved.hypervisorVersion, args: instance.args, publishedPorts: instance.publishedPorts,
            hostId: hostId, pausedMs: saved.pausedMs, createdAt: Date())
        do { try await snapshots.createSnapshot(snapshot) } catch {
            await dropBytesIfUnnamed(saved.sha256)
            throw error
        }
        try? await store.addEvent(
            instanceId: instance.id, type: "snapshot",
            message:
                "snapshot '\(name)' saved (\(saved.sizeBytes) bytes, guest paused \(String(format: "%.1f", saved.pausedMs)) ms)"
        )
        logger.info(
            "snapshot saved",
            metadata: [
                "snapshot.id": "\(snapshot.id)", "instance.id": "\(instance.id)", "snapshot.sha256": "\(saved.sha256)",
            ])
        return snapshot
    }

    /// Puts the bytes of a state the in-process agent saved into the blob store (a remote agent
    /// sent them already, by digest).
    private func takeSavedState(_ saved: SavedSnapshot) throws(SwiftletError) {
        let target = blobs.path(sha256: saved.sha256)
        if blobs.contains(sha256: saved.sha256) {
            unlink(saved.path)
            return
        }
        guard access(saved.path, R_OK) == 0 else {
            throw SwiftletError(
                .internal, "snapshot.bytes_missing",
                "the saved state \(saved.sha256) reached neither here nor the store")
        }
        // A rename on one filesystem; a copy else (the agent hashed these bytes on this machine).
        do { try FileManager.default.moveItem(atPath: saved.path, toPath: target) } catch {
            unlink(saved.path)
            throw SwiftletError(.internal, "snapshot.store_failed", "cannot keep the saved state: \(error)")
        }
    }

    private func dropBytesIfUnnamed(_ sha256: String) async {
        // Kept when in doubt (the store did not answer): a blob too many, never one missing.
        guard (try? await instanceSync.snapshotDigests().contains(sha256)) == false,
            (try? await store.images(projectId: nil).contains { $0.sha256 == sha256 }) == false
        else { return }
        blobs.remove(sha256: sha256)
        for link in agents.all { await link.apply(.evictImage(sha256: sha256), pendingCommit: nil) }
    }

    public func snapshots(by principal: Principal) async throws(SwiftletError) -> [Snapshot] {
        try await snapshotStore.snapshots(projectId: scope(principal))
    }

    public func snapshot(_ idOrName: String, by principal: Principal) async throws(SwiftletError) -> Snapshot {
        guard let snapshot = try await snapshotStore.snapshot(idOrName: idOrName, projectId: scope(principal)) else {
            throw .notFound("snapshot", idOrName)
        }
        return snapshot
    }

    /// Removes the record, and the bytes once nothing names their digest. Instances restored from
    /// it run on; one that must start again (a restart) fails to with a clear reason.
    public func deleteSnapshot(_ idOrName: String, by principal: Principal) async throws(SwiftletError) {
        let snapshot = try await snapshot(idOrName, by: principal)
        let shared = try await snapshotStore.deleteSnapshot(id: snapshot.id)
        if !shared {
            blobs.remove(sha256: snapshot.sha256)
            for link in agents.all { await link.apply(.evictImage(sha256: snapshot.sha256), pendingCommit: nil) }
        }
    }

    /// A create from a snapshot: the request takes the snapshot's image, shape and config words,
    /// and is refused (400) where it asks for anything else the saved VM cannot be.
    func snapshotLaunch(_ request: inout CreateInstanceRequest, by principal: Principal) async throws(SwiftletError)
        -> Snapshot?
    {
        guard let idOrName = request.fromSnapshot else { return nil }
        let snapshot = try await snapshot(idOrName, by: principal)
        if !request.image.isEmpty {
            let named = try await image(request.image, by: principal)
            guard named.id == snapshot.imageId else {
                throw .badRequest(
                    "snapshot.image_mismatch",
                    "snapshot '\(snapshot.name)' is of image \(snapshot.imageId), not '\(request.image)'")
            }
        }
        if request.flavor != nil || (request.memoryMib ?? snapshot.memoryMib) != snapshot.memoryMib
            || (request.vcpus ?? snapshot.vcpus) != snapshot.vcpus
        {
            throw .badRequest(
                "snapshot.shape_fixed",
                "snapshot '\(snapshot.name)' holds a VM of \(snapshot.memoryMib) MiB and \(snapshot.vcpus) vCPUs: "
                    + "give no flavor, memory or vCPUs")
        }
        if !(request.networks ?? []).isEmpty {
            throw .badRequest(
                "snapshot.networks_unsupported", "an instance created from a snapshot cannot be attached to networks")
        }
        // The user-mode NIC is part of the saved devices: it must be there again, or not at all.
        let args = request.args ?? snapshot.args
        let hadNIC = !snapshot.publishedPorts.isEmpty || snapshot.args.contains { $0.hasPrefix("ip=") }
        let hasNIC = !(request.publish ?? []).isEmpty || args.contains { $0.hasPrefix("ip=") }
        guard hadNIC == hasNIC else {
            throw .badRequest(
                "snapshot.devices_mismatch",
                hadNIC
                    ? "snapshot '\(snapshot.name)' is of a VM with a user-mode NIC: publish a port (or give ip=)"
                    : "snapshot '\(snapshot.name)' is of a VM without a user-mode NIC: publish no port")
        }
        request.image = snapshot.imageId
        request.memoryMib = snapshot.memoryMib
        request.vcpus = snapshot.vcpus
        request.args = args
        return snapshot
    }
}

extension InstanceSync {
    /// The snapshot an instance's VM starts from, if it has one.
    func snapshot(of instance: Instance) async throws(SwiftletError) -> Snapshot? {
        guard let id = instance.snapshotId else { return nil }
        guard let store = store as? any SnapshotStore,
            let snapshot = try await store.snapshot(idOrName: id, projectId: nil)
        else { throw .notFound("snapshot", id) }
        return snapshot
    }

    /// Every digest a snapshot names: the agents may fetch those bytes, and keep them cached.
    func snapshotDigests() async throws(SwiftletError) -> Set<String> {
        guard let store = store as? any SnapshotStore else { return [] }
        return Set(try await store.snapshots(projectId: nil).map(\.sha256))
    }
}
