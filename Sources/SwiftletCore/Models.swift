import Foundation

// Resources as the API shows them. JSON keys are these property names (camelCase, as in
// Kubernetes and Nomad), so the OpenAPI contract and the Swift types never drift apart.

public struct Project: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var requireSignedImages: Bool
    public var createdAt: Date
    /// Its limits; nil: none.
    public var quota: ProjectQuota? = nil
    /// What it holds now (shown by `GET /v1/projects/{id}` only).
    public var usage: ProjectUsage? = nil

    public init(id: String, name: String, requireSignedImages: Bool = false, createdAt: Date) {
        self.id = id
        self.name = name
        self.requireSignedImages = requireSignedImages
        self.createdAt = createdAt
    }
}

/// What a bearer token grants: everything (admin) or one project.
public enum Principal: Sendable, Equatable {
    case admin
    case project(String)

    /// The project a request acts in; admins act in the built-in `admin` project.
    public var projectId: String {
        switch self {
        case .admin: Project.adminProjectId
        case .project(let id): id
        }
    }

    public var isAdmin: Bool { self == .admin }
}

extension Project {
    public static let adminProjectId = "prj-admin"
}

public struct TokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var admin: Bool
    /// Only returned once, on creation.
    public var token: String?
    public var createdAt: Date
    /// When it stops working (nil: never, as the admin bootstrap token).
    public var expiresAt: Date? = nil
    /// When it was revoked (nil: it was not).
    public var revokedAt: Date? = nil

    public init(
        id: String, projectId: String, admin: Bool, token: String?, createdAt: Date, expiresAt: Date? = nil,
        revokedAt: Date? = nil
    ) {
        self.id = id
        self.projectId = projectId
        self.admin = admin
        self.token = token
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }
}

/// `POST /v1/projects/{id}/tokens`: every field optional, the body too.
public struct CreateTokenRequest: Codable, Sendable {
    /// How long the token works, seconds (default: until revoked).
    public var ttlSeconds: Int?
    public init(ttlSeconds: Int? = nil) { self.ttlSeconds = ttlSeconds }
}

public struct TokenList: Codable, Sendable {
    public var tokens: [TokenInfo]
    public init(_ tokens: [TokenInfo]) { self.tokens = tokens }
}

/// One change made through the API (every request but GET and HEAD), as the audit log keeps it:
/// who, what, when and the result. Never a secret: no body, header or query is kept.
public struct AuditEntry: Codable, Sendable, Equatable {
    /// Assigned by the store, growing.
    public var id: Int64?
    public var time: Date
    /// The API token, or Identity token, the request authenticated with (nil: none was valid).
    public var tokenId: String?
    /// The Identity user, for requests made with a user's token or password.
    public var userId: String?
    /// The project the request acted in.
    public var projectId: String?
    public var method: String
    /// The route's pattern (`/v1/instances/{id}`), or the path when no route took the request.
    public var route: String
    /// The resource acted on: the ids a create answered with (comma-separated), else the path's id.
    public var resourceId: String?
    public var status: Int
    /// The error code of a refused request (`auth.token_expired`).
    public var code: String?

    public init(
        id: Int64? = nil, time: Date, tokenId: String?, userId: String?, projectId: String?, method: String,
        route: String, resourceId: String?, status: Int, code: String?
    ) {
        self.id = id
        self.time = time
        self.tokenId = tokenId
        self.userId = userId
        self.projectId = projectId
        self.method = method
        self.route = route
        self.resourceId = resourceId
        self.status = status
        self.code = code
    }
}

public struct AuditList: Codable, Sendable {
    public var entries: [AuditEntry]
    public init(_ entries: [AuditEntry]) { self.entries = entries }
}

public enum ImageKind: String, Codable, Sendable, CaseIterable {
    case pvh
    case multiboot
    case bzImage = "bzimage"
    /// An initramfs (cpio or compressed): not bootable alone, referenced by a bzImage's `initrd` property.
    case initrd
    /// Disk images booted by firmware from a virtio-blk disk.
    case raw
    case qcow2
}

public struct Image: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var name: String
    public var kind: ImageKind
    public var sha256: String
    public var sizeBytes: Int64
    /// Free-form image properties; `ready_pattern` (a regex on console lines) is understood by
    /// the agent for unikernels that don't print the kit's READY line.
    public var properties: [String: String]
    public var createdAt: Date
    /// nil means private (older records and clients omit it).
    public var visibility: ImageVisibility?
    public var tags: [String]?
    /// Base64 Ed25519 signature over the sha256 digest, and the id of the trusted key it verified with.
    public var signature: String?
    public var signingKeyId: String?

    public init(
        id: String, projectId: String, name: String, kind: ImageKind, sha256: String,
        sizeBytes: Int64, properties: [String: String], createdAt: Date
    ) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.kind = kind
        self.sha256 = sha256
        self.sizeBytes = sizeBytes
        self.properties = properties
        self.createdAt = createdAt
    }

    public static let readyPatternProperty = "ready_pattern"
}

public struct Flavor: Codable, Sendable, Equatable {
    public var name: String
    public var vcpus: Int
    public var memoryMib: Int

    public init(name: String, vcpus: Int, memoryMib: Int) {
        self.name = name
        self.vcpus = vcpus
        self.memoryMib = memoryMib
    }

    public static let defaults = [
        Flavor(name: "tiny", vcpus: 1, memoryMib: 16),
        Flavor(name: "small", vcpus: 1, memoryMib: 64),
        Flavor(name: "medium", vcpus: 2, memoryMib: 256),
    ]
}

public enum RestartPolicy: String, Codable, Sendable, CaseIterable {
    case no
    case onFailure = "on-failure"
    case always
}

public struct PublishedPort: Codable, Sendable, Equatable, Hashable {
    public var hostPort: Int
    public var guestPort: Int
    public var proto: String

    public init(hostPort: Int, guestPort: Int, proto: String = "tcp") {
        self.hostPort = hostPort
        self.guestPort = guestPort
        self.proto = proto
    }

    /// Parses docker's `HOST:GUEST[/tcp|/udp]`.
    public static func parse(_ text: String) throws(SwiftletError) -> PublishedPort {
        let invalid = SwiftletError.badRequest(
            "publish.invalid", "published port '\(text)' must be HOST:GUEST[/tcp|/udp] with ports 1-65535")
        var spec = Substring(text)
        var proto = "tcp"
        if let slash = spec.firstIndex(of: "/") {
            proto = String(spec[spec.index(after: slash)...])
            spec = spec[..<slash]
        }
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let host = Int(parts[0]), let guest = Int(parts[1]),
            (1...65535).contains(host), (1...65535).contains(guest), proto == "tcp" || proto == "udp"
        else { throw invalid }
        return PublishedPort(hostPort: host, guestPort: guest, proto: proto)
    }

    public var description: String { "\(hostPort):\(guestPort)/\(proto)" }
}

public struct Instance: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var name: String
    public var imageId: String
    public var flavor: String?
    public var vcpus: Int
    public var memoryMib: Int
    /// Config words in order, `key=value`; they become the kernel command line.
    public var args: [String]
    public var restartPolicy: RestartPolicy
    public var publishedPorts: [PublishedPort]
    public var state: InstanceState
    /// Why the instance is in ERROR (or why it last stopped).
    public var reason: String?
    public var hostId: String?
    public var restartCount: Int
    public var timeline: Timeline
    public var createdAt: Date
    public var updatedAt: Date
    /// Addresses on networks (docs/networking.md), fixed when the instance is created.
    public var ports: [NetworkPort]? = nil
    /// Names of the security groups the instance is in.
    public var securityGroups: [String]? = nil
    /// The server group the instance was created in (its placement policy), if any.
    public var serverGroupId: String? = nil
    /// Grows with every change to whether the instance should have a VM (create, start, stop, a
    /// restart by its policy): its host's reports carry the generation they act on, and reports
    /// of an older one are refused. Older records have none (0).
    public var generation: UInt64? = nil
    /// What the user last asked (`state` is the lifecycle status, which also moves on its own).
    public var desired: DesiredState? = nil
    /// What the instance's host last reported.
    public var observed: ObservedState? = nil
    /// Work in progress across hosts.
    public var task: InstanceTask? = nil
    /// The snapshot its VM starts from (each start restores it), instead of a boot.
    public var snapshotId: String? = nil

    public init(
        id: String, projectId: String, name: String, imageId: String, flavor: String?, vcpus: Int,
        memoryMib: Int, args: [String], restartPolicy: RestartPolicy, publishedPorts: [PublishedPort],
        state: InstanceState, reason: String? = nil, hostId: String? = nil, restartCount: Int = 0,
        timeline: Timeline, createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.imageId = imageId
        self.flavor = flavor
        self.vcpus = vcpus
        self.memoryMib = memoryMib
        self.args = args
        self.restartPolicy = restartPolicy
        self.publishedPorts = publishedPorts
        self.state = state
        self.reason = reason
        self.hostId = hostId
        self.restartCount = restartCount
        self.timeline = timeline
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public struct InstanceEvent: Codable, Sendable, Equatable {
    public var id: Int64
    public var instanceId: String
    public var time: Date
    public var type: String
    public var message: String

    public init(id: Int64, instanceId: String, time: Date, type: String, message: String) {
        self.id = id
        self.instanceId = instanceId
        self.time = time
        self.type = type
        self.message = message
    }
}

public struct ComputeHost: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var cpus: Int
    public var memoryMib: Int
    public var hypervisors: [String]
    public var hypervisorVersion: String
    public var machineTypes: [String]
    public var accelerators: [String]
    public var chosenAccelerator: String
    /// Accelerator → measured milliseconds from VMM start to exit of a tiny calibration guest.
    public var calibrationMs: [String: Double]
    public var instances: Int
    public var updatedAt: Date
    /// UP while the host's agent renews its lease (the controller's own host: while it runs).
    public var status: HostStatus? = nil
    /// When a remote host's agent was last heard from.
    public var lastSeenAt: Date? = nil
    /// Takes no new placements (`swiftlet host cordon`).
    public var cordoned: Bool? = nil
    /// The device prefix of the host's networking (nil: it cannot carry networks).
    public var networkPrefix: String? = nil
    /// The host's address on the fabric between hosts, where its networks' VXLAN tunnels end.
    public var fabricAddress: String? = nil

    public init(
        id: String, name: String, cpus: Int, memoryMib: Int, hypervisors: [String],
        hypervisorVersion: String, machineTypes: [String], accelerators: [String],
        chosenAccelerator: String, calibrationMs: [String: Double], instances: Int, updatedAt: Date
    ) {
        self.id = id
        self.name = name
        self.cpus = cpus
        self.memoryMib = memoryMib
        self.hypervisors = hypervisors
        self.hypervisorVersion = hypervisorVersion
        self.machineTypes = machineTypes
        self.accelerators = accelerators
        self.chosenAccelerator = chosenAccelerator
        self.calibrationMs = calibrationMs
        self.instances = instances
        self.updatedAt = updatedAt
    }
}

public enum HostStatus: String, Codable, Sendable {
    case up = "UP"
    case down = "DOWN"
}

/// A join token, as `swiftlet host join-token create` prints it (the token only once).
public struct JoinTokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var token: String?
    public var expiresAt: Date

    public init(id: String, token: String?, expiresAt: Date) {
        self.id = id
        self.token = token
        self.expiresAt = expiresAt
    }
}

public struct CreateJoinTokenRequest: Codable, Sendable {
    public var ttlSeconds: Int?
    public init(ttlSeconds: Int? = nil) { self.ttlSeconds = ttlSeconds }
}

/// JSON coding shared by server and client: ISO-8601 dates, stable key order.
public enum SwiftletJSON {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
