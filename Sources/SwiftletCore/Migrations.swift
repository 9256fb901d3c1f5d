import Foundation

/// How an instance moves to another host.
public enum MigrationMode: String, Codable, Sendable, CaseIterable {
    /// The whole VM's memory and devices stream to a VMM on the target while the guest runs; it
    /// is paused only for the last pass.
    case live
    /// The application's state moves instead of the VM's memory: a fresh instance of the image
    /// boots on the target, silent, while the source serves; the source is quiesced, its state
    /// exported and imported into the target, which then takes over the address. Needs an image
    /// that declares a state interface.
    case stateful
}

/// Where a migration is. The steps follow Nova's and Cloud Hypervisor's split: the target is
/// prepared (an incoming VMM with the instance's ports), the state is sent, and the target takes
/// over; any failure before that rolls back to the source.
public enum MigrationStatus: String, Codable, Sendable, CaseIterable {
    /// Accepted; the target was chosen.
    case preparing
    /// The target's VMM waits; the source streams the VM's state.
    case running
    /// The target runs the guest; the record moves to it and the source is torn down.
    case finishing
    case completed
    /// Ended before the target took over: the instance runs on its source (`reason` says why).
    case failed
    /// Cancelled by the user before the target took over: the instance runs on its source.
    case cancelled

    public var isFinal: Bool { self == .completed || self == .failed || self == .cancelled }
}

/// One move of an instance between hosts, kept after it ends.
public struct InstanceMigration: Codable, Sendable, Equatable {
    public var id: String
    public var instanceId: String
    public var instanceName: String
    public var projectId: String
    public var mode: MigrationMode
    public var sourceHostId: String
    public var targetHostId: String
    public var status: MigrationStatus
    /// Why it failed or was cancelled.
    public var reason: String?
    /// The guest paused on the source → running on the target, as the VMM measured it.
    public var downtimeMs: Double?
    /// Accepted → completed.
    public var totalMs: Double?
    /// The VM state sent over the link.
    public var transferredBytes: Int64?
    /// A user asked to call it off; it ends `cancelled` unless the target had already taken over.
    public var cancelRequested: Bool?
    /// The most the transfer may take of the link, if limited.
    public var maxBandwidthMbps: Int?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String, instanceId: String, instanceName: String, projectId: String, mode: MigrationMode,
        sourceHostId: String, targetHostId: String, status: MigrationStatus, createdAt: Date,
        maxBandwidthMbps: Int? = nil
    ) {
        self.maxBandwidthMbps = maxBandwidthMbps
        self.id = id
        self.instanceId = instanceId
        self.instanceName = instanceName
        self.projectId = projectId
        self.mode = mode
        self.sourceHostId = sourceHostId
        self.targetHostId = targetHostId
        self.status = status
        self.createdAt = createdAt
        self.updatedAt = createdAt
    }
}

/// `POST /v1/instances/{id}/migrate`.
public struct MigrateInstanceRequest: Codable, Sendable {
    /// The target host's id or name; without it the scheduler picks one.
    public var host: String?
    /// `live` (the default); text so that another word is a 400 that names the choices.
    public var mode: String?
    /// The most the transfer may take of the link, in Mbit/s (a constrained link shared with users).
    public var maxBandwidthMbps: Int?

    public init(host: String? = nil, mode: String? = nil, maxBandwidthMbps: Int? = nil) {
        self.host = host
        self.mode = mode
        self.maxBandwidthMbps = maxBandwidthMbps
    }

    public func parsedMode() throws(SwiftletError) -> MigrationMode {
        guard let mode else { return .live }
        guard let parsed = MigrationMode(rawValue: mode) else {
            throw .badRequest(
                "migration.bad_mode",
                "mode must be one of: \(MigrationMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return parsed
    }
}

public struct MigrationList: Codable, Sendable {
    public var migrations: [InstanceMigration]
    public init(_ migrations: [InstanceMigration]) { self.migrations = migrations }
}

/// `POST /v1/hosts/{id}/drain`: the host is cordoned, and what runs there moves.
public struct DrainReport: Codable, Sendable {
    /// An instance left on the host, and why.
    public struct Skipped: Codable, Sendable, Equatable {
        public var instanceId: String
        public var name: String
        public var state: InstanceState
        public var reason: String

        public init(instanceId: String, name: String, state: InstanceState, reason: String) {
            self.instanceId = instanceId
            self.name = name
            self.state = state
            self.reason = reason
        }
    }

    public var hostId: String
    /// One per RUNNING instance that started to move.
    public var migrations: [InstanceMigration]
    public var skipped: [Skipped]

    public init(hostId: String, migrations: [InstanceMigration], skipped: [Skipped]) {
        self.hostId = hostId
        self.migrations = migrations
        self.skipped = skipped
    }
}

/// What one end of a live migration's stream needs for TLS: a certificate of the cluster CA made
/// for this move only, its key, and the CA that vouches for the other end. The target's is a
/// server certificate named `serverName`, the source's a client certificate; each end checks the
/// other's against the CA (and the source checks the target's name), so the state crosses the
/// link encrypted and only between the two VMMs of the move.
public struct MigrationCredentials: Codable, Sendable, Equatable {
    public var caCertificate: String
    public var certificate: String
    public var key: String
    /// The name the target's certificate carries, which the source checks.
    public var serverName: String

    public init(caCertificate: String, certificate: String, key: String, serverName: String) {
        self.caCertificate = caCertificate
        self.certificate = certificate
        self.key = key
        self.serverName = serverName
    }
}
