import Foundation
import Logging
import ServiceLifecycle
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletImages
import SwiftletMetrics
import SwiftletStore
import Synchronization

/// The controller's half of the agent boundary for instances: it turns instance records into
/// their hosts' desired state and sends it, and it records what the agents observe. It is the only
/// writer of what hosts report (docs/agent-protocol.md): agents never touch the store.
public final class InstanceSync: ObservationSink, Service {
    let store: any SwiftletStore
    let agents: AgentRegistry
    private let catalog: CatalogCache
    /// What a connecting host is told about networks (nil: networking disabled).
    private let networking: ControllerNetworking?
    private let metrics: PrometheusMetrics
    private let logger: Logger
    /// Waiters for an instance to leave BUILDING (create with `wait`).
    private let settleWaiters = Mutex<[String: [SettleWaiter]]>([:])
    /// Settled instances may have been missed (their hosts report to another controller): the
    /// waits here look again.
    private let (recheckRequests, recheckRequest) = AsyncStream.makeStream(
        of: Void.self, bufferingPolicy: .bufferingNewest(1))
    /// The in-process agent's reports the store could not take yet, in the order they came.
    private let unrecorded = OrderedHandOff<Observation>()
    private let (retryRequests, retryRequest) = AsyncStream.makeStream(
        of: Void.self, bufferingPolicy: .bufferingNewest(1))

    /// How many times an instance is restarted in a row before it is left in ERROR.
    static let maxRestarts = 5

    init(
        store: any SwiftletStore, agents: AgentRegistry, catalog: CatalogCache, networking: ControllerNetworking?,
        metrics: PrometheusMetrics, logger: Logger
    ) {
        self.metrics = metrics
        self.store = store
        self.agents = agents
        self.catalog = catalog
        self.networking = networking
        self.logger = logger
    }

    /// The background work, until cancelled or a graceful shutdown: reports the store could not
    /// take yet, and waits that may have missed their instance settling elsewhere.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.recordUnrecordedWhenAsked() }
                group.addTask { await self.recheckWaitsWhenAsked() }
            }
        }
    }

    // MARK: - Desired state down

    /// What `instance` boots from, read through the catalog cache: its image, the image's initrd,
    /// and the signing keys when its project requires signed images.
    func bootImage(imageId: String, projectId: String, known: Image? = nil) async throws(SwiftletError) -> BootImage {
        try await catalog.value("boot|\(imageId)|\(projectId)", generation: store.catalogGeneration) {
            () async throws(SwiftletError) in
            var found = known
            if found == nil { found = try await store.image(idOrName: imageId, projectId: nil) }
            guard let image = found else { throw .notFound("image", imageId) }
            var boot = BootImage(image: image)
            if let initrdId = image.properties[LaunchProfile.initrdProperty] {
                boot.initrd = try await store.image(idOrName: initrdId, projectId: nil)
            }
            if let catalogStore = store as? any ImageCatalogStore, let project = try await store.project(id: projectId),
                project.requireSignedImages
            {
                boot.signature = SignatureCheck(
                    projectName: project.name, keys: try await catalogStore.signingKeys(projectId: project.id))
            }
            return boot
        }
    }

    /// The desired state of `instance` on its host.
    func assignment(for instance: Instance, image: Image? = nil, handle: Data? = nil, stopTimeout: Duration? = nil)
        async throws(SwiftletError) -> Assignment
    {
        let desired: DesiredVMState =
            switch instance.state {
            case .building, .running, .paused: .running
            case .stopped, .error, .deleted, .unknown: .stopped
            }
        var assignment = Assignment(
            instance: instance, generation: instance.generation ?? 0, desired: desired,
            boot: try await bootImage(imageId: instance.imageId, projectId: instance.projectId, known: image),
            handle: handle)
        assignment.snapshot = try await snapshot(of: instance)
        if let stopTimeout {
            assignment.stopTimeoutMs =
                Int(stopTimeout.components.seconds * 1000)
                + Int(stopTimeout.components.attoseconds / 1_000_000_000_000_000)
        }
        return assignment
    }

    /// Sends the desired state of `instance` to its host and returns once the agent has acted on it
    /// (a boot's VMM is up, a stop is done). A desired state that cannot be made (its image cannot be
    /// resolved) is recorded as the boot's failure; an unreachable host leaves the record as it is
    /// for the agent's next sync.
    func dispatch(
        _ instance: Instance, image: Image? = nil, pendingCommit: PendingCommit? = nil, stopTimeout: Duration? = nil
    ) async {
        guard let hostId = instance.hostId else { return }
        let link: any AgentLink
        do { link = try agents.link(for: hostId) } catch {
            logger.warning(
                "desired state not delivered", metadata: ["instance.id": "\(instance.id)", "error": "\(error)"])
            return
        }
        let assignment: Assignment
        do { assignment = try await self.assignment(for: instance, image: image, stopTimeout: stopTimeout) } catch {
            var timeline = instance.timeline
            if let pendingCommit {
                guard let persisted = await pendingCommit.wait() else { return }
                timeline.persisted = persisted
            }
            await observe(
                Observation(
                    hostId: hostId, instanceId: instance.id, generation: instance.generation ?? 0,
                    report: .failed(reason: "image not ready: \(error.message)", timeline: timeline)))
            return
        }
        await link.apply(.assign(assignment), pendingCommit: pendingCommit)
    }

    /// Removes a deleted instance's VM and files from its host.
    func unassign(_ instance: Instance) async {
        guard let hostId = instance.hostId, let link = try? agents.link(for: hostId) else { return }
        await link.apply(.unassign(instanceId: instance.id, generation: instance.generation ?? 0), pendingCommit: nil)
    }

    /// Everything that should be on `hostId`, for its agent's (re)connect.
    func hostSync(hostId: String) async throws(SwiftletError) -> HostSync {
        var assignments: [Assignment] = []
        for instance in try await store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
        where instance.hostId == hostId && instance.state != .deleted {
            do {
                assignments.append(
                    try await assignment(for: instance, handle: try await store.handle(instanceId: instance.id)))
            } catch {
                logger.warning(
                    "no assignment for instance", metadata: ["instance.id": "\(instance.id)", "error": "\(error)"])
            }
        }
        var pools: [PoolAssignment] = []
        for pool in try await (store as? any PoolStore)?.pools(projectId: nil) ?? [] {
            if let boot = try? await bootImage(imageId: pool.imageId, projectId: pool.projectId) {
                pools.append(PoolAssignment(pool: pool, boot: boot))
            }
        }
        var networks: HostNetworkState?
        if let networking, let host = try await store.hosts().first(where: { $0.id == hostId }),
            networking.carriesNetworks(host)
        {
            networks = try await networking.state(forHost: hostId)
        }
        return HostSync(
            revision: store.generation, assignments: assignments, pools: pools,
            imageDigests: Set(try await store.images(projectId: nil).map(\.sha256)).union(try await snapshotDigests()),
            networks: networks)
    }

    // MARK: - Observations up

    /// The in-process agent's reports. One the store cannot take now (it is unavailable) waits
    /// in order with those after it, and is recorded when the store answers again.
    public func observe(_ observation: Observation) async {
        if await unrecorded.offer(observation, handOn: { await self.recordOrLog($0) == .taken }) {
            retryRequest.yield()
        }
    }

    enum RecordOutcome { case taken, retryLater }

    /// Records `observation`, or logs why it is refused for good; `.retryLater` when the store is
    /// unavailable (a report is taken again safely: a repeat of an applied one is stale, or writes the
    /// same state again).
    func recordOrLog(_ observation: Observation) async -> RecordOutcome {
        do {
            try await record(observation)
        } catch {
            if error.kind == .unavailable { return .retryLater }
            logger.warning(
                "refused an agent report",
                metadata: [
                    "host.id": "\(observation.hostId)", "instance.id": "\(observation.instanceId)",
                    "generation": "\(observation.generation)", "error": "\(error)",
                ])
        }
        return .taken
    }

    /// Records the reports the store could not take, in order, retrying while it is unavailable,
    /// until cancelled.
    func recordUnrecordedWhenAsked() async {
        for await _ in retryRequests {
            while await !unrecorded.handOnKept({ await self.recordOrLog($0) == .taken }) {
                try? await Task.sleep(for: Self.storeRetryInterval)
                if Task.isCancelled { return }
            }
        }
    }

    static let storeRetryInterval: Duration = .milliseconds(250)

    /// Refuses a report from a host the instance is not on, or made under an older assignment.
    private static func check(_ observation: Observation, against instance: Instance) throws(SwiftletError) {
        guard instance.hostId == observation.hostId else {
            throw SwiftletError(
                .conflict, "report.not_assigned",
                "instance '\(instance.id)' is not assigned to host '\(observation.hostId)'")
        }
        guard instance.generation ?? 0 == observation.generation else {
            throw SwiftletError(
                .conflict, "report.stale_generation",
                "report for generation \(observation.generation) of instance '\(instance.id)', which is at \(instance.generation ?? 0)"
            )
        }
    }

    /// Records one observation, or says why it is refused.
    func record(_ observation: Observation) async throws(SwiftletError) {
        let instanceId = observation.instanceId
        switch observation.report {
        case .event(let note):
            guard let instance = try await store.instance(idOrName: instanceId, projectId: nil) else {
                throw .notFound("instance", instanceId)
            }
            try Self.check(observation, against: instance)
            try await store.addEvent(instanceId: instanceId, type: note.type, message: note.message)
        case .stopped(let reason):
            guard let instance = try await store.instance(idOrName: instanceId, projectId: nil) else {
                throw .notFound("instance", instanceId)
            }
            try Self.check(observation, against: instance)
            try await store.updateInstance(
                id: instanceId, events: [("stopped", reason)], handle: nil
            ) { record throws(SwiftletError) in
                try Self.check(observation, against: record)
                record.observed = ObservedState(phase: .stopped, hostId: observation.hostId, at: Date())
                if record.task?.to == observation.hostId { record.task = nil }
            }
            try await store.removeHandle(instanceId: instanceId)
        case .ready(let timeline, let handle, let events):
            // READY's event, the boot's notes and the handle go in the same commit.
            try await apply(
                .ready, observation, timeline: timeline,
                events: events.map { ($0.type, $0.message) } + [("ready", "guest READY")], handle: handle)
        case .exited(let clean, let reason, let timeline):
            try await apply(.exited(clean: clean, reason: reason), observation, timeline: timeline, vmGone: true)
        case .failed(let reason, let timeline):
            try await apply(.failed(reason: reason), observation, timeline: timeline, vmGone: true)
        }
    }

    /// Applies an observation through the state machine and the restart policy, in one commit; a
    /// restart is sent to the host as a new assignment. `vmGone`: the VM's handle is forgotten.
    private func apply(
        _ observed: InstanceObservation, _ observation: Observation, timeline: Timeline?,
        events: [(type: String, message: String)] = [], handle: Data? = nil, vmGone: Bool = false
    ) async throws(SwiftletError) {
        let result = try await store.updateInstance(id: observation.instanceId, events: events, handle: handle) {
            instance throws(SwiftletError) in
            try Self.check(observation, against: instance)
            if let timeline { instance.timeline = timeline }
            var (next, again) = InstanceLifecycle.observe(observed, in: instance.state, policy: instance.restartPolicy)
            if again {
                if instance.restartCount >= Self.maxRestarts {
                    (next, again) = (.error, false)
                } else {
                    instance.restartCount += 1
                    instance.timeline = .starting(at: monotonicNanos())
                }
            }
            switch observed {
            case .ready: instance.reason = nil
            case .exited(_, let reason), .failed(let reason):
                instance.reason =
                    again ? "restarting (\(instance.restartCount)/\(Self.maxRestarts)): \(reason)" : reason
            }
            let phase: ObservedState.Phase =
                switch observed {
                case .ready: .running
                case .exited: .exited
                case .failed: .failed
                }
            instance.observed = ObservedState(phase: phase, hostId: observation.hostId, at: Date())
            // The new host reported: the move is over, whichever way it ended.
            if instance.task?.to == observation.hostId { instance.task = nil }
            // A new VM (a restart) or none (ERROR, STOPPED) is a new desired state.
            if again || next != instance.state && !next.wantsVM { instance.generation = (instance.generation ?? 0) + 1 }
            instance.state = next
        }
        if vmGone { try await store.removeHandle(instanceId: result.id) }
        switch observed {
        case .ready: break
        case .exited, .failed:
            try? await store.addEvent(
                instanceId: result.id, type: result.state == .building ? "restarting" : "exited",
                message: result.reason ?? "")
        }
        guard result.state == .building else {
            releaseWaiters(result.id)
            // After the waiters: a create that waits for READY is answered first.
            if case .ready = observed { await recordBoot(of: result, on: observation.hostId) }
            return
        }
        // Only a restart leaves a settled observation in BUILDING: the host boots it again.
        await dispatch(result)
    }

    /// A boot that reached READY, into the boot histograms; its image's kind is read through the
    /// catalog cache, after the commit, so never on the path to READY.
    private func recordBoot(of instance: Instance, on hostId: String) async {
        let kind = try? await bootImage(imageId: instance.imageId, projectId: instance.projectId).image.kind.rawValue
        metrics.recordBoot(instance.timeline, host: hostId, imageKind: kind ?? "unknown")
    }

    // MARK: - Waiting

    /// Suspends until the instance is no longer BUILDING, or `timeout` passes.
    func waitUntilSettled(instanceId: String, timeout: Duration) async {
        if await isSettled(instanceId) { return }
        // Registers first and checks after, so a report committed in between is not missed.
        let waiter = SettleWaiter()
        settleWaiters.withLock { $0[instanceId, default: []].append(waiter) }
        if await isSettled(instanceId) { releaseWaiters(instanceId) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await waiter.wait() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
            // Only this wait ends: other requests waiting on the instance keep their own timeouts.
            self.settleWaiters.withLock { waiters in
                waiters[instanceId]?.removeAll { $0 === waiter }
                if waiters[instanceId]?.isEmpty == true { waiters[instanceId] = nil }
            }
            waiter.release()
        }
    }

    /// Asks for every wait here to look again: news of instances that settled through another
    /// controller (their hosts report there) may have been missed.
    func recheckWaits() {
        recheckRequest.yield()
    }

    /// Releases the waits whose instances settled, each time `recheckWaits` asks, until cancelled.
    func recheckWaitsWhenAsked() async {
        for await _ in recheckRequests {
            let waited = settleWaiters.withLock { Array($0.keys) }
            guard !waited.isEmpty, let states = try? await store.instanceStates(ids: waited) else { continue }
            // Gone (deleted) counts as settled, as in `isSettled`.
            for instanceId in waited where states[instanceId].map({ $0 != .building }) ?? true {
                releaseWaiters(instanceId)
            }
        }
    }

    /// Reads only the state: this runs while the guest boots, beside it on the same CPUs.
    private func isSettled(_ instanceId: String) async -> Bool {
        guard let state = try? await store.instanceState(id: instanceId) else { return true }
        return state != .building
    }

    func releaseWaiters(_ instanceId: String) {
        let waiters = settleWaiters.withLock { $0.removeValue(forKey: instanceId) } ?? []
        for waiter in waiters { waiter.release() }
    }
}

extension InstanceState {
    /// Whether an instance in this state should have a VM on its host.
    var wantsVM: Bool {
        switch self {
        case .building, .running, .paused: true
        // UNKNOWN is never stored: nothing is sent down for it.
        case .stopped, .error, .deleted, .unknown: false
        }
    }
}

/// One wait for an instance to settle: released at most once, before or after it is awaited.
final class SettleWaiter: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<Void, Never>)
        case released
    }

    private let state = Mutex(State.pending)

    func wait() async {
        await withCheckedContinuation { continuation in
            let released = state.withLock { state in
                guard case .pending = state else { return true }
                state = .waiting(continuation)
                return false
            }
            if released { continuation.resume() }
        }
    }

    func release() {
        let waiting: CheckedContinuation<Void, Never>? = state.withLock { state in
            defer { state = .released }
            if case .waiting(let continuation) = state { return continuation }
            return nil
        }
        waiting?.resume()
    }
}
