import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import SwiftletAgent
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor
import SwiftletMetrics
import SwiftletNetwork
import SwiftletPKI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What `swiftlet agent` is told.
public struct RemoteAgentSettings: Sendable {
    /// `https://ADDR:PORT` of each controller's agent listener (several: any of a cluster's
    /// controllers, tried in turn).
    public var controllers: [String]
    public var joinToken: String?
    public var dataDirectory: String
    public var name: String
    /// Allows `http://`: plain HTTP between hosts is refused otherwise.
    public var insecure = false
    public var accelerator: String?
    public var maxConcurrentBoots: Int?
    public var imageCacheLimitBytes: Int64?
    /// Device prefix of this host's bridges, TAPs and tables: the controller's, for the host to
    /// carry networks. Networking needs root; without it the host takes no instances on networks.
    public var networkPrefix = "swl"
    /// Where this host's VXLAN tunnels end (default: the address it reaches the controller from).
    public var fabricAddress: String?
    /// A simulated host for scale benchmarks: the fake hypervisor driver (no VMM, a guest READY at
    /// once), fixed capabilities with this much memory, no networking, no calibration.
    public var simulatedMemoryMib: Int?
    /// Run each VMM confined (docs/qemu-driver.md, "Confinement").
    public var confineVMMs = false

    public init(controllers: [String], joinToken: String?, dataDirectory: String, name: String) {
        self.controllers = controllers
        self.joinToken = joinToken
        self.dataDirectory = dataDirectory
        self.name = name
    }
}

/// One compute host's agent process: it joins the controller once (a join token gets it a client
/// certificate), then dials the controller over mutual TLS, applies the desired state that comes
/// down its watch stream, reports what it sees, renews its host lease, and pulls image bytes by
/// digest. Behind NAT is fine: the agent always dials.
public final class RemoteAgent: Service {
    let settings: RemoteAgentSettings
    let identity: HostIdentity
    let client: HTTPClient
    let logger: Logger
    let agent: HostAgent
    let uplink: ObservationUplink
    /// The uplink, with READY boots recorded on the way into `metrics`.
    private let reports: MeasuredReports
    /// This host's own figures (`swiftlet agent --metrics-listen`), shared by the simulated hosts
    /// of one process.
    public let metrics: PrometheusMetrics
    let capabilities: HostCapabilities
    let controllers: ControllerEndpoints
    private let position = Mutex<(revision: UInt64?, epoch: String?)>((nil, nil))
    /// What the fence watchdog was last told (`<data>/fence.json`).
    private let fence = Mutex<(vmms: [FenceRecord.VMM], written: FenceRecord?)>(([], nil))
    private let agentProcess = (pid: getpid(), startTime: ProcessStat(pid: getpid())?.startTime ?? 0)
    private let lease = Mutex<LeaseState>(LeaseState())

    struct LeaseState {
        var grant = LeaseGrant(durationMs: 10_000, renewEveryMs: 2_000)
        var renewed = ContinuousClock.now
        var fenced = false
        /// How many times the host fenced itself: a watch opened before the last fence is replaced
        /// by one that starts with a full sync.
        var fences = 0
    }

    /// When the watch stream last carried anything (the controller pings an idle one).
    private let lastMessage = Mutex(ContinuousClock.now)
    /// A stream silent for longer is taken for dead (a partition, a NAT that dropped it).
    static let watchIdleTimeout: Duration = .seconds(10)

    public init(settings: RemoteAgentSettings, logger: Logger, metrics: PrometheusMetrics = PrometheusMetrics())
        async throws
    {
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        guard !settings.controllers.isEmpty else {
            throw SwiftletError.badRequest("agent.no_controller", "name at least one controller (--controller)")
        }
        for controller in settings.controllers {
            let scheme = controller.split(separator: ":").first.map(String.init) ?? ""
            guard scheme == "https" || (scheme == "http" && settings.insecure) else {
                throw SwiftletError.badRequest(
                    "agent.insecure_controller",
                    scheme == "http"
                        ? "plain HTTP between hosts is refused: use https://, or pass --insecure explicitly"
                        : "the controller address must be https://HOST:PORT, got '\(controller)'")
            }
        }
        controllers = ControllerEndpoints(settings.controllers)
        try FileManager.default.createDirectory(atPath: settings.dataDirectory, withIntermediateDirectories: true)
        let driver: any HypervisorDriver
        var caps: HypervisorCapabilities
        let network: HostNetwork?
        if settings.simulatedMemoryMib != nil {
            let fake = FakeHypervisorDriver()
            (driver, caps, network) = (fake, await fake.capabilities(), nil)
        } else {
            caps = try await QEMUDriver.cachedCapabilities(
                at: settings.dataDirectory + "/host-calibration.json", logger: logger)
            if let forced = settings.accelerator { caps.chosenAccelerator = forced }
            driver = QEMUDriver(
                accelerator: caps.chosenAccelerator, confinement: settings.confineVMMs ? VMMConfinement() : nil,
                logger: logger)
            try LinuxNetworkDriver.validatePrefix(settings.networkPrefix)
            network =
                getuid() == 0
                ? HostNetwork(driver: LinuxNetworkDriver(prefix: settings.networkPrefix), logger: logger) : nil
        }
        capabilities = HostCapabilities(
            cpus: ProcessInfo.processInfo.activeProcessorCount,
            memoryMib: settings.simulatedMemoryMib ?? Int(ProcessInfo.processInfo.physicalMemory >> 20),
            hypervisors: [caps.hypervisor],
            hypervisorVersion: caps.version, machineTypes: caps.machineTypes, accelerators: caps.accelerators,
            chosenAccelerator: caps.chosenAccelerator, calibrationMs: caps.calibration,
            networkPrefix: network?.prefix,
            fabricAddress: network == nil
                ? nil : settings.fabricAddress ?? FabricAddress.towards(url: settings.controllers[0]))
        let identityDirectory = settings.dataDirectory + "/identity"
        if let known = HostIdentity.load(directory: identityDirectory) {
            identity = known
        } else {
            guard let token = settings.joinToken else {
                throw SwiftletError.badRequest(
                    "agent.not_joined",
                    "this host has not joined yet: pass --join-token (from `swiftlet host join-token create`)")
            }
            identity = try await HostIdentity.join(
                controller: settings.controllers[0], token: try JoinToken.parse(token), name: settings.name,
                capabilities: capabilities, directory: identityDirectory, logger: logger)
        }
        client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPClient.Configuration(
                tlsConfiguration: try identity.tlsConfiguration(), timeout: .init(connect: .seconds(5))))
        let uplink = ObservationUplink(client: nil, logger: logger)
        self.uplink = uplink
        reports = MeasuredReports(forwardingTo: uplink, metrics: metrics)
        agent = HostAgent(
            hostId: identity.hostId, images: RemoteImageSource(client: client, controllers: controllers),
            driver: driver, runRoot: settings.dataDirectory + "/run", maxConcurrentBoots: settings.maxConcurrentBoots,
            imageCacheLimitBytes: settings.imageCacheLimitBytes, network: network,
            // Where another host's VMM sends a VM's state: the address the controller reaches this host by.
            migrationAddress: settings.fabricAddress ?? FabricAddress.towards(url: settings.controllers[0])
                ?? "127.0.0.1", logger: logger)
        await uplink.connect(client: client, controllers: controllers)
        logger.info(
            "agent ready", metadata: ["host.id": "\(identity.hostId)", "controllers": "\(controllers.urls)"])
    }

    public var hostId: String { identity.hostId }

    /// The gauges read at scrape time, by metric name: this host's VMs, its idle warm-pool VMs,
    /// and whether it holds its lease (0 once it lapsed or the host fenced itself).
    public func gaugeReadings() async -> [String: [MetricLabels: Double]] {
        let host: MetricLabels = ["host": hostId]
        let held = lease.withLock { lease in
            !lease.fenced && ContinuousClock.now - lease.renewed < .milliseconds(lease.grant.durationMs)
        }
        return [
            MetricName.agentVMs: [host: Double(await agent.runningGenerations().count)],
            MetricName.warmPoolReadyVMs: [host: Double(await agent.poolReadyCounts().values.reduce(0, +))],
            MetricName.agentLeaseHeld: [host: held ? 1 : 0],
        ]
    }

    /// Runs until shut down: the watch stream (reconnecting with backoff), the lease, the uplink.
    /// The VMs keep running when the agent stops (a restarted agent re-attaches to them).
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.uplink.run() }
                group.addTask { await self.leaseLoop() }
                group.addTask { await self.fenceLoop() }
                group.addTask { await self.watchLoop() }
            }
        }
        try? await client.shutdown()
    }

    // MARK: - Lease and fencing

    private func leaseLoop() async {
        var failures = 0
        while !Task.isCancelled {
            let grant = lease.withLock { $0.grant }
            // Stamped before the request: the controller's own stamp is later, so this host's
            // lease never outlives the one the controller counts.
            let sent = ContinuousClock.now
            let base = controllers.base
            do {
                var request = HTTPClientRequest(url: base + "/agent/v1/lease")
                request.method = .POST
                let response = try await client.execute(request, timeout: .milliseconds(Int64(grant.renewEveryMs)))
                let body = try await response.body.collect(upTo: 1 << 16)
                failures = 0
                if response.status == .ok, let granted = try? SwiftletJSON.decoder().decode(LeaseGrant.self, from: body)
                {
                    lease.withLock {
                        $0.grant = granted
                        $0.renewed = sent
                        $0.fenced = false
                    }
                } else {
                    logger.warning("lease refused", metadata: ["http.status": "\(response.status.code)"])
                }
            } catch {
                // Unreachable twice in a row (one slow answer is no reason): the lease, and the
                // watch after it, go to the next controller.
                logger.debug("lease renewal failed", metadata: ["controller": "\(base)", "error": "\(error)"])
                failures += 1
                if failures >= 2, controllers.failOver(from: base) {
                    failures = 0
                    logger.notice(
                        "lease: failing over to another controller", metadata: ["controller": "\(controllers.base)"])
                }
            }
            try? await Task.sleep(for: .milliseconds(lease.withLock { $0.grant.renewEveryMs }))
        }
    }

    private func fenceLoop() async {
        // Simulated hosts have no VMM processes to fence.
        let watched = settings.simulatedMemoryMib == nil
        if watched {
            await agent.observeMovableVMMs { [self] vmms in
                writeFenceRecord(
                    vmms: vmms.map { .init(instanceId: $0.instanceId, pid: $0.pid, startTime: $0.startTime) })
            }
        }
        while !Task.isCancelled {
            await fenceIfExpired()
            if watched { writeFenceRecord(vmms: nil) }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Brings `<data>/fence.json` up to date: with `vmms` when the agent's movable VMMs changed
    /// (written as the change is made), else the deadline the lease has now. Rewritten when either
    /// moved, the deadline by more than a tick either way (the first grant may shorten the lease
    /// the agent assumed until then). The watchdog starts once the first record is there.
    private func writeFenceRecord(vmms: [FenceRecord.VMM]?) {
        let remaining = lease.withLock { state in
            .milliseconds(state.grant.durationMs - Self.fenceMargin(state.grant))
                - (ContinuousClock.now - state.renewed)
        }
        let deadline = FenceWatchdog.bootNanos() &+ UInt64(max(0, remaining / .nanoseconds(1)))
        let first = fence.withLock { state -> Bool in
            if let vmms { state.vmms = vmms.sorted { $0.instanceId < $1.instanceId } }
            let record = FenceRecord(
                agentPid: agentProcess.pid, agentStartTime: agentProcess.startTime, deadline: deadline, vmms: state.vmms
            )
            let moved = state.written.map { max($0.deadline, deadline) - min($0.deadline, deadline) }
            guard record.vmms != state.written?.vmms || (moved ?? .max) > 50_000_000 else { return false }
            // Under the lock: two writers never put an older record over a newer one.
            FenceWatchdog.write(record, directory: settings.dataDirectory)
            defer { state.written = record }
            return state.written == nil
        }
        if first { FenceWatchdog.start(directory: settings.dataDirectory, logger: logger) }
    }

    /// How long before its lease's end a host stops its movable VMs: they are gone before the
    /// controller moves them.
    static func fenceMargin(_ grant: LeaseGrant) -> Int { min(1000, grant.durationMs / 5) }

    /// The loop of `swiftlet agent-watchdog` (FenceWatchdog).
    public static func runFenceWatchdog(directory: String, logger: Logger) async {
        await FenceWatchdog.run(directory: directory, logger: logger)
    }

    /// A host whose lease ran out may have had its instances moved: it stops its VMs before the
    /// controller could start them elsewhere, and runs only what the next sync assigns it.
    private func fenceIfExpired() async {
        let expired = lease.withLock { state -> Bool in
            let margin = Self.fenceMargin(state.grant)
            guard !state.fenced, ContinuousClock.now - state.renewed > .milliseconds(state.grant.durationMs - margin)
            else { return false }
            state.fenced = true
            state.fences += 1
            return true
        }
        guard expired else { return }
        logger.warning("host lease expired: stopping the VMs of `always` instances (the controller may move them)")
        await agent.fence()
        position.withLock { $0 = (nil, nil) }
    }

    // MARK: - Watch

    /// Watches the current controller; when its stream fails or ends, the next one (a full round of
    /// failures backs off).
    private func watchLoop() async {
        var backoff: Duration = .milliseconds(100)
        var failures = 0
        while !Task.isCancelled {
            let base = controllers.base
            do {
                try await watchOnce(base: base)
                backoff = .milliseconds(100)
                failures = 0
            } catch {
                logger.info("watch stream ended", metadata: ["controller": "\(base)", "error": "\(error)"])
            }
            failures += 1
            if controllers.failOver(from: base) {
                logger.notice("failing over to another controller", metadata: ["controller": "\(controllers.base)"])
            }
            // The next controller at once; after a round of failures, back off.
            guard failures >= controllers.urls.count else { continue }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
    }

    private func watchOnce(base: String) async throws {
        let (revision, epoch) = position.withLock { $0 }
        let hello = WatchRequest(
            revision: revision, epoch: epoch, running: await agent.runningGenerations(), capabilities: capabilities)
        var request = HTTPClientRequest(url: base + "/agent/v1/watch")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try SwiftletJSON.encoder().encode(hello)))
        let response = try await client.execute(request, timeout: .hours(24 * 365))
        guard response.status == .ok else {
            let body = try await response.body.collect(upTo: 1 << 16)
            throw SwiftletError(
                .unavailable, "agent.watch_refused",
                "the controller refused the watch (\(response.status.code)): \(String(buffer: body))")
        }
        // The stream is read apart from where its messages are applied, so a busy agent does not
        // hold back the reading (and the receipt times say when each change arrived); one consumer
        // keeps them in order.
        let (messages, received) = AsyncStream.makeStream(of: (AgentDown, UInt64).self)
        // The steps of a move take seconds: they are answered apart, so the stream goes on meanwhile.
        let (moves, moveSink) = AsyncStream.makeStream(of: AgentRequest.self)
        let fencesAtStart = lease.withLock { $0.fences }
        lastMessage.withLock { $0 = .now }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await (message, time) in messages {
                    if case .request(let request) = message, request.call.isMoveStep {
                        moveSink.yield(request)
                    } else {
                        await self.handle(message, receivedAt: time)
                    }
                }
            }
            group.addTask {
                await withDiscardingTaskGroup { steps in
                    for await request in moves {
                        steps.addTask {
                            await self.uplink.reply(AgentReply(id: request.id, result: await self.answer(request.call)))
                        }
                    }
                }
            }
            // Ends this watch when the stream went silent, or when the host fenced itself since it
            // opened (the next watch starts with a full sync, which boots again what stays here).
            group.addTask {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: .milliseconds(250)) } catch { return }
                    if ContinuousClock.now - self.lastMessage.withLock({ $0 }) > Self.watchIdleTimeout {
                        throw SwiftletError(.unavailable, "agent.watch_idle", "the watch stream went silent")
                    }
                    if self.lease.withLock({ $0.fences }) != fencesAtStart {
                        throw SwiftletError(.unavailable, "agent.fenced", "the host fenced itself: resyncing")
                    }
                }
            }
            defer {
                received.finish()
                moveSink.finish()
            }
            let decoder = SwiftletJSON.decoder()
            var pending = Data()
            for try await chunk in response.body {
                lastMessage.withLock { $0 = .now }
                pending.append(contentsOf: chunk.readableBytesView)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[pending.index(after: newline)...])
                    guard !line.isEmpty else { continue }
                    received.yield((try decoder.decode(AgentDown.self, from: line), monotonicNanos()))
                }
            }
            // The controller ended the stream: the watchdog's work is done.
            group.cancelAll()
        }
    }

    private func handle(_ message: AgentDown, receivedAt: UInt64) async {
        switch message {
        case .sync(let sync, let epoch):
            reports.note(sync)
            await agent.sync(sync, reports: reports)
            position.withLock { $0 = (sync.revision, epoch) }
        case .event(let event):
            reports.note(event.change)
            await agent.apply(event.change, startingBoots: true, receivedAt: receivedAt)
            position.withLock { $0.revision = event.revision }
        case .request(let request):
            let result = await answer(request.call)
            await uplink.reply(AgentReply(id: request.id, result: result))
        case .ping:
            break
        }
    }

    private func answer(_ call: AgentRequest.Call) async -> AgentReply.Result {
        do throws(SwiftletError) {
            switch call {
            case .command(let command, let instanceId):
                try await agent.command(command, instanceId: instanceId)
                return .done
            case .sendConsole(let instanceId, let line):
                try await agent.sendConsole(instanceId: instanceId, line: line)
                return .done
            case .readConsole(let instanceId, let offset):
                return .console(await agent.readConsole(instanceId: instanceId, from: offset))
            case .poolReadyCounts:
                return .pools(await agent.poolReadyCounts())
            case .prepareIncoming(let assignment, let tls):
                return .incoming(try await agent.prepareIncoming(assignment, tls: tls))
            case .migrateOut(let instanceId, let endpoint, let settings):
                return .movedOut(try await agent.migrateOut(instanceId: instanceId, to: endpoint, settings: settings))
            case .finishIncoming(let instanceId, let moveId, let generation):
                return .tookOver(
                    handle: try await agent.finishIncoming(
                        instanceId: instanceId, moveId: moveId, generation: generation))
            case .abortIncoming(let instanceId, let moveId):
                await agent.abortIncoming(instanceId: instanceId, moveId: moveId)
                return .done
            case .resumeAfterMove(let instanceId):
                try await agent.resumeAfterMove(instanceId: instanceId)
                return .done
            case .cancelMigrateOut(let instanceId):
                await agent.cancelMigrateOut(instanceId: instanceId)
                return .done
            case .saveSnapshot(let instanceId):
                return .snapshotSaved(try await saveSnapshot(instanceId: instanceId))
            case .prepareStandby(let assignment):
                try await agent.prepareStandby(assignment)
                return .done
            case .exportState(let instanceId):
                return .exported(try await agent.exportState(instanceId: instanceId))
            case .pauseForMove(let instanceId):
                try await agent.pauseForMove(instanceId: instanceId)
                return .done
            case .importState(let instanceId, let moveId, let state):
                try await agent.importState(instanceId: instanceId, moveId: moveId, state: state)
                return .done
            }
        } catch {
            return .failed(code: error.code, message: error.message, status: error.kind.httpStatus)
        }
    }
}
