import Foundation
import SwiftletCore
import SwiftletHypervisor

/// The guest kit's state interface over its serial console (guest/README.md, "State interface"):
/// each command is one line, answered by `swiftlet: ` lines. The console is the channel because
/// it reaches a guest whatever its network, including a standby guest that answers nothing there.
struct GuestStateChannel {
    let driver: any HypervisorDriver
    let handle: VMHandle

    static let answerPrefix = "swiftlet: "
    /// The kit's console input takes lines of at most 512 bytes.
    static let chunkCharacters = 384
    /// The kit refuses larger states; the same bound here keeps a confused guest from feeding the
    /// agent without end.
    static let maximumStateBytes = 65536

    /// Stops the guest's app from acknowledging anything new, then takes its state.
    func quiesceAndExport() async throws(SwiftletError) -> Data {
        try await session(timeout: .seconds(10)) { (console: inout Console) async throws(SwiftletError) -> Data in
            try await console.expect("quiesce") { $0 == "quiesced" || $0.hasPrefix("quiesced ") }
            var expected: (count: Int, crc: UInt32)?
            var state = Data()
            try await console.send("state-export")
            while true {
                let answer = try await console.next()
                if let rest = answer.dropping("state-begin ") {
                    let words = rest.split(separator: " ")
                    guard words.count == 2, let count = Int(words[0]), count <= Self.maximumStateBytes,
                        let crc = UInt32(words[1], radix: 16)
                    else { throw Self.refused("a malformed state-begin: \(answer)") }
                    expected = (count, crc)
                } else if let chunk = answer.dropping("state ") {
                    guard expected != nil, let bytes = Data(base64Encoded: chunk),
                        state.count + bytes.count <= Self.maximumStateBytes
                    else { throw Self.refused("a malformed state line") }
                    state.append(bytes)
                } else if answer == "state-end" {
                    guard let expected, expected.count == state.count, expected.crc == CRC32.checksum(state) else {
                        throw Self.refused("a state whose size or CRC-32 does not match what it announced")
                    }
                    return state
                }
            }
        }
    }

    /// Hands `state` to the guest's app, a line at a time (each answered before the next, so the
    /// guest's small input ring never overflows).
    func importState(_ state: Data) async throws(SwiftletError) {
        guard state.count <= Self.maximumStateBytes else {
            throw SwiftletError(
                .conflict, "migration.state_too_large",
                "the state is \(state.count) bytes; the kit takes at most \(Self.maximumStateBytes)")
        }
        try await session(timeout: .seconds(20)) { (console: inout Console) async throws(SwiftletError) in
            let crc = String(format: "%08x", CRC32.checksum(state))
            try await console.expect("state-import-begin \(state.count) \(crc)") { $0 == "state-import ready" }
            let text = state.base64EncodedString()
            var offset = text.startIndex
            while offset < text.endIndex {
                let end = text.index(offset, offsetBy: Self.chunkCharacters, limitedBy: text.endIndex) ?? text.endIndex
                try await console.expect("state-import \(text[offset..<end])") { $0.hasPrefix("state-import ") }
                offset = end
            }
            try await console.expect("state-import-end") { $0 == "state-imported \(state.count)" }
        }
    }

    /// Leaves standby: the guest announces its address and serves.
    func activate() async throws(SwiftletError) {
        try await session(timeout: .seconds(5)) { (console: inout Console) async throws(SwiftletError) in
            try await console.expect("activate") { $0 == "active" }
        }
    }

    /// Undoes `quiesce`: the guest serves again (a move rolled back).
    func resume() async throws(SwiftletError) {
        try await session(timeout: .seconds(5)) { (console: inout Console) async throws(SwiftletError) in
            try await console.expect("resume") { $0 == "resumed" }
        }
    }

    private static func refused(_ what: String) -> SwiftletError {
        SwiftletError(.conflict, "migration.state_interface", "the guest's state interface answered \(what)")
    }

    /// Runs `body` on one subscription to the console, within `timeout`.
    private func session<Result: Sendable>(
        timeout: Duration, _ body: @escaping @Sendable (inout Console) async throws(SwiftletError) -> Result
    ) async throws(SwiftletError) -> Result {
        let events = driver.consoleEvents(handle)
        let driver = self.driver
        let handle = self.handle
        let outcome = await withTaskGroup(of: Swift.Result<Result, SwiftletError>?.self) { group in
            group.addTask {
                var console = Console(driver: driver, handle: handle, lines: events.makeAsyncIterator())
                do throws(SwiftletError) {
                    return .success(try await body(&console))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        switch outcome {
        case .success(let result): return result
        case .failure(let error): throw error
        case nil:
            throw SwiftletError(
                .conflict, "migration.state_interface_timeout",
                "the guest's state interface did not answer within \(timeout)")
        }
    }

    /// One conversation: lines sent, and the `swiftlet: ` answers read after them.
    struct Console {
        let driver: any HypervisorDriver
        let handle: VMHandle
        var lines: AsyncStream<ConsoleLine>.AsyncIterator
        /// Answers read before this time were to someone else (the console replays recent lines).
        var since: UInt64 = 0

        mutating func send(_ line: String) async throws(SwiftletError) {
            since = monotonicNanoseconds()
            do { try await driver.sendConsole(handle, line: line) } catch {
                throw SwiftletError(
                    .conflict, "migration.state_interface", "cannot write to the guest console: \(error)")
            }
        }

        /// The next answer, without its prefix. An error answer (`state-error …`, an unknown
        /// command) ends the conversation with the guest's words.
        mutating func next() async throws(SwiftletError) -> String {
            while let line = await lines.next() {
                guard line.time >= since, let answer = line.text.dropping(GuestStateChannel.answerPrefix) else {
                    continue
                }
                if answer.hasPrefix("state-error") || answer.hasPrefix("unknown command") {
                    throw SwiftletError(.conflict, "migration.state_interface", "the guest answered '\(answer)'")
                }
                return answer
            }
            throw SwiftletError(.conflict, "migration.state_interface", "the guest's console closed (the VM ended)")
        }

        /// Sends `line` and reads answers until one that `accept`s.
        mutating func expect(_ line: String, _ accept: (String) -> Bool) async throws(SwiftletError) {
            try await send(line)
            while true {
                if accept(try await next()) { return }
            }
        }
    }
}

extension String {
    fileprivate func dropping(_ prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }
}

/// CRC-32 (IEEE 802.3, zlib's), to check a state crossed the console whole.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1 }
        return value
    }

    static func checksum(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
