// Shared test machinery: build guest kernels with guest/build.sh (once per
// test run, into a temporary directory removed at exit) and run them in QEMU
// (microvm, TCG) with the serial console on a pipe.

import Foundation
import Testing

enum GuestPaths {
    /// …/guest, found from this file's location.
    static let guest: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let buildScript = guest.appendingPathComponent("build.sh")
    static let examples = guest.appendingPathComponent("examples")
    static let fixtures = guest.appendingPathComponent("tests/Fixtures")

    /// Every example directory that holds Swift sources, sorted.
    static func exampleNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: examples.path)) ?? []
        return names.filter { name in
            let files =
                (try? FileManager.default.contentsOfDirectory(atPath: examples.appendingPathComponent(name).path)) ?? []
            return files.contains { $0.hasSuffix(".swift") }
        }.sorted()
    }

    static func example(_ name: String) -> URL { examples.appendingPathComponent(name) }

    /// Config words an example cannot start without, for booting it on QEMU
    /// user networking: probe needs a peer (10.0.2.2 is the host there).
    static func requiredWords(_ example: String) -> String { example == "probe" ? " peer=10.0.2.2:7" : "" }
    static func fixture(_ name: String) -> URL { fixtures.appendingPathComponent(name) }
}

struct GuestTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command to completion; returns its exit status and combined output.
@discardableResult
func runCommand(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Kernels built during this test run. Builds are serialised (two cores are
/// shared with everything else) and each (source, flags) pair is built once.
final class KernelBuilds: @unchecked Sendable {
    static let shared = KernelBuilds()

    let directory: URL
    private let lock = NSLock()
    private var built: [String: URL] = [:]
    private var counter = 0

    private init() {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-guest-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        KernelBuilds.directoryToRemove = directory.path
        atexit { if let path = KernelBuilds.directoryToRemove { try? FileManager.default.removeItem(atPath: path) } }
    }
    nonisolated(unsafe) private static var directoryToRemove: String?

    /// The kernel for an app directory (or the floor when `source` is nil), cached.
    func kernel(_ source: URL?, noSSE: Bool = false) throws -> URL {
        let key = "\(source?.path ?? "--floor") \(noSSE)"
        return try lock.withLock {
            if let kernel = built[key] { return kernel }
            let kernel = try buildLocked(source, noSSE: noSSE)
            built[key] = kernel
            return kernel
        }
    }

    /// A fresh, uncached build (for the reproducibility check).
    func freshBuild(_ source: URL?, noSSE: Bool = false) throws -> URL {
        try lock.withLock { try buildLocked(source, noSSE: noSSE) }
    }

    private func buildLocked(_ source: URL?, noSSE: Bool) throws -> URL {
        counter += 1
        let output = directory.appendingPathComponent("\(source?.lastPathComponent ?? "floor")-\(counter).elf")
        var arguments = source.map { [$0.path] } ?? ["--floor"]
        arguments += ["-o", output.path]
        if noSSE { arguments.append("--no-sse") }
        let result = try runCommand(GuestPaths.buildScript.path, arguments)
        guard result.status == 0 else {
            throw GuestTestError(
                "build.sh \(arguments.joined(separator: " ")) failed (\(result.status)):\n\(result.output)")
        }
        return output
    }
}

/// One QEMU process running a guest kernel. Always call `stop()` (use defer);
/// deinit stops it too.
final class QEMUGuest: @unchecked Sendable {
    static let qemu = "/usr/bin/qemu-system-x86_64"

    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lock = NSLock()
    private var buffer = Data()
    private var outputClosed = false

    /// `network`: attach a virtio-net NIC on QEMU user networking (no root
    /// needed); the kit's network examples refuse to start without a NIC.
    /// `machineOptions`: extra microvm options, e.g. "ioapic2=off".
    /// `forwardTCPPort`: with `network`, host 127.0.0.1:<that port> → guest port 80.
    init(
        kernel: URL, append: String = "", accelerator: String = "tcg", network: Bool = false,
        machineOptions: String = "", forwardTCPPort: UInt16? = nil, extraArguments: [String] = []
    ) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.qemu) else {
            throw GuestTestError("\(Self.qemu) is missing: apt-get install -y qemu-system-x86")
        }
        var arguments = [
            "-M", "microvm,x-option-roms=off,rtc=off" + (machineOptions.isEmpty ? "" : "," + machineOptions),
            "-nodefaults", "-no-user-config", "-nographic",
            // As the driver: a nested KVM here aborts QEMU on the ARCH_CAPABILITIES MSR.
            "-accel", accelerator, "-cpu", accelerator == "kvm" ? "host,-arch-capabilities" : "max", "-m", "16M",
            "-kernel", kernel.path, "-append", append,
            "-device", "isa-debug-exit,iobase=0x501", "-serial", "stdio", "-no-reboot",
        ]
        if network {
            let forward = forwardTCPPort.map { ",hostfwd=tcp:127.0.0.1:\($0)-:80" } ?? ""
            arguments += ["-netdev", "user,id=n0" + forward, "-device", "virtio-net-device,netdev=n0"]
        }
        process.executableURL = URL(fileURLWithPath: Self.qemu)
        process.arguments = arguments + extraArguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                if let self { self.lock.withLock { self.outputClosed = true } }
            } else if let self {
                self.lock.withLock { self.buffer.append(data) }
            }
        }
        try process.run()
    }

    deinit { stop() }

    var pid: Int32 { process.processIdentifier }

    /// Everything the guest (and QEMU) printed so far.
    var console: String { lock.withLock { String(decoding: buffer, as: UTF8.self) } }

    /// Waits until the console holds `count` complete lines starting with
    /// `prefix` and returns them; nil on timeout or exit.
    func waitForLines(startingWith prefix: String, count: Int = 1, timeout: TimeInterval) -> [String]? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let text = console
            let complete = text.hasSuffix("\n") ? text : String(text[..<(text.lastIndex(of: "\n") ?? text.startIndex)])
            let lines = complete.split(separator: "\n").filter { $0.hasPrefix(prefix) }.map(String.init)
            if lines.count >= count { return lines }
            if Date() >= deadline { return nil }
            if !process.isRunning {
                Thread.sleep(forTimeInterval: 0.05)  // let the last output arrive
                if console == text { return nil }
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    /// Waits until the console contains `text`; false on timeout or exit.
    func waitFor(_ text: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if console.contains(text) { return true }
            if !process.isRunning {
                Thread.sleep(forTimeInterval: 0.05)  // let the last output arrive
                return console.contains(text)
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    /// Waits for a complete `SWIFTLET-READY <app> <µs>` line and parses it.
    func waitForReady(timeout: TimeInterval = 60) -> (app: String, micros: UInt64)? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            for line in console.split(separator: "\n", omittingEmptySubsequences: true)
            where line.hasPrefix("SWIFTLET-READY ") {
                let fields = line.split(separator: " ")
                guard fields.count == 3 else { continue }
                let micros = String(fields[2]).trimmingCharacters(in: .whitespacesAndNewlines)
                if let value = UInt64(micros), console.contains(line + "\n") || console.contains(line + "\r\n") {
                    return (String(fields[1]), value)
                }
            }
            if !process.isRunning { return nil }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return nil
    }

    /// Types a line on the guest's serial console.
    func send(_ line: String) {
        try? input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    /// The QEMU exit status (isa-debug-exit: 2V+1), or nil if it is still
    /// running after `timeout` or died from a signal.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        guard !process.isRunning else { return nil }
        process.waitUntilExit()
        // Let the reader drain what QEMU wrote just before it exited.
        let drainDeadline = Date().addingTimeInterval(2)
        while !lock.withLock({ outputClosed }) && Date() < drainDeadline { Thread.sleep(forTimeInterval: 0.005) }
        return process.terminationReason == .exit ? process.terminationStatus : nil
    }

    /// CPU time (user + system) QEMU has used so far, in clock ticks.
    func cpuTicks() throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        guard let close = stat.lastIndex(of: ")") else { throw GuestTestError("odd /proc stat: \(stat)") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Int(fields[11]), let system = Int(fields[12]) else {
            throw GuestTestError("odd /proc stat: \(stat)")
        }
        return user + system
    }

    /// Ends QEMU (SIGTERM, then SIGKILL) and reaps it. Safe to call twice.
    func stop() {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(2)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        if process.processIdentifier != 0 { process.waitUntilExit() }
        try? input.fileHandleForWriting.close()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freeLocalPort() throws -> UInt16 {
    let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socketFD >= 0 else { throw GuestTestError("socket failed") }
    defer { close(socketFD) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
            bind(socketFD, generic, length) == 0 && getsockname(socketFD, generic, &length) == 0
        }
    }
    guard bound else { throw GuestTestError("bind failed") }
    return UInt16(bigEndian: address.sin_port)
}

/// Sends `request` to 127.0.0.1:`port` and returns everything the peer
/// sends back before closing (or nil if nothing came within `timeout`).
func tcpExchange(port: UInt16, request: String, timeout: TimeInterval) -> String? {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketFD >= 0 else { return nil }
        defer { close(socketFD) }
        var receiveTimeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(socketFD, SOL_SOCKET, SO_RCVTIMEO, &receiveTimeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        if connected {
            _ = request.withCString { send(socketFD, $0, strlen($0), 0) }
            var response = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(socketFD, &chunk, chunk.count, 0)
                if count <= 0 { break }
                response += chunk[0..<count]
            }
            // QEMU's forwarder accepts before the guest answers: an empty
            // reply means the guest was not reached yet, so try again.
            if !response.isEmpty { return String(decoding: response, as: UTF8.self) }
        }
        Thread.sleep(forTimeInterval: 0.2)
    }
    return nil
}
