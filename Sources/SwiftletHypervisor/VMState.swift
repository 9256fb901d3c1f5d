import Foundation
import SwiftletCore
import Synchronization

/// What a driver can do to move a VM's state (the mobility issue's steps build on these).
public struct VMMoves: Codable, Sendable, Equatable {
    /// Save a VM's whole state to a file and start a VM from it.
    public var snapshot: Bool
    /// Stream a running VM's state to a VMM on another host while the guest runs.
    public var liveMigration: Bool

    public init(snapshot: Bool, liveMigration: Bool) {
        self.snapshot = snapshot
        self.liveMigration = liveMigration
    }
}

/// A VM's whole state (memory and devices) saved in a file, in the hypervisor's own format; with
/// what a VM restored from it must match.
public struct VMSnapshot: Codable, Sendable, Equatable {
    public var path: String
    public var sizeBytes: Int64
    /// The hypervisor and version that wrote it: a stream is read only by the same.
    public var hypervisor: String
    public var hypervisorVersion: String
    public var memoryMiB: Int
    public var vcpus: Int
    public var machineType: String?
    /// How long the guest was paused while its state was written (ns).
    public var pausedNanoseconds: UInt64

    public init(
        path: String, sizeBytes: Int64, hypervisor: String, hypervisorVersion: String, memoryMiB: Int, vcpus: Int,
        machineType: String?, pausedNanoseconds: UInt64
    ) {
        self.path = path
        self.sizeBytes = sizeBytes
        self.hypervisor = hypervisor
        self.hypervisorVersion = hypervisorVersion
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.machineType = machineType
        self.pausedNanoseconds = pausedNanoseconds
    }

    /// Why a VM of `spec` on `hypervisor` `version` cannot start from this snapshot, or nil.
    public func mismatch(with spec: VMSpec, hypervisor: String, version: String) -> String? {
        if self.hypervisor != hypervisor || hypervisorVersion != version {
            return "the snapshot was written by \(self.hypervisor) \(hypervisorVersion), this host runs "
                + "\(hypervisor) \(version)"
        }
        if spec.memoryMiB != memoryMiB || spec.vcpus != vcpus {
            return "the snapshot is of a VM with \(memoryMiB) MiB and \(vcpus) vCPUs, not \(spec.memoryMiB) MiB "
                + "and \(spec.vcpus)"
        }
        if let machineType, let wanted = spec.machineType, wanted != machineType {
            return "the snapshot is of a \(machineType) machine, not \(wanted)"
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value
        guard let size else { return "the snapshot file \(path) cannot be read" }
        if size != sizeBytes {
            return "the snapshot file is \(size) bytes, not the \(sizeBytes) written: it is cut short"
        }
        return nil
    }
}

/// Lets a live migration in progress be called off: the transfer stops, the source runs on.
public final class MoveCancellation: Sendable, Equatable {
    private let flag = Atomic(false)

    public init() {}

    public var isCancelled: Bool { flag.load(ordering: .acquiring) }
    public func cancel() { flag.store(true, ordering: .releasing) }

    public static func == (a: MoveCancellation, b: MoveCancellation) -> Bool { a === b }
}

/// How a live migration transfers the guest's memory.
public struct LiveMigrationSettings: Sendable, Equatable {
    /// The longest the guest may be paused for the last pass (QEMU's `downtime-limit`).
    public var downtimeLimitMilliseconds: Int
    /// Throttles the guest's vCPUs when it dirties memory faster than the link carries it.
    public var autoConverge: Bool
    /// QEMU's `max-bandwidth` (its default, 32 MiB/s, is for links shared with other traffic).
    public var maxBandwidthBytesPerSecond: Int
    /// How long the whole transfer may take.
    public var timeout: Duration
    /// Checked while the state is sent: once cancelled, the transfer is called off.
    public var cancellation: MoveCancellation?
    /// The source's end of an encrypted stream (nil: in the clear).
    public var tls: MigrationCredentials?

    public init(
        downtimeLimitMilliseconds: Int = 300, autoConverge: Bool = true,
        maxBandwidthBytesPerSecond: Int = 1 << 30, timeout: Duration = .seconds(120),
        cancellation: MoveCancellation? = nil, tls: MigrationCredentials? = nil
    ) {
        self.tls = tls
        self.cancellation = cancellation
        self.downtimeLimitMilliseconds = downtimeLimitMilliseconds
        self.autoConverge = autoConverge
        self.maxBandwidthBytesPerSecond = maxBandwidthBytesPerSecond
        self.timeout = timeout
    }
}

/// A live migration's account, from the source.
public struct LiveMigrationResult: Sendable, Equatable {
    /// How long the guest was paused for the last pass, as QEMU measured it (whole ms).
    public var downtimeMilliseconds: Int
    public var totalNanoseconds: UInt64
    public var transferredBytes: Int64

    public init(downtimeMilliseconds: Int, totalNanoseconds: UInt64, transferredBytes: Int64) {
        self.downtimeMilliseconds = downtimeMilliseconds
        self.totalNanoseconds = totalNanoseconds
        self.transferredBytes = transferredBytes
    }
}

extension HypervisorDriver {
    public func prepareIncoming(_ spec: VMSpec, address: String, port: Int, tls: MigrationCredentials?) async throws
        -> VMHandle
    {
        throw HypervisorError.unsupported("this hypervisor cannot receive a live migration")
    }

    public func migrateOut(_ handle: VMHandle, to address: String, port: Int, settings: LiveMigrationSettings)
        async throws -> LiveMigrationResult
    {
        throw HypervisorError.unsupported("this hypervisor cannot migrate a VM live")
    }

    public func finishIncoming(_ handle: VMHandle, timeout: Duration) async throws {
        throw HypervisorError.unsupported("this hypervisor cannot receive a live migration")
    }

    public func moves() async -> VMMoves { VMMoves(snapshot: false, liveMigration: false) }

    public func saveState(_ handle: VMHandle, to path: String, resume: Bool) async throws -> VMSnapshot {
        throw HypervisorError.unsupported("this hypervisor cannot save a VM's state")
    }

    public func restore(_ spec: VMSpec, from snapshot: VMSnapshot) async throws -> (VMHandle, BootTimestamps) {
        throw HypervisorError.unsupported("this hypervisor cannot start a VM from a saved state")
    }

    public func prepareRestore(_ spec: VMSpec) async throws -> VMHandle {
        throw HypervisorError.unsupported("this hypervisor cannot hold a VM for a saved state")
    }

    public func loadState(_ handle: VMHandle, from snapshot: VMSnapshot) async throws {
        throw HypervisorError.unsupported("this hypervisor cannot hold a VM for a saved state")
    }
}
