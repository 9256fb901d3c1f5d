import Foundation

/// A running instance's whole VM state (memory and devices), kept by the controller as a blob by
/// digest, like an image's bytes: an instance created from it runs on from where it was saved
/// instead of booting (docs/snapshots.md).
public struct Snapshot: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    /// Unique in the project.
    public var name: String
    /// The instance it was taken of (it may be gone since).
    public var instanceId: String
    /// The image the instance booted: its kernel is loaded again by the VMM a restore starts.
    public var imageId: String
    /// Of the state file, in the blob store.
    public var sha256: String
    public var sizeBytes: Int64
    /// The shape a restored VM must have: the state holds that much memory and those vCPUs.
    public var memoryMib: Int
    public var vcpus: Int
    public var machineType: String?
    /// The hypervisor and version that wrote it: only the same reads it.
    public var hypervisor: String
    public var hypervisorVersion: String
    /// The instance's config words and published ports when it was taken: they decide the VM's
    /// devices, which a restored VM must have the same.
    public var args: [String]
    public var publishedPorts: [PublishedPort]
    /// The host whose agent saved it.
    public var hostId: String
    /// How long the guest was paused while its state was written.
    public var pausedMs: Double
    public var createdAt: Date

    public init(
        id: String, projectId: String, name: String, instanceId: String, imageId: String, sha256: String,
        sizeBytes: Int64, memoryMib: Int, vcpus: Int, machineType: String?, hypervisor: String,
        hypervisorVersion: String, args: [String], publishedPorts: [PublishedPort], hostId: String,
        pausedMs: Double, createdAt: Date
    ) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.instanceId = instanceId
        self.imageId = imageId
        self.sha256 = sha256
        self.sizeBytes = sizeBytes
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.machineType = machineType
        self.hypervisor = hypervisor
        self.hypervisorVersion = hypervisorVersion
        self.args = args
        self.publishedPorts = publishedPorts
        self.hostId = hostId
        self.pausedMs = pausedMs
        self.createdAt = createdAt
    }
}

/// `POST /v1/instances/{id}/snapshot`.
public struct CreateSnapshotRequest: Codable, Sendable {
    /// Defaults to `<instance>-<time>`.
    public var name: String?

    public init(name: String? = nil) { self.name = name }
}

public struct SnapshotList: Codable, Sendable {
    public var snapshots: [Snapshot]

    public init(_ snapshots: [Snapshot]) { self.snapshots = snapshots }
}
