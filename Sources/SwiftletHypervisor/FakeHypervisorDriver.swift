import Foundation
import Synchronization

/// A fake hypervisor driver: no VMM process, a guest that prints READY at once. It stands in for
/// QEMU only where QEMU cannot be the subject: fast in-process tests of the controller↔agent seam,
/// and simulated hosts in benchmarks. Its VMs outlive the agent that started them as long as the
/// driver value lives, so an agent restart can be simulated by a new agent on the same driver.
public final class FakeHypervisorDriver: HypervisorDriver {
    private struct VM {
        var handle: VMHandle
        var exit: VMExit?
        var paused = false
        var exitWaiters: [CheckedContinuation<VMExit, Never>] = []
        var consoleInput: [String] = []
    }

    private struct State {
        var nextPid: Int32 = 1_000_000
        var vms: [String: VM] = [:]
        var spawned = 0
        var failNextSpawn: String?
        var stopDelay: Duration = .zero
    }

    private let state = Mutex(State())
    /// The console line each guest prints once it runs.
    public let readyLine: String

    public init(readyLine: String = "SWIFTLET-READY fake") {
        self.readyLine = readyLine
    }

    // MARK: - Test controls

    /// VMs alive now, by instance id (the runtime directory's last component).
    public var liveInstanceIds: Set<String> {
        state.withLock { Set($0.vms.filter { $0.value.exit == nil }.keys) }
    }

    /// How many VMMs were spawned in all.
    public var spawnCount: Int { state.withLock { $0.spawned } }

    /// Lines typed on an instance's console.
    public func consoleInput(instanceId: String) -> [String] {
        state.withLock { $0.vms[instanceId]?.consoleInput ?? [] }
    }

    /// How long a graceful stop takes (a guest that is slow to power off).
    public func setStopDelay(_ delay: Duration) {
        state.withLock { $0.stopDelay = delay }
    }

    /// The next spawn fails with `reason`.
    public func failNextSpawn(_ reason: String) {
        state.withLock { $0.failNextSpawn = reason }
    }

    /// The instance's VM ends as if the guest wrote `guestStatus` to isa-debug-exit (QEMU exits
    /// with 2·status+1; 0 is the kit's clean power-off), having printed `lines` on its console.
    public func crash(instanceId: String, guestStatus: Int32 = 1, printing lines: [String] = []) {
        guard let handle = state.withLock({ $0.vms[instanceId]?.handle }) else { return }
        if !lines.isEmpty, let console = FileHandle(forWritingAtPath: handle.consoleLogPath) {
            _ = try? console.seekToEnd()
            try? console.write(contentsOf: Data(lines.map { $0 + "\n" }.joined().utf8))
            try? console.close()
        }
        end(handle, VMExit(status: 2 * guestStatus + 1, reason: "guest exited with status \(guestStatus)"))
    }

    // MARK: - HypervisorDriver

    public func capabilities() async -> HypervisorCapabilities {
        HypervisorCapabilities(
            hypervisor: "fake", version: "0", machineTypes: ["microvm", "pc", "q35"], accelerators: ["fake"],
            chosenAccelerator: "fake", calibration: ["fake": 0])
    }

    public func spawn(_ spec: VMSpec) async throws -> (VMHandle, BootTimestamps) {
        let spawned = monotonicNanoseconds()
        let instanceId = URL(fileURLWithPath: spec.runtimeDirectory).lastPathComponent
        if let reason = state.withLock({ state in
            defer { state.failNextSpawn = nil }; return state.failNextSpawn
        }) {
            throw HypervisorError.spawnFailed(reason)
        }
        try FileManager.default.createDirectory(atPath: spec.runtimeDirectory, withIntermediateDirectories: true)
        let consoleLog = spec.runtimeDirectory + "/console.log"
        FileManager.default.createFile(atPath: consoleLog, contents: Data((readyLine + "\n").utf8))
        let handle = state.withLock { state in
            state.nextPid += 1
            state.spawned += 1
            let handle = VMHandle(
                pid: state.nextPid, processStartTime: 0, runtimeDirectory: spec.runtimeDirectory,
                qmpSocketPath: spec.runtimeDirectory + "/qmp.sock",
                consoleSocketPath: spec.runtimeDirectory + "/console.sock", consoleLogPath: consoleLog)
            state.vms[instanceId] = VM(handle: handle)
            return handle
        }
        return (handle, BootTimestamps(spawned: spawned, vmmUp: monotonicNanoseconds()))
    }

    public func recover(_ handle: VMHandle) async -> Bool {
        vm(handle) != nil
    }

    public func state(_ handle: VMHandle) async throws -> VMRunState {
        guard let vm = vm(handle) else { return .gone }
        return vm.paused ? .paused : .running
    }

    public func pause(_ handle: VMHandle) async throws { try setPaused(handle, true) }
    public func resume(_ handle: VMHandle) async throws { try setPaused(handle, false) }

    public func reboot(_ handle: VMHandle) async throws {
        guard vm(handle) != nil else { throw HypervisorError.notRunning(handle.runtimeDirectory) }
    }

    public func stop(_ handle: VMHandle, timeout: Duration) async throws -> VMExit {
        let delay = state.withLock { $0.stopDelay }
        if delay > .zero { try? await Task.sleep(for: delay) }
        let exit = VMExit(status: 1, reason: "guest powered off")
        end(handle, exit)
        return exit
    }

    public func destroy(_ handle: VMHandle) async {
        // The directory of a handle that is no longer its instance's current VM is the newer VM's.
        if end(handle, VMExit(status: nil, reason: "killed")) {
            try? FileManager.default.removeItem(atPath: handle.runtimeDirectory)
        }
    }

    public func waitForExit(_ handle: VMHandle) async -> VMExit {
        let instanceId = instanceId(handle)
        return await withCheckedContinuation { continuation in
            let ended: VMExit? = state.withLock { state in
                guard var vm = state.vms[instanceId], vm.handle == handle else {
                    return VMExit(status: nil, reason: "gone")
                }
                if let exit = vm.exit { return exit }
                vm.exitWaiters.append(continuation)
                state.vms[instanceId] = vm
                return nil
            }
            if let ended { continuation.resume(returning: ended) }
        }
    }

    public func consoleLines(_ handle: VMHandle) -> AsyncStream<String> {
        let line = readyLine
        return AsyncStream { continuation in
            continuation.yield(line)
            continuation.finish()
        }
    }

    public func consoleEvents(_ handle: VMHandle) -> AsyncStream<ConsoleLine> {
        let line = readyLine
        return AsyncStream { continuation in
            continuation.yield(ConsoleLine(time: monotonicNanoseconds(), text: line))
            continuation.finish()
        }
    }

    public func sendConsole(_ handle: VMHandle, line: String) async throws {
        let known = state.withLock { state -> Bool in
            guard state.vms[instanceId(handle)]?.handle == handle else { return false }
            state.vms[instanceId(handle)]?.consoleInput.append(line)
            return true
        }
        guard known else { throw HypervisorError.console("no such VM") }
    }

    public func publishPort(_ handle: VMHandle, _ port: PortMapping) async throws {}

    // MARK: - Internals

    private func instanceId(_ handle: VMHandle) -> String {
        URL(fileURLWithPath: handle.runtimeDirectory).lastPathComponent
    }

    /// The live VM of `handle`, if it is still the current one of its instance.
    private func vm(_ handle: VMHandle) -> VM? {
        state.withLock { state in
            guard let vm = state.vms[instanceId(handle)], vm.handle == handle, vm.exit == nil else { return nil }
            return vm
        }
    }

    private func setPaused(_ handle: VMHandle, _ paused: Bool) throws {
        let known = state.withLock { state -> Bool in
            let id = instanceId(handle)
            guard state.vms[id]?.handle == handle, state.vms[id]?.exit == nil else { return false }
            state.vms[id]?.paused = paused
            return true
        }
        guard known else { throw HypervisorError.notRunning(handle.runtimeDirectory) }
    }

    /// Ends `handle`'s VM if it is its instance's current one; returns whether it is current.
    @discardableResult
    private func end(_ handle: VMHandle, _ exit: VMExit) -> Bool {
        let instanceId = instanceId(handle)
        let (current, waiters): (Bool, [CheckedContinuation<VMExit, Never>]) = state.withLock { state in
            guard var vm = state.vms[instanceId], vm.handle == handle else { return (false, []) }
            guard vm.exit == nil else { return (true, []) }
            vm.exit = exit
            let waiters = vm.exitWaiters
            vm.exitWaiters = []
            state.vms[instanceId] = vm
            return (true, waiters)
        }
        for waiter in waiters { waiter.resume(returning: exit) }
        return current
    }
}
