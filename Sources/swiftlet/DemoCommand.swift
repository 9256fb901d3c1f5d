import ArgumentParser
import Dispatch
import Foundation
import Glibc
import SwiftletClient
import SwiftletCore
import Synchronization

/// `swiftlet demo`: a throw-away server, the example unikernels built from source, booted,
/// checked over HTTP, timed, and everything removed again.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Boot the example unikernels on a temporary server, check them, show the timings.",
        discussion: """
            Starts `swiftlet server` on a free port with a temporary data directory, builds the \
            `http` and `kv` examples with guest/build.sh, boots \(defaultWebCount) web servers and one \
            key-value store with published ports, checks each answers over HTTP, prints the phase \
            timeline, then deletes everything, stops the server and removes the directory (also on \
            failure or Ctrl-C). Exits non-zero if any check fails.

            With --hosts N (as root) the main job runs on a cluster: N compute hosts made as network \
            namespaces on a fabric bridge, each running its own `swiftlet agent` joined over mutual TLS, \
            and the instances get addresses on one network that spans the hosts (VXLAN). The demo shows \
            where each instance landed and checks each from its own host.
            """)

    static let defaultWebCount = 5

    @Option(help: "The repository's guest/ directory (default: found from the current directory).")
    var guestDir: String?

    @Option(help: "How many `http` instances to boot.")
    var web: Int = defaultWebCount

    @Option(help: "Force the server's accelerator (tcg or kvm) instead of its calibrated choice.")
    var accelerator: String?

    @Option(help: "Run on this many namespace hosts, each with its own agent (root; 0: the server's own host only).")
    var hosts: Int = 0

    func validate() throws {
        guard (1...50).contains(web) else { throw ValidationError("--web must be 1-50") }
        guard (0...8).contains(hosts) else { throw ValidationError("--hosts must be 0-8") }
        if hosts > 0, getuid() != 0 { throw ValidationError("--hosts needs root (network namespaces, bridges, VXLAN)") }
    }

    func run() async throws {
        let guest = try guestDir ?? DemoEnvironment.findGuestDirectory()
        guard FileManager.default.fileExists(atPath: guest + "/build.sh") else {
            throw ValidationError("no build.sh in '\(guest)'; pass the repository's guest/ directory with --guest-dir")
        }
        let demo = try Demo(guestDir: guest, webCount: web, accelerator: accelerator, hosts: hosts)
        let work = Task { try await demo.perform() }
        let interrupts = DemoEnvironment.onInterrupt {
            Output.note("\ninterrupted: cleaning up")
            work.cancel()
        }
        let result = await work.result
        await demo.cleanUp()
        interrupts.forEach { $0.cancel() }
        switch result {
        case .success(let passed):
            if !passed { throw ExitCode.failure }
        case .failure(let error):
            throw error
        }
    }
}

/// The demo's state; an actor so the interrupt path and the work never race on it.
actor Demo {
    let guestDir: String
    let webCount: Int
    let accelerator: String?
    /// Namespace hosts with their own agents (none: the server's own host only).
    let fabric: DemoFabric?
    let workDir: String
    private let started = monotonicNanos()
    private var server: ChildProcess?
    private(set) var agents: [ChildProcess] = []
    private var client: SwiftletClient?
    private(set) var instanceIds: [String] = []
    private var imageIds: [String] = []
    private var usedPorts: Set<Int> = []

    init(guestDir: String, webCount: Int, accelerator: String?, hosts: Int = 0) throws {
        self.guestDir = guestDir
        self.webCount = webCount
        self.accelerator = accelerator
        fabric = hosts > 0 ? DemoFabric(hosts: hosts) : nil
        let temporary = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("swiftlet-demo-XXXXXX")
        var template = Array(temporary.path.utf8CString)
        guard let made = mkdtemp(&template) else {
            throw ClientError(.local("cannot create a temporary directory: \(String(cString: strerror(errno)))"))
        }
        workDir = String(cString: made)
    }

    func record(_ created: [Instance]) { instanceIds += created.map(\.id) }

    func addAgent(_ agent: ChildProcess) { agents.append(agent) }

    func log(_ step: String, _ message: String) {
        let seconds = Double(monotonicNanos() - started) / 1e9
        // Unbuffered, so the progress shows at once also when piped.
        Output.raw(
            String(format: "[%6.1fs] ", seconds) + step.padding(toLength: 8, withPad: " ", startingAt: 0) + message
                + "\n")
    }

    /// Runs every step; returns whether all checks passed. Throws when the demo cannot go on.
    func perform() async throws -> Bool {
        if let fabric { return try await performOnHosts(fabric) }
        let client = try await startServer()
        let images = try await buildAndUpload(client)
        var failures: [String] = []

        var web: [(name: String, port: Int)] = []
        for index in 1...webCount {
            let name = "web-\(index)"
            let port = try freePort()
            if try await boot(client, image: images.http, name: name, port: port) {
                web.append((name, port))
            } else {
                failures.append("\(name) did not boot")
            }
        }
        let kvPort = try freePort()
        let kvBooted = try await boot(client, image: images.kv, name: "kv", port: kvPort)
        if !kvBooted { failures.append("kv did not boot") }

        for (name, port) in web {
            if let problem = await checkWeb(client, name: name, port: port) { failures.append("\(name): \(problem)") }
        }
        if kvBooted, let problem = await checkKV(client, port: kvPort) { failures.append("kv: \(problem)") }

        let instances = try await client.instances().filter { instanceIds.contains($0.id) }
        Output.raw("\nPhase timeline over \(instances.count) instances:\n")
        Output.raw(TimelineSummary(instances.map(\.timeline)).table.render() + "\n\n")
        if failures.isEmpty {
            log("result", "all \(webCount + 1) instances booted and answered")
        } else {
            for failure in failures { log("FAILED", failure) }
        }
        return failures.isEmpty
    }

    // MARK: steps

    func startServer(extraArguments: [String] = []) async throws -> SwiftletClient {
        let port = try freePort()
        let data = workDir + "/data"
        let url = "http://127.0.0.1:\(port)"
        var arguments = ["server", "--data", data, "--host", "127.0.0.1", "--port", String(port)] + extraArguments
        arguments.append("--stop-instances-on-exit")
        if let accelerator { arguments += ["--accelerator", accelerator] }
        log("server", "starting on \(url), data in \(workDir)")
        let server = try ChildProcess.spawn(
            DemoEnvironment.executablePath(), arguments, log: workDir + "/server.log")
        self.server = server
        let probe = SwiftletClient(baseURL: url, token: nil)
        do {
            try await waitForHealth(probe, server: server)
            try await probe.shutdown()
        } catch {
            try? await probe.shutdown()
            throw error
        }
        guard let token = try? String(contentsOfFile: data + "/admin.token", encoding: .utf8) else {
            throw ClientError(.local("the server wrote no admin token in \(data)"))
        }
        let client = SwiftletClient(baseURL: url, token: token.trimmingCharacters(in: .whitespacesAndNewlines))
        self.client = client
        let hosts = try await client.hosts()
        let accelerators = hosts.map { "\($0.name): \($0.chosenAccelerator)" }.joined(separator: ", ")
        log("server", "healthy (\(accelerators.isEmpty ? "no hosts yet" : accelerators))")
        return client
    }

    private func waitForHealth(_ probe: SwiftletClient, server: ChildProcess) async throws {
        let deadline = monotonicNanos() + 120 * 1_000_000_000
        while true {
            try Task.checkCancellation()
            if server.hasExited { throw ClientError(.local("the server exited at start-up: \(serverLogTail())")) }
            if (try? await probe.health()) == true { return }
            guard monotonicNanos() < deadline else {
                throw ClientError(.local("the server did not become healthy within 120 s: \(serverLogTail())"))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func buildAndUpload(_ client: SwiftletClient) async throws -> (http: String, kv: String) {
        var ids: [String] = []
        for example in ["http", "kv"] {
            let output = "\(workDir)/\(example).elf"
            let began = monotonicNanos()
            let build = try ChildProcess.spawn(
                "/bin/bash", ["\(guestDir)/build.sh", "\(guestDir)/examples/\(example)", "-o", output],
                log: "\(workDir)/build-\(example).log")
            let status = try await build.wait()
            guard status == 0 else {
                throw ClientError(
                    .local(
                        "building \(example) failed (exit \(status)): \(tail(of: "\(workDir)/build-\(example).log"))"))
            }
            let seconds = Double(monotonicNanos() - began) / 1e9
            let image = try await client.uploadImage(path: output, name: example)
            imageIds.append(image.id)
            ids.append(image.id)
            log(
                "image",
                String(
                    format: "%@: built in %.1f s, uploaded as %@ (%@, %@)", example, seconds, image.id,
                    image.kind.rawValue, Format.bytes(image.sizeBytes)))
        }
        return (ids[0], ids[1])
    }

    /// Boots one instance with `wait`; true when it reached RUNNING.
    private func boot(_ client: SwiftletClient, image: String, name: String, port: Int) async throws -> Bool {
        let request = CreateInstanceRequest(
            name: name, image: image, flavor: "small", args: ["name=\(name)", "ip=10.0.2.15/24", "gw=10.0.2.2"],
            publish: ["\(port):80"], wait: true)
        let created: [Instance]
        do {
            created = try await client.createInstances(request)
        } catch let error as ClientError where error.status != nil {
            log("boot", "\(name): \(error)")
            return false
        }
        record(created)
        guard let instance = created.first else { return false }
        guard instance.state == .running else {
            log("boot", "\(name): \(instance.state.rawValue) (\(instance.reason ?? "no reason given"))")
            return false
        }
        log(
            "boot",
            "\(name): \(instance.id) READY in \(Format.milliseconds(instance.timeline.total)) ms, "
                + "port \(port) -> 80")
        return true
    }

    /// GET / must answer 200 with a page naming the instance. Nil when it does.
    private func checkWeb(_ client: SwiftletClient, name: String, port: Int) async -> String? {
        let url = "http://127.0.0.1:\(port)/"
        switch await request(client, "GET", url) {
        case .failure(let problem):
            log("check", "\(name): GET \(url) failed: \(problem)")
            return "GET / failed: \(problem)"
        case .success(let answer):
            guard answer.status == 200, answer.body.contains(name) else {
                log("check", "\(name): GET / answered \(answer.status) without its name")
                return "GET / answered \(answer.status) without its name"
            }
            log("check", "\(name): GET \(url) -> 200, page names \(name)")
            return nil
        }
    }

    /// PUT a key, GET it back, POST /counter twice and see it count. Nil when all hold.
    private func checkKV(_ client: SwiftletClient, port: Int) async -> String? {
        let base = "http://127.0.0.1:\(port)"
        let value = "hello-from-swiftlet-\(port)"
        let steps: [(String, String, String?, (Int, String) -> Bool)] = [
            ("PUT", "/kv/demo", value, { status, _ in (200..<300).contains(status) }),
            ("GET", "/kv/demo", nil, { status, body in status == 200 && body.contains(value) }),
        ]
        for (method, path, body, accept) in steps {
            switch await request(client, method, base + path, body: body) {
            case .failure(let problem):
                log("check", "kv: \(method) \(path) failed: \(problem)")
                return "\(method) \(path) failed: \(problem)"
            case .success(let answer):
                guard accept(answer.status, answer.body) else {
                    log("check", "kv: \(method) \(path) answered \(answer.status): \(oneLine(answer.body))")
                    return "\(method) \(path) answered \(answer.status)"
                }
            }
        }
        log("check", "kv: PUT /kv/demo then GET /kv/demo -> '\(value)'")
        var counts: [Int] = []
        for _ in 0..<2 {
            switch await request(client, "POST", base + "/counter") {
            case .failure(let problem):
                log("check", "kv: POST /counter failed: \(problem)")
                return "POST /counter failed: \(problem)"
            case .success(let answer):
                guard answer.status == 200, let count = Int(answer.body.filter(\.isNumber)) else {
                    log("check", "kv: POST /counter answered \(answer.status): \(oneLine(answer.body))")
                    return "POST /counter answered \(answer.status) without a number"
                }
                counts.append(count)
            }
        }
        guard counts[1] == counts[0] + 1 else {
            log("check", "kv: POST /counter twice gave \(counts[0]) then \(counts[1])")
            return "the counter went \(counts[0]) -> \(counts[1])"
        }
        log("check", "kv: POST /counter twice -> \(counts[0]), \(counts[1])")
        return nil
    }

    /// A request to a guest, retried for a few seconds: READY means the guest's stack is up, but
    /// the first connection through QEMU's port forwarding can still race it.
    private func request(_ client: SwiftletClient, _ method: String, _ url: String, body: String? = nil) async
        -> Result<(status: Int, body: String), DemoProblem>
    {
        let deadline = monotonicNanos() + 10 * 1_000_000_000
        var lastProblem = ""
        while monotonicNanos() < deadline, !Task.isCancelled {
            do {
                return .success(try await client.fetch(method, url: url, body: body, timeout: .seconds(3)))
            } catch {
                lastProblem = String(describing: error)
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        return .failure(DemoProblem(description: Task.isCancelled ? "interrupted" : lastProblem))
    }

    // MARK: clean-up

    /// Deletes what the demo created, stops the server, removes the directory. Safe to call after
    /// any failure; reports what it could not do.
    func cleanUp() async {
        if let client {
            // The server is ours alone: delete all it has, also what an interrupted request created.
            let instances = (try? await client.instances().map(\.id)) ?? instanceIds
            let images = (try? await client.images().map(\.id)) ?? imageIds
            for id in instances {
                do { try await client.deleteInstance(id) } catch { log("cleanup", "deleting \(id): \(error)") }
            }
            for network in (try? await client.networks()) ?? [] {
                do { try await client.deleteNetwork(network.id) } catch {
                    log("cleanup", "deleting network \(network.name): \(error)")
                }
            }
            for id in images {
                do { try await client.deleteImage(id) } catch { log("cleanup", "deleting image \(id): \(error)") }
            }
            try? await client.shutdown()
            if !instances.isEmpty || !images.isEmpty {
                log("cleanup", "deleted \(instances.count) instances and \(images.count) images")
            }
        }
        // Stopped together: each may take its graceful-shutdown time.
        let stopped = await withTaskGroup(of: (Int, String).self) { group in
            for (index, agent) in agents.enumerated() {
                group.addTask { (index, await agent.terminate(grace: .seconds(10))) }
            }
            var statuses: [Int: String] = [:]
            for await (index, status) in group { statuses[index] = status }
            return statuses
        }
        for (index, status) in stopped.sorted(by: { $0.key < $1.key }) {
            log("cleanup", "agent \(index + 1) stopped (\(status))")
        }
        if let server {
            let status = await server.terminate(grace: .seconds(20))
            log("cleanup", "server stopped (\(status))")
        }
        if let fabric {
            fabric.destroy()
            log("cleanup", "removed the namespace hosts and the fabric bridge")
        }
        // QEMU runs in its own session: anything still naming our directory would outlive us.
        let leftovers = DemoEnvironment.processes(mentioning: workDir)
        for pid in leftovers { kill(pid, SIGKILL) }
        if !leftovers.isEmpty { log("cleanup", "killed \(leftovers.count) leftover processes: \(leftovers)") }
        do {
            try FileManager.default.removeItem(atPath: workDir)
            log("cleanup", "removed \(workDir)")
        } catch {
            log("cleanup", "could not remove \(workDir): \(error)")
        }
    }

    // MARK: helpers

    /// A port nothing listens on now, and not handed out before in this demo.
    func freePort() throws -> Int {
        for _ in 0..<20 {
            let port = try DemoEnvironment.freePort()
            if usedPorts.insert(port).inserted { return port }
        }
        throw ClientError(.local("no free TCP port found"))
    }

    private func serverLogTail() -> String { tail(of: workDir + "/server.log") }

    /// The last lines of a log, joined into one line for an error message.
    func tail(of path: String) -> String {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n").suffix(5).map { $0.trimmingCharacters(in: .whitespaces) }
        return lines.isEmpty ? "(no output)" : lines.joined(separator: " | ")
    }

    private func oneLine(_ text: String) -> String {
        String(text.replacingOccurrences(of: "\n", with: " ").prefix(120))
    }
}

struct DemoProblem: Error, CustomStringConvertible {
    var description: String
}

/// A child process we started, reaped by pid.
final class ChildProcess: Sendable {
    let pid: pid_t
    private let exitStatus = Mutex<Int32?>(nil)

    private init(pid: pid_t) { self.pid = pid }

    /// Starts `path` in its own process group (so a terminal Ctrl-C reaches only us and we decide
    /// how to stop it), default signal handling, stdin from /dev/null, stdout+stderr to `log`.
    static func spawn(_ path: String, _ arguments: [String], log: String) throws -> ChildProcess {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaulted = sigset_t()
        sigemptyset(&defaulted)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaulted, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaulted)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environment: [UnsafeMutablePointer<CChar>?] =
            ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { environment.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, environment)
        guard result == 0 else {
            throw ClientError(.local("cannot start \(path): \(String(cString: strerror(result)))"))
        }
        return ChildProcess(pid: pid)
    }

    /// Reaps the child if it has exited; nil while it runs.
    private func poll() -> Int32? {
        exitStatus.withLock { saved in
            if let saved { return saved }
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
            // Exit code, or 128 + signal like a shell.
            let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            saved = code
            return code
        }
    }

    var hasExited: Bool { poll() != nil }

    /// Waits for the exit; on cancellation kills the child's whole process group first.
    func wait() async throws -> Int32 {
        while true {
            if let status = poll() { return status }
            if Task.isCancelled {
                kill(-pid, SIGKILL)
                _ = await waitForExit(within: .seconds(5))
                throw CancellationError()
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns a short description of how it ended.
    func terminate(grace: Duration) async -> String {
        if let status = poll() { return "had already exited with \(status)" }
        kill(pid, SIGTERM)
        if let status = await waitForExit(within: grace) { return "exit \(status)" }
        kill(pid, SIGKILL)
        let status = await waitForExit(within: .seconds(5))
        return "killed after \(grace) (exit \(status.map(String.init) ?? "?"))"
    }

    private func waitForExit(within limit: Duration) async -> Int32? {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while clock.now < deadline {
            if let status = poll() { return status }
            // Not cancellable: clean-up must finish even after Ctrl-C.
            await withCheckedContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { continuation.resume() }
            }
        }
        return poll()
    }
}

enum DemoEnvironment {
    /// `guest/` found from the current directory upwards, else next to the repository this
    /// binary was built in (`<repo>/.build/<config>/swiftlet`).
    static func findGuestDirectory() throws -> String {
        var candidates: [URL] = []
        var directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        while true {
            candidates.append(directory.appendingPathComponent("guest"))
            let parent = directory.deletingLastPathComponent()
            if parent.path == directory.path { break }
            directory = parent
        }
        if let executable = try? executablePath() {
            var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
            for _ in 0..<4 {
                directory = directory.deletingLastPathComponent()
                candidates.append(directory.appendingPathComponent("guest"))
            }
        }
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate.path + "/build.sh") {
            return candidate.path
        }
        throw ValidationError("cannot find the guest/ directory (with build.sh); pass --guest-dir")
    }

    /// This very binary, so the demo's server is the same build as the client.
    static func executablePath() throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { throw ClientError(.local("cannot find this program's path in /proc/self/exe")) }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A TCP port on 127.0.0.1 the kernel reports free (bound to port 0, then released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError(.local("socket: \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw ClientError(.local("bind: \(String(cString: strerror(errno)))")) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Pids whose command line mentions `text` (our temporary directory), excluding ourselves.
    static func processes(mentioning text: String) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        let me = getpid()
        return entries.compactMap { pid_t($0) }.filter { pid in
            guard pid != me, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
                return false
            }
            return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(text)
        }
    }

    /// Calls `handler` on SIGINT or SIGTERM instead of dying, so clean-up can run.
    static func onInterrupt(_ handler: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }
}
