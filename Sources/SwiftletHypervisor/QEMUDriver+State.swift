import Foundation
import Glibc
import SwiftletCore
import Synchronization

/// Saving and restoring a VM's whole state with QEMU's migration stream (docs/qemu-driver.md,
/// "Saved state"), and live migration. The state file is opened by the driver and handed to QEMU
/// (`getfd`): a confined QEMU could neither open it nor fork the `exec:` writer QEMU 7.2 would need.
extension QEMUDriver {
    public func moves() async -> VMMoves { VMMoves(snapshot: true, liveMigration: true) }

    // MARK: Saved state

    public func saveState(_ handle: VMHandle, to path: String, resume: Bool) async throws -> VMSnapshot {
        let version = await hypervisorVersion()
        let spec = try Self.savedShape(handle)
        let key = handle.processKey
        guard isProcessAlive(pid: key.pid, startTime: key.startTime) else {
            throw HypervisorError.notRunning("VM process \(key.pid) is not running")
        }
        // Opened here and handed to QEMU: a confined VMM can neither open it nor fork a writer.
        let file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw HypervisorError.invalidSpec("cannot write \(path): \(errnoMessage())") }
        defer { close(file) }
        let qmp = try QMPWithDescriptors(path: handle.qmpSocketPath, timeout: Self.startupTimeout)
        let started = monotonicNanoseconds()
        // Paused while it is written: the file holds one moment of the guest.
        try qmp.execute("stop")
        do {
            try qmp.execute("getfd", arguments: ["fdname": Self.stateDescriptorName], passing: file)
            try qmp.execute("migrate", arguments: ["uri": "fd:" + Self.stateDescriptorName])
            try await Self.waitForMigration(qmp, timeout: Self.startupTimeout)
        } catch {
            // The guest goes on as it was; a partial file is no snapshot.
            try? FileManager.default.removeItem(atPath: path)
            if resume { _ = try? qmp.execute("cont") }
            throw error
        }
        if resume { try qmp.execute("cont") }
        let paused = monotonicNanoseconds() - started
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
        return VMSnapshot(
            path: path, sizeBytes: size, hypervisor: "qemu", hypervisorVersion: version, memoryMiB: spec.memoryMiB,
            vcpus: spec.vcpus, machineType: spec.machineType, pausedNanoseconds: paused)
    }

    public func restore(_ spec: VMSpec, from snapshot: VMSnapshot) async throws -> (VMHandle, BootTimestamps) {
        if let mismatch = snapshot.mismatch(with: spec, hypervisor: "qemu", version: await hypervisorVersion()) {
            throw HypervisorError.invalidSpec(mismatch)
        }
        var spec = spec
        spec.machineType = spec.machineType ?? snapshot.machineType
        return try await launch(spec, incoming: .saved(path: snapshot.path), holdingGuestUntil: {})
    }

    public func prepareRestore(_ spec: VMSpec) async throws -> VMHandle {
        try await launch(spec, incoming: .held, holdingGuestUntil: {}).0
    }

    public func loadState(_ handle: VMHandle, from snapshot: VMSnapshot) async throws {
        let shape = try Self.savedShape(handle)
        let held = VMSpec(
            instanceID: "", kernelPath: "", bootKind: .pvh, memoryMiB: shape.memoryMiB, vcpus: shape.vcpus,
            commandLine: "", publishedPorts: [], runtimeDirectory: handle.runtimeDirectory,
            machineType: shape.machineType)
        if let mismatch = snapshot.mismatch(with: held, hypervisor: "qemu", version: await hypervisorVersion()) {
            throw HypervisorError.invalidSpec(mismatch)
        }
        try await Self.readState(
            from: snapshot.path, qmp: try QMPWithDescriptors(path: handle.qmpSocketPath, timeout: Self.startupTimeout))
    }

    /// Feeds a new VMM (started with `-incoming defer`) the state in `path`, then lets it run.
    static func readState(from path: String, qmp: QMPWithDescriptors) async throws {
        let file = open(path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { throw HypervisorError.invalidSpec("cannot read \(path): \(errnoMessage())") }
        defer { close(file) }
        try qmp.execute("getfd", arguments: ["fdname": stateDescriptorName], passing: file)
        try qmp.execute("migrate-incoming", arguments: ["uri": "fd:" + stateDescriptorName])
        try await waitForMigration(qmp, timeout: startupTimeout)
        try qmp.execute("cont")
    }

    private static let stateDescriptorName = "swiftlet-state"

    // MARK: Live migration

    public func prepareIncoming(_ spec: VMSpec, address: String, port: Int, tls: MigrationCredentials?) async throws
        -> VMHandle
    {
        guard (1...65535).contains(port), !address.isEmpty, !address.contains(",") else {
            throw HypervisorError.invalidSpec("cannot listen for a VM's state on \(address):\(port)")
        }
        let host = address.contains(":") ? "[\(address)]" : address
        return try await launch(spec, incoming: .live(uri: "tcp:\(host):\(port)", tls: tls), holdingGuestUntil: {}).0
    }

    public func migrateOut(_ handle: VMHandle, to address: String, port: Int, settings: LiveMigrationSettings)
        async throws -> LiveMigrationResult
    {
        let host = address.contains(":") ? "[\(address)]" : address
        let started = monotonicNanoseconds()
        return try await withQMP(handle, timeout: Self.startupTimeout) { session in
            try await session.execute(
                "migrate-set-capabilities",
                arguments: [
                    "capabilities": [
                        ["capability": "auto-converge", "state": settings.autoConverge],
                        ["capability": "events", "state": false],
                    ]
                ])
            try await session.execute(
                "migrate-set-parameters",
                arguments: [
                    "downtime-limit": settings.downtimeLimitMilliseconds,
                    "max-bandwidth": settings.maxBandwidthBytesPerSecond,
                ])
            if let tls = settings.tls {
                try await Self.useMigrationTLS(
                    tls, endpoint: .client, session: session, pid: handle.pid, runtimeDirectory: handle.runtimeDirectory
                )
            } else {
                try await session.execute("migrate-set-parameters", arguments: ["tls-creds": ""])
            }
            try await session.execute("migrate", arguments: ["uri": "tcp:\(host):\(port)"])
            let reply = try await Self.waitForMigration(
                session, timeout: settings.timeout, cancellation: settings.cancellation, stream: (address, port))
            let ram = reply["ram"] as? [String: Any] ?? [:]
            return LiveMigrationResult(
                downtimeMilliseconds: Self.int(reply["downtime"]) ?? 0,
                totalNanoseconds: monotonicNanoseconds() - started,
                transferredBytes: Int64(Self.int(ram["transferred"]) ?? 0))
        }
    }

    public func finishIncoming(_ handle: VMHandle, timeout: Duration) async throws {
        try await withQMP(handle, timeout: timeout) { session in
            _ = try await Self.waitForMigration(session, timeout: timeout)
            // QEMU lets the guest run once its state is in; a target paused by hand runs here.
            let status = try await session.execute("query-status") as? [String: Any]
            if status?["status"] as? String != "running" { try await session.execute("cont") }
        }
    }

    enum TLSEndpoint: String {
        case server, client
    }

    /// Hands QEMU a move's TLS credentials: the files go to a directory of the VM's runtime
    /// directory (readable by a confined VMM, inside its chroot), and the migration uses them.
    /// Each move has its own credentials object, since a VMM whose move rolled back may move again.
    static func useMigrationTLS(
        _ tls: MigrationCredentials, endpoint: TLSEndpoint, session: QMPSession, pid: pid_t, runtimeDirectory: String
    ) async throws {
        let id = "swiftlet-migration-\(UInt32.random(in: 0...UInt32.max))"
        let directory = runtimeDirectory + "/" + id
        let vmm = VMMProcess(pid: pid)
        guard mkdir(directory, 0o700) == 0 else {
            throw HypervisorError.spawnFailed("cannot make \(directory): \(errnoMessage())")
        }
        var files = [
            ("ca-cert.pem", tls.caCertificate), ("\(endpoint.rawValue)-cert.pem", tls.certificate),
            ("\(endpoint.rawValue)-key.pem", tls.key),
        ]
        // Without them QEMU generates Diffie-Hellman parameters for each server, which is slow.
        if endpoint == .server { files.append(("dh-params.pem", Self.standardDHParameters)) }
        for (name, text) in files {
            let path = directory + "/" + name
            guard
                FileManager.default.createFile(
                    atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            else { throw HypervisorError.spawnFailed("cannot write \(path)") }
            chown(path, vmm.uid, gid_t(UInt32.max))
        }
        chown(directory, vmm.uid, gid_t(UInt32.max))
        // A confined VMM lives in a chroot of its runtime directory.
        let seen = vmm.chrooted ? "/" + id : directory
        try await session.execute(
            "object-add",
            arguments: [
                "qom-type": "tls-creds-x509", "id": id, "dir": seen, "endpoint": endpoint.rawValue,
                "verify-peer": true,
            ])
        var parameters: [String: Any] = ["tls-creds": id]
        if endpoint == .client { parameters["tls-hostname"] = tls.serverName }
        try await session.execute("migrate-set-parameters", arguments: parameters)
    }

    /// RFC 7919's ffdhe2048 group, in PKCS#3 PEM: public, standard parameters.
    static let standardDHParameters = """
        -----BEGIN DH PARAMETERS-----
        MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
        +8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
        87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
        YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
        7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
        ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
        -----END DH PARAMETERS-----

        """

    private static func int(_ value: Any?) -> Int? {
        switch value {
        case let value as Int: value
        case let value as Int64: Int(value)
        case let value as Double: Int(value)
        case let value as NSNumber: value.intValue
        default: nil
        }
    }

    /// QEMU's version, read once per binary.
    func hypervisorVersion() async -> String {
        if let known = Self.versions.withLock({ $0[qemuBinary] }) { return known }
        let line = await Self.output(of: qemuBinary, ["--version"]).first ?? ""
        let version = line.split(separator: " ").first { $0.first?.isNumber == true }.map(String.init) ?? line
        Self.versions.withLock { $0[qemuBinary] = version }
        return version
    }

    private static let versions = Mutex<[String: String]>([:])

    /// Waits until the migration on `session` completes and returns QEMU's account of it; throws
    /// with QEMU's reason if it fails.
    @discardableResult
    static func waitForMigration(
        _ session: some QMPCommands, timeout: Duration, cancellation: MoveCancellation? = nil,
        stream: (address: String, port: Int)? = nil
    ) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        var calledOff: ContinuousClock.Instant?
        var streamCut = false
        while true {
            // On the same session: QEMU's QMP socket serves one client at a time.
            if cancellation?.isCancelled == true && calledOff == nil {
                _ = try await session.run("migrate_cancel", arguments: nil)
                calledOff = .now
            }
            // A stream whose link is cut keeps its unsent data, and QEMU waits for it to drain
            // before the cancel ends (and could still complete it later, pausing the source's
            // guest after a rollback resumed it): the socket is destroyed instead.
            if let calledOff, let stream, !streamCut, ContinuousClock.now - calledOff > .seconds(1) {
                streamCut = true
                _ = await output(of: "ss", ["-K", "dst", stream.address, "dport", "=", "\(stream.port)"])
            }
            let reply = try await session.run("query-migrate", arguments: nil) as? [String: Any] ?? [:]
            switch reply["status"] as? String {
            case "completed": return reply
            case "failed", "cancelled":
                let reason = reply["error-desc"] as? String ?? "no reason given"
                throw HypervisorError.qmp("the VM's state did not transfer: \(reason)")
            default:
                guard ContinuousClock.now < deadline else {
                    throw HypervisorError.qmp("the VM's state did not transfer within \(timeout)")
                }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    /// What a restored VM must match, read from the command line the VMM runs with.
    private static func savedShape(_ handle: VMHandle) throws -> (memoryMiB: Int, vcpus: Int, machineType: String?) {
        let raw = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(handle.pid)/cmdline"))) ?? Data()
        let arguments = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        func value(after flag: String) -> String? {
            guard let index = arguments.firstIndex(of: flag), index + 1 < arguments.count else { return nil }
            return arguments[index + 1]
        }
        guard let memory = value(after: "-m").flatMap({ Int($0.dropLast()) }),
            let vcpus = value(after: "-smp").flatMap({ Int($0) })
        else { throw HypervisorError.notRunning("VM process \(handle.pid) is not a VMM this driver started") }
        let machine = value(after: "-M")?.split(separator: ",").first.map(String.init)
        return (memory, vcpus, machine)
    }

}

/// Who a running VMM is: its user (files it must read are given to it) and whether it sees the
/// host's root or a chroot (confined).
struct VMMProcess {
    var uid: uid_t
    var chrooted: Bool

    init(pid: pid_t) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let uids = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }?.split(whereSeparator: \.isWhitespace)
        // Uid: real, effective, saved, filesystem.
        uid = uids.flatMap { $0.count > 2 ? uid_t($0[2]) : nil } ?? getuid()
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/\(pid)/root", &buffer, buffer.count - 1)
        chrooted = length > 0 && String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) != "/"
    }
}

/// The QMP sessions the migration wait runs on.
protocol QMPCommands {
    func run(_ command: String, arguments: [String: Any]?) async throws -> Any?
}

extension QMPSession: QMPCommands {
    func run(_ command: String, arguments: [String: Any]?) async throws -> Any? {
        try await execute(command, arguments: arguments)
    }
}

extension QMPWithDescriptors: QMPCommands {
    func run(_ command: String, arguments: [String: Any]?) async throws -> Any? {
        try execute(command, arguments: arguments)
    }
}
