import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SwiftletAgent
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages
import SwiftletNetwork
import SwiftletStore

#if canImport(Glibc)
    import Glibc
#endif

public struct ServerConfiguration: Codable, Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 7420
    public var dataDirectory: String = ServerConfiguration.defaultDataDirectory
    /// Largest image upload accepted, bytes.
    public var uploadLimitBytes: Int64 = 256 << 20
    /// Stop every instance when the server shuts down (default: they keep running).
    public var stopInstancesOnExit: Bool = false
    /// Force an accelerator (`tcg`, `kvm`) instead of the calibrated choice.
    public var accelerator: String?
    /// Names of this server's bridges, TAPs and nftables tables start with it (1-5 of a-z0-9).
    public var networkPrefix: String = "swl"
    /// VMMs this host starts at once; more creates wait their turn (default: 2 per CPU).
    public var maxConcurrentBoots: Int = HostAgent.defaultConcurrentBoots
    /// Transparent huge pages for cold VMMs: `auto` (only a boot alone on the host), `always`, `never`.
    public var hugePages: VMMHugePages = .auto
    /// Where the host keeps its copies of image bytes (default: `<dataDirectory>/image-cache`).
    /// On another filesystem than the blob store, entries are copies rather than hard links.
    public var imageCacheDirectory: String?
    /// Bytes the host's image copies may take; the least recently used go first (default: no limit).
    public var imageCacheLimitBytes: Int64?

    public init() {}

    /// Every key is optional in a config file; missing ones keep their defaults.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init()
        host = try container.decodeIfPresent(String.self, forKey: .host) ?? host
        port = try container.decodeIfPresent(Int.self, forKey: .port) ?? port
        dataDirectory = try container.decodeIfPresent(String.self, forKey: .dataDirectory) ?? dataDirectory
        uploadLimitBytes = try container.decodeIfPresent(Int64.self, forKey: .uploadLimitBytes) ?? uploadLimitBytes
        stopInstancesOnExit =
            try container.decodeIfPresent(Bool.self, forKey: .stopInstancesOnExit) ?? stopInstancesOnExit
        accelerator = try container.decodeIfPresent(String.self, forKey: .accelerator)
        networkPrefix = try container.decodeIfPresent(String.self, forKey: .networkPrefix) ?? networkPrefix
        maxConcurrentBoots =
            try container.decodeIfPresent(Int.self, forKey: .maxConcurrentBoots) ?? maxConcurrentBoots
        guard maxConcurrentBoots > 0 else {
            throw DecodingError.dataCorruptedError(
                forKey: .maxConcurrentBoots, in: container, debugDescription: "maxConcurrentBoots must be at least 1")
        }
        hugePages = try container.decodeIfPresent(VMMHugePages.self, forKey: .hugePages) ?? hugePages
        imageCacheDirectory = try container.decodeIfPresent(String.self, forKey: .imageCacheDirectory)
        imageCacheLimitBytes = try container.decodeIfPresent(Int64.self, forKey: .imageCacheLimitBytes)
        if let imageCacheLimitBytes, imageCacheLimitBytes <= 0 {
            throw DecodingError.dataCorruptedError(
                forKey: .imageCacheLimitBytes, in: container, debugDescription: "imageCacheLimitBytes must be positive")
        }
    }

    /// `SWIFTLET_DATA`, when set and not empty.
    public static var environmentDataDirectory: String? {
        ProcessInfo.processInfo.environment["SWIFTLET_DATA"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `/var/lib/swiftlet` as root, else `~/.local/share/swiftlet`; `SWIFTLET_DATA` overrides.
    public static var defaultDataDirectory: String {
        if let environment = environmentDataDirectory { return environment }
        if getuid() == 0 { return "/var/lib/swiftlet" }
        return NSHomeDirectory() + "/.local/share/swiftlet"
    }
}

/// Wires store, blob store, driver, agent and HTTP API for one host (the embedded default).
public struct SwiftletServer: Sendable {
    public let configuration: ServerConfiguration
    public let controller: Controller
    public let adminTokenPath: String
    private let logger: Logger

    public static let adminTokenFile = "admin.token"

    public init(configuration: ServerConfiguration, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        let data = configuration.dataDirectory
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let store = try SQLiteStore(path: data + "/swiftlet.sqlite")
        let blobs = try BlobStore(root: data + "/blobs")
        adminTokenPath = data + "/" + Self.adminTokenFile

        let capabilities = try await Self.hostCapabilities(configuration: configuration, logger: logger)
        let driver = QEMUDriver(accelerator: capabilities.chosenAccelerator, logger: logger)
        let hostName = ProcessInfo.processInfo.hostName
        let hostId = "host-" + hostName
        // Bridges, TAPs and nftables need root; without it the network API answers 503.
        try LinuxNetworkDriver.validatePrefix(configuration.networkPrefix)
        let network =
            getuid() == 0
            ? NetworkService(
                driver: LinuxNetworkDriver(prefix: configuration.networkPrefix), store: store, logger: logger)
            : nil
        let vmDriver: any HypervisorDriver =
            network.map { NetworkedHypervisorDriver(base: driver, network: $0) } ?? driver
        let agent = HostAgent(
            hostId: hostId, store: store, blobs: blobs, driver: vmDriver, runRoot: data + "/run",
            maxConcurrentBoots: configuration.maxConcurrentBoots, hugePages: configuration.hugePages,
            imageCacheDirectory: configuration.imageCacheDirectory,
            imageCacheLimitBytes: configuration.imageCacheLimitBytes,
            logger: logger)
        controller = Controller(
            store: store, blobs: blobs, agent: agent, uploadLimit: configuration.uploadLimitBytes,
            hostMemoryMib: HostFacts.memoryMib, logger: logger, network: network)
        try store.upsertHost(
            ComputeHost(
                id: hostId, name: hostName, cpus: HostFacts.cpus, memoryMib: HostFacts.memoryMib,
                hypervisors: [capabilities.hypervisor], hypervisorVersion: capabilities.version,
                machineTypes: capabilities.machineTypes, accelerators: capabilities.accelerators,
                chosenAccelerator: capabilities.chosenAccelerator, calibrationMs: capabilities.calibration,
                instances: 0, updatedAt: Date()))
        try ensureAdminToken()
        await network?.recover()
        await agent.recoverAll()
        await agent.loadPools()
    }

    /// The first start writes an admin token to `<data>/admin.token` (mode 0600).
    private func ensureAdminToken() throws {
        if FileManager.default.fileExists(atPath: adminTokenPath) { return }
        let info = try controller.createToken(projectId: Project.adminProjectId, admin: true)
        let temporary = adminTokenPath + ".tmp"
        guard
            FileManager.default.createFile(
                atPath: temporary, contents: Data((info.token ?? "").utf8), attributes: [.posixPermissions: 0o600])
        else { throw SwiftletError(.internal, "server.token_write", "cannot write \(adminTokenPath)") }
        _ = rename(temporary, adminTokenPath)
        logger.info("created admin token", metadata: ["path": "\(adminTokenPath)"])
    }

    /// Calibrates the accelerators once per host and caches the result in the data directory.
    static func hostCapabilities(configuration: ServerConfiguration, logger: Logger) async throws
        -> HypervisorCapabilities
    {
        let cachePath = configuration.dataDirectory + "/host-calibration.json"
        var capabilities: HypervisorCapabilities
        if let data = FileManager.default.contents(atPath: cachePath),
            let cached = try? JSONDecoder().decode(HypervisorCapabilities.self, from: data)
        {
            capabilities = cached
        } else {
            capabilities = try await QEMUDriver.calibrate(logger: logger)
            if let data = try? JSONEncoder().encode(capabilities) {
                _ = FileManager.default.createFile(atPath: cachePath, contents: data)
            }
        }
        if let forced = configuration.accelerator { capabilities.chosenAccelerator = forced }
        return capabilities
    }

    /// Runs the HTTP API until SIGTERM/SIGINT; VMs keep running unless configured otherwise.
    public func run() async throws {
        let router = APIRouter.build(controller: controller)
        let app = Application(
            router: router,
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port), serverName: "swiftlet"),
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await controller.agent.drainPools()
        if configuration.stopInstancesOnExit { await controller.agent.stopAll(timeout: .seconds(5)) }
        logger.info("server stopped")
    }
}

/// CPU count and memory of this host, from the OS.
public enum HostFacts {
    public static var cpus: Int { ProcessInfo.processInfo.activeProcessorCount }
    public static var memoryMib: Int { Int(ProcessInfo.processInfo.physicalMemory >> 20) }
}
