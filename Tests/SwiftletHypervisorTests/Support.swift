import Foundation
import Logging
import Synchronization
import Testing

@testable import SwiftletHypervisor

/// Guest kernels built with the kit's guest/build.sh, once per test process, into a directory
/// removed at exit. Builds run as child processes awaited without blocking a thread.
enum Kernels {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let buildScript = repositoryRoot + "/guest/build.sh"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: buildScript) }

    static let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("swiftlet-hv-kernels-\(getpid())").path
    private static let builder = KernelBuilder()

    /// Builds `guest/examples/<name>` (or the floor kernel for "--floor") and returns its path.
    static func path(_ name: String) async throws -> String {
        try await builder.path(name)
    }
}

private actor KernelBuilder {
    private var builds: [String: Task<String, any Error>] = [:]

    func path(_ name: String) async throws -> String {
        if let build = builds[name] { return try await build.value }
        let build = Task { try await Self.build(name) }
        builds[name] = build
        return try await build.value
    }

    private static func build(_ name: String) async throws -> String {
        if !FileManager.default.fileExists(atPath: Kernels.directory) {
            try FileManager.default.createDirectory(atPath: Kernels.directory, withIntermediateDirectories: true)
            atexit { try? FileManager.default.removeItem(atPath: Kernels.directory) }
        }
        let output = Kernels.directory + "/" + name.replacingOccurrences(of: "-", with: "") + ".elf"
        let source = name == "--floor" ? name : Kernels.repositoryRoot + "/guest/examples/" + name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Kernels.buildScript)
        process.arguments = [source, "-o", output]
        let status = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                continuation.resume(throwing: error)
            }
        }
        guard status == 0 else { throw HypervisorError.spawnFailed("guest/build.sh \(name) failed") }
        return output
    }
}

/// A short runtime directory under /tmp (Unix socket paths are limited to 108 bytes), removed
/// with everything in it when the test ends.
struct TemporaryDirectory: ~Copyable {
    let path: String

    init() {
        path = "/tmp/swl-hv-" + UUID().uuidString.prefix(8).lowercased()
    }

    func sub(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func testLogger() -> Logger {
    var logger = Logger(label: "swiftlet.hypervisor.tests")
    logger.logLevel = .warning
    return logger
}

/// TCG is what these machines run (PLATFORM.md); tests pin it so they do not calibrate each time.
func tcgDriver(runtime: DriverRuntime = DriverRuntime(monitor: ExitMonitor())) -> QEMUDriver {
    QEMUDriver(
        qemuBinary: "qemu-system-x86_64", accelerator: "tcg", calibration: nil,
        logger: testLogger(), runtime: runtime)
}

func pvhSpec(kernel: String, directory: String, ports: [PortMapping] = [], vcpus: Int = 1) -> VMSpec {
    VMSpec(
        instanceID: "test-" + UUID().uuidString.prefix(8), kernelPath: kernel, bootKind: .pvh,
        memoryMiB: 64, vcpus: vcpus, commandLine: "", publishedPorts: ports,
        runtimeDirectory: directory)
}

/// PIDs of live processes whose command line mentions `text` (to prove nothing was left behind).
func processes(mentioning text: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry -> Int32? in
        guard let pid = Int32(entry), pid != getpid(),
            let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
            String(decoding: data, as: UTF8.self).contains(text),
            let stat = ProcessStat(pid: pid), stat.state != "Z"
        else { return nil }
        return pid
    }
}

func milliseconds(_ from: UInt64, _ to: UInt64) -> Double { Double(to - from) / 1e6 }

/// Collects console lines in the background of a test.
final class LineCollector: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }

    /// Polls until `predicate` holds for the lines seen so far, or `timeout`.
    func waitUntil(timeout: Duration, _ predicate: ([String]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if predicate(all) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return predicate(all)
    }
}
