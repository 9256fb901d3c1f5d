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
    let store: any SwiftletStore
    private let blobs: BlobStore
    /// This host's copies of image bytes, by digest (next to `runRoot`).
    let imageCache: ImageCache
    let driver: any HypervisorDriver
    let runRoot: String
    let logger: Logger
    private let readyTimeout: Duration
    /// VMs this agent runs now, by instance id.
    private var vms: [String: RunningVM] = [:]
    /// Instances with a boot in progress (so a reconcile does not start a second VM).
    private var booting: Set<String> = []
    /// Pre-booted VMs waiting for an instance (WarmPools.swift).
    var warm = WarmPoolState()
    /// Waiters for an instance to leave BUILDING (create with `wait`).
    private var settleWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    /// Boots deleted while their VMM was starting: the boot ends that VMM once it is up.
    private var cancelledBoots: Set<String> = []

    private struct RunningVM {
        var handle: VMHandle
        var supervisor: Task<Void, Never>?
        /// What the boot has yet to commit: written with READY, in one commit (see `boot`).
        var unsaved: UnsavedBoot?
    }

    private struct UnsavedBoot {
        var timeline: Timeline
        var hostId: String
        var handle: Data
        var imageEvent: (type: String, message: String)
    }

    /// How many times an instance is restarted in a row before the agent gives up (ERROR).
    static let maxRestarts = 5

    /// VMMs starting at once (spawn until QMP answers `cont`): twice the CPUs, at least 2.
    public static let defaultConcurrentBoots = max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)
    private let bootGate: BootGate
    private let hugePages: VMMHugePages

    public init(
        hostId: String, store: any SwiftletStore, blobs: BlobStore, driver: any HypervisorDriver, runRoot: String,
        readyTimeout: Duration = .seconds(30), maxConcurrentBoots: Int? = nil, hugePages: VMMHugePages = .auto,
        imageCacheDirectory: String? = nil, imageCacheLimitBytes: Int64? = nil, logger: Logger
    ) {
        bootGate = BootGate(limit: maxConcurrentBoots ?? Self.defaultConcurrentBoots)
        self.hugePages = hugePages
        self.hostId = hostId
        self.store = store
        self.blobs = blobs
        imageCache = ImageCache(
            root: imageCacheDirectory ?? (runRoot as NSString).deletingLastPathComponent + "/image-cache", blobs: blobs,
            limitBytes: imageCacheLimitBytes)
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
                await release(handle, instanceId: instanceId)
                record(instanceId, .exited(clean: false, reason: "the VM exited while the agent was down"))
            }
        }
        removeOrphans(keeping: known)
        if let images = try? store.images(projectId: nil) {
            let dropped = imageCache.prune(keeping: Set(images.map(\.sha256)))
            if !dropped.isEmpty {
                logger.info("dropped unused image cache entries", metadata: ["image.cache.dropped": "\(dropped)"])
            }
            // The limit may have been lowered while the server was down.
            let evicted = imageCache.enforceLimit(protecting: [])
            if !evicted.isEmpty {
                logger.info(
                    "evicted image cache copies over the limit", metadata: ["image.cache.evicted": "\(evicted)"])
            }
        }
        let instances = (try? store.instances(projectId: nil, state: nil, name: nil, imageId: nil)) ?? []
        for instance in instances where instance.hostId == nil || instance.hostId == hostId {
            await reconcile(instanceId: instance.id)
        }
    }

    /// Drops this host's cached copy of a digest that no image record names any more: the
    /// controller calls it when it deletes the last image with those bytes.
    public nonisolated func evictCachedImage(sha256: String) {
        imageCache.evict(sha256: sha256)
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
    /// `persistedAt`: when the controller's insert committed, recorded with the first timeline mark.
    /// `created`: the record the controller has just committed (or, with `pendingCommit`, is
    /// committing), which saves reading it back on the create path (the boot's own commit re-checks
    /// the state); `image`: its image, as the controller resolved it.
    public func reconcile(
        instanceId: String, persistedAt: UInt64? = nil, created: Instance? = nil, image: Image? = nil,
        pendingCommit: PendingCommit? = nil
    ) async {
        let instance: Instance?
        do { instance = try created ?? store.instance(idOrName: instanceId, projectId: nil) } catch {
            logger.error(
                "reconcile: store read failed", metadata: ["instance.id": "\(instanceId)", "error": "\(error)"])
            return
        }
        guard let instance, instance.state != .deleted else {
            await teardown(instanceId: instanceId)
            return
        }
        switch instance.state {
        case .building:
            if vms[instanceId] == nil && !booting.contains(instanceId) {
                await boot(instance, persistedAt: persistedAt, image: image, pendingCommit: pendingCommit)
            }
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
                await release(vm.handle, instanceId: instanceId)
            }
        case .deleted:
            break
        }
    }

    // MARK: - Commands that act on a running VM

    public func perform(_ action: InstanceAction, instanceId: String, stopTimeout: Duration = .seconds(5))
        async throws(SwiftletError)
    {
        switch action {
        case .boot, .none:
            await reconcile(instanceId: instanceId)
        case .destroy:
            await teardown(instanceId: instanceId)
        case .shutdown:
            guard let vm = vms.removeValue(forKey: instanceId) else { return }
            vm.supervisor?.cancel()
            let exit = try? await driver.stop(vm.handle, timeout: stopTimeout)
            await release(vm.handle, instanceId: instanceId)
            event(instanceId, "stopped", exit.map { "VM stopped: \($0.reason)" } ?? "VM stopped")
        case .pause, .resume, .reset:
            guard let vm = vms[instanceId] else {
                throw SwiftletError(
                    .conflict, "instance.not_running", "instance '\(instanceId)' has no running VM on this host")
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
        if isSettled(instanceId) { return }
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
            if isSettled(instanceId) {
                continuation.resume()
            } else {
                settleWaiters[instanceId, default: []].append(continuation)
            }
        }
    }

    /// Reads only the state: this runs while the guest boots, beside it on the same CPUs.
    private func isSettled(_ instanceId: String) -> Bool {
        guard let state = try? store.instanceState(id: instanceId) else { return true }
        return state != .building
    }

    private func releaseWaiters(_ instanceId: String) {
        for waiter in settleWaiters.removeValue(forKey: instanceId) ?? [] { waiter.resume() }
    }

    /// The console log of an instance: its current VM's, else the one kept from its last VM.
    public func consoleLogPath(instanceId: String) -> String? {
        if let vm = vms[instanceId] { return vm.handle.consoleLogPath }
        let kept = keptConsolePath(instanceId)
        return FileManager.default.fileExists(atPath: kept) ? kept : nil
    }

    /// Where the console of a VM that went away is kept, until the instance is deleted.
    private func keptConsolePath(_ instanceId: String) -> String {
        (runRoot as NSString).deletingLastPathComponent + "/consoles/" + instanceId + ".log"
    }

    /// Ends a VM the instance keeps existing without: keeps its console for `logs`, then
    /// destroys it (process, runtime directory) and forgets its handle.
    private func release(_ handle: VMHandle, instanceId: String) async {
        let kept = keptConsolePath(instanceId)
        try? FileManager.default.createDirectory(
            atPath: (kept as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: kept)
        try? FileManager.default.moveItem(atPath: handle.consoleLogPath, toPath: kept)
        await driver.destroy(handle)
        try? store.removeHandle(instanceId: instanceId)
    }

    /// Types a line on the instance's console (the kit reads commands there).
    public func sendConsole(instanceId: String, line: String) async throws(SwiftletError) {
        guard let vm = vms[instanceId] else {
            throw SwiftletError(.conflict, "instance.not_running", "instance '\(instanceId)' has no running VM")
        }
        do { try await driver.sendConsole(vm.handle, line: line) } catch {
            throw SwiftletError(.conflict, "instance.console_failed", "cannot write to the console: \(error)")
        }
    }

    public func isRunning(instanceId: String) -> Bool { vms[instanceId] != nil || booting.contains(instanceId) }

    /// Graceful stop of every VM (only when the server is told to take its instances down).
    public func stopAll(timeout: Duration) async {
        for instanceId in Array(vms.keys) {
            try? await perform(.shutdown, instanceId: instanceId, stopTimeout: timeout)
        }
    }

    // MARK: - Boot

    /// With `pendingCommit`, the boot starts before the record is committed: the VMM starts, and
    /// the guest runs or a failure is recorded only once the commit is done; if it fails, the boot
    /// ends its VMM and records nothing.
    private func boot(
        _ instance: Instance, persistedAt: UInt64? = nil, image knownImage: Image? = nil,
        pendingCommit: PendingCommit? = nil
    ) async {
        booting.insert(instance.id)
        defer {
            booting.remove(instance.id)
            cancelledBoots.remove(instance.id)
        }
        let instanceId = instance.id
        // Phase times stay here until READY and are written with it in one commit: no one reads a
        // BUILDING instance's timeline before then, and each commit on this critical path costs a
        // few hundred microseconds of CPU. A failure records the phases reached.
        var timeline = instance.timeline
        if let persistedAt { timeline.persisted = persistedAt }
        timeline.scheduled = monotonicNanos()
        // The scheduler chose the host at create time; older records have none.
        let hostId = instance.hostId ?? self.hostId
        let image: Image
        do {
            guard let found = try knownImage ?? store.image(idOrName: instance.imageId, projectId: nil) else {
                throw SwiftletError.notFound("image", instance.imageId)
            }
            image = found
        } catch {
            await recordFailure(instanceId, "image unavailable: \(error)", timeline: timeline, after: pendingCommit)
            return
        }
        let prepared: ImageCache.Prepared
        do { prepared = try imageCache.prepare(image, instance: instance, store: store) } catch {
            await recordFailure(
                instanceId, "image not ready: \(error.message)", timeline: timeline, after: pendingCommit)
            return
        }
        let kernelPath = prepared.kernelPath
        timeline.imageReady = monotonicNanos()
        let digest = image.sha256.prefix(12)
        var imageMessage =
            prepared.cacheHit ? "image \(digest) cached on host" : "image \(digest) fetched into host cache"
        if !prepared.evicted.isEmpty {
            imageMessage += "; evicted \(prepared.evicted.map { $0.prefix(12) }.joined(separator: ", ")) (cache limit)"
            logger.info(
                "evicted image cache copies over the limit",
                metadata: ["instance.id": "\(instanceId)", "image.cache.evicted": "\(prepared.evicted)"])
        }
        let imageEvent = (type: "image", message: imageMessage)
        let runtimeDirectory = runRoot + "/" + instanceId
        // Left by an earlier VM of this instance; checked first, as a throwing remove is costly.
        if access(runtimeDirectory, F_OK) == 0 { try? FileManager.default.removeItem(atPath: runtimeDirectory) }
        let spec = VMSpec(
            instanceID: instanceId, kernelPath: kernelPath, bootKind: BootKind(image.kind),
            memoryMiB: instance.memoryMib, vcpus: instance.vcpus,
            commandLine: CommandLineRenderer.render(instance, template: prepared.profile.commandLine),
            publishedPorts: instance.publishedPorts.map {
                PortMapping(hostPort: $0.hostPort, guestPort: $0.guestPort, proto: $0.proto == "udp" ? .udp : .tcp)
            },
            runtimeDirectory: runtimeDirectory, readyPattern: image.properties[Image.readyPatternProperty],
            // A guest configured with an address gets a NIC even without published ports.
            userNetwork: instance.args.contains { $0.hasPrefix("ip=") },
            machineType: prepared.profile.machineType, initrdPath: prepared.initrdPath,
            diskFormat: image.kind == .qcow2 ? "qcow2" : image.kind == .raw ? "raw" : nil)
        let handle: VMHandle
        let times: BootTimestamps
        var bootPath = "cold"
        var pooled: (handle: VMHandle, taken: UInt64)?
        if instance.ports?.isEmpty ?? true, hasIdlePooledVM(instance: instance, imageId: image.id) {
            // A pooled guest runs its config at once: only for a committed record.
            if let pendingCommit {
                guard let persisted = await pendingCommit.wait() else { return }
                timeline.persisted = persisted
            }
            pooled = await startPooled(instance: instance, imageId: image.id, spec: spec)
        }
        if let pooled {
            (handle, times, bootPath) = (
                pooled.handle, BootTimestamps(spawned: pooled.taken, vmmUp: pooled.taken), "warm-pool"
            )
        } else {
            // The insert failed already: no VMM to start for it.
            if pendingCommit?.hasFailed == true { return }
            do {
                let (driver, hugePages) = (self.driver, self.hugePages)
                (handle, times) = try await bootGate.run { alone in
                    var spec = spec
                    spec.transparentHugePages = hugePages == .always || (hugePages == .auto && alone)
                    return try await driver.spawn(spec) {
                        if let pendingCommit, await pendingCommit.wait() == nil { throw CancellationError() }
                    }
                }
            } catch {
                await recordFailure(
                    instanceId, "VMM failed to start: \(error)", timeline: timeline, after: pendingCommit)
                return
            }
            // Resolved by now: the guest was held until it was.
            if let persisted = await pendingCommit?.wait() { timeline.persisted = persisted }
        }
        timeline.vmmSpawned = times.spawned
        timeline.vmmUp = times.vmmUp
        timeline.bootPath = bootPath
        guard cancelledBoots.remove(instanceId) == nil else {
            await driver.destroy(handle)
            return
        }
        guard let encodedHandle = try? JSONEncoder().encode(handle) else {
            await driver.destroy(handle)
            record(instanceId, .failed(reason: "cannot encode the VM handle"), timeline: timeline)
            return
        }
        // The handle, the phases and the image event are committed with READY, in one commit: a
        // commit here would take CPU from the VMM while it boots. Until READY only this actor knows
        // the VM; if the agent dies meanwhile, `recoverAll` kills it as an orphan (its directory has
        // no stored handle) and boots the instance, still BUILDING, again.
        vms[instanceId] = RunningVM(
            handle: handle, supervisor: nil,
            unsaved: UnsavedBoot(timeline: timeline, hostId: hostId, handle: encodedHandle, imageEvent: imageEvent))
        let events = driver.consoleEvents(handle)
        let pattern = spec.readyPattern
        let readyTimeout = self.readyTimeout
        let driver = self.driver
        vms[instanceId]?.supervisor = supervise(instanceId: instanceId, handle: handle)
        // Wait for READY outside the actor's critical path: other instances boot meanwhile.
        Task {
            if let (time, _) = await waitForReady(events: events, pattern: pattern, timeout: readyTimeout) {
                self.guestReady(instanceId: instanceId, handle: handle, at: time)
            } else if self.isCurrent(instanceId: instanceId, handle: handle) {
                // Not READY in time and still running: the guest is wedged.
                _ = try? await driver.stop(handle, timeout: .milliseconds(10))
            }
        }
    }

    private func isCurrent(instanceId: String, handle: VMHandle) -> Bool { vms[instanceId]?.handle == handle }

    /// READY, committed with what the boot kept unsaved until now (handle, phases, image event).
    private func guestReady(instanceId: String, handle: VMHandle, at time: UInt64) {
        guard isCurrent(instanceId: instanceId, handle: handle) else { return }
        let unsaved = vms[instanceId]?.unsaved
        vms[instanceId]?.unsaved = nil
        let hostId = unsaved?.hostId
        record(
            instanceId, .ready, timeline: unsaved?.timeline, events: unsaved.map { [$0.imageEvent] } ?? [],
            handle: unsaved?.handle
        ) {
            $0.timeline.ready = time
            if let hostId { $0.hostId = hostId }
        }
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
        guard isCurrent(instanceId: instanceId, handle: handle), let vm = vms.removeValue(forKey: instanceId) else {
            return
        }
        await release(handle, instanceId: instanceId)
        let clean = exit.guestStatus == 0
        // Exited before READY: the phases it reached are recorded with the exit.
        let restart = record(
            instanceId, .exited(clean: clean, reason: "VM exited: \(exit.reason)"), timeline: vm.unsaved?.timeline)
        if restart { await reconcile(instanceId: instanceId) }
    }

    private func teardown(instanceId: String) async {
        if booting.contains(instanceId) { cancelledBoots.insert(instanceId) }
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
        try? FileManager.default.removeItem(atPath: keptConsolePath(instanceId))
        releaseWaiters(instanceId)
    }

    // MARK: - Recording

    /// Records a boot's failure once its record is committed; nothing if the commit failed.
    private func recordFailure(
        _ instanceId: String, _ reason: String, timeline: Timeline, after pendingCommit: PendingCommit?
    ) async {
        var timeline = timeline
        if let pendingCommit {
            guard let persisted = await pendingCommit.wait() else { return }
            timeline.persisted = persisted
        }
        record(instanceId, .failed(reason: reason), timeline: timeline)
    }

    /// Applies an observation through the state machine; returns whether to boot again.
    @discardableResult
    private func record(
        _ instanceId: String, _ observation: InstanceObservation, timeline: Timeline? = nil,
        events: [(type: String, message: String)] = [], handle: Data? = nil,
        _ extra: (@Sendable (inout Instance) -> Void)? = nil
    ) -> Bool {
        // READY's event goes in the same commit; the others depend on the state reached.
        let readyEvents = observation == .ready ? [(type: "ready", message: "guest READY")] : []
        let result = try? store.updateInstance(id: instanceId, events: events + readyEvents, handle: handle) {
            instance in
            if let timeline { instance.timeline = timeline }
            extra?(&instance)
            var (next, again) = InstanceLifecycle.observe(
                observation, in: instance.state, policy: instance.restartPolicy)
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
                instance.reason =
                    again ? "restarting (\(instance.restartCount)/\(Self.maxRestarts)): \(reason)" : reason
            }
            instance.state = next
        }
        if let result {
            switch observation {
            case .ready: break
            case .exited, .failed:
                event(instanceId, result.state == .building ? "restarting" : "exited", result.reason ?? "")
            }
            if result.state != .building { releaseWaiters(instanceId) }
        }
        // Only a restart leaves a settled observation in BUILDING.
        return result?.state == .building
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
        case .raw, .qcow2: self = .disk
        // Never booted: ImageCache.prepare refuses an initrd before a spec is made.
        case .initrd: self = .bzImage
        }
    }
}
