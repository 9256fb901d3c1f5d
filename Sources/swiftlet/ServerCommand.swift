import ArgumentParser
import Foundation
import Logging
import SwiftletAgent
import SwiftletController
import SwiftletCore
import SwiftletOpenStack
import SwiftletUI

/// `swiftlet server`: the controller with an in-process agent for this host.
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run the Swiftlet controller and the local host agent.",
        discussion: """
            Settings come from, in order of precedence: flags, environment (SWIFTLET_LISTEN=HOST:PORT, \
            SWIFTLET_DATA, SWIFTLET_DATABASE), a JSON config file (--config; keys: host, port, dataDirectory, uploadLimitBytes, \
            stopInstancesOnExit, accelerator, networkPrefix, maxConcurrentBoots, hugePages, imageCacheDirectory, \
            imageCacheLimitBytes, agentPort, agentHost, agentNames, fabricAddress, leaseDurationMs, leaseRenewMs, database, \
            controllerOnly, metricsOpen, confineVMMs, tlsCertificate, tlsKey, tlsOwnCA), \
            then defaults \
            (127.0.0.1:7420, no agent listener).
            """)

    @Option(help: "Data directory (default: /var/lib/swiftlet as root, else ~/.local/share/swiftlet).")
    var data: String?

    @Option(
        help: """
            The store: sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DB, for a cluster (several \
            controllers may share one; default: SQLite in the data directory). A host's SQLite state \
            moves to PostgreSQL with `swiftlet admin migrate-store`.
            """)
    var database: String?

    @Option(help: "Address to listen on.")
    var host: String?

    @Option(help: "Port to listen on.")
    var port: Int?

    @Option(help: "JSON configuration file.")
    var config: String?

    @Option(help: "Force the accelerator (tcg or kvm) instead of the calibrated choice.")
    var accelerator: String?

    @Option(help: "VMMs this host starts at once; more creates wait their turn (default: 2 per CPU).")
    var maxConcurrentBoots: Int?

    @Option(
        help: """
            Transparent huge pages for cold VMMs: auto (only a boot alone on the host: fewer page faults, \
            less CPU), always, never (least memory per VM).
            """)
    var hugePages: VMMHugePages?

    @Option(help: "Where the host keeps its copies of image bytes (default: <data>/image-cache).")
    var imageCacheDir: String?

    @Option(
        help: """
            Bytes the host's image copies may take; the least recently used go first (default: no limit). \
            Entries that are hard links to the blob store take no space of their own and do not count.
            """)
    var imageCacheLimitBytes: Int64?

    @Option(help: "Open the agent listener (mutual TLS) on this port, so other hosts' agents can join (default: none).")
    var agentPort: Int?

    @Option(help: "Address of the agent listener (default: 0.0.0.0).")
    var agentHost: String?

    @Option(
        help: """
            This host's address on the fabric between hosts, where its networks' VXLAN tunnels end \
            (default: --agent-host when it is an address).
            """)
    var fabricAddress: String?

    @Flag(
        help: """
            Run no agent for this host (it takes no instances): the API and the agent listener only, as each \
            of several controllers on one PostgreSQL database does. They share the data directory (blobs, CA).
            """)
    var controllerOnly = false

    @Flag(help: "Serve GET /metrics (Prometheus) without a token (default: it needs the admin token).")
    var metricsOpen = false

    @Flag(
        name: .customLong("confine-vmms"),
        help: """
            Run each VMM confined: as the swiftlet-vmm user, in QEMU's seccomp sandbox, chrooted into its             runtime directory, in a cgroup with memory, CPU and pids limits (docs/qemu-driver.md).
            """)
    var confineVMMs = false

    @Option(
        name: .customLong("tls-cert"),
        help: ArgumentHelp(
            "Serve the API over HTTPS with this PEM certificate (chain); needs --tls-key (default: plain HTTP).",
            valueName: "path"))
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The PEM private key of --tls-cert.", valueName: "path"))
    var tlsKey: String?

    @Flag(
        name: .customLong("tls-own-ca"),
        help: """
            Serve the API over HTTPS with a certificate from the controller's own CA (<data>/ca/ca.pem), for this \
            host's names and addresses; clients trust it with `--ca-cert <data>/ca/ca.pem`.
            """)
    var tlsOwnCA = false

    @Flag(help: "Stop all instances when the server shuts down (default: they keep running).")
    var stopInstancesOnExit = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func run() async throws {
        var settings = ServerConfiguration()
        if let config {
            guard let data = FileManager.default.contents(atPath: config) else {
                throw ValidationError("cannot read config file \(config)")
            }
            do { settings = try JSONDecoder().decode(ServerConfiguration.self, from: data) } catch {
                throw ValidationError("config file \(config) is not valid: \(error)")
            }
        }
        if let listen = ProcessInfo.processInfo.environment["SWIFTLET_LISTEN"] {
            let parts = listen.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else {
                throw ValidationError("SWIFTLET_LISTEN must be HOST:PORT, got '\(listen)'")
            }
            settings.host = String(parts[0])
            settings.port = port
        }
        // The environment overrides the file, as the help says.
        if let environment = ServerConfiguration.environmentDataDirectory { settings.dataDirectory = environment }
        if let data { settings.dataDirectory = data }
        if let environment = ProcessInfo.processInfo.environment["SWIFTLET_DATABASE"], !environment.isEmpty {
            settings.database = environment
        }
        if let database { settings.database = database }
        do { _ = try settings.storeLocation() } catch { throw ValidationError(error.message) }
        if let host { settings.host = host }
        if let port { settings.port = port }
        if let accelerator { settings.accelerator = accelerator }
        if stopInstancesOnExit { settings.stopInstancesOnExit = true }
        if controllerOnly { settings.controllerOnly = true }
        if metricsOpen { settings.metricsOpen = true }
        if confineVMMs { settings.confineVMMs = true }
        if let tlsCertificate { settings.tlsCertificate = tlsCertificate }
        if let tlsKey { settings.tlsKey = tlsKey }
        if tlsOwnCA { settings.tlsOwnCA = true }
        do { try settings.validateTLS() } catch { throw ValidationError(error.message) }
        if let maxConcurrentBoots {
            guard maxConcurrentBoots > 0 else { throw ValidationError("--max-concurrent-boots must be at least 1") }
            settings.maxConcurrentBoots = maxConcurrentBoots
        }
        if let hugePages { settings.hugePages = hugePages }
        if let agentPort {
            guard (1...65535).contains(agentPort) else { throw ValidationError("--agent-port must be 1-65535") }
            settings.agentPort = agentPort
        }
        if let agentHost { settings.agentHost = agentHost }
        if let fabricAddress {
            guard IPv4.parse(fabricAddress) != nil else {
                throw ValidationError("--fabric-address must be an IPv4 address")
            }
            settings.fabricAddress = fabricAddress
        }
        if let imageCacheDir { settings.imageCacheDirectory = imageCacheDir }
        if let imageCacheLimitBytes {
            guard imageCacheLimitBytes > 0 else { throw ValidationError("--image-cache-limit-bytes must be positive") }
            settings.imageCacheLimitBytes = imageCacheLimitBytes
        }
        bootstrapLogging(level: logLevel)
        let logger = Logger(label: "swiftlet")
        let settled = settings
        try await SwiftletServer.serve(
            configuration: settled, logger: logger, extensions: [OpenStackAPI(), Dashboard()]
        ) { server in
            logger.info(
                "swiftlet server listening",
                metadata: [
                    "address": "\(settled.apiTLS == nil ? "http" : "https")://\(settled.host):\(settled.port)",
                    "data": "\(settled.dataDirectory)",
                    "admin.token": "\(server.adminTokenPath)",
                ])
        }
    }
}

extension VMMHugePages: ExpressibleByArgument {}

/// Logs to standard error at `level` (trace … error; info when unknown): the long-running commands.
func bootstrapLogging(level: String) {
    let level = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
