import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletStore
import Synchronization

/// The controller's end of a host agent's network connection. Desired-state changes go into the
/// host's feed in the store, numbered by revision, so that whichever controller holds the agent's
/// watch stream hands them on: this one at once when it holds it, another when the store tells it
/// of the append. An agent that reconnects (to any controller) resumes after the last revision it
/// applied, or gets a full `HostSync` when that revision is no longer in the feed (or is another
/// store's). Calls on the agent (console, commands) go down the same stream and wait for the
/// agent's reply; when the agent is connected to another controller, they go through the store
/// to that one, and the answer comes back the same way.
public final class RemoteAgentLink: AgentLink {
    public let hostId: String
    /// Names the store's revision sequences (`HostFeedStore.feedIdentity`).
    let epoch: String
    private let feed: any HostFeedStore
    /// This controller, as the store names the holder of a watch stream.
    private let controllerId: String
    private let routed: RoutedCalls
    private let logger: Logger
    private let state = Mutex(State())
    /// Changes the store could not take yet: appended, in order, before any later one.
    private let unappended = OrderedHandOff<DesiredChange>()

    /// Feed entries read at once.
    static let pageSize = 256

    private struct State {
        var stream: AsyncStream<AgentDown>.Continuation?
        /// Wakes the current stream's pump to read the feed.
        var wake: AsyncStream<Void>.Continuation?
        /// Numbers the streams, so that the end of a replaced one does not end its successor.
        var streamSerial = 0
        /// The last revision handed to the current stream.
        var delivered: UInt64 = 0
        /// This controller's appends to the host's feed in flight: the pump leaves the feed to them
        /// until they end, so that what they commit reaches the agent as they wrote it, with the
        /// time of its commit.
        var appending = 0
        /// The pump was woken while appends were in flight: it reads once they end.
        var pumpDeferred = false
        /// Changes this controller committed that wait for an earlier revision, by revision.
        var committed: [UInt64: DesiredChange] = [:]
        var calls: [String: CheckedContinuation<AgentReply.Result, Never>] = [:]
        /// Another controller left calls for this host's agent in the store.
        var callsWaiting = false
        /// Calls taken from the store and sent to the agent: their answers go back to the store.
        var forwarded: Set<String> = []
    }

    /// A watch stream and the loop that feeds it from the store (run it beside the stream's
    /// reader), and what to do once the stream is over.
    struct WatchSession: Sendable {
        let stream: AsyncStream<AgentDown>
        let pump: @Sendable () async -> Void
        let end: @Sendable () async -> Void
    }

    init(
        hostId: String, epoch: String, feed: any HostFeedStore, controllerId: String, routed: RoutedCalls,
        logger: Logger
    ) {
        self.hostId = hostId
        self.epoch = epoch
        self.feed = feed
        self.controllerId = controllerId
        self.routed = routed
        self.logger = logger
    }

    // MARK: - AgentLink

    /// Appends the change to the host's feed, or keeps it to append, in order, once the store takes
    /// it again; with `pendingCommit`, only once the record committed.
    public func apply(_ change: DesiredChange, pendingCommit: PendingCommit?) async {
        var change = change
        if let pendingCommit {
            guard let persisted = await pendingCommit.wait() else { return }
            // The commit time goes in the timeline, as the in-process agent records it.
            if case .assign(var assignment) = change {
                assignment.instance.timeline.persisted = persisted
                change = .assign(assignment)
            }
        }
        _ = await unappended.offer(change, handOn: { await self.append($0) })
    }

    /// Appends the changes the store could not take before, in order, while it takes them.
    func appendUnappended() async {
        _ = await unappended.handOnKept { await self.append($0) }
    }

    /// Appends `change` to the host's feed and hands it to the agent; false when the store did not
    /// take it.
    private func append(_ change: DesiredChange) async -> Bool {
        do {
            try await Self.append([(self, change)])
            return true
        } catch {
            logger.warning(
                "desired change not in the host's feed yet: kept to append again",
                metadata: ["host.id": "\(hostId)", "error": "\(error)"])
            return false
        }
    }

    /// Appends `changes` to their hosts' feeds in one transaction (the links share their
    /// controller's store) and hands each to its host's agent.
    static func append(_ changes: [(link: RemoteAgentLink, change: DesiredChange)]) async throws(SwiftletError) {
        guard let feed = changes.first?.link.feed else { return }
        try await commit(changes) { entries throws(SwiftletError) in try await feed.appendHostChanges(entries) }
    }

    /// Runs `write`, which commits `changes` to their hosts' feeds in one transaction (with records
    /// of its own, such as the new instances an assignment is for), and hands each change to its
    /// host's agent. An assignment not timed yet is timed `persisted` at that commit.
    static func commit(
        _ changes: [(link: RemoteAgentLink, change: DesiredChange)],
        write: ([HostChange]) async throws(SwiftletError) -> [UInt64]
    ) async throws(SwiftletError) {
        let encoder = SwiftletJSON.encoder()
        var feed: [HostChange] = []
        for (link, change) in changes {
            do { feed.append(HostChange(hostId: link.hostId, body: try encoder.encode(change))) } catch {
                throw SwiftletError(.internal, "agent.bad_change", "cannot encode a desired change: \(error)")
            }
        }
        var links: [ObjectIdentifier: RemoteAgentLink] = [:]
        for (link, _) in changes { links[ObjectIdentifier(link)] = link }
        for link in links.values { link.appendBegan() }
        let revisions: [UInt64]
        do { revisions = try await write(feed) } catch {
            for link in links.values { link.appendEnded([]) }
            throw error
        }
        let persisted = monotonicNanos()
        var ended: [ObjectIdentifier: [(UInt64, DesiredChange)]] = [:]
        for (index, (link, change)) in changes.enumerated() {
            var change = change
            if case .assign(var assignment) = change, assignment.instance.timeline.persisted == nil {
                assignment.instance.timeline.persisted = persisted
                change = .assign(assignment)
            }
            ended[ObjectIdentifier(link), default: []].append((revisions[index], change))
        }
        for (id, link) in links { link.appendEnded(ended[id] ?? []) }
    }

    private func appendBegan() {
        state.withLock { $0.appending += 1 }
    }

    /// Hands the changes an append committed (none when it failed) to the stream, in order of
    /// revision; the pump reads what lies between, once no append is in flight.
    private func appendEnded(_ changes: [(revision: UInt64, change: DesiredChange)]) {
        state.withLock { state in
            state.appending -= 1
            guard let stream = state.stream else { return }
            for (revision, change) in changes where revision > state.delivered { state.committed[revision] = change }
            while let change = state.committed.removeValue(forKey: state.delivered + 1) {
                state.delivered += 1
                stream.yield(.event(WatchEvent(revision: state.delivered, change: change)))
            }
            // A failed append's outcome may be unknown: what it committed is read from the feed.
            if state.appending == 0, state.pumpDeferred || !state.committed.isEmpty || changes.isEmpty {
                state.pumpDeferred = false
                state.wake?.yield()
            }
        }
    }

    public func command(_ command: VMCommand, instanceId: String) async throws(SwiftletError) {
        _ = try await call(.command(command, instanceId: instanceId))
    }

    public func sendConsole(instanceId: String, line: String) async throws(SwiftletError) {
        _ = try await call(.sendConsole(instanceId: instanceId, line: line))
    }

    public func readConsole(instanceId: String, from offset: UInt64) async throws(SwiftletError) -> ConsoleChunk {
        guard case .console(let chunk) = try await call(.readConsole(instanceId: instanceId, offset: offset)) else {
            throw SwiftletError(.internal, "agent.bad_reply", "host '\(hostId)' answered a console read wrongly")
        }
        return chunk
    }

    public func prepareIncoming(_ assignment: Assignment, tls: MigrationCredentials?) async throws(SwiftletError)
        -> MoveEndpoint
    {
        guard case .incoming(let endpoint) = try await call(.prepareIncoming(assignment, tls: tls)) else {
            throw Self.unexpectedReply(hostId)
        }
        return endpoint
    }

    public func migrateOut(instanceId: String, to endpoint: MoveEndpoint, settings: MoveSettings)
        async throws(SwiftletError) -> MoveReport
    {
        guard
            case .movedOut(let report) = try await call(
                .migrateOut(instanceId: instanceId, to: endpoint, settings: settings))
        else { throw Self.unexpectedReply(hostId) }
        return report
    }

    public func finishIncoming(instanceId: String, moveId: String, generation: UInt64) async throws(SwiftletError)
        -> Data
    {
        guard
            case .tookOver(let handle) = try await call(
                .finishIncoming(instanceId: instanceId, moveId: moveId, generation: generation))
        else { throw Self.unexpectedReply(hostId) }
        return handle
    }

    public func abortIncoming(instanceId: String, moveId: String) async throws(SwiftletError) {
        _ = try await call(.abortIncoming(instanceId: instanceId, moveId: moveId))
    }

    public func resumeAfterMove(instanceId: String) async throws(SwiftletError) {
        _ = try await call(.resumeAfterMove(instanceId: instanceId))
    }

    public func cancelMigrateOut(instanceId: String) async throws(SwiftletError) {
        _ = try await call(.cancelMigrateOut(instanceId: instanceId))
    }

    public func prepareStandby(_ assignment: Assignment) async throws(SwiftletError) {
        _ = try await call(.prepareStandby(assignment))
    }

    public func exportState(instanceId: String) async throws(SwiftletError) -> StateExport {
        guard case .exported(let export) = try await call(.exportState(instanceId: instanceId)) else {
            throw Self.unexpectedReply(hostId)
        }
        return export
    }

    public func pauseForMove(instanceId: String) async throws(SwiftletError) {
        _ = try await call(.pauseForMove(instanceId: instanceId))
    }

    public func importState(instanceId: String, moveId: String, state: Data) async throws(SwiftletError) {
        _ = try await call(.importState(instanceId: instanceId, moveId: moveId, state: state))
    }

    public func saveSnapshot(instanceId: String) async throws(SwiftletError) -> SavedSnapshot {
        guard case .snapshotSaved(let saved) = try await call(.saveSnapshot(instanceId: instanceId)) else {
            throw Self.unexpectedReply(hostId)
        }
        return saved
    }

    private static func unexpectedReply(_ hostId: String) -> SwiftletError {
        SwiftletError(.internal, "agent.bad_reply", "host '\(hostId)' answered a call with another kind of reply")
    }

    public func poolReadyCounts() async -> [String: Int] {
        guard case .pools(let counts) = try? await call(.poolReadyCounts) else { return [:] }
        return counts
    }

    // MARK: - The agent's side

    /// Opens the watch stream for a (re)connecting agent: the changes after `request.revision` when
    /// the feed still has them all, else a full sync first. A stream opened earlier is ended.
    func open(_ request: WatchRequest, sync: () async throws(SwiftletError) -> HostSync) async throws(SwiftletError)
        -> WatchSession
    {
        let (stream, continuation) = AsyncStream.makeStream(of: AgentDown.self, bufferingPolicy: .unbounded)
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // The feed's revision is read before the sync, and the pump goes on after it: a change
        // made meanwhile is then in both, and applying it twice is harmless.
        let bounds = try await feed.hostChanges(hostId: hostId, after: 0, limit: 0)
        let start: UInt64
        if request.epoch == epoch, let revision = request.revision, bounds.canResume(after: revision) {
            start = revision
        } else {
            var full = try await sync()
            full.revision = bounds.latest
            start = bounds.latest
            continuation.yield(.sync(full, epoch: epoch))
        }
        wake.yield()
        let (serial, replaced) = state.withLock { state in
            let replaced = (state.stream, state.wake)
            state.stream = continuation
            state.wake = wake
            state.delivered = start
            state.committed = [:]
            state.streamSerial += 1
            return (state.streamSerial, replaced)
        }
        // Outside the lock: ending a stream runs its termination handler, which takes the lock.
        replaced.0?.finish()
        replaced.1?.finish()
        continuation.onTermination = { [weak self] _ in self?.closed(serial: serial) }
        // Names this stream, so that the end of a replaced one does not clear its successor.
        let holder = controllerId + "/\(serial)"
        if feed.routesAgentCalls {
            // Other controllers route this host's calls here from now on; those left before are taken.
            try await feed.setWatchHolder(hostId: hostId, holder: holder, releasing: nil)
            wakeForCalls()
        }
        let (feed, hostId) = (feed, hostId)
        return WatchSession(
            stream: stream, pump: { [self] in await pump(serial: serial, wakes: wakes) },
            end: {
                guard feed.routesAgentCalls else { return }
                try? await feed.setWatchHolder(hostId: hostId, holder: nil, releasing: holder)
            })
    }

    /// Reads the feed after what the stream was handed, each time it is woken, until the stream ends.
    private func pump(serial: Int, wakes: AsyncStream<Void>) async {
        let decoder = SwiftletJSON.decoder()
        for await _ in wakes {
            await forwardRoutedCalls(serial: serial)
            while !Task.isCancelled {
                let next = state.withLock { state -> (after: UInt64, deferred: Bool)? in
                    guard state.streamSerial == serial else { return nil }
                    if state.appending > 0 { state.pumpDeferred = true }
                    return (state.delivered, state.appending > 0)
                }
                guard let (after, deferred) = next else { return }
                if deferred { break }
                let page: HostFeedPage
                do { page = try await feed.hostChanges(hostId: hostId, after: after, limit: Self.pageSize) } catch {
                    logger.warning(
                        "cannot read the host's feed; retrying",
                        metadata: ["host.id": "\(hostId)", "error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                guard page.canResume(after: after) else {
                    // Trimmed past what the agent has: it reconnects and gets a full sync.
                    disconnect()
                    return
                }
                var events: [WatchEvent] = []
                do {
                    for entry in page.entries {
                        events.append(
                            WatchEvent(
                                revision: entry.revision,
                                change: try decoder.decode(DesiredChange.self, from: entry.body)))
                    }
                } catch {
                    // Written by a newer controller: a full sync says the same in terms this one knows.
                    logger.error(
                        "undecodable feed entry: the agent resyncs",
                        metadata: ["host.id": "\(hostId)", "error": "\(error)"])
                    disconnect()
                    return
                }
                let handed = state.withLock { state -> Bool in
                    guard state.streamSerial == serial, let stream = state.stream else { return false }
                    // An append that began meanwhile may have committed one of these: it hands it on.
                    if state.appending > 0 {
                        state.pumpDeferred = true
                        return false
                    }
                    for event in events where event.revision == state.delivered + 1 {
                        let change = state.committed.removeValue(forKey: event.revision) ?? event.change
                        stream.yield(.event(WatchEvent(revision: event.revision, change: change)))
                        state.delivered = event.revision
                    }
                    while let change = state.committed.removeValue(forKey: state.delivered + 1) {
                        state.delivered += 1
                        stream.yield(.event(WatchEvent(revision: state.delivered, change: change)))
                    }
                    return true
                }
                if !handed || page.entries.count < Self.pageSize { break }
            }
        }
    }

    /// Wakes the pump: another controller appended to this host's feed.
    func wake() {
        _ = state.withLock { $0.wake?.yield() }
    }

    /// Wakes the pump to take the calls other controllers left for this host's agent.
    func wakeForCalls() {
        state.withLock { state in
            guard let wake = state.wake else { return }
            state.callsWaiting = true
            wake.yield()
        }
    }

    /// Sends the agent the calls left for it in the store; their answers go back there.
    private func forwardRoutedCalls(serial: Int) async {
        let waiting = state.withLock { state in
            defer { state.callsWaiting = false }
            return state.callsWaiting && state.streamSerial == serial
        }
        guard waiting else { return }
        let calls: [(id: String, body: Data)]
        do { calls = try await feed.takeAgentCalls(hostId: hostId) } catch {
            logger.warning("cannot take routed calls", metadata: ["host.id": "\(hostId)", "error": "\(error)"])
            return
        }
        let decoder = SwiftletJSON.decoder()
        for (id, body) in calls {
            guard let call = try? decoder.decode(AgentRequest.Call.self, from: body) else {
                _ = try? await feed.answerAgentCall(
                    id: id,
                    body: Self.encode(.failed(code: "agent.bad_call", message: "the call cannot be read", status: 400)))
                continue
            }
            let sent = state.withLock { state -> Bool in
                guard state.streamSerial == serial, let stream = state.stream else { return false }
                state.forwarded.insert(id)
                stream.yield(.request(AgentRequest(id: id, call: call)))
                return true
            }
            if !sent {
                _ = try? await feed.answerAgentCall(
                    id: id,
                    body: Self.encode(.failed(code: "host.unreachable", message: "the agent disconnected", status: 409))
                )
            }
        }
    }

    private static func encode(_ result: AgentReply.Result) -> Data {
        (try? SwiftletJSON.encoder().encode(result)) ?? Data()
    }

    private func closed(serial: Int) {
        let (calls, wake): ([CheckedContinuation<AgentReply.Result, Never>], AsyncStream<Void>.Continuation?) =
            state.withLock { state in
                // A newer stream may have replaced this one already.
                guard state.streamSerial == serial else { return ([], nil) }
                state.stream = nil
                state.committed = [:]
                defer {
                    state.calls = [:]
                    state.wake = nil
                    // Their callers time out: the agent that would answer them is gone.
                    state.forwarded = []
                }
                return (Array(state.calls.values), state.wake)
            }
        wake?.finish()
        for call in calls {
            call.resume(returning: .failed(code: "host.unreachable", message: "the agent disconnected", status: 409))
        }
    }

    /// Ends the current stream (the host's access was revoked).
    func disconnect() {
        let stream = state.withLock { $0.stream }
        stream?.finish()
    }

    /// Keeps an idle stream alive.
    func ping() {
        _ = state.withLock { $0.stream?.yield(.ping) }
    }

    /// An answer to one of this link's calls, or to one another controller routed here.
    func resolve(_ reply: AgentReply) async {
        let (waiter, forwarded) = state.withLock { state in
            (state.calls.removeValue(forKey: reply.id), state.forwarded.remove(reply.id) != nil)
        }
        if let waiter {
            waiter.resume(returning: reply.result)
        } else if forwarded {
            do { try await feed.answerAgentCall(id: reply.id, body: Self.encode(reply.result)) } catch {
                logger.warning("cannot pass on a routed call's answer", metadata: ["error": "\(error)"])
            }
        }
    }

    /// A call on the agent: down this controller's stream when it holds the agent's, else through
    /// the store to the controller that does.
    private func call(_ call: AgentRequest.Call) async throws(SwiftletError) -> AgentReply.Result {
        let local = state.withLock { $0.stream != nil }
        if !local, feed.routesAgentCalls, let holder = try await feed.watchHolder(hostId: hostId),
            !holder.hasPrefix(controllerId + "/")
        {
            return try await routedCall(call)
        }
        return try await localCall(call)
    }

    private func routedCall(_ call: AgentRequest.Call) async throws(SwiftletError) -> AgentReply.Result {
        let id = ResourceID.make("call")
        let body: Data
        do { body = try SwiftletJSON.encoder().encode(call) } catch {
            throw SwiftletError(.internal, "agent.bad_call", "cannot encode the call: \(error)")
        }
        try await feed.sendAgentCall(id: id, hostId: hostId, body: body)
        logger.debug("call routed through the store", metadata: ["host.id": "\(hostId)", "call.id": "\(id)"])
        let deadline = ContinuousClock.now + call.timeout
        while ContinuousClock.now < deadline {
            // The answer's signal wakes the wait; a missed one is caught by looking now and then.
            await routed.wait(id: id, upTo: min(.milliseconds(500), deadline - .now))
            if let answer = try await feed.takeAgentCallAnswer(id: id) {
                guard let result = try? SwiftletJSON.decoder().decode(AgentReply.Result.self, from: answer) else {
                    throw SwiftletError(.internal, "agent.bad_reply", "host '\(hostId)' answered a routed call wrongly")
                }
                return try Self.check(result)
            }
        }
        try? await feed.endAgentCall(id: id)
        throw SwiftletError(.unavailable, "host.timeout", "host '\(hostId)' did not answer in time")
    }

    private func localCall(_ call: AgentRequest.Call) async throws(SwiftletError) -> AgentReply.Result {
        let id = ResourceID.make("call")
        let result = await withTaskGroup(of: AgentReply.Result?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let sent = self.state.withLock { state -> Bool in
                        guard let stream = state.stream, !Task.isCancelled else { return false }
                        state.calls[id] = continuation
                        stream.yield(.request(AgentRequest(id: id, call: call)))
                        return true
                    }
                    if !sent {
                        continuation.resume(
                            returning: .failed(
                                code: "host.unreachable", message: "the agent of host is not connected", status: 409))
                    }
                }
            }
            group.addTask {
                // Past the timeout, or when the caller gives up, the call is answered as failed,
                // which ends the waiting child (an answer that came first makes this a no-op).
                let timedOut = (try? await Task.sleep(for: call.timeout)) != nil
                await self.resolve(
                    AgentReply(
                        id: id,
                        result: timedOut
                            ? .failed(
                                code: "host.timeout", message: "host '\(self.hostId)' did not answer in time",
                                status: 503)
                            : .failed(code: "agent.call_cancelled", message: "the call was given up", status: 409)))
                return nil
            }
            var answer: AgentReply.Result?
            while let next = await group.next() {
                if let next {
                    answer = next
                    group.cancelAll()
                }
            }
            return answer
        }
        guard let result else { throw SwiftletError(.internal, "agent.no_reply", "no reply from host '\(hostId)'") }
        return try Self.check(result)
    }

    /// The result, or the agent's failure as an error.
    private static func check(_ result: AgentReply.Result) throws(SwiftletError) -> AgentReply.Result {
        if case .failed(let code, let message, let status) = result {
            throw SwiftletError(SwiftletError.Kind(status: status), code, message)
        }
        return result
    }
}

extension SwiftletError.Kind {
    /// The kind an HTTP status stands for (an agent's error, carried over the link).
    init(status: Int) {
        self =
            switch status {
            case 400: .badRequest
            case 401: .unauthorized
            case 403: .forbidden
            case 404: .notFound
            case 409: .conflict
            case 413: .payloadTooLarge
            case 422: .unprocessable
            case 503: .unavailable
            default: .internal
            }
    }
}
