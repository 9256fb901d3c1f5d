import Foundation
import Glibc
import SwiftletCore

/// How the VMM loads the guest: decides the machine type and the boot arguments.
public enum BootKind: String, Codable, Sendable, CaseIterable {
    /// ELF with a PVH note (XEN_ELFNOTE_PHYS32_ENTRY): `-M microvm -kernel`.
    case pvh
    /// ELF with a multiboot header: `-M pc -kernel`.
    case multiboot
    /// Linux bzImage: `-M microvm -kernel`.
    case bzImage = "bzimage"
    /// Disk image (raw or qcow2) booted by the firmware from a virtio-blk disk: `-M pc` or `q35`.
    case disk
}

/// A published port, like `docker run -p 8080:80`.
public struct PortMapping: Codable, Sendable, Hashable {
    public enum Proto: String, Codable, Sendable { case tcp, udp }
    public var hostPort: Int
    public var guestPort: Int
    public var proto: Proto
    public init(hostPort: Int, guestPort: Int, proto: Proto = .tcp) {
        self.hostPort = hostPort
        self.guestPort = guestPort
        self.proto = proto
    }
}

/// A NIC backed by an existing host TAP device (`-netdev tap,ifname=…`).
public struct TapAttachment: Codable, Sendable, Equatable {
    public var name: String
    public var mac: String
    public init(name: String, mac: String) {
        self.name = name
        self.mac = mac
    }
}

/// Everything a driver needs to start one VM. Produced by the agent from the instance spec.
public struct VMSpec: Codable, Sendable {
    public var instanceID: String
    public var kernelPath: String
    public var bootKind: BootKind
    public var memoryMiB: Int
    public var vcpus: Int
    public var commandLine: String
    public var publishedPorts: [PortMapping]
    /// Per-instance directory the driver owns (sockets, console log, pid file); removed by `destroy`.
    public var runtimeDirectory: String
    /// Regex searched on each console line; nil means the kit's `SWIFTLET-READY ` line.
    public var readyPattern: String?
    /// Attach a user-mode NIC even when no port is published (published ports always attach one).
    public var userNetwork: Bool
    /// The instance's ports on networks, in guest order: the network layer makes their TAPs.
    public var networkPorts: [NetworkPort] = []
    /// Whether the instance's security groups filter what reaches its ports.
    public var portsFiltered = false
    /// NICs on host TAP devices (made by the network layer before spawn), in guest order.
    public var taps: [TapAttachment] = []
    /// Machine type overriding the boot kind's default (`pc`, `q35`; `microvm` for PVH/bzImage).
    public var machineType: String?
    /// Linux initrd for a bzImage.
    public var initrdPath: String?
    /// Block format of a `.disk` image (`raw`, `qcow2`); given explicitly so QEMU never probes it.
    public var diskFormat: String?
    /// Let QEMU back guest RAM and its code buffer with transparent huge pages: a boot alone on the
    /// host takes fewer page faults and less CPU, many at once cost more CPU, and each VM keeps
    /// ~3 MiB more.
    public var transparentHugePages = false

    public init(
        instanceID: String, kernelPath: String, bootKind: BootKind, memoryMiB: Int, vcpus: Int,
        commandLine: String, publishedPorts: [PortMapping], runtimeDirectory: String,
        readyPattern: String? = nil, userNetwork: Bool = false, machineType: String? = nil, initrdPath: String? = nil,
        diskFormat: String? = nil
    ) {
        self.instanceID = instanceID
        self.kernelPath = kernelPath
        self.bootKind = bootKind
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.commandLine = commandLine
        self.publishedPorts = publishedPorts
        self.runtimeDirectory = runtimeDirectory
        self.readyPattern = readyPattern
        self.userNetwork = userNetwork
        self.machineType = machineType
        self.initrdPath = initrdPath
        self.diskFormat = diskFormat
    }
}

/// Opaque, versioned reference to a running VMM. The agent persists it so it can re-attach
/// (`recover`) after its own restart; only the driver interprets the fields.
public struct VMHandle: Codable, Sendable, Equatable {
    public static let currentVersion = 1
    public var version: Int
    public var pid: Int32
    /// `/proc/<pid>/stat` field 22: tells the VMM apart from a later process that reuses its pid.
    public var processStartTime: UInt64
    public var runtimeDirectory: String
    public var qmpSocketPath: String
    public var consoleSocketPath: String
    public var consoleLogPath: String

    public init(
        version: Int = VMHandle.currentVersion, pid: Int32, processStartTime: UInt64,
        runtimeDirectory: String, qmpSocketPath: String, consoleSocketPath: String,
        consoleLogPath: String
    ) {
        self.version = version
        self.pid = pid
        self.processStartTime = processStartTime
        self.runtimeDirectory = runtimeDirectory
        self.qmpSocketPath = qmpSocketPath
        self.consoleSocketPath = consoleSocketPath
        self.consoleLogPath = consoleLogPath
    }
}

public enum VMRunState: Sendable, Equatable {
    case running, paused, shutdown, gone
}

/// How a VMM process ended.
public struct VMExit: Sendable, Equatable {
    /// Process exit status; nil when killed by a signal or when the process was not our child
    /// (re-attached after an agent restart: the kernel gives the status only to the parent).
    public var status: Int32?
    /// The byte the guest wrote to isa-debug-exit: QEMU exits with 2V+1, so V = (status-1)/2 when odd.
    public var guestStatus: Int32?
    public var reason: String

    public init(status: Int32?, guestStatus: Int32? = nil, reason: String) {
        self.status = status
        self.guestStatus = guestStatus ?? status.flatMap { $0 % 2 == 1 ? ($0 - 1) / 2 : nil }
        self.reason = reason
    }
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC) of the boot phases the driver sees.
public struct BootTimestamps: Sendable {
    /// Right before posix_spawn.
    public var spawned: UInt64
    /// QMP greeting read and `qmp_capabilities` answered.
    public var vmmUp: UInt64

    public init(spawned: UInt64, vmmUp: UInt64) {
        self.spawned = spawned
        self.vmmUp = vmmUp
    }
}

public struct HypervisorCapabilities: Codable, Sendable {
    public var hypervisor: String
    public var version: String
    public var machineTypes: [String]
    public var accelerators: [String]
    public var chosenAccelerator: String
    /// Accelerator → median ms from spawn to exit of the calibration guest.
    public var calibration: [String: Double]

    public init(
        hypervisor: String, version: String, machineTypes: [String], accelerators: [String],
        chosenAccelerator: String, calibration: [String: Double]
    ) {
        self.hypervisor = hypervisor
        self.version = version
        self.machineTypes = machineTypes
        self.accelerators = accelerators
        self.chosenAccelerator = chosenAccelerator
        self.calibration = calibration
    }
}

public enum HypervisorError: Error, CustomStringConvertible, Equatable {
    case invalidSpec(String)
    case spawnFailed(String)
    case qmp(String)
    case notRunning(String)
    case console(String)
    case unsupported(String)

    /// Stable code the API maps to an HTTP status.
    public var code: String {
        switch self {
        case .invalidSpec: "hypervisor.invalid_spec"
        case .spawnFailed: "hypervisor.spawn_failed"
        case .qmp: "hypervisor.qmp"
        case .notRunning: "hypervisor.not_running"
        case .console: "hypervisor.console"
        case .unsupported: "hypervisor.unsupported"
        }
    }

    public var message: String {
        switch self {
        case .invalidSpec(let m), .spawnFailed(let m), .qmp(let m), .notRunning(let m),
            .console(let m), .unsupported(let m):
            m
        }
    }

    public var description: String { "\(code): \(message)" }
}

public protocol HypervisorDriver: Sendable {
    func capabilities() async -> HypervisorCapabilities
    /// Start the VMM for `spec`; returns once QMP answers (VMM up). Throws HypervisorError with a
    /// clear message on failure and leaves no process/socket/dir behind.
    func spawn(_ spec: VMSpec) async throws -> (VMHandle, BootTimestamps)
    /// As `spawn`, with the guest held until `release` returns: the VMM starts while the caller
    /// finishes what must precede any guest code (committing the instance record). If `release`
    /// throws, the VMM is destroyed and that error rethrown.
    func spawn(_ spec: VMSpec, holdingGuestUntil release: @Sendable () async throws -> Void) async throws
        -> (VMHandle, BootTimestamps)
    /// Re-attach after an agent restart: true if the process is still that VMM (pid + start
    /// time match) and QMP answers.
    func recover(_ handle: VMHandle) async -> Bool
    func state(_ handle: VMHandle) async throws -> VMRunState
    func pause(_ handle: VMHandle) async throws
    func resume(_ handle: VMHandle) async throws
    /// QMP system_reset.
    func reboot(_ handle: VMHandle) async throws
    /// Graceful: "poweroff" on the guest console and QMP system_powerdown; if still alive after
    /// `timeout`, QMP quit, then SIGKILL. Returns the exit.
    func stop(_ handle: VMHandle, timeout: Duration) async throws -> VMExit
    /// Kill if alive (SIGKILL), reap, remove the runtime directory. Idempotent.
    func destroy(_ handle: VMHandle) async
    /// Suspends until the VMM process exits (spawned or re-attached), returns how it ended.
    func waitForExit(_ handle: VMHandle) async -> VMExit
    /// Console output lines, live from the console socket (recent lines are replayed first).
    /// The full console is also kept in `consoleLogPath` by QEMU itself.
    func consoleLines(_ handle: VMHandle) -> AsyncStream<String>
    /// Like `consoleLines`, with the monotonic time each line was read from the console: use it
    /// with `waitForReady(events:)` for a READY time that does not include the reader's delay.
    func consoleEvents(_ handle: VMHandle) -> AsyncStream<ConsoleLine>
    /// Write a line to the guest console input.
    func sendConsole(_ handle: VMHandle, line: String) async throws
    /// Forwards a host port to a running VM's user-mode NIC (a warm-pool VM learns its ports late).
    func publishPort(_ handle: VMHandle, _ port: PortMapping) async throws
    /// What this driver can do to move a VM's state.
    func moves() async -> VMMoves
    /// Saves the VM's whole state to `path`, the guest paused meanwhile; with `resume` it runs on
    /// afterwards, else it stays paused (a move ends it once the state is safe elsewhere).
    func saveState(_ handle: VMHandle, to path: String, resume: Bool) async throws -> VMSnapshot
    /// Starts a VMM for `spec` from `snapshot` instead of a boot: the guest runs on from where it
    /// was saved. A snapshot it cannot read (another version, another shape, cut short) is refused
    /// before anything starts.
    func restore(_ spec: VMSpec, from snapshot: VMSnapshot) async throws -> (VMHandle, BootTimestamps)
    /// Starts a VMM for `spec` that waits, paused, for a saved state instead of booting: the slow
    /// part of a restore, done ahead of it.
    func prepareRestore(_ spec: VMSpec) async throws -> VMHandle
    /// Feeds a VMM from `prepareRestore` the state in `snapshot` (refused as by `restore` when it
    /// cannot read it); the guest runs on from it.
    func loadState(_ handle: VMHandle, from snapshot: VMSnapshot) async throws
    /// The target of a live migration: a VMM for `spec` that listens on `address:port` for a
    /// running VM's state; its guest runs the moment the last of it is in. With `tls`, only a
    /// source with a certificate of the same CA is let in, and the stream is encrypted.
    func prepareIncoming(_ spec: VMSpec, address: String, port: Int, tls: MigrationCredentials?) async throws
        -> VMHandle
    /// Streams the running VM's state to a VMM prepared on `address:port`, the guest running on
    /// meanwhile; returns once the target has it all. The source's guest is left paused: a move
    /// ends it once the target is confirmed, or resumes it (rollback) if the target failed.
    func migrateOut(_ handle: VMHandle, to address: String, port: Int, settings: LiveMigrationSettings)
        async throws -> LiveMigrationResult
    /// Waits until a prepared target has its state and its guest runs.
    func finishIncoming(_ handle: VMHandle, timeout: Duration) async throws
}

extension HypervisorDriver {
    /// Without a way to hold the guest: release first, then spawn.
    public func spawn(_ spec: VMSpec, holdingGuestUntil release: @Sendable () async throws -> Void) async throws
        -> (VMHandle, BootTimestamps)
    {
        try await release()
        return try await spawn(spec)
    }
}

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC), the base of every boot timestamp.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
