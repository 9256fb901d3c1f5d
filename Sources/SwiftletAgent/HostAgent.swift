import Foundation
import Logging
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages
import SwiftletStore

#if canImport(Glibc)
    import Glibc
#endif

/// The host side of Swiftlet: makes the VMs on this host match the instances the store says
/// should run here, supervises them, and reports what it sees back into the store.
///
/// Level-triggered: `reconcile(instanceId:)` compares desired state (the instance record) with
/// the VM this agent knows, and acts; the controller calls it after every change, and
/// `recoverAll()` runs it for everything after a restart.
public actor HostAgent {
    public let hostId: String
    private let store: any SwiftletStore
    private let blobs: BlobStore
    private let driver: any HypervisorDriver
    private let runRoot: String
    private let logger: Logger
    private let readyTimeout: Duration
    /// VMs this agent runs now, by instance id.
    private var vms: [String: RunningVM] = [:]
    /// Instances with a boot in progress (so a reconcile does not start a second VM).
    private var booting: Set<String> = []
    /// Waiters for an instance to leave BUILDING (create with `wait`).
    private var settleWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    private struct RunningVM {
        var handle: VMHandle
        var supervisor: Task<Void, Never>?
    }

    /// How many times an instance is restarted in a row before the agent gives up (ERROR).
    static let maxRestarts = 5

    public init(
        hostId: String, store: any SwiftletStore, blobs: BlobStore, driver: any HypervisorDriver, runRoot: String,
        readyTimeout: Duration = .seconds(30), logger: Logger
    ) {
        self.hostId = hostId
        self.store = store
        self.blobs = blobs
        self.driver = driver
        self.runRoot = runRoot
        self.readyTimeout = readyTimeout
        self.logger = logger
    }

    // MARK: - Restart safety

    /// After a (possibly unclean) restart: re-attach to VMs that still run, settle the ones
    /// that died meanwhile, finish in-flight creates, and remove anything orphaned.
    public func recoverAll() async {
        try? FileManager.default.createDirectory(atPath: runRoot, withIntermediateDirectories: true)
        let handles = (try? store.allHandles()) ?? []
        var known = Set<String>()
        for (instanceId, data) in handles {
            guard let handle = try? JSONDecoder().decode(VMHandle.self, from: data) else {
                try? store.removeHandle(instanceId: instanceId)
                continue
            }
            known.insert(handle.runtimeDirectory)
            if await driver.recover(handle) {
                logger.info("re-attached VM", metadata: ["instance.id": "\(instanceId)", "vm.pid": "\(handle.pid)"])
                vms[instanceId] = RunningVM(handle: handle, supervisor: nil)
                vms[instanceId]?.supervisor = supervise(instanceId: instanceId, handle: handle)
            } else {
                await driver.destroy(handle)
                try? store.removeHandle(instanceId: instanceId)
                record(instanceId, .exited(clean: false, reason: "the VM exited while the agent was down"))
            }
        }
        removeOrphans(keeping: known)
        let instances = (try? store.instances(projectId: nil, state: nil, name: nil, imageId: nil)) ?? []
        for instance in instances where instance.hostId == nil || instance.hostId == hostId {
            await reconcile(instanceId: instance.id)
        }
    }

    /// Kills VMM processes and removes runtime directories under `runRoot` that no stored
    /// handle owns (e.g. a VM spawned just before a crash, before its handle was saved).
    private func removeOrphans(keeping known: Set<String>) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: runRoot) else { return }
        for entry in entries {
            let directory = runRoot + "/" + entry
            guard !known.contains(directory) else { continue }
            for pid in ProcessScan.pids(withArgumentContaining: directory + "/") {
                logger.warning("killing orphan VMM", metadata: ["vm.pid": "\(pid)", "vm.dir": "\(directory)"])
                kill(pid, SIGKILL)
            }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    // MARK: - Reconcile

    /// Makes the host match the instance record. Safe to call any number of times.
    public func reconcile(instanceId: String) async {
        let instance: Instance?
        do { instance = try store.instance(idOrName: instanceId, projectId: nil) } catch {
            logger.error("reconcile: store read failed", metadata: ["instance.id": "\(instanceId)", "error": "\(error)"])
            return
        }
        guard let instance, instance.state != .deleted else {
            await teardown(instanceId: instanceId)
            return
        }
        switch instance.state {
        case .building:
            if vms[instanceId] == nil && !booting.contains(instanceId) { await boot(instance) }
        case .running, .paused:
            if vms[instanceId] == nil && !booting.contains(instanceId) {
                // Desired running but nothing here (e.g. the VM died while we were down and it was
                // settled as an exit, or a lost handle): boot again.
                _ = try? store.updateInstance(id: instanceId) { $0.state = .building }
                if let fresh = try? store.instance(idOrName: instanceId, projectId: nil) { await boot(fresh) }
            }
        case .stopped, .error:
            if let vm = vms.removeValue(forKey: instanceId) {
                vm.supervisor?.cancel()
                await driver.destroy(vm.handle)
                try? store.removeHandle(instanceId: instanceId)
            }
        case .deleted:
            break
        }
    }

    // MARK: - Commands that act on a running VM

    public func perform(_ action: InstanceAction, instanceId: String, stopTimeout: Duration = .seconds(5)) async throws(SwiftletError) {
        switch action {
        case .boot, .none:
            await reconcile(instanceId: instanceId)
        case .destroy:
            await teardown(instanceId: instanceId)
        case .shutdown:
            guard let vm = vms.removeValue(forKey: instanceId) else { return }
            vm.supervisor?.cancel()
            let exit = try? await driver.stop(vm.handle, timeout: stopTimeout)
            await driver.destroy(vm.handle)
            try? store.removeHandle(instanceId: instanceId)
            event(instanceId, "stopped", exit.map { "VM stopped: \($0.reason)" } ?? "VM stopped")
        case .pause, .resume, .reset:
            guard let vm = vms[instanceId] else {
                throw SwiftletError(.conflict, "instance.not_running", "instance '\(instanceId)' has no running VM on this host")
            }
            do {
                switch action {
                case .pause: try await driver.pause(vm.handle)
                case .resume: try await driver.resume(vm.handle)
                default: try await driver.reboot(vm.handle)
                }
            } catch {
                throw SwiftletError(.internal, "hypervisor.failed", "\(action) failed: \(error)")
            }
        }
    }

    /// Suspends until the instance is no longer BUILDING, or `timeout` passes.
    public func waitUntilSettled(instanceId: String, timeout: Duration) async {
        if let instance = try? store.instance(idOrName: instanceId, projectId: nil), instance.state != .building { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.addSettleWaiter(instanceId) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
            self.releaseWaiters(instanceId)
        }
    }

    private func addSettleWaiter(_ instanceId: String) async {
        await withCheckedContinuation { continuation in
            if let instance = try? store.instance(idOrName: instanceId, projectId: nil), instance.state != .building {
                continuation.resume()
            } else {
                settleWaiters[instanceId, default: []].append(continuation)
            }
        }
    }

    private func releaseWaiters(_ instanceId: String) {
        for waiter in settleWaiters.removeValue(forKey: instanceId) ?? [] { waiter.resume() }
    }

    /// The console log file of an instance's current VM, if any.
    public func consoleLogPath(instanceId: String) -> String? {
        if let vm = vms[instanceId] { return vm.handle.consoleLogPath }
        let path = runRoot + "/" + instanceId + "/console.log"
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    public func isRunning(instanceId: String) -> Bool { vms[instanceId] != nil || booting.contains(instanceId) }

    public var runningCount: Int { vms.count }

    /// Graceful stop of every VM (only when the server is told to take its instances down).
    public func stopAll(timeout: Duration) async {
        for instanceId in Array(vms.keys) {
            try? await perform(.shutdown, instanceId: instanceId, stopTimeout: timeout)
        }
    }

    // MARK: - Boot

    private func boot(_ instance: Instance) async {
        booting.insert(instance.id)
        defer { booting.remove(instance.id) }
        let instanceId = instance.id
        // The scheduler chose the host at create time; older records have none.
        mark(instanceId, .scheduled) { $0.hostId = $0.hostId ?? self.hostId }
        let image: Image
        do {
            guard let found = try store.image(idOrName: instance.imageId, projectId: nil) else {
                throw SwiftletError.notFound("image", instance.imageId)
            }
            image = found
        } catch {
            record(instanceId, .failed(reason: "image unavailable: \(error)"))
            return
        }
        let kernelPath = blobs.path(sha256: image.sha256)
        guard FileManager.default.fileExists(atPath: kernelPath) else {
            record(instanceId, .failed(reason: "image blob \(image.sha256) is missing on this host"))
            return
        }
        mark(instanceId, .imageReady)
        let runtimeDirectory = runRoot + "/" + instanceId
        try? FileManager.default.removeItem(atPath: runtimeDirectory)
        let spec = VMSpec(
            instanceID: instanceId, kernelPath: kernelPath, bootKind: BootKind(image.kind),
            memoryMiB: instance.memoryMib, vcpus: instance.vcpus, commandLine: CommandLineRenderer.render(instance),
            publishedPorts: instance.publishedPorts.map {
                PortMapping(hostPort: $0.hostPort, guestPort: $0.guestPort, proto: $0.proto == "udp" ? .udp : .tcp)
            },
            runtimeDirectory: runtimeDirectory, readyPattern: image.properties[Image.readyPatternProperty])
        let handle: VMHandle
        let times: BootTimestamps
        do {
            (handle, times) = try await driver.spawn(spec)
        } catch {
            record(instanceId, .failed(reason: "VMM failed to start: \(error)"))
            return
        }
        do {
            try store.saveHandle(instanceId: instanceId, handle: try JSONEncoder().encode(handle))
        } catch {
            await driver.destroy(handle)
            record(instanceId, .failed(reason: "cannot persist the VM handle: \(error)"))
            return
        }
        // The instance may have been deleted or stopped while the VMM started.
        guard let current = try? store.instance(idOrName: instanceId, projectId: nil), current.state == .building else {
            await driver.destroy(handle)
            try? store.removeHandle(instanceId: instanceId)
            return
        }
        mark(instanceId, nil) {
            $0.timeline.vmmSpawned = times.spawned
            $0.timeline.vmmUp = times.vmmUp
        }
        vms[instanceId] = RunningVM(handle: handle, supervisor: nil)
        let lines = driver.consoleLines(handle)
        let pattern = spec.readyPattern
        let readyTimeout = self.readyTimeout
        let driver = self.driver
        vms[instanceId]?.supervisor = supervise(instanceId: instanceId, handle: handle)
        // Wait for READY outside the actor's critical path: other instances boot meanwhile.
        Task {
            if let (time, _) = await waitForReady(lines: lines, pattern: pattern, timeout: readyTimeout) {
                await self.guestReady(instanceId: instanceId, handle: handle, at: time)
            } else if await self.isCurrent(instanceId: instanceId, handle: handle) {
                // Not READY in time and still running: the guest is wedged.
                _ = try? await driver.stop(handle, timeout: .milliseconds(10))
            }
        }
    }

    private func isCurrent(instanceId: String, handle: VMHandle) -> Bool { vms[instanceId]?.handle == handle }

    private func guestReady(instanceId: String, handle: VMHandle, at time: UInt64) {
        guard isCurrent(instanceId: instanceId, handle: handle) else { return }
        mark(instanceId, nil) { $0.timeline.ready = time }
        record(instanceId, .ready)
    }

    /// Watches the VMM process; on exit, applies the state machine and the restart policy.
    private func supervise(instanceId: String, handle: VMHandle) -> Task<Void, Never> {
        let driver = self.driver
        return Task {
            let exit = await driver.waitForExit(handle)
            guard !Task.isCancelled else { return }
            await self.vmExited(instanceId: instanceId, handle: handle, exit: exit)
        }
    }

    private func vmExited(instanceId: String, handle: VMHandle, exit: VMExit) async {
        guard isCurrent(instanceId: instanceId, handle: handle) else { return }
        vms[instanceId] = nil
        await driver.destroy(handle)
        try? store.removeHandle(instanceId: instanceId)
        let clean = exit.guestStatus == 0
        let restart = record(instanceId, .exited(clean: clean, reason: "VM exited: \(exit.reason)"))
        if restart { await reconcile(instanceId: instanceId) }
    }

    private func teardown(instanceId: String) async {
        if let vm = vms.removeValue(forKey: instanceId) {
            vm.supervisor?.cancel()
            await driver.destroy(vm.handle)
        } else if let data = try? store.handle(instanceId: instanceId),
            let handle = try? JSONDecoder().decode(VMHandle.self, from: data)
        {
            await driver.destroy(handle)
        }
        try? store.removeHandle(instanceId: instanceId)
        try? FileManager.default.removeItem(atPath: runRoot + "/" + instanceId)
        releaseWaiters(instanceId)
    }

    // MARK: - Recording

    /// Applies an observation through the state machine; returns whether to boot again.
    @discardableResult
    private func record(_ instanceId: String, _ observation: InstanceObservation) -> Bool {
        let result = try? store.updateInstance(id: instanceId) { instance in
            var (next, again) = InstanceLifecycle.observe(observation, in: instance.state, policy: instance.restartPolicy)
            if again {
                if instance.restartCount >= Self.maxRestarts {
                    (next, again) = (.error, false)
                } else {
                    instance.restartCount += 1
                    instance.timeline = .starting(at: monotonicNanos())
                }
            }
            switch observation {
            case .ready: instance.reason = nil
            case .exited(_, let reason), .failed(let reason):
                instance.reason = again ? "restarting (\(instance.restartCount)/\(Self.maxRestarts)): \(reason)" : reason
            }
            instance.state = next
        }
        if let result {
            switch observation {
            case .ready: event(instanceId, "ready", "guest READY")
            case .exited, .failed: event(instanceId, result.state == .building ? "restarting" : "exited", result.reason ?? "")
            }
            if result.state != .building { releaseWaiters(instanceId) }
        }
        // Only a restart leaves a settled observation in BUILDING.
        return result?.state == .building
    }

    private func mark(_ instanceId: String, _ phase: Phase?, _ extra: (@Sendable (inout Instance) -> Void)? = nil) {
        let now = monotonicNanos()
        _ = try? store.updateInstance(id: instanceId) { instance in
            if let phase { instance.timeline[phase] = now }
            extra?(&instance)
        }
    }

    private func event(_ instanceId: String, _ type: String, _ message: String) {
        try? store.addEvent(instanceId: instanceId, type: type, message: message)
    }
}

extension BootKind {
    init(_ kind: ImageKind) {
        switch kind {
        case .pvh: self = .pvh
        case .multiboot: self = .multiboot
        case .bzImage: self = .bzImage
        }
    }
}
