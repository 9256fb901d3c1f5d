import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages
import SwiftletNetwork

#if canImport(Glibc)
    import Glibc
#endif

/// The host side of Swiftlet: makes the VMs on this host match the assignments the controller
/// sends, supervises them, and reports what it sees as observations. It never reads or writes the
/// controller's store (docs/agent-protocol.md).
///
/// Level-triggered: each assignment carries the whole desired state of one instance, and
/// applying it again is harmless; `sync` applies a host's every assignment after a (re)connect.
public actor HostAgent {
    public nonisolated let hostId: String
    /// This host's copies of image bytes, by digest (next to `runRoot`).
    let imageCache: ImageCache
    let driver: any HypervisorDriver
    /// Bridges, tunnels and TAPs for instances on networks (nil: this host has no networking).
    let network: HostNetwork?
    let runRoot: String
    let logger: Logger
    private let readyTimeout: Duration
    /// The VM of each assigned instance that has one, booting or running.
    var slots: [String: VMSlot] = [:] {
        didSet { movableVMMsMayHaveChanged() }
    }
    /// Pre-booted VMs waiting for an instance (WarmPools.swift).
    var warm = WarmPoolState()
    /// Incoming VMMs of live migrations, prepared and waiting for their state (HostAgent+Moves).
    var incoming: [String: IncomingVM] = [:]
    /// Transfers in progress from this host, to call off on request (HostAgent+Moves).
    var outgoing: [String: MoveCancellation] = [:]
    /// Instances whose VM came in by a migration that is not committed yet, with the migration's
    /// id: their assignment has not arrived, and a rollback (`abortIncoming`) ends the VM.
    var movedIn: [String: String] = [:]
    /// VMMs started ahead and held for the next restore of a snapshot, by snapshot digest
    /// (HostAgent+Snapshots); `holding`: those being started.
    var heldForRestore: [String: HeldVMM] = [:]
    var holding: Set<String> = []
    /// Sources of stateful moves whose guest was quiesced: a rollback lets it serve again.
    var quiesced: Set<String> = []
    /// The address incoming VMMs listen on for a VM's state (the host's fabric address).
    let migrationAddress: String
    /// Where observations go; set by `sync`, when the agent connects.
    private var reports: (any ObservationSink)?
    /// Whether a sync was applied: the first one (the agent's start) also removes orphans.
    private var hasSynced = false
    /// The newest generation this agent was sent per instance (a removal's included), so that an
    /// older assignment arriving late never boots a VM that should no longer exist.
    var newestGeneration: [String: UInt64] = [:]
    /// Instances the controller re-creates elsewhere when this host goes DOWN (restart policy
    /// `always`): the ones a host that lost its lease must stop.
    var movable: Set<String> = [] {
        didSet { movableVMMsMayHaveChanged() }
    }
    /// Told the running VMMs of movable instances each time that set changes (nil: nobody asks).
    private var movableObserver: (@Sendable (Set<MovableVMM>) -> Void)?
    private var observedMovable: Set<MovableVMM> = []

    /// One instance's VM on this host, under the assignment generation it was started for.
    enum VMSlot {
        /// Image fetch and VMM spawn in progress; `cancelled` when a later assignment no longer
        /// wants it: the boot ends its VMM once it is up.
        case booting(generation: UInt64, cancelled: Bool)
        case running(RunningVM)
        /// The VM is being stopped or destroyed; its runtime directory is still its. `next`: an
        /// assignment that wants a VM again, booted once the stop is done (not into that directory
        /// while the old VMM still has it).
        case stopping(generation: UInt64, next: Assignment?)

        var generation: UInt64 {
            switch self {
            case .booting(let generation, _), .stopping(let generation, _): generation
            case .running(let vm): vm.generation
            }
        }
    }

    struct RunningVM {
        var generation: UInt64
        var handle: VMHandle
        var supervisor: Task<Void, Never>?
        /// What the boot reports with READY, in one observation (see `boot`); nil once reported.
        var unreported: UnreportedBoot?
        /// The QEMU exit statuses that are the guest finishing its work (the image's say).
        var successExitStatuses: Set<Int32>
    }

    struct UnreportedBoot {
        var timeline: Timeline
        var handle: Data
        var imageEvent: EventNote
    }

    /// VMMs starting at once (spawn until QMP answers `cont`): twice the CPUs, at least 2.
    public static let defaultConcurrentBoots = max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)
    let bootGate: BootGate
    private let hugePages: VMMHugePages

    public init(
        hostId: String, images: any ImageSource, driver: any HypervisorDriver, runRoot: String,
        readyTimeout: Duration = .seconds(30), maxConcurrentBoots: Int? = nil, hugePages: VMMHugePages = .auto,
        imageCacheDirectory: String? = nil, imageCacheLimitBytes: Int64? = nil, network: HostNetwork? = nil,
        migrationAddress: String = "127.0.0.1", logger: Logger
    ) {
        self.migrationAddress = migrationAddress
        bootGate = BootGate(limit: maxConcurrentBoots ?? Self.defaultConcurrentBoots)
        self.hugePages = hugePages
        self.hostId = hostId
        imageCache = ImageCache(
            root: imageCacheDirectory ?? (runRoot as NSString).deletingLastPathComponent + "/image-cache",
            source: images,
            limitBytes: imageCacheLimitBytes)
        self.driver = network.map { NetworkedHypervisorDriver(base: driver, network: $0) } ?? driver
        self.network = network
        self.runRoot = runRoot
        self.readyTimeout = readyTimeout
        self.logger = logger
    }

    // MARK: - Connect and restart safety

    /// On (re)connect: re-attaches to the VMs of `sync`'s assignments that still run, reports those
    /// that died meanwhile, removes VMs and files no assignment owns (on the first sync, VMM
    /// processes and directories under `runRoot`; on a later one, the VMs of instances assigned here
    /// no more), drops cached images no image names, then applies every assignment and pool.
    /// Observations go to `reports` from now on.
    public func sync(_ sync: HostSync, reports: any ObservationSink) async {
        self.reports = reports
        try? FileManager.default.createDirectory(atPath: runRoot, withIntermediateDirectories: true)
        if let network, let state = sync.networks { await network.apply(state, resetting: true) }
        var known = Set<String>()
        var settled = Set<String>()
        for assignment in sync.assignments {
            let instanceId = assignment.instanceId
            guard slots[instanceId] == nil, let data = assignment.handle,
                let handle = try? JSONDecoder().decode(VMHandle.self, from: data)
            else { continue }
            known.insert(handle.runtimeDirectory)
            if assignment.desired == .running, await driver.recover(handle) {
                logger.info("re-attached VM", metadata: ["instance.id": "\(instanceId)", "vm.pid": "\(handle.pid)"])
                let profile = try? LaunchProfile(
                    kind: assignment.boot.image.kind, properties: assignment.boot.image.properties)
                slots[instanceId] = .running(
                    RunningVM(
                        generation: assignment.generation, handle: handle,
                        supervisor: supervise(instanceId: instanceId, handle: handle),
                        successExitStatuses: profile?.successExitStatuses ?? LaunchProfile.defaultSuccessExitStatuses))
            } else {
                await release(handle, instanceId: instanceId)
                settled.insert(instanceId)
                await report(
                    instanceId, assignment.generation,
                    .exited(clean: false, reason: "the VM exited while the agent was down", timeline: nil))
            }
        }
        if hasSynced {
            // A reconnect: VMs of instances no longer assigned here (moved away or deleted while the
            // link was down) go, so nothing old keeps serving.
            let assigned = Set(sync.assignments.map(\.instanceId))
            for instanceId in slots.keys where !assigned.contains(instanceId) {
                logger.warning("removing a VM no longer assigned here", metadata: ["instance.id": "\(instanceId)"])
                await teardown(instanceId: instanceId)
            }
            // A move to this host did not survive the link's loss: the controller rolled it back
            // (or will), so its prepared VM goes.
            for (instanceId, vm) in incoming {
                incoming[instanceId] = nil
                logger.warning("removing the VM of a move cut off", metadata: ["instance.id": "\(instanceId)"])
                await driver.destroy(vm.handle)
            }
        } else {
            removeOrphans(keeping: known)
            var keptPorts: [String: (ports: [NetworkPort], filtered: Bool)] = [:]
            for assignment in sync.assignments where slots[assignment.instanceId] != nil {
                keptPorts[assignment.instanceId] = (
                    assignment.instance.ports ?? [], !(assignment.instance.securityGroups ?? []).isEmpty
                )
            }
            await network?.recover(keeping: keptPorts)
        }
        hasSynced = true
        let dropped = imageCache.prune(keeping: sync.imageDigests)
        if !dropped.isEmpty {
            logger.info("dropped unused image cache entries", metadata: ["image.cache.dropped": "\(dropped)"])
        }
        // The limit may have been lowered while the agent was down.
        let evicted = imageCache.enforceLimit(protecting: [])
        if !evicted.isEmpty {
            logger.info("evicted image cache copies over the limit", metadata: ["image.cache.evicted": "\(evicted)"])
        }
        // An instance reported as exited gets a new assignment if its restart policy says so.
        for assignment in sync.assignments where !settled.contains(assignment.instanceId) {
            await assign(assignment, pendingCommit: nil)
        }
        for pool in sync.pools { applyPool(pool) }
    }

    /// Kills VMM processes and removes runtime directories under `runRoot` that no assignment
    /// owns (e.g. a VM spawned just before a crash, before READY was reported).
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

    // MARK: - Desired state

    /// Applies one change of this host's desired state. With `pendingCommit` (in process only), an
    /// assignment's boot starts before the instance's record is committed: the VMM starts, and the
    /// guest runs or a failure is reported only once the commit is done; if it fails, the boot ends
    /// its VMM and reports nothing. Returns once a boot's VMM is up, or a stop or removal is done.
    public func apply(_ change: DesiredChange, pendingCommit: PendingCommit? = nil) async {
        switch change {
        case .assign(let assignment): await assign(assignment, pendingCommit: pendingCommit)
        case .unassign(let instanceId, let generation):
            newestGeneration[instanceId] = max(newestGeneration[instanceId] ?? 0, generation)
            await teardown(instanceId: instanceId)
        case .applyPool(let pool): applyPool(pool)
        case .removePool(let id): await removePool(id: id)
        case .evictImage(let sha256):
            imageCache.evict(sha256: sha256)
            await dropHeldVMM(sha256: sha256)
        case .networks(let state): await network?.apply(state)
        }
    }

    /// As `apply`, without waiting for a boot's VMM: the boot is started in order with the other
    /// changes (its slot is taken at once) and goes on while the next change is applied. The
    /// network transport uses it, so a burst of creates boots at the host's boot-gate pace.
    /// `receivedAt`: when the transport had the change in hand (the `scheduled` mark of a boot).
    public func apply(_ change: DesiredChange, startingBoots: Bool, receivedAt: UInt64? = nil) async {
        guard startingBoots, case .assign(let assignment) = change, assignment.desired == .running,
            slots[assignment.instanceId] == nil, isNewest(assignment)
        else {
            await apply(change)
            return
        }
        if assignment.instance.restartPolicy == .always { movable.insert(assignment.instanceId) }
        // The agent took it then: that is the `scheduled` mark, whenever the boot gets to run.
        let received = receivedAt ?? monotonicNanos()
        slots[assignment.instanceId] = .booting(generation: assignment.generation, cancelled: false)
        Task { await self.boot(assignment, pendingCommit: nil, receivedAt: received) }
    }

    /// Records the assignment's generation; false for one older than what this agent was sent.
    private func isNewest(_ assignment: Assignment) -> Bool {
        if let newest = newestGeneration[assignment.instanceId], newest > assignment.generation {
            logger.debug(
                "ignoring an older assignment",
                metadata: ["instance.id": "\(assignment.instanceId)", "generation": "\(assignment.generation)"])
            return false
        }
        newestGeneration[assignment.instanceId] = assignment.generation
        return true
    }

    /// What runs here: instance id → the generation its VM serves (for the controller, on reconnect).
    public func runningGenerations() -> [String: UInt64] { slots.mapValues(\.generation) }

    /// A running VMM of an instance the controller may move: what `fence` would stop.
    public struct MovableVMM: Hashable, Sendable {
        public var instanceId: String
        public var pid: Int32
        public var startTime: UInt64
    }

    /// Calls `observer` with the running VMMs of movable instances now and each time they change,
    /// as the change is made (for a watchdog that outlives this agent and fences them if the lease
    /// runs out after the agent died).
    public func observeMovableVMMs(_ observer: @escaping @Sendable (Set<MovableVMM>) -> Void) {
        movableObserver = observer
        observedMovable = movableVMMs()
        observer(observedMovable)
    }

    private func movableVMMs() -> Set<MovableVMM> {
        Set(
            movable.compactMap { instanceId in
                guard case .running(let vm) = slots[instanceId] else { return nil }
                return MovableVMM(instanceId: instanceId, pid: vm.handle.pid, startTime: vm.handle.processStartTime)
            })
    }

    private func movableVMMsMayHaveChanged() {
        guard let movableObserver else { return }
        let now = movableVMMs()
        guard now != observedMovable else { return }
        observedMovable = now
        movableObserver(now)
    }

    /// Stops the VMs of the instances the controller may move, without reporting (the host lost its
    /// lease: they may be starting elsewhere). The next sync assigns again what should run here.
    public func fence() async {
        for (instanceId, slot) in slots where movable.contains(instanceId) {
            switch slot {
            case .booting(let generation, _): slots[instanceId] = .booting(generation: generation, cancelled: true)
            case .running(let vm):
                slots[instanceId] = .stopping(generation: vm.generation, next: nil)
                vm.supervisor?.cancel()
                await release(vm.handle, instanceId: instanceId)
                await stopped(instanceId)
            case .stopping(let generation, _): slots[instanceId] = .stopping(generation: generation, next: nil)
            }
        }
    }

    /// The stop of an instance's VM is done: its slot is free, and a start that came meanwhile boots.
    private func stopped(_ instanceId: String) async {
        guard case .stopping(_, let next) = slots[instanceId] else { return }
        slots[instanceId] = nil
        if let next { await boot(next, pendingCommit: nil) }
    }

    private func assign(_ assignment: Assignment, pendingCommit: PendingCommit?) async {
        let instanceId = assignment.instanceId
        guard isNewest(assignment) else { return }
        movedIn[instanceId] = nil
        if assignment.instance.restartPolicy == .always {
            movable.insert(instanceId)
        } else {
            movable.remove(instanceId)
        }
        switch (assignment.desired, slots[instanceId]) {
        case (.running, nil):
            await boot(assignment, pendingCommit: pendingCommit)
        case (.running, .booting):
            // A stop then a start while the VMM starts: the boot in progress serves the start.
            slots[instanceId] = .booting(generation: assignment.generation, cancelled: false)
        case (.running, .running(let vm)):
            // A newer generation while a VM runs: either the controller restarts an exit this agent
            // has not processed yet (the VM is gone: boot a new one), or the VM still serves.
            if vm.generation < assignment.generation,
                [.gone, .shutdown].contains((try? await driver.state(vm.handle)) ?? .running)
            {
                // The exit may have been handled while the state was read.
                guard case .running(let current) = slots[instanceId], current.handle == vm.handle else {
                    if slots[instanceId] == nil { await boot(assignment, pendingCommit: pendingCommit) }
                    return
                }
                slots[instanceId] = .stopping(generation: assignment.generation, next: assignment)
                vm.supervisor?.cancel()
                await release(vm.handle, instanceId: instanceId)
                await stopped(instanceId)
                return
            }
            guard case .running(var current) = slots[instanceId], current.handle == vm.handle else { return }
            current.generation = assignment.generation
            slots[instanceId] = .running(current)
        case (.stopped, nil):
            break
        case (.stopped, .booting):
            slots[instanceId] = .booting(generation: assignment.generation, cancelled: true)
        case (.stopped, .running(let vm)):
            slots[instanceId] = .stopping(generation: assignment.generation, next: nil)
            vm.supervisor?.cancel()
            let exit = try? await driver.stop(vm.handle, timeout: .milliseconds(assignment.stopTimeoutMs))
            await release(vm.handle, instanceId: instanceId)
            await report(
                instanceId, assignment.generation,
                .stopped(reason: exit.map { "VM stopped: \($0.reason)" } ?? "VM stopped"))
            await stopped(instanceId)
        case (.running, .stopping):
            slots[instanceId] = .stopping(generation: assignment.generation, next: assignment)
        case (.stopped, .stopping):
            slots[instanceId] = .stopping(generation: assignment.generation, next: nil)
        }
    }

    // MARK: - Commands that act on a running VM

    public func command(_ command: VMCommand, instanceId: String) async throws(SwiftletError) {
        guard case .running(let vm) = slots[instanceId] else {
            throw SwiftletError(
                .conflict, "instance.not_running", "instance '\(instanceId)' has no running VM on this host")
        }
        do {
            switch command {
            case .pause: try await driver.pause(vm.handle)
            case .resume: try await driver.resume(vm.handle)
            case .reboot: try await driver.reboot(vm.handle)
            }
        } catch {
            throw SwiftletError(.internal, "hypervisor.failed", "\(command) failed: \(error)")
        }
    }

    /// The console log from byte `offset`: the current VM's, else the one kept from its last VM.
    public func readConsole(instanceId: String, from offset: UInt64) -> ConsoleChunk {
        let running = slots[instanceId] != nil
        let path: String
        if case .running(let vm) = slots[instanceId] {
            path = vm.handle.consoleLogPath
        } else {
            path = keptConsolePath(instanceId)
        }
        guard let file = FileHandle(forReadingAtPath: path) else {
            return ConsoleChunk(data: Data(), vmRunning: running)
        }
        defer { try? file.close() }
        try? file.seek(toOffset: offset)
        return ConsoleChunk(data: (try? file.readToEnd()) ?? Data(), vmRunning: running)
    }

    /// Where the console of a VM that went away is kept, until the instance is deleted.
    private func keptConsolePath(_ instanceId: String) -> String {
        (runRoot as NSString).deletingLastPathComponent + "/consoles/" + instanceId + ".log"
    }

    /// Ends a VM the instance keeps existing without: keeps its console for `logs`, then destroys
    /// it (process, runtime directory).
    func release(_ handle: VMHandle, instanceId: String) async {
        let kept = keptConsolePath(instanceId)
        try? FileManager.default.createDirectory(
            atPath: (kept as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: kept)
        try? FileManager.default.moveItem(atPath: handle.consoleLogPath, toPath: kept)
        await driver.destroy(handle)
    }

    /// Types a line on the instance's console (the kit reads commands there).
    public func sendConsole(instanceId: String, line: String) async throws(SwiftletError) {
        guard case .running(let vm) = slots[instanceId] else {
            throw SwiftletError(.conflict, "instance.not_running", "instance '\(instanceId)' has no running VM")
        }
        do { try await driver.sendConsole(vm.handle, line: line) } catch {
            throw SwiftletError(.conflict, "instance.console_failed", "cannot write to the console: \(error)")
        }
    }

    /// Graceful stop of every VM (only when the server is told to take its instances down). The
    /// instances keep their assignments: nothing is reported.
    public func stopAll(timeout: Duration) async {
        for (instanceId, slot) in slots {
            guard case .running(let vm) = slot else { continue }
            slots[instanceId] = .stopping(generation: vm.generation, next: nil)
            vm.supervisor?.cancel()
            _ = try? await driver.stop(vm.handle, timeout: timeout)
            await release(vm.handle, instanceId: instanceId)
            await stopped(instanceId)
        }
    }

    // MARK: - Boot

    private func boot(_ assignment: Assignment, pendingCommit: PendingCommit?, receivedAt: UInt64? = nil) async {
        let instance = assignment.instance
        let instanceId = instance.id
        // Taken already when the boot was started out of band (it may be cancelled meanwhile).
        if case .booting = slots[instanceId] {
        } else {
            slots[instanceId] = .booting(generation: assignment.generation, cancelled: false)
        }
        // Phase times stay here until READY and are reported with it: no one reads a BUILDING
        // instance's timeline before then, and each commit on this critical path costs CPU. A
        // failure reports the phases reached.
        var timeline = instance.timeline
        timeline.scheduled = receivedAt ?? monotonicNanos()
        let image = assignment.boot.image
        let ports = instance.ports ?? []
        if !ports.isEmpty && network == nil {
            await bootFailed(
                instanceId, "this host has no networking for the instance's ports", timeline: timeline,
                after: pendingCommit)
            return
        }
        let prepared: ImageCache.Prepared
        do { prepared = try await imageCache.prepare(assignment.boot) } catch {
            await bootFailed(
                instanceId, "image not ready: \(error.message)", timeline: timeline, after: pendingCommit)
            return
        }
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
        let imageEvent = EventNote(type: "image", message: imageMessage)
        let spec = vmSpec(for: assignment, prepared: prepared)
        if let snapshot = assignment.snapshot {
            await restoreBoot(
                assignment, snapshot: snapshot, spec: spec, prepared: prepared, timeline: timeline,
                imageEvent: imageEvent, pendingCommit: pendingCommit)
            return
        }
        let handle: VMHandle
        let times: BootTimestamps
        var bootPath = "cold"
        var pooled: (handle: VMHandle, taken: UInt64)?
        if ports.isEmpty, hasIdlePooledVM(instance: instance, imageId: image.id) {
            // A pooled guest runs its config at once: only for a committed record.
            if let pendingCommit {
                guard let persisted = await pendingCommit.wait() else {
                    slots[instanceId] = nil
                    return
                }
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
            if pendingCommit?.hasFailed == true {
                slots[instanceId] = nil
                return
            }
            do {
                let (driver, hugePages, spec) = (self.driver, self.hugePages, spec)
                (handle, times) = try await bootGate.run { alone in
                    var spec = spec
                    spec.transparentHugePages = hugePages == .always || (hugePages == .auto && alone)
                    return try await driver.spawn(spec) {
                        if let pendingCommit, await pendingCommit.wait() == nil { throw CancellationError() }
                    }
                }
            } catch {
                await bootFailed(instanceId, "VMM failed to start: \(error)", timeline: timeline, after: pendingCommit)
                return
            }
            // Resolved by now: the guest was held until it was.
            if let persisted = await pendingCommit?.wait() { timeline.persisted = persisted }
        }
        timeline.vmmSpawned = times.spawned
        timeline.vmmUp = times.vmmUp
        timeline.bootPath = bootPath
        guard let (generation, encodedHandle) = await keepStartedVM(instanceId, handle, timeline: timeline) else {
            return
        }
        // The handle, the phases and the image event are reported with READY, in one observation
        // (one commit): a commit here would take CPU from the VMM while it boots. Until READY only
        // this actor knows the VM; if the agent dies meanwhile, `sync` kills it as an orphan (no
        // assignment has its handle) and boots the instance, still BUILDING, again.
        slots[instanceId] = .running(
            RunningVM(
                generation: generation, handle: handle, supervisor: supervise(instanceId: instanceId, handle: handle),
                unreported: UnreportedBoot(timeline: timeline, handle: encodedHandle, imageEvent: imageEvent),
                successExitStatuses: prepared.profile.successExitStatuses))
        let events = driver.consoleEvents(handle)
        let pattern = spec.readyPattern
        let readyTimeout = self.readyTimeout
        let driver = self.driver
        // Wait for READY outside the actor's critical path: other instances boot meanwhile.
        Task {
            if let (time, _) = await waitForReady(events: events, pattern: pattern, timeout: readyTimeout) {
                await self.guestReady(instanceId: instanceId, handle: handle, at: time)
            } else if self.isCurrent(instanceId: instanceId, handle: handle) {
                // Not READY in time and still running: the guest is wedged.
                _ = try? await driver.stop(handle, timeout: .milliseconds(10))
            }
        }
    }

    /// A VMM that came up for a boot: the generation it serves and its encoded handle, or nil when
    /// the instance was deleted or stopped meanwhile (the VMM is ended) or the handle cannot be kept.
    func keepStartedVM(_ instanceId: String, _ handle: VMHandle, timeline: Timeline) async -> (UInt64, Data)? {
        guard case .booting(let generation, false) = slots[instanceId] else {
            if case .booting = slots[instanceId] { slots[instanceId] = nil }
            await driver.destroy(handle)
            return nil
        }
        guard let encodedHandle = try? JSONEncoder().encode(handle) else {
            slots[instanceId] = nil
            await driver.destroy(handle)
            await report(instanceId, generation, .failed(reason: "cannot encode the VM handle", timeline: timeline))
            return nil
        }
        return (generation, encodedHandle)
    }

    /// The VM an assignment runs as, in a fresh runtime directory of its own.
    func vmSpec(for assignment: Assignment, prepared: ImageCache.Prepared) -> VMSpec {
        let instance = assignment.instance
        let image = assignment.boot.image
        let runtimeDirectory = runRoot + "/" + instance.id
        // Left by an earlier VM of this instance; checked first, as a throwing remove is costly.
        if access(runtimeDirectory, F_OK) == 0 { try? FileManager.default.removeItem(atPath: runtimeDirectory) }
        var spec = VMSpec(
            instanceID: instance.id, kernelPath: prepared.kernelPath, bootKind: BootKind(image.kind),
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
        spec.networkPorts = instance.ports ?? []
        spec.portsFiltered = !(instance.securityGroups ?? []).isEmpty
        return spec
    }

    private func isCurrent(instanceId: String, handle: VMHandle) -> Bool {
        guard case .running(let vm) = slots[instanceId] else { return false }
        return vm.handle == handle
    }

    /// READY, reported with what the boot kept until now (handle, phases, image event).
    private func guestReady(instanceId: String, handle: VMHandle, at time: UInt64) async {
        guard case .running(var vm) = slots[instanceId], vm.handle == handle, let unreported = vm.unreported else {
            return
        }
        vm.unreported = nil
        slots[instanceId] = .running(vm)
        var timeline = unreported.timeline
        timeline.ready = time
        await report(
            instanceId, vm.generation,
            .ready(timeline: timeline, handle: unreported.handle, events: [unreported.imageEvent]))
    }

    /// Watches the VMM process; on exit, reports it (the controller applies the restart policy).
    func supervise(instanceId: String, handle: VMHandle) -> Task<Void, Never> {
        let driver = self.driver
        return Task {
            let exit = await driver.waitForExit(handle)
            guard !Task.isCancelled else { return }
            await self.vmExited(instanceId: instanceId, handle: handle, exit: exit)
        }
    }

    private func vmExited(instanceId: String, handle: VMHandle, exit: VMExit) async {
        guard case .running(let vm) = slots[instanceId], vm.handle == handle else { return }
        slots[instanceId] = .stopping(generation: vm.generation, next: nil)
        // A status the image calls success is the guest finishing its work (a batch unikernel).
        let clean = exit.status.map { vm.successExitStatuses.contains($0) } ?? false
        var reason = "VM exited: \(exit.reason)"
        // A failure carries the guest's own account of it, read before the console is moved.
        if !clean, let said = GuestLastWords.read(consoleLogAt: handle.consoleLogPath) {
            reason += "; the guest said: \(said)"
        }
        await release(handle, instanceId: instanceId)
        await stopped(instanceId)
        // Exited before READY: the phases it reached are reported with the exit.
        await report(
            instanceId, vm.generation, .exited(clean: clean, reason: reason, timeline: vm.unreported?.timeline))
    }

    func teardown(instanceId: String) async {
        movable.remove(instanceId)
        movedIn[instanceId] = nil
        quiesced.remove(instanceId)
        switch slots.removeValue(forKey: instanceId) {
        case .booting(let generation, _):
            // The boot destroys its VMM once it is up.
            slots[instanceId] = .booting(generation: generation, cancelled: true)
        case .running(let vm):
            slots[instanceId] = .stopping(generation: vm.generation, next: nil)
            vm.supervisor?.cancel()
            await driver.destroy(vm.handle)
            await stopped(instanceId)
        case .stopping(let generation, _):
            // The stop in progress ends the VM; nothing boots after it.
            slots[instanceId] = .stopping(generation: generation, next: nil)
            return
        case nil:
            break
        }
        try? FileManager.default.removeItem(atPath: runRoot + "/" + instanceId)
        try? FileManager.default.removeItem(atPath: keptConsolePath(instanceId))
    }

    // MARK: - Reporting

    /// Reports a boot's failure once its record is committed; nothing if the commit failed.
    func bootFailed(
        _ instanceId: String, _ reason: String, timeline: Timeline, after pendingCommit: PendingCommit?
    )
        async
    {
        guard case .booting(let generation, _) = slots.removeValue(forKey: instanceId) else { return }
        var timeline = timeline
        if let pendingCommit {
            guard let persisted = await pendingCommit.wait() else { return }
            timeline.persisted = persisted
        }
        await report(instanceId, generation, .failed(reason: reason, timeline: timeline))
    }

    func report(_ instanceId: String, _ generation: UInt64, _ report: Observation.Report) async {
        guard let reports else {
            logger.warning("observation before the agent connected", metadata: ["instance.id": "\(instanceId)"])
            return
        }
        await reports.observe(
            Observation(hostId: hostId, instanceId: instanceId, generation: generation, report: report))
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
