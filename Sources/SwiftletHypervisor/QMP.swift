import Foundation
import NIOCore

/// One QMP session over QEMU's Unix socket: greeting, `qmp_capabilities`, then commands answered
/// in order (asynchronous events in between are skipped). QEMU serves one QMP client at a time, so
/// sessions are short: open, run a command or two, close.
final class QMPSession {
    private let connection: LineConnection
    private var lines: AsyncStream<String>.Iterator
    private let deadline: Scheduled<Void>

    private init(connection: LineConnection, lines: AsyncStream<String>, deadline: Scheduled<Void>) {
        self.connection = connection
        self.lines = lines.makeAsyncIterator()
        self.deadline = deadline
    }

    /// Takes over a connected socket and negotiates capabilities. The whole session is bounded by
    /// `timeout`: a hung QEMU closes the connection instead of hanging the caller.
    ///
    /// `pipelining` commands (no arguments) are sent with `qmp_capabilities` before the greeting
    /// arrives, and their answers awaited in order: QEMU reads them once its main loop runs, so a
    /// VM started paused resumes with no round trip in between (QMP runs commands in order).
    static func open(fd: Int32, timeout: Duration = .seconds(10), pipelining commands: [String] = [])
        async throws -> QMPSession
    {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        let connection: LineConnection
        do {
            connection = try await LineConnection.attach(
                fd: fd, maximumLineLength: LineConnection.qmpLineLimit, onLine: { continuation.yield($0) },
                onClose: { continuation.finish() })
        } catch {
            throw HypervisorError.qmp("cannot attach QMP socket: \(error)")
        }
        let channel = connection.channel
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            channel.close(promise: nil)
        }
        let session = QMPSession(connection: connection, lines: stream, deadline: deadline)
        do {
            let pipeline = ["qmp_capabilities"] + commands
            try await session.write(pipeline.map { #"{"execute":"\#($0)"}"# + "\n" }.joined())
            guard let greeting = try await session.nextMessage(), greeting["QMP"] != nil else {
                throw HypervisorError.qmp("no QMP greeting")
            }
            _ = try await session.reply(to: "qmp_capabilities")
            do {
                for command in commands { _ = try await session.reply(to: command) }
            } catch {
                throw QMPReadyThenFailed(underlying: error)
            }
        } catch {
            session.close()
            throw error
        }
        return session
    }

    /// Connects to `path` and negotiates capabilities.
    static func open(path: String, timeout: Duration = .seconds(10)) async throws -> QMPSession {
        let fd = try connectUnixSocket(path: path).get()
        return try await open(fd: fd, timeout: timeout)
    }

    /// Runs a command; returns its `return` value, throws `.qmp` with QEMU's message on `error`.
    @discardableResult
    func execute(_ command: String, arguments: [String: Any]? = nil) async throws -> Any? {
        var message: [String: Any] = ["execute": command]
        if let arguments { message["arguments"] = arguments }
        let data = try JSONSerialization.data(withJSONObject: message)
        try await write(String(decoding: data, as: UTF8.self) + "\n", command: command)
        return try await reply(to: command)
    }

    private func write(_ text: String, command: String = "qmp_capabilities") async throws {
        do {
            try await connection.write(text)
        } catch {
            throw HypervisorError.qmp("\(command): write failed: \(error)")
        }
    }

    /// The next answer, skipping asynchronous events; throws `.qmp` with QEMU's message on `error`.
    private func reply(to command: String) async throws -> Any? {
        while let reply = try await nextMessage() {
            if let value = reply["return"] { return value }
            if let error = reply["error"] as? [String: Any] {
                let description = error["desc"] as? String ?? "\(error)"
                throw HypervisorError.qmp("\(command): \(description)")
            }
            // An event ({"event": ...}): not ours, keep reading.
        }
        throw HypervisorError.qmp("\(command): connection closed before the reply")
    }

    private func nextMessage() async throws -> [String: Any]? {
        guard let line = await lines.next() else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else {
            throw HypervisorError.qmp("malformed QMP message: \(line.prefix(200))")
        }
        return object
    }

    func close() {
        deadline.cancel()
        connection.close()
    }
}

/// QEMU answered `qmp_capabilities`, so its main loop ran and the machine was built, but the
/// session failed before the pipelined commands were answered (a guest that powers off at once
/// ends QEMU this way). QEMU greets before it builds the machine, so a greeting alone proves less.
struct QMPReadyThenFailed: Error {
    var underlying: any Error
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// The caller's release of a held guest failed; the VMM is already destroyed.
struct SpawnReleaseFailed: Error {
    var underlying: any Error
}
