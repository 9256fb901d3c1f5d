import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import Synchronization

/// The controller's end of a host agent's network connection. Desired-state changes are kept in
/// a log numbered by revision and go down the agent's watch stream as they happen; an agent that
/// reconnects resumes after the last revision it applied, or gets a full `HostSync` when that
/// revision is no longer in the log (or belongs to an earlier controller process). Calls on the
/// agent (console, commands) go down the same stream and wait for the agent's reply.
public final class RemoteAgentLink: AgentLink {
    public let hostId: String
    /// Names this controller process's revision sequence: a restarted controller starts a new one.
    let epoch: String
    private let logger: Logger
    private let state = Mutex(State())

    /// Changes kept for resuming agents.
    static let logCapacity = 4096
    /// How long a call on the agent may take.
    static let callTimeout: Duration = .seconds(10)

    private struct State {
        var revision: UInt64 = 0
        var log: [WatchEvent] = []
        var stream: AsyncStream<AgentDown>.Continuation?
        /// Numbers the streams, so that the end of a replaced one does not end its successor.
        var streamSerial = 0
        var calls: [String: CheckedContinuation<AgentReply.Result, Never>] = [:]
    }

    init(hostId: String, epoch: String, logger: Logger) {
        self.hostId = hostId
        self.epoch = epoch
        self.logger = logger
    }

    // MARK: - AgentLink

    /// Queues the change for the agent; with `pendingCommit`, only once the record committed.
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
        state.withLock { state in
            state.revision += 1
            let event = WatchEvent(revision: state.revision, change: change)
            state.log.append(event)
            if state.log.count > Self.logCapacity { state.log.removeFirst(state.log.count - Self.logCapacity) }
            state.stream?.yield(.event(event))
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

    public func poolReadyCounts() async -> [String: Int] {
        guard case .pools(let counts) = try? await call(.poolReadyCounts) else { return [:] }
        return counts
    }

    // MARK: - The agent's side

    /// Opens the watch stream for a (re)connecting agent: the changes after `request.revision` when
    /// the log still has them all, else a full sync first. A stream opened earlier is ended.
    func open(_ request: WatchRequest, sync: () async throws(SwiftletError) -> HostSync) async throws(SwiftletError)
        -> AsyncStream<AgentDown>
    {
        let (stream, continuation) = AsyncStream.makeStream(of: AgentDown.self, bufferingPolicy: .unbounded)
        // The revision is taken before the sync is read, and the log after it follows the sync: a
        // change made meanwhile is then in both, and applying it twice is harmless.
        let base = state.withLock { $0.revision }
        let full = try await sync()
        let (serial, replaced) = state.withLock { state in
            let replaced = state.stream
            state.stream = continuation
            state.streamSerial += 1
            let resumable =
                request.epoch == epoch
                && request.revision.map { revision in
                    revision >= (state.log.first?.revision ?? state.revision + 1) - 1 && revision <= state.revision
                } ?? false
            if resumable, let revision = request.revision {
                for event in state.log where event.revision > revision { continuation.yield(.event(event)) }
            } else {
                var full = full
                full.revision = base
                continuation.yield(.sync(full, epoch: epoch))
                for event in state.log where event.revision > base { continuation.yield(.event(event)) }
            }
            return (state.streamSerial, replaced)
        }
        // Outside the lock: ending a stream runs its termination handler, which takes the lock.
        replaced?.finish()
        continuation.onTermination = { [weak self] _ in self?.closed(serial: serial) }
        return stream
    }

    private func closed(serial: Int) {
        let calls: [CheckedContinuation<AgentReply.Result, Never>] = state.withLock { state in
            // A newer stream may have replaced this one already.
            guard state.streamSerial == serial else { return [] }
            state.stream = nil
            defer { state.calls = [:] }
            return Array(state.calls.values)
        }
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

    /// An answer to one of this link's calls.
    func resolve(_ reply: AgentReply) {
        let waiter = state.withLock { $0.calls.removeValue(forKey: reply.id) }
        waiter?.resume(returning: reply.result)
    }

    private func call(_ call: AgentRequest.Call) async throws(SwiftletError) -> AgentReply.Result {
        let id = ResourceID.make("call")
        let result = await withTaskGroup(of: AgentReply.Result?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let sent = self.state.withLock { state -> Bool in
                        guard let stream = state.stream else { return false }
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
                // Past the timeout the call is answered as failed, which ends the waiting child.
                try? await Task.sleep(for: Self.callTimeout)
                if !Task.isCancelled {
                    self.resolve(
                        AgentReply(
                            id: id,
                            result: .failed(
                                code: "host.timeout", message: "host '\(self.hostId)' did not answer in time",
                                status: 503)))
                }
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
