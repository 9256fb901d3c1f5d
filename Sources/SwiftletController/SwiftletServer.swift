import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOSSL
import ServiceLifecycle
import SwiftletAgent
import SwiftletCore
import SwiftletHypervisor
import SwiftletImages
import SwiftletNetwork
import SwiftletPKI
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
    /// Port of the agent listener (mutual TLS) where other hosts' agents join and connect; nil: none.
    public var agentPort: Int?
    /// Address of the agent listener.
    public var agentHost: String = "0.0.0.0"
    /// Extra names (DNS or IP) agents may dial the controller by, for its certificate; the host
    /// name, `localhost` and the addresses of this host's interfaces are always in it.
    public var agentNames: [String] = []
    /// This host's address on the fabric between hosts, where its networks' VXLAN tunnels end
    /// (default: the agent listener's address when it is one).
    public var fabricAddress: String?
    /// How long a host's lease lasts, and how often its agent renews it.
    public var leaseDurationMs: Int = 10_000
    public var leaseRenewMs: Int = 2_000
    /// The store: `sqlite:PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (default: SQLite
    /// at `<dataDirectory>/swiftlet.sqlite`).
    public var database: String?
    /// Serve the API and the agent listener only: no agent for this host, which then takes no
    /// instances. What each of several controllers sharing one PostgreSQL database runs.
    public var controllerOnly: Bool = false
    /// `GET /metrics` without a token (default: it needs the admin token).
    public var metricsOpen: Bool = false
    /// Run each VMM confined (its own user, seccomp, a chroot, a cgroup: docs/qemu-driver.md).
    public var confineVMMs: Bool = false
    /// Serve the API over HTTPS with this certificate chain and key (PEM files).
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Serve the API over HTTPS with a certificate the controller's own CA (`<data>/ca/ca.pem`)
    /// issues at each start, for the same names as the agent listener's.
    public var tlsOwnCA: Bool = false

    /// How the API is served over TLS, if it is.
    public enum APITLS: Sendable, Equatable {
        case files(certificate: String, key: String)
        case ownCA
    }

    /// Nil: plain HTTP (the default).
    public var apiTLS: APITLS? {
        if let tlsCertificate, let tlsKey { return .files(certificate: tlsCertificate, key: tlsKey) }
        return tlsOwnCA ? .ownCA : nil
    }

    /// 400 `server.tls_config` unless the TLS settings make sense together.
    public func validateTLS() throws(SwiftletError) {
        if (tlsCertificate == nil) != (tlsKey == nil) {
            throw SwiftletError.badRequest(
                "server.tls_config", "give both a certificate and its key (--tls-cert and --tls-key), or neither")
        }
        if tlsCertificate != nil, tlsOwnCA {
            throw SwiftletError.badRequest(
                "server.tls_config", "--tls-own-ca and --tls-cert are alternatives: give one of them")
        }
    }

    public init() {}

    /// Where the store is: the configured database, else the embedded SQLite file.
    public func storeLocation() throws(SwiftletError) -> StoreLocation {
        guard let database else { return .sqlite(path: dataDirectory + "/swiftlet.sqlite") }
        return try StoreLocation.parse(database)
    }

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
        agentPort = try container.decodeIfPresent(Int.self, forKey: .agentPort)
        agentHost = try container.decodeIfPresent(String.self, forKey: .agentHost) ?? agentHost
        agentNames = try container.decodeIfPresent([String].self, forKey: .agentNames) ?? agentNames
        fabricAddress = try container.decodeIfPresent(String.self, forKey: .fabricAddress)
        if let fabricAddress, IPv4.parse(fabricAddress) == nil {
            throw DecodingError.dataCorruptedError(
                forKey: .fabricAddress, in: container, debugDescription: "fabricAddress must be an IPv4 address")
        }
        leaseDurationMs = try container.decodeIfPresent(Int.self, forKey: .leaseDurationMs) ?? leaseDurationMs
        leaseRenewMs = try container.decodeIfPresent(Int.self, forKey: .leaseRenewMs) ?? leaseRenewMs
        database = try container.decodeIfPresent(String.self, forKey: .database)
        controllerOnly = try container.decodeIfPresent(Bool.self, forKey: .controllerOnly) ?? controllerOnly
        metricsOpen = try container.decodeIfPresent(Bool.self, forKey: .metricsOpen) ?? metricsOpen
        confineVMMs = try container.decodeIfPresent(Bool.self, forKey: .confineVMMs) ?? confineVMMs
        tlsCertificate = try container.decodeIfPresent(String.self, forKey: .tlsCertificate)
        tlsKey = try container.decodeIfPresent(String.self, forKey: .tlsKey)
        tlsOwnCA = try container.decodeIfPresent(Bool.self, forKey: .tlsOwnCA) ?? tlsOwnCA
        guard leaseRenewMs > 0, leaseDurationMs > leaseRenewMs else {
            throw DecodingError.dataCorruptedError(
                forKey: .leaseDurationMs, in: container,
                debugDescription: "leaseDurationMs must be longer than leaseRenewMs, and both positive")
        }
    }

    /// The fabric address this host's networks tunnel from: the configured one, else the agent
    /// listener's own address when it names one (not a wildcard), else none.
    public var effectiveFabricAddress: String? {
        if let fabricAddress { return fabricAddress }
        guard agentPort != nil, IPv4.parse(agentHost) != nil, agentHost != "0.0.0.0" else { return nil }
        return agentHost
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

/// Wires store, blob store, driver, agent and HTTP API for one host (the embedded default), or
/// a controller of several (`controllerOnly`).
public struct SwiftletServer: Sendable {
    public let configuration: ServerConfiguration
    public let controller: Controller
    /// Remote hosts (nil without an agent listener).
    public let cluster: ClusterService?
    /// This host's agent, in process (nil for a controller only).
    public let agent: HostAgent?
    /// Which of the controllers sharing the store does the work that must happen once.
    public let leadership: LeaderElection
    public let adminTokenPath: String
    private let logger: Logger
    /// APIs served beside /v1 (the OpenStack ones, from the `swiftlet` command).
    public var extensions: [any APIExtension] = []

    public static let adminTokenFile = "admin.token"

    /// Opens the configured store, then serves until SIGTERM/SIGINT (`ready` runs once the server
    /// is set up, before it serves).
    public static func serve(
        configuration: ServerConfiguration, logger: Logger, extensions: [any APIExtension] = [],
        ready: @Sendable (SwiftletServer) -> Void = { _ in }
    ) async throws {
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        // Certificate files that cannot be read stop the start before anything else is set up.
        if let tls = configuration.apiTLS, case .files = tls {
            _ = try apiTLSConfiguration(tls, dataDirectory: configuration.dataDirectory, names: [])
        }
        try await configuration.storeLocation().withStore(logger: logger) { store in
            var server = try await SwiftletServer(configuration: configuration, store: store, logger: logger)
            server.extensions = extensions
            ready(server)
            try await server.run()
        }
    }

    public init(configuration: ServerConfiguration, store: any ControllerStore, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        leadership = LeaderElection(store: store, logger: logger)
        let data = configuration.dataDirectory
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let blobs = try BlobStore(root: data + "/blobs")
        adminTokenPath = data + "/" + Self.adminTokenFile

        if configuration.controllerOnly {
            guard configuration.agentPort != nil else {
                throw SwiftletError.badRequest(
                    "server.controller_only",
                    "a controller without a host of its own needs an agent listener (--agent-port)")
            }
            try LinuxNetworkDriver.validatePrefix(configuration.networkPrefix)
            // Without a host here, new networks' ranges are not checked against this host's routes.
            let networking =
                getuid() == 0 ? ControllerNetworking(store: store, prefix: configuration.networkPrefix) : nil
            agent = nil
            controller = Controller(
                store: store, blobs: blobs, uploadLimit: configuration.uploadLimitBytes,
                hostMemoryMib: HostFacts.memoryMib, logger: logger, networking: networking)
            cluster = try await Self.clusterService(
                configuration: configuration, store: store, controller: controller, logger: logger)
            try await ensureAdminToken()
            return
        }
        let capabilities = try await Self.hostCapabilities(configuration: configuration, logger: logger)
        let driver = QEMUDriver(
            accelerator: capabilities.chosenAccelerator,
            confinement: configuration.confineVMMs ? VMMConfinement() : nil, logger: logger)
        let hostName = ProcessInfo.processInfo.hostName
        let hostId = "host-" + hostName
        // Bridges, TAPs and nftables need root; without it the network API answers 503.
        try LinuxNetworkDriver.validatePrefix(configuration.networkPrefix)
        let network =
            getuid() == 0
            ? HostNetwork(driver: LinuxNetworkDriver(prefix: configuration.networkPrefix), logger: logger) : nil
        let agent = HostAgent(
            hostId: hostId, images: BlobStoreSource(blobs: blobs), driver: driver, runRoot: data + "/run",
            maxConcurrentBoots: configuration.maxConcurrentBoots, hugePages: configuration.hugePages,
            imageCacheDirectory: configuration.imageCacheDirectory,
            imageCacheLimitBytes: configuration.imageCacheLimitBytes, network: network,
            // Where other hosts' VMMs send a VM's state to this host's.
            migrationAddress: configuration.effectiveFabricAddress ?? "127.0.0.1", logger: logger)
        self.agent = agent
        controller = Controller(
            store: store, blobs: blobs, uploadLimit: configuration.uploadLimitBytes,
            hostMemoryMib: HostFacts.memoryMib, logger: logger,
            networking: network.map { ControllerNetworking(store: store, local: $0) })
        var host = ComputeHost(
            id: hostId, name: hostName, cpus: HostFacts.cpus, memoryMib: HostFacts.memoryMib,
            hypervisors: [capabilities.hypervisor], hypervisorVersion: capabilities.version,
            machineTypes: capabilities.machineTypes, accelerators: capabilities.accelerators,
            chosenAccelerator: capabilities.chosenAccelerator, calibrationMs: capabilities.calibration,
            instances: 0, updatedAt: Date())
        host.networkPrefix = network?.prefix
        host.fabricAddress = configuration.effectiveFabricAddress
        if network != nil, configuration.agentPort != nil, host.fabricAddress == nil {
            logger.warning(
                "networks will not reach this host from other hosts: give it --fabric-address (or an --agent-host address)"
            )
        }
        try await store.upsertHost(host)
        cluster = try await Self.clusterService(
            configuration: configuration, store: store, controller: controller, logger: logger)
        try await ensureAdminToken()
        try await controller.connectLocalAgent(LocalAgentLink(agent: agent))
    }

    /// Hosts that join over the network, when the agent listener is on.
    private static func clusterService(
        configuration: ServerConfiguration, store: any ControllerStore, controller: Controller, logger: Logger
    ) async throws -> ClusterService? {
        guard configuration.agentPort != nil else { return nil }
        let ca = try ClusterCA.loadOrCreate(directory: configuration.dataDirectory + "/ca")
        controller.migrationAuthority = ca
        return try await ClusterService(
            ca: ca, store: store,
            controller: controller,
            settings: .init(
                leaseDuration: .milliseconds(configuration.leaseDurationMs),
                leaseRenewInterval: .milliseconds(configuration.leaseRenewMs)),
            logger: logger)
    }

    /// The first start writes an admin token to `<data>/admin.token` (mode 0600), and so does
    /// a start that finds the token in that file revoked (how the admin token is replaced).
    private func ensureAdminToken() async throws {
        if let text = try? String(contentsOfFile: adminTokenPath, encoding: .utf8) {
            let secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
            let stored = try await controller.store.token(forSecretHash: Controller.hash(secret: secret))
            guard let stored, stored.revokedAt != nil else { return }
            logger.notice("the admin token was revoked: writing a new one", metadata: ["token": "\(stored.id)"])
        }
        let info = try await controller.createToken(projectId: Project.adminProjectId, admin: true)
        // Controllers sharing the data directory may write at once: each its own temporary file.
        let temporary = adminTokenPath + ".tmp-\(getpid())"
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
        var capabilities = try await QEMUDriver.cachedCapabilities(
            at: configuration.dataDirectory + "/host-calibration.json", logger: logger)
        if let forced = configuration.accelerator { capabilities.chosenAccelerator = forced }
        return capabilities
    }

    /// The names (DNS or IP) the controller's certificates are issued for: `localhost`, the host
    /// name, this host's addresses and the configured extra names.
    var certificateNames: [String] {
        var names = ["localhost", ProcessInfo.processInfo.hostName] + HostFacts.addresses + configuration.agentNames
        if !["0.0.0.0", "::", ""].contains(configuration.host), !names.contains(configuration.host) {
            names.append(configuration.host)
        }
        return names
    }

    /// The API listener's TLS, when it is served over HTTPS.
    static func apiTLSConfiguration(_ tls: ServerConfiguration.APITLS, dataDirectory: String, names: [String])
        throws(SwiftletError) -> TLSConfiguration
    {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        switch tls {
        case .files(let certificatePath, let keyPath):
            do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch {
                throw SwiftletError.badRequest(
                    "server.tls_certificate", "cannot read a PEM certificate from \(certificatePath): \(error)")
            }
            guard !chain.isEmpty else {
                throw SwiftletError.badRequest("server.tls_certificate", "\(certificatePath) holds no PEM certificate")
            }
            do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
                throw SwiftletError.badRequest(
                    "server.tls_key", "cannot read a PEM private key from \(keyPath): \(error)")
            }
        case .ownCA:
            let ca = try ClusterCA.loadOrCreate(directory: dataDirectory + "/ca")
            let issued = try ca.issueServerCertificate(names: names)
            do {
                chain = [try NIOSSLCertificate(bytes: Array(issued.certificate.utf8), format: .pem)]
                key = try NIOSSLPrivateKey(bytes: Array(issued.key.utf8), format: .pem)
            } catch {
                throw SwiftletError(.internal, "server.tls_certificate", "cannot load the issued certificate: \(error)")
            }
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        return configuration
    }

    /// Runs the HTTP API until SIGTERM/SIGINT; VMs keep running unless configured otherwise.
    public func run() async throws {
        let apiTLS = try configuration.apiTLS.map { tls throws(SwiftletError) in
            try Self.apiTLSConfiguration(tls, dataDirectory: configuration.dataDirectory, names: certificateNames)
        }
        controller.apiScheme = apiTLS == nil ? "http" : "https"
        let router = APIRouter.build(
            controller: controller, cluster: cluster, leadership: leadership, metricsOpen: configuration.metricsOpen,
            extensions: extensions)
        let address = BindAddress.hostname(configuration.host, port: configuration.port)
        let app: any Service
        if let apiTLS {
            app = Application(
                router: router, server: try .tls(tlsConfiguration: apiTLS),
                configuration: .init(address: address, serverName: "swiftlet"), logger: logger)
        } else {
            app = Application(
                router: router, configuration: .init(address: address, serverName: "swiftlet"), logger: logger)
        }
        if apiTLS != nil {
            logger.info("API over HTTPS", metadata: ["tls": "\(configuration.tlsOwnCA ? "own CA" : "files")"])
        }
        // Shut down in reverse: the leader stops acting (HostMonitor) before it releases its lease.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: app), .init(service: controller.instanceSync), .init(service: leadership),
        ]
        if let cluster, let agentPort = configuration.agentPort {
            let names = certificateNames
            let agentApp = Application(
                router: AgentRoutes.build(cluster: cluster),
                server: try .tls(tlsConfiguration: AgentRoutes.tlsConfiguration(cluster: cluster, names: names)),
                configuration: .init(
                    address: .hostname(configuration.agentHost, port: agentPort), serverName: "swiftlet"),
                logger: logger)
            services.append(.init(service: agentApp))
            services.append(
                .init(
                    service: HostMonitor(
                        cluster: cluster, leadership: leadership, interval: .milliseconds(250), logger: logger)))
            logger.info(
                "agent listener (mutual TLS)",
                metadata: ["agent.port": "\(agentPort)", "ca.fingerprint": "\(cluster.ca.fingerprint)"])
        }
        // Last, so first to shut down: a migration in flight ends while its agents' links still work.
        services.append(.init(service: controller.background))
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        // What was answered before the shutdown is in the audit log.
        await controller.audit.flush()
        if let agent {
            await agent.drainPools()
            if configuration.stopInstancesOnExit { await agent.stopAll(timeout: .seconds(5)) }
        }
        logger.info("server stopped")
    }
}

/// CPU count, memory and addresses of this host, from the OS.
public enum HostFacts {
    public static var cpus: Int { ProcessInfo.processInfo.activeProcessorCount }
    public static var memoryMib: Int { Int(ProcessInfo.processInfo.physicalMemory >> 20) }

    /// The IPv4 addresses of this host's interfaces.
    public static var addresses: [String] {
        var first: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&first) == 0 else { return [] }
        defer { freeifaddrs(first) }
        var addresses: [String] = []
        var next = first
        while let entry = next {
            defer { next = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else {
                continue
            }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            var inet = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            if inet_ntop(AF_INET, &inet, &text, socklen_t(text.count)) != nil {
                addresses.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return addresses
    }
}
