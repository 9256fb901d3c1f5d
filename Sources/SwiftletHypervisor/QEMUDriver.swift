import Foundation
import Glibc
import Logging
import SwiftletCore
import Synchronization

/// Result of timing the calibration guest under each usable accelerator.
public struct AcceleratorCalibration: Codable, Sendable, Equatable {
    /// The fastest accelerator.
    public var chosen: String
    /// Accelerator → median ms from spawn to exit of the calibration guest.
    public var medianMilliseconds: [String: Double]
    /// Wall time the whole calibration took.
    public var totalMilliseconds: Double

    public init(chosen: String, medianMilliseconds: [String: Double], totalMilliseconds: Double) {
        self.chosen = chosen
        self.medianMilliseconds = medianMilliseconds
        self.totalMilliseconds = totalMilliseconds
    }
}

/// State shared by every driver value in one process: the exit monitor (which reaps our children)
/// and the console connections (QEMU serves one console client, so there must be one per VM).
final class DriverRuntime: Sendable {
    static let shared = DriverRuntime(monitor: .shared)

    let monitor: ExitMonitor
    private let hubs = Mutex<[String: ConsoleHub]>([:])

    init(monitor: ExitMonitor) {
        self.monitor = monitor
    }

    func hub(socketPath: String) -> ConsoleHub {
        hubs.withLock { hubs in
            if let hub = hubs[socketPath] { return hub }
            let hub = ConsoleHub(socketPath: socketPath)
            hubs[socketPath] = hub
            return hub
        }
    }

    func closeHub(socketPath: String) {
        hubs.withLock { $0.removeValue(forKey: socketPath) }?.close()
    }

    /// Drops every console connection, as the death of this process would.
    func closeAllHubs() {
        let all = hubs.withLock { hubs in
            defer { hubs = [:] }
            return Array(hubs.values)
        }
        all.forEach { $0.close() }
    }
}

/// Caches the calibration so it runs at most once per driver when no accelerator was given.
private actor AcceleratorChoice {
    private var calibration: AcceleratorCalibration?

    init(_ calibration: AcceleratorCalibration?) {
        self.calibration = calibration
    }

    func get(_ measure: @Sendable () async -> AcceleratorCalibration) async -> AcceleratorCalibration {
        if let calibration { return calibration }
        let measured = await measure()
        calibration = measured
        return measured
    }
}

/// Runs each VM as a QEMU process controlled over QMP (see docs/qemu-driver.md).
public struct QEMUDriver: HypervisorDriver {
    public let qemuBinary: String
    private let fixedAccelerator: String?
    public let confinement: VMMConfinement?
    private let choice: AcceleratorChoice
    private let logger: Logger
    let runtime: DriverRuntime

    /// How long spawn waits for QEMU to answer the QMP handshake and `cont`. It only guards against
    /// a wedged QEMU: a loaded host (a CI run booting many VMs at once) took over 10 s.
    static let startupTimeout: Duration = .seconds(60)
    /// Calibration starts no further run of an accelerator it has timed once after this.
    static let calibrationSoftLimitNanoseconds: UInt64 = 750_000_000

    /// - Parameters:
    ///   - accelerator: "tcg" or "kvm"; nil chooses by calibration (measured on first use, or
    ///     taken from `calibration`, a result the caller persisted from `calibrate()`).
    ///   - confinement: how each VMM is confined; nil runs it as this process's user, unconfined.
    public init(
        qemuBinary: String = "qemu-system-x86_64", accelerator: String? = nil,
        calibration: AcceleratorCalibration? = nil, confinement: VMMConfinement? = nil, logger: Logger
    ) {
        self.init(
            qemuBinary: qemuBinary, accelerator: accelerator, calibration: calibration, confinement: confinement,
            logger: logger, runtime: .shared)
    }

    init(
        qemuBinary: String, accelerator: String?, calibration: AcceleratorCalibration?,
        confinement: VMMConfinement? = nil, logger: Logger, runtime: DriverRuntime
    ) {
        self.qemuBinary = Self.resolveInPath(qemuBinary)
        self.confinement = confinement
        self.fixedAccelerator = accelerator
        self.choice = AcceleratorChoice(calibration)
        self.logger = logger
        self.runtime = runtime
    }

    /// The accelerator spawn uses.
    public func accelerator() async -> String {
        if let fixedAccelerator { return fixedAccelerator }
        return await choice.get { await calibrate() }.chosen
    }

    // MARK: Capabilities and calibration

    public func capabilities() async -> HypervisorCapabilities {
        let versionLine = await Self.output(of: qemuBinary, ["--version"]).first ?? ""
        let version =
            versionLine.split(separator: " ").first { $0.first?.isNumber == true }.map(String.init)
            ?? versionLine
        let machines = await Self.output(of: qemuBinary, ["-machine", "help"]).dropFirst()
            .compactMap { $0.split(separator: " ").first.map(String.init) }
        let accelerators = await Self.output(of: qemuBinary, ["-accel", "help"]).dropFirst()
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let calibration: [String: Double]
        let chosen: String
        if let fixedAccelerator {
            chosen = fixedAccelerator
            calibration = [:]
        } else {
            let result = await choice.get { await calibrate() }
            chosen = result.chosen
            calibration = result.medianMilliseconds
        }
        return HypervisorCapabilities(
            hypervisor: "qemu", version: version, machineTypes: machines, accelerators: accelerators,
            chosenAccelerator: chosen, calibration: calibration)
    }

    /// Times the generated calibration guest (spawn → isa-debug-exit) `runs` times under TCG and,
    /// when /dev/kvm can be opened, under KVM; the accelerator with the lower median wins. KVM
    /// stops early once clearly slower than TCG. Costs a few hundred ms; on a loaded host runs are
    /// cut (each accelerator keeps one) so it stays near 1 s.
    public func calibrate(runs: Int = 3) async -> AcceleratorCalibration {
        let started = monotonicNanoseconds()
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-calibration-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let kernelPath = directory + "/calibration.elf"
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true)
            try Data(CalibrationKernel.image()).write(to: URL(fileURLWithPath: kernelPath))
        } catch {
            logger.error("calibration: cannot write guest: \(error); using tcg")
            return AcceleratorCalibration(chosen: "tcg", medianMilliseconds: [:], totalMilliseconds: 0)
        }
        var medians: [String: Double] = [:]
        for accelerator in ["tcg", "kvm"] {
            if accelerator == "kvm" {
                let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
                guard fd >= 0 else { continue }
                close(fd)
            }
            var times: [Double] = []
            for _ in 0..<runs {
                guard
                    let milliseconds = await timeCalibrationRun(
                        kernelPath: kernelPath, accelerator: accelerator,
                        stderrPath: directory + "/\(accelerator).err")
                else {
                    times = []
                    break
                }
                times.append(milliseconds)
                // Three times slower than TCG on one run: no need to confirm.
                if let tcg = medians["tcg"], milliseconds > 3 * tcg { break }
                // On a loaded host, fewer runs rather than a calibration that costs seconds.
                if monotonicNanoseconds() - started > Self.calibrationSoftLimitNanoseconds { break }
            }
            if !times.isEmpty { medians[accelerator] = times.sorted()[times.count / 2] }
        }
        let chosen = medians.min { $0.value < $1.value }?.key ?? "tcg"
        let total = Double(monotonicNanoseconds() - started) / 1e6
        logger.info(
            "accelerator calibration",
            metadata: [
                "calibration.chosen": "\(chosen)", "calibration.medians_ms": "\(medians)",
                "calibration.total_ms": "\(total)",
            ])
        return AcceleratorCalibration(chosen: chosen, medianMilliseconds: medians, totalMilliseconds: total)
    }

    /// Calibrates and describes this host's QEMU in one call, for callers that persist the result
    /// and later pass `chosenAccelerator` to `init(accelerator:)`. Throws if not even TCG runs.
    public static func calibrate(
        qemuBinary: String = "qemu-system-x86_64", runs: Int = 3, logger: Logger
    ) async throws -> HypervisorCapabilities {
        let calibration = await QEMUDriver(qemuBinary: qemuBinary, logger: logger).calibrate(runs: runs)
        guard !calibration.medianMilliseconds.isEmpty else {
            throw HypervisorError.spawnFailed(
                "\(qemuBinary) could not run the calibration guest under any accelerator")
        }
        return await QEMUDriver(qemuBinary: qemuBinary, calibration: calibration, logger: logger)
            .capabilities()
    }

    /// Loads the capabilities cached at `path`, or calibrates once and caches them there.
    public static func cachedCapabilities(at path: String, logger: Logger) async throws -> HypervisorCapabilities {
        if let data = FileManager.default.contents(atPath: path),
            let cached = try? JSONDecoder().decode(HypervisorCapabilities.self, from: data)
        {
            return cached
        }
        let capabilities = try await calibrate(logger: logger)
        if let data = try? JSONEncoder().encode(capabilities) {
            _ = FileManager.default.createFile(atPath: path, contents: data)
        }
        return capabilities
    }

    /// One calibration run in ms, or nil if the accelerator failed (wrong exit status, timeout).
    private func timeCalibrationRun(kernelPath: String, accelerator: String, stderrPath: String) async
        -> Double?
    {
        let arguments = QEMUCommandLine.calibrationArguments(
            kernelPath: kernelPath, accelerator: accelerator)
        let start = monotonicNanoseconds()
        guard
            let pid = try? spawnDetached(
                executable: qemuBinary, arguments: arguments, stderrPath: stderrPath),
            let startTime = ProcessStat(pid: pid)?.startTime
        else { return nil }
        let key = ProcessKey(pid: pid, startTime: startTime)
        runtime.monitor.watch(key, isChild: true)
        // A KVM that cannot run the guest's code stops the VM with "KVM internal error" on stderr
        // and QEMU stays up: look for that instead of waiting the whole timeout.
        var exit: VMExit?
        for _ in 0..<60 {
            exit = await runtime.monitor.wait(key, timeout: .milliseconds(50))
            if exit != nil { break }
            if let text = try? String(contentsOfFile: stderrPath, encoding: .utf8), text.contains("internal error") {
                break
            }
        }
        guard let exit else {
            kill(pid, SIGKILL)
            _ = await runtime.monitor.wait(key)
            runtime.monitor.forget(key)
            logger.warning("calibration: \(accelerator) cannot run the calibration guest (stopped or over 3 s)")
            return nil
        }
        runtime.monitor.forget(key)
        let elapsed = Double(monotonicNanoseconds() - start) / 1e6
        guard exit.guestStatus == 0 else {
            let stderr = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
            logger.warning("calibration: \(accelerator) unusable: \(exit.reason) \(stderr)")
            return nil
        }
        return elapsed
    }

    // MARK: Lifecycle

    public func spawn(_ spec: VMSpec) async throws -> (VMHandle, BootTimestamps) {
        try await spawn(spec, holdingGuestUntil: {})
    }

    public func spawn(_ spec: VMSpec, holdingGuestUntil release: @Sendable () async throws -> Void) async throws
        -> (VMHandle, BootTimestamps)
    {
        try await launch(spec, incoming: nil, holdingGuestUntil: release)
    }

    /// Where a VM's state comes from instead of a boot.
    enum IncomingState {
        /// A saved state's file: read it all, then let the guest run.
        case saved(path: String)
        /// A live migration's stream: listen for it (over TLS with `tls`) and return; QEMU lets the
        /// guest run the moment the last of it is in.
        case live(uri: String, tls: MigrationCredentials?)
        /// A saved state to come: the VMM waits, paused, until `loadState` hands it one.
        case held
    }

    /// Starts QEMU for `spec`, booting it, or with its guest's state from `incoming`.
    func launch(
        _ spec: VMSpec, incoming: IncomingState?, holdingGuestUntil release: @Sendable () async throws -> Void
    ) async throws -> (VMHandle, BootTimestamps) {
        try Self.validate(spec)
        let accelerator = await accelerator()
        let paths = RuntimePaths(directory: spec.runtimeDirectory)
        try Self.prepareRuntimeDirectory(paths)
        var arguments = QEMUCommandLine.arguments(spec: spec, accelerator: accelerator, paths: paths)
        if let confinement {
            if let problem = confinement.problem() {
                try? FileManager.default.removeItem(atPath: paths.directory)
                throw HypervisorError.spawnFailed(
                    "the VMM cannot be confined: \(problem); start the server with --unconfined to run it unconfined")
            }
            arguments += confinement.arguments(runtimeDirectory: paths.directory)
        }
        if let incoming {
            arguments += ["-incoming", "defer"]
            // No `cont` to wait for: the guest runs as soon as QEMU has its state.
            if case .live = incoming { arguments.removeAll { $0 == "-S" } }
        }
        var log = logger
        log[metadataKey: "instance.id"] = "\(spec.instanceID)"
        log.debug("spawning qemu", metadata: ["qemu.args": "\(arguments.joined(separator: " "))"])

        // The driver binds both sockets and QEMU inherits them listening: the driver's clients
        // queue at once instead of polling for QEMU to create the sockets.
        var listening: [Int32] = []
        defer { for fd in listening { close(fd) } }
        do {
            for path in [paths.consoleSocket, paths.qmpSocket] {
                listening.append(try listenUnixSocket(path: path).get())
            }
        } catch {
            try? FileManager.default.removeItem(atPath: paths.directory)
            throw error
        }
        let spawned = monotonicNanoseconds()
        let pid: pid_t
        do {
            pid = try spawnDetached(
                executable: qemuBinary, arguments: arguments, stderrPath: paths.stderrLog, inheriting: listening,
                transparentHugePages: spec.transparentHugePages)
        } catch {
            try? FileManager.default.removeItem(atPath: paths.directory)
            throw error
        }
        // Only QEMU holds the listeners now, so a QEMU that dies resets the queued connections.
        for fd in listening { close(fd) }
        listening = []
        // The child exists until reaped (the monitor does it), so its stat is readable here.
        let key = ProcessKey(pid: pid, startTime: ProcessStat(pid: pid)?.startTime ?? 0)
        runtime.monitor.watch(key, isChild: true)
        let handle = VMHandle(
            pid: pid, processStartTime: key.startTime, runtimeDirectory: paths.directory,
            qmpSocketPath: paths.qmpSocket, consoleSocketPath: paths.consoleSocket,
            consoleLogPath: paths.consoleLog)
        var vmmUp: UInt64 = 0
        var consoleUp: UInt64 = 0
        do {
            // Before the console client: QEMU waits for it (wait=on) before it builds the machine,
            // so the guest's memory and QEMU's own are charged to the VMM's cgroup (a v1 cgroup
            // does not take over what a process charged before it joined).
            try Self.joinControlGroup(confinement, pid: pid, spec: spec)
            // Console first: QEMU does not go on before it has accepted this client (wait=on).
            let consoleFD = try connectUnixSocket(path: paths.consoleSocket).get()
            consoleUp = monotonicNanoseconds()
            try await runtime.hub(socketPath: paths.consoleSocket).adopt(fd: consoleFD)
            // QEMU builds its machine meanwhile and waits, paused (-S), for `cont` below.
            do { try await release() } catch {
                await destroy(handle)
                throw SpawnReleaseFailed(underlying: error)
            }
            let qmpFD = try connectUnixSocket(path: paths.qmpSocket).get()
            if case .saved(let path) = incoming {
                try await Self.readState(
                    from: path, qmp: try QMPWithDescriptors(fd: qmpFD, timeout: Self.startupTimeout))
            } else if case .held = incoming {
                // Only checked up: `loadState` opens its own session when the state comes.
                try await QMPSession.open(fd: qmpFD, timeout: Self.startupTimeout).close()
            } else if case .live(let uri, let tls) = incoming {
                let session = try await QMPSession.open(fd: qmpFD, timeout: Self.startupTimeout)
                defer { session.close() }
                if let tls {
                    try await Self.useMigrationTLS(
                        tls, endpoint: .server, session: session, pid: pid, runtimeDirectory: paths.directory)
                }
                try await session.execute("migrate-incoming", arguments: ["uri": uri])
            } else {
                do {
                    // `cont` rides with the handshake: the guest resumes as soon as QEMU's main loop runs.
                    let session = try await QMPSession.open(
                        fd: qmpFD, timeout: Self.startupTimeout, pipelining: ["cont"])
                    session.close()
                } catch let error as QMPReadyThenFailed {
                    // A guest that powers off at once can end QEMU before `cont` is answered: the VM
                    // did start, and its exit is reported by `waitForExit`, not as a failed spawn.
                    guard await runtime.monitor.wait(key, timeout: .milliseconds(500)) != nil else {
                        throw error.underlying
                    }
                }
            }
            vmmUp = monotonicNanoseconds()
        } catch let error as SpawnReleaseFailed {
            throw error.underlying
        } catch {
            let message = await abandonSpawn(handle, key: key, error: error)
            log.error("qemu failed to start", metadata: ["error": "\(message)"])
            throw HypervisorError.spawnFailed(message)
        }
        log.info(
            "qemu up",
            metadata: [
                "vm.pid": "\(pid)", "vm.accelerator": "\(accelerator)",
                "vm.spawn_to_console_ms": "\(Double(consoleUp - spawned) / 1e6)",
                "vm.spawn_to_qmp_ms": "\(Double(vmmUp - spawned) / 1e6)",
            ])
        return (handle, BootTimestamps(spawned: spawned, vmmUp: vmmUp))
    }

    public func recover(_ handle: VMHandle) async -> Bool {
        let key = handle.processKey
        guard handle.version == VMHandle.currentVersion,
            isProcessAlive(pid: key.pid, startTime: key.startTime),
            runtime.monitor.watch(key, isChild: false)
        else { return false }
        do {
            _ = try await withQMP(handle) { try await $0.execute("query-status") }
            return true
        } catch {
            logger.warning("recover: QMP did not answer", metadata: ["error": "\(error)"])
            return false
        }
    }

    public func state(_ handle: VMHandle) async throws -> VMRunState {
        let key = handle.processKey
        guard isProcessAlive(pid: key.pid, startTime: key.startTime) else { return .gone }
        do {
            let reply = try await withQMP(handle) { try await $0.execute("query-status") }
            let status = (reply as? [String: Any])?["status"] as? String ?? ""
            switch status {
            case "running": return .running
            case "shutdown", "guest-panicked": return .shutdown
            default: return .paused
            }
        } catch {
            if !isProcessAlive(pid: key.pid, startTime: key.startTime) { return .gone }
            throw error
        }
    }

    public func pause(_ handle: VMHandle) async throws {
        _ = try await withQMP(handle) { try await $0.execute("stop") }
    }

    public func resume(_ handle: VMHandle) async throws {
        _ = try await withQMP(handle) { try await $0.execute("cont") }
    }

    public func reboot(_ handle: VMHandle) async throws {
        // -no-reboot turns any reset into an exit; allow this one reset, then restore.
        try await withQMP(handle) { session in
            try await session.execute("set-action", arguments: ["reboot": "reset"])
            try await session.execute("system_reset")
            try await session.execute("set-action", arguments: ["reboot": "shutdown"])
        }
    }

    public func stop(_ handle: VMHandle, timeout: Duration) async throws -> VMExit {
        let key = handle.processKey
        let monitor = runtime.monitor
        if let exit = monitor.finishedExit(key) { return exit }
        guard isProcessAlive(pid: key.pid, startTime: key.startTime) else {
            return await monitor.wait(key) ?? VMExit(status: nil, reason: "not running")
        }
        monitor.watch(key, isChild: false)
        // A paused guest cannot act on either request: let it run first.
        _ = try? await withQMP(handle) { session in
            let status = try await session.execute("query-status") as? [String: Any]
            if status?["status"] as? String == "paused" { try await session.execute("cont") }
            try await session.execute("system_powerdown")
        }
        try? await sendConsole(handle, line: "poweroff")
        if let exit = await monitor.wait(key, timeout: timeout) { return exit }

        logger.warning("graceful stop timed out, sending QMP quit", metadata: ["vm.pid": "\(key.pid)"])
        _ = try? await withQMP(handle, timeout: .seconds(2)) { try await $0.execute("quit") }
        if let exit = await monitor.wait(key, timeout: .seconds(2)) {
            return VMExit(
                status: exit.status, guestStatus: exit.guestStatus,
                reason: "graceful stop timed out after \(timeout); QMP quit: \(exit.reason)")
        }
        if isProcessAlive(pid: key.pid, startTime: key.startTime) { kill(key.pid, SIGKILL) }
        let exit = await monitor.wait(key) ?? VMExit(status: nil, reason: "unknown")
        return VMExit(
            status: exit.status, guestStatus: exit.guestStatus,
            reason: "graceful stop and QMP quit timed out; SIGKILL: \(exit.reason)")
    }

    public func destroy(_ handle: VMHandle) async {
        let key = handle.processKey
        runtime.closeHub(socketPath: handle.consoleSocketPath)
        if isProcessAlive(pid: key.pid, startTime: key.startTime) {
            runtime.monitor.watch(key, isChild: false)
            kill(key.pid, SIGKILL)
            _ = await runtime.monitor.wait(key, timeout: .seconds(10))
        }
        runtime.monitor.forget(key)
        try? FileManager.default.removeItem(atPath: handle.runtimeDirectory)
        if confinement != nil { ControlGroups.remove(Self.controlGroup(handle.pid)) }
    }

    /// Puts VMM `pid` in its cgroup, with limits from `spec`: its memory plus the VMM's own, and
    /// one core beyond its vCPUs for QEMU's own threads (main loop, I/O, TCG's translation).
    private static func joinControlGroup(_ confinement: VMMConfinement?, pid: pid_t, spec: VMSpec) throws {
        guard let confinement else { return }
        try ControlGroups.confine(
            pid: pid, name: controlGroup(pid), memoryBytes: (spec.memoryMiB + confinement.memoryOverheadMiB) << 20,
            cpus: spec.vcpus + 1, pids: confinement.pidsLimit)
    }

    /// The cgroup of the VMM with process id `pid`.
    static func controlGroup(_ pid: Int32) -> String { "vmm-\(pid)" }

    public func waitForExit(_ handle: VMHandle) async -> VMExit {
        await runtime.monitor.wait(handle.processKey)
            ?? VMExit(status: nil, reason: "wait cancelled")
    }

    // MARK: Console

    public func consoleLines(_ handle: VMHandle) -> AsyncStream<String> {
        runtime.hub(socketPath: handle.consoleSocketPath).subscribe { $0.text }
    }

    /// Like `consoleLines`, with the monotonic time each line was read from the socket.
    public func consoleEvents(_ handle: VMHandle) -> AsyncStream<ConsoleLine> {
        runtime.hub(socketPath: handle.consoleSocketPath).subscribe { $0 }
    }

    /// QEMU's `hostfwd_add` through QMP's human-monitor passthrough (no QMP command exists for it).
    public func publishPort(_ handle: VMHandle, _ port: PortMapping) async throws {
        let rule = "\(port.proto.rawValue)::\(port.hostPort)-:\(port.guestPort)"
        let output = try await withQMP(handle) {
            try await $0.execute("human-monitor-command", arguments: ["command-line": "hostfwd_add n0 \(rule)"])
        }
        // The monitor answers an empty string on success and the reason otherwise.
        if let text = output as? String, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw HypervisorError.qmp("hostfwd_add \(rule) failed: \(text)")
        }
    }

    public func sendConsole(_ handle: VMHandle, line: String) async throws {
        let key = handle.processKey
        guard isProcessAlive(pid: key.pid, startTime: key.startTime) else {
            throw HypervisorError.notRunning("VM process \(key.pid) is not running")
        }
        do {
            try await runtime.hub(socketPath: handle.consoleSocketPath).send(line + "\n")
        } catch let error as HypervisorError {
            throw error
        } catch {
            throw HypervisorError.console("write to console failed: \(error)")
        }
    }

    // MARK: Helpers

    func withQMP<T>(
        _ handle: VMHandle, timeout: Duration = .seconds(10),
        _ body: (QMPSession) async throws -> T
    ) async throws -> T {
        let key = handle.processKey
        guard isProcessAlive(pid: key.pid, startTime: key.startTime) else {
            throw HypervisorError.notRunning("VM process \(key.pid) is not running")
        }
        let session: QMPSession
        do {
            session = try await QMPSession.open(path: handle.qmpSocketPath, timeout: timeout)
        } catch let error as HypervisorError {
            throw error
        } catch {
            throw HypervisorError.qmp("\(error)")
        }
        defer { session.close() }
        return try await body(session)
    }

    /// Kills and reaps a VMM that failed to come up, removes its directory, and returns a message
    /// that includes what QEMU printed on stderr.
    private func abandonSpawn(_ handle: VMHandle, key: ProcessKey, error: any Error) async -> String {
        runtime.closeHub(socketPath: handle.consoleSocketPath)
        defer { if confinement != nil { ControlGroups.remove(Self.controlGroup(key.pid)) } }
        // A QEMU that rejected its configuration is exiting already: let it, to report its status.
        var exit = await runtime.monitor.wait(key, timeout: .milliseconds(200))
        let killed = exit == nil
        if killed {
            if isProcessAlive(pid: key.pid, startTime: key.startTime) { kill(key.pid, SIGKILL) }
            exit = await runtime.monitor.wait(key, timeout: .seconds(10))
        }
        runtime.monitor.forget(key)
        // QEMU notes on stderr that it waits for the console client; that is not the failure.
        let stderr =
            ((try? String(contentsOfFile: handle.runtimeDirectory + "/qemu.err", encoding: .utf8)) ?? "")
            .split(separator: "\n").filter { !$0.contains("info: QEMU waiting for connection") }
            .joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        try? FileManager.default.removeItem(atPath: handle.runtimeDirectory)
        var message: String
        if !killed, let exit {
            message = "QEMU exited during startup" + (exit.status.map { " with status \($0)" } ?? " (\(exit.reason))")
        } else {
            message = "QEMU did not start: " + ((error as? HypervisorError)?.message ?? "\(error)")
        }
        if !stderr.isEmpty { message += ": \(stderr)" }
        return message
    }

    static func validate(_ spec: VMSpec) throws(HypervisorError) {
        guard spec.memoryMiB > 0 else { throw .invalidSpec("memoryMiB must be positive") }
        guard spec.vcpus > 0 else { throw .invalidSpec("vcpus must be positive") }
        guard !spec.runtimeDirectory.isEmpty else { throw .invalidSpec("runtimeDirectory is empty") }
        for port in spec.publishedPorts {
            guard (1...65535).contains(port.hostPort), (1...65535).contains(port.guestPort) else {
                throw .invalidSpec("port out of range: \(port.hostPort):\(port.guestPort)")
            }
        }
        guard access(spec.kernelPath, R_OK) == 0 else {
            throw .spawnFailed("kernel \(spec.kernelPath) is not readable: \(errnoMessage())")
        }
        // sun_path holds 108 bytes; QEMU would fail later with a less clear message.
        let longest = RuntimePaths(directory: spec.runtimeDirectory).consoleSocket.utf8.count
        guard longest < 108 else {
            throw .invalidSpec(
                "runtimeDirectory too long for Unix socket paths (\(longest) ≥ 108 bytes)")
        }
    }

    /// The absolute path of `name` from PATH, found once: `posix_spawnp` would otherwise try every
    /// PATH entry (a failed exec each) on every spawn. A name not found is kept as it is.
    static func resolveInPath(_ name: String) -> String {
        guard !name.contains("/") else { return name }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return name
    }

    /// Creates the directory and clears sockets/logs a previous VM left in it.
    static func prepareRuntimeDirectory(_ paths: RuntimePaths) throws(HypervisorError) {
        // One mkdir(2) on the usual path (a new directory, nothing stale in it); Foundation's
        // recursive create costs a stat per path component on every boot.
        if mkdir(paths.directory, 0o777) == 0 { return }
        if errno != EEXIST {
            do {
                try FileManager.default.createDirectory(
                    atPath: paths.directory, withIntermediateDirectories: true)
            } catch {
                throw .spawnFailed("cannot create runtime directory \(paths.directory): \(error)")
            }
        }
        for path in [paths.qmpSocket, paths.consoleSocket, paths.consoleLog, paths.stderrLog] {
            unlink(path)
        }
    }

    /// Runs a short QEMU query and returns its stdout lines; awaits the exit without blocking a
    /// thread (the output, a few KB, fits in the pipe, so reading after the exit cannot deadlock).
    static func output(of executable: String, _ arguments: [String]) async -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [executable] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        let started = await withCheckedContinuation { continuation in
            process.terminationHandler = { _ in continuation.resume(returning: true) }
            do {
                try process.run()
            } catch {
                continuation.resume(returning: false)
            }
        }
        guard started else { return [] }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}

extension VMHandle {
    var processKey: ProcessKey { ProcessKey(pid: pid, startTime: processStartTime) }
}

/// Waits for the readiness line: the monotonic ns when a console line matches (the kit's
/// `SWIFTLET-READY ` prefix, or the regex `pattern`) and the line, or nil if the stream ends (the
/// VM exited) or `timeout` passes. The time is taken when this function sees the line; use the
/// `ConsoleLine` overload for the time the driver read it from the socket.
public func waitForReady(lines: AsyncStream<String>, pattern: String?, timeout: Duration) async
    -> (UInt64, String)?
{
    await firstMatch(in: lines, pattern: pattern, timeout: timeout) { (monotonicNanoseconds(), $0) }
}

/// Same, over `consoleEvents`: the time returned is when the line came off the console socket.
public func waitForReady(events: AsyncStream<ConsoleLine>, pattern: String?, timeout: Duration)
    async -> (UInt64, String)?
{
    await firstMatch(in: events, pattern: pattern, timeout: timeout) { ($0.time, $0.text) }
}

private func firstMatch<Element: Sendable>(
    in stream: AsyncStream<Element>, pattern: String?, timeout: Duration,
    _ timed: @escaping @Sendable (Element) -> (UInt64, String)
) async -> (UInt64, String)? {
    await withTaskGroup(of: (UInt64, String)?.self) { group in
        group.addTask {
            // An invalid regex is matched as literal text rather than never matching.
            let regex = pattern.flatMap { try? Regex($0) }
            for await element in stream {
                let (time, line) = timed(element)
                let matched: Bool
                if let regex {
                    matched = line.firstMatch(of: regex) != nil
                } else if let pattern {
                    matched = line.contains(pattern)
                } else {
                    matched = line.hasPrefix("SWIFTLET-READY ")
                }
                if matched { return (time, line) }
            }
            return nil
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
