import Foundation
import NIOCore
import Synchronization

/// A console line and the monotonic time it was read from the socket.
public struct ConsoleLine: Sendable, Equatable {
    public var time: UInt64
    public var text: String

    public init(time: UInt64, text: String) {
        self.time = time
        self.text = text
    }
}

/// The one connection to a VM's serial console socket (QEMU serves a single client), shared by
/// every reader and writer in this process. Lines fan out to all subscribers; the most recent
/// ones are replayed to a new subscriber so a reader that attaches just after boot misses nothing,
/// even when the VM has already exited (the hub lives until the VM is destroyed).
final class ConsoleHub: Sendable {
    static let replayLimit = 256

    private struct Subscriber {
        var yield: @Sendable (ConsoleLine) -> Void
        var finish: @Sendable () -> Void
    }

    private struct State {
        var connection: LineConnection?
        var connectionID: UInt64 = 0
        var connecting: EventLoopFuture<LineConnection>?
        var recent: [ConsoleLine] = []
        var subscribers: [UInt64: Subscriber] = [:]
        var nextID: UInt64 = 0
    }

    let socketPath: String
    private let state = Mutex(State())

    init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// Adopts an already connected socket (spawn connects before QEMU lets the guest run).
    func adopt(fd: Int32) async throws {
        _ = try await attach(fd: fd).get()
    }

    /// Connects if not connected yet; the future completes with the live connection.
    @discardableResult
    func ensureConnected() -> EventLoopFuture<LineConnection>? {
        let existing: EventLoopFuture<LineConnection>?? = state.withLock { state in
            if let connection = state.connection {
                return .some(connection.channel.eventLoop.makeSucceededFuture(connection))
            }
            return state.connecting.map { .some($0) }
        }
        if let existing { return existing }
        switch connectUnixSocket(path: socketPath) {
        case .success(let fd):
            return attach(fd: fd)
        case .failure:
            finishAll()
            return nil
        }
    }

    private func attach(fd: Int32) -> EventLoopFuture<LineConnection> {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        let future = LineConnection.attachFuture(
            fd: fd, maximumLineLength: LineConnection.consoleLineLimit, onLine: { [self] in received($0) },
            onClose: { [self] in disconnected(id) }
        ).map { [self] connection in
            // Two callers may race to connect; the first connection wins, the other is dropped.
            let (current, duplicate) = state.withLock { state in
                state.connecting = nil
                if let current = state.connection { return (current, Optional(connection)) }
                state.connection = connection
                state.connectionID = id
                return (connection, nil)
            }
            duplicate?.close()
            return current
        }
        future.whenFailure { [self] _ in
            state.withLock { $0.connecting = nil }
            finishAll()
        }
        state.withLock { state in
            if state.connection == nil { state.connecting = future }
        }
        return future
    }

    /// A stream of every line from now on, after the recent ones, converted by `transform`.
    func subscribe<Element: Sendable>(_ transform: @escaping @Sendable (ConsoleLine) -> Element)
        -> AsyncStream<Element>
    {
        let (stream, continuation) = AsyncStream<Element>.makeStream(
            bufferingPolicy: .bufferingNewest(4096))
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            // Replay under the lock so no live line can overtake or duplicate the replayed ones.
            for line in state.recent { continuation.yield(transform(line)) }
            state.subscribers[state.nextID] = Subscriber(
                yield: { continuation.yield(transform($0)) }, finish: { continuation.finish() })
            return state.nextID
        }
        continuation.onTermination = { [self] _ in
            _ = state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        ensureConnected()
        return stream
    }

    func send(_ text: String) async throws {
        guard let future = ensureConnected() else {
            throw HypervisorError.notRunning("console socket \(socketPath) is not reachable")
        }
        let connection = try await future.get()
        try await connection.write(text)
    }

    func close() {
        state.withLock { $0.connection }?.close()
        finishAll()
    }

    private func received(_ text: String) {
        let line = ConsoleLine(time: monotonicNanoseconds(), text: text)
        state.withLock { state in
            state.recent.append(line)
            if state.recent.count > Self.replayLimit {
                state.recent.removeFirst(state.recent.count - Self.replayLimit)
            }
            for subscriber in state.subscribers.values { subscriber.yield(line) }
        }
    }

    private func disconnected(_ id: UInt64) {
        let current = state.withLock { state -> Bool in
            guard state.connectionID == id else { return false }
            state.connection = nil
            state.connecting = nil
            return true
        }
        if current { finishAll() }
    }

    /// Ends every stream; done outside the lock because finishing runs `onTermination`, which locks.
    private func finishAll() {
        let subscribers = state.withLock { state in
            defer { state.subscribers = [:] }
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.finish() }
    }
}
