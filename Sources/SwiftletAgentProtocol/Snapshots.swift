import Foundation
import SwiftletCore

/// The agent's account of a VM state it saved (docs/snapshots.md): the bytes are at `path` on its
/// host until they reach the controller's blob store by digest.
public struct SavedSnapshot: Codable, Sendable, Equatable {
    public var path: String
    public var sha256: String
    public var sizeBytes: Int64
    public var hypervisor: String
    public var hypervisorVersion: String
    public var memoryMib: Int
    public var vcpus: Int
    public var machineType: String?
    /// How long the guest was paused while its state was written.
    public var pausedMs: Double

    public init(
        path: String, sha256: String, sizeBytes: Int64, hypervisor: String, hypervisorVersion: String,
        memoryMib: Int, vcpus: Int, machineType: String?, pausedMs: Double
    ) {
        self.path = path
        self.sha256 = sha256
        self.sizeBytes = sizeBytes
        self.hypervisor = hypervisor
        self.hypervisorVersion = hypervisorVersion
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.machineType = machineType
        self.pausedMs = pausedMs
    }
}
