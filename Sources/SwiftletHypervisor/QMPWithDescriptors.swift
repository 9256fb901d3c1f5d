import Foundation
import Glibc

/// A QMP session that can hand QEMU a file descriptor with a command (`getfd`, SCM_RIGHTS), which
/// the NIO-based `QMPSession` cannot. Saving and restoring a VM's state goes through it: a
/// confined QEMU may neither fork (so no `exec:` stream) nor open files outside its directory, so
/// the driver opens the state file and passes it in. Blocking reads, each bounded by `poll`:
/// QEMU answers these commands within milliseconds.
final class QMPWithDescriptors {
    private let fd: Int32
    private let timeoutMilliseconds: Int32
    private var buffer: [UInt8] = []

    /// Takes over a connected QMP socket: reads the greeting and negotiates capabilities.
    init(fd: Int32, timeout: Duration) throws {
        self.fd = fd
        timeoutMilliseconds = Int32(clamping: timeout.nanoseconds / 1_000_000)
        do {
            guard try nextMessage()["QMP"] != nil else { throw HypervisorError.qmp("no QMP greeting") }
            try execute("qmp_capabilities")
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    convenience init(path: String, timeout: Duration) throws {
        try self.init(fd: try connectUnixSocket(path: path).get(), timeout: timeout)
    }

    deinit { Glibc.close(fd) }

    /// Runs a command, with `passing` sent alongside it; returns its `return` value.
    @discardableResult
    func execute(_ command: String, arguments: [String: Any]? = nil, passing descriptor: Int32? = nil) throws
        -> Any?
    {
        var message: [String: Any] = ["execute": command]
        if let arguments { message["arguments"] = arguments }
        let line = Array(try JSONSerialization.data(withJSONObject: message)) + [UInt8(ascii: "\n")]
        try send(line, passing: descriptor, command: command)
        while true {
            let reply = try nextMessage()
            if let value = reply["return"] { return value }
            if let error = reply["error"] as? [String: Any] {
                throw HypervisorError.qmp("\(command): \(error["desc"] as? String ?? "\(error)")")
            }
            // An event: not the answer.
        }
    }

    private func send(_ bytes: [UInt8], passing descriptor: Int32?, command: String) throws {
        var bytes = bytes
        let sent = bytes.withUnsafeMutableBytes { data -> Int in
            var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
            return withUnsafeMutablePointer(to: &vector) { vector in
                var header = msghdr()
                header.msg_iov = vector
                header.msg_iovlen = 1
                guard let descriptor else { return sendmsg(fd, &header, Int32(MSG_NOSIGNAL)) }
                // One SCM_RIGHTS message carrying `descriptor`.
                let space = Self.controlSpace
                let control = UnsafeMutableRawPointer.allocate(
                    byteCount: space, alignment: MemoryLayout<cmsghdr>.alignment)
                defer { control.deallocate() }
                control.initializeMemory(as: UInt8.self, repeating: 0, count: space)
                let message = control.assumingMemoryBound(to: cmsghdr.self)
                message.pointee.cmsg_level = SOL_SOCKET
                message.pointee.cmsg_type = Int32(SCM_RIGHTS)
                message.pointee.cmsg_len = Self.controlLength
                (control + MemoryLayout<cmsghdr>.stride).storeBytes(of: descriptor, as: Int32.self)
                header.msg_control = control
                header.msg_controllen = space
                return sendmsg(fd, &header, Int32(MSG_NOSIGNAL))
            }
        }
        guard sent == bytes.count else { throw HypervisorError.qmp("\(command): write failed: \(errnoMessage())") }
    }

    private static let controlLength = MemoryLayout<cmsghdr>.stride + MemoryLayout<Int32>.size
    private static let controlSpace =
        MemoryLayout<cmsghdr>.stride + (MemoryLayout<Int32>.size + MemoryLayout<Int>.size - 1)
        & ~(MemoryLayout<Int>.size - 1)

    /// The next JSON message (one per line).
    private func nextMessage() throws -> [String: Any] {
        while true {
            if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Data(buffer[..<end])
                buffer.removeSubrange(...end)
                guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                    throw HypervisorError.qmp(
                        "malformed QMP message: \(String(decoding: line.prefix(200), as: UTF8.self))")
                }
                return object
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, timeoutMilliseconds) == 1 else {
                throw HypervisorError.qmp("QEMU did not answer in time")
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { throw HypervisorError.qmp("the QMP connection closed") }
            buffer += chunk[..<count]
            guard buffer.count <= LineConnection.qmpLineLimit else { throw HypervisorError.qmp("QMP message too long") }
        }
    }
}
