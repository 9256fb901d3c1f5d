import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Paths of the checkout this test runs from.
enum Repo {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static var swiftletBinary: String { root + "/.build/debug/swiftlet" }
}

/// Builds the example unikernels once per test process (the real kit, real build script).
enum Kernels {
    static let directory: String = {
        let path = NSTemporaryDirectory() + "swiftlet-kernels-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        // Removed when the test process ends, whatever the outcome.
        atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "swiftlet-kernels-\(getpid())") }
        return path
    }()
    private static let builder = KernelBuilder()

    /// Builds `guest/examples/<example>` once per test process. Tests that want the same kernel
    /// meanwhile wait without holding a thread: a build takes seconds to minutes, and the few
    /// threads that run every test's async code (one per CPU) must stay free.
    static func path(_ example: String) async throws -> String {
        try await builder.path(example)
    }
}

private actor KernelBuilder {
    private var builds: [String: Task<String, any Error>] = [:]

    func path(_ example: String) async throws -> String {
        if let build = builds[example] { return try await build.value }
        let build = Task { try await Self.build(example) }
        builds[example] = build
        return try await build.value
    }

    private static func build(_ example: String) async throws -> String {
        let output = Kernels.directory + "/\(example).elf"
        let result = try await offThePool {
            try Shell.run(Repo.root + "/guest/build.sh", [Repo.root + "/guest/examples/\(example)", "-o", output])
        }
        guard result.status == 0 else { throw TestFailure("guest build of \(example) failed: \(result.output)") }
        return output
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Shell {
    /// Runs a program to completion, stdout and stderr together; killed after `timeout`, if
    /// given, so that a command that hangs fails its test instead of stalling it.
    static func run(_ program: String, _ arguments: [String], timeout: Duration? = nil) throws -> (
        status: Int32, output: String
    ) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        if let timeout {
            DispatchQueue.global().asyncAfter(
                deadline: .now() + .seconds(Int(timeout.components.seconds)), execute: watchdog)
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Starts a long-running program with stdout and stderr appended to `logPath`.
    static func launch(_ program: String, _ arguments: [String], appendingTo logPath: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        guard let log = FileHandle(forWritingAtPath: logPath) else { throw TestFailure("cannot write \(logPath)") }
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        return process
    }
}

/// PIDs of processes whose command line mentions `needle` (e.g. a data directory).
func processes(mentioning needle: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry in
        guard let pid = Int32(entry), pid != getpid(),
            let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
            String(decoding: data, as: UTF8.self).contains(needle),
            let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            !stat.contains(") Z ")
        else { return nil }
        return pid
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(
    _ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("timed out waiting for: \(what)")
}

/// The store a test server keeps its state in: the embedded SQLite file, or a fresh PostgreSQL
/// database on the server `SWIFTLET_TEST_POSTGRES` names (`make test` starts one).
enum StoreEngine: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }

    /// A new, empty database for one server (nil for SQLite: the server makes its file).
    func freshDatabase() throws -> FreshDatabase? {
        guard self == .postgres else { return nil }
        guard let admin = ProcessInfo.processInfo.environment["SWIFTLET_TEST_POSTGRES"],
            var components = URLComponents(string: admin)
        else {
            throw TestFailure("SWIFTLET_TEST_POSTGRES is not set: `make test` sets it (scripts/setup-postgres.sh)")
        }
        let name = "swiftlet_it_" + UUID().uuidString.prefix(8).lowercased()
        let created = try Shell.run("/usr/bin/psql", [admin, "-qAtc", "CREATE DATABASE \(name)"])
        guard created.status == 0 else { throw TestFailure("cannot create database \(name): \(created.output)") }
        components.path = "/" + name
        return FreshDatabase(admin: admin, name: name, url: components.string ?? "")
    }
}

/// A database made for one test; `drop()` removes it once its server is gone.
struct FreshDatabase {
    let admin: String
    let name: String
    let url: String

    func drop() {
        _ = try? Shell.run("/usr/bin/psql", [admin, "-qAtc", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"])
    }
}

/// A real `swiftlet server` process on a temporary data directory and a free port.
final class ServerProcess: @unchecked Sendable {
    // @unchecked: `process` is only touched from the test that owns this server, one call at a time.
    let dataDirectory: String
    let port: Int
    private var process: Process?
    private let logPath: String
    private let configPath: String
    /// The database this server made (and drops), or nil when it uses another server's.
    private let database: FreshDatabase?
    let databaseURL: String?
    /// False for a server that shares another's data directory (that one removes it).
    private let ownsData: Bool
    /// `https` when the server serves its API over TLS (`tlsOwnCA`, `tlsCertificate` or
    /// `--tls-cert` among `extraArguments`).
    var scheme = "http"
    /// The CA its clients trust (nil: the system's).
    var caCertificate: String?
    /// More arguments for `swiftlet server`.
    var extraArguments: [String] = []

    /// A server on a new data directory and database, or with `sharing`, another controller on
    /// that server's data directory and database (as the controllers of one cluster are).
    init(config: [String: Any] = [:], engine: StoreEngine = .sqlite, sharing: ServerProcess? = nil) throws {
        let id = UUID().uuidString.prefix(8)
        if let sharing {
            dataDirectory = sharing.dataDirectory
            database = nil
            databaseURL = sharing.databaseURL
        } else {
            dataDirectory = NSTemporaryDirectory() + "swiftlet-test-\(id)"
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
            database = try engine.freshDatabase()
            databaseURL = database?.url
        }
        ownsData = sharing == nil
        port = try Self.freePort()
        logPath = NSTemporaryDirectory() + "swiftlet-test-\(id).log"
        configPath = NSTemporaryDirectory() + "swiftlet-test-\(id).json"
        var config = config
        if config["tlsOwnCA"] as? Bool == true || config["tlsCertificate"] != nil { scheme = "https" }
        if config["tlsOwnCA"] as? Bool == true { caCertificate = dataDirectory + "/ca/ca.pem" }
        if let databaseURL { config["database"] = databaseURL }
        if !config.isEmpty {
            let data = try JSONSerialization.data(withJSONObject: config)
            _ = FileManager.default.createFile(atPath: configPath, contents: data)
        }
    }

    var url: String { "\(scheme)://127.0.0.1:\(port)" }

    /// Replaces the configuration the next `start()` reads (the database stays this server's).
    func writeConfig(_ config: [String: Any]) throws {
        var config = config
        if let databaseURL, config["database"] == nil { config["database"] = databaseURL }
        guard
            FileManager.default.createFile(
                atPath: configPath, contents: try JSONSerialization.data(withJSONObject: config))
        else { throw TestFailure("cannot write \(configPath)") }
    }

    var adminToken: String {
        (try? String(contentsOfFile: dataDirectory + "/admin.token", encoding: .utf8)) ?? ""
    }

    func start() async throws {
        var arguments = ["server", "--data", dataDirectory, "--port", "\(port)", "--log-level", "debug"]
        if FileManager.default.fileExists(atPath: configPath) { arguments += ["--config", configPath] }
        process = try Shell.launch(Repo.swiftletBinary, arguments + extraArguments, appendingTo: logPath)
        let (url, ca) = (self.url, caCertificate)
        try await eventually("server health", timeout: .seconds(60)) {
            try await SwiftletClient.withClient(baseURL: url, token: nil, caCertificate: ca) { try await $0.health() }
        }
    }

    /// SIGKILL: the crash case.
    func crash() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func terminate() {
        guard let process else { return }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Stops the server, kills anything left that mentions the data directory, removes it all.
    func cleanUp() {
        terminate()
        if ownsData {
            for pid in processes(mentioning: dataDirectory) { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: dataDirectory)
        }
        try? FileManager.default.removeItem(atPath: logPath)
        try? FileManager.default.removeItem(atPath: configPath)
        database?.drop()
    }

    func client(token: String? = nil) -> SwiftletClient {
        SwiftletClient(baseURL: url, token: token ?? adminToken, caCertificate: caCertificate)
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw TestFailure("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Runs `body` against a fresh server and a client with the admin token; always cleans up.
func withServer(
    config: [String: Any] = [:], engine: StoreEngine = .sqlite,
    _ body: (ServerProcess, SwiftletClient) async throws -> Void
) async throws {
    let server = try ServerProcess(config: config, engine: engine)
    defer { server.cleanUp() }
    try await server.start()
    let client = server.client()
    do {
        try await body(server, client)
        try? await client.shutdown()
    } catch {
        try? await client.shutdown()
        print("---- server log ----\n\(server.log.suffix(4000))")
        throw error
    }
}

func expectAPIError(_ status: Int, _ code: String? = nil, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected HTTP \(status)\(code.map { " \($0)" } ?? ""), got success")
    } catch let error as ClientError {
        if case .unauthorized = error.kind {
            #expect(status == 401)
            return
        }
        #expect(error.status == status, "\(error)")
        if let code { #expect(error.code == code, "\(error)") }
    } catch {
        Issue.record("expected a ClientError, got \(error)")
    }
}

/// Runs blocking work (a child process and its wait) on a thread of its own, so that it does not
/// hold one of the few threads (one per CPU) that run every test's async code: a test that blocks
/// them for seconds stalls the timers and answers of all the others.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
