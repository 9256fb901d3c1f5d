// Request and list bodies of the HTTP API (/v1). docs/openapi.yaml is the contract.

public struct ErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
    }
    public var error: Detail

    public init(code: String, message: String) { error = Detail(code: code, message: message) }
}

public struct CreateProjectRequest: Codable, Sendable {
    public var name: String
    public var requireSignedImages: Bool?
    public init(name: String, requireSignedImages: Bool? = nil) {
        self.name = name
        self.requireSignedImages = requireSignedImages
    }
}

public struct CreateInstanceRequest: Codable, Sendable {
    /// Base name; with `count` > 1 the instances are named `<name>-1` … `<name>-N`.
    public var name: String?
    /// Image id or name.
    public var image: String
    public var flavor: String?
    public var memoryMib: Int?
    public var vcpus: Int?
    /// `key=value` words for the kernel command line.
    public var args: [String]?
    public var count: Int?
    public var restartPolicy: RestartPolicy?
    /// Docker-style `HOST:GUEST[/tcp|/udp]`.
    public var publish: [String]?
    /// Answer only when every instance is RUNNING (READY) or ERROR.
    public var wait: Bool?
    /// NICs on networks, each with an optional fixed address (docs/networking.md).
    public var networks: [NetworkAttachment]? = nil
    /// Security group ids or names; without any, inbound traffic is not filtered.
    public var securityGroups: [String]? = nil
    /// The host to place on, by id or name (admin only); it must be UP and not cordoned.
    public var host: String? = nil
    /// Server group id or name: the instances join it and are placed by its policy.
    public var serverGroup: String? = nil
    /// Snapshot id or name: the instance runs on from the saved state instead of booting; the
    /// image and shape are the snapshot's (docs/snapshots.md).
    public var fromSnapshot: String? = nil

    public init(
        name: String? = nil, image: String, flavor: String? = nil, memoryMib: Int? = nil, vcpus: Int? = nil,
        args: [String]? = nil, count: Int? = nil, restartPolicy: RestartPolicy? = nil, publish: [String]? = nil,
        wait: Bool? = nil
    ) {
        self.name = name
        self.image = image
        self.flavor = flavor
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.args = args
        self.count = count
        self.restartPolicy = restartPolicy
        self.publish = publish
        self.wait = wait
    }
}

public struct ProjectList: Codable, Sendable { public var projects: [Project] }
public struct ImageList: Codable, Sendable { public var images: [Image] }
public struct FlavorList: Codable, Sendable { public var flavors: [Flavor] }
public struct InstanceList: Codable, Sendable {
    public var instances: [Instance]
    /// Set on a page that has a next one: pass it as `marker` to get it.
    public var next: String?
    public init(instances: [Instance], next: String? = nil) {
        self.instances = instances
        self.next = next
    }
}
public struct EventList: Codable, Sendable { public var events: [InstanceEvent] }
public struct HostList: Codable, Sendable { public var hosts: [ComputeHost] }

extension ProjectList { public init(_ projects: [Project]) { self.projects = projects } }
extension ImageList { public init(_ images: [Image]) { self.images = images } }
extension FlavorList { public init(_ flavors: [Flavor]) { self.flavors = flavors } }
extension EventList { public init(_ events: [InstanceEvent]) { self.events = events } }
extension HostList { public init(_ hosts: [ComputeHost]) { self.hosts = hosts } }
