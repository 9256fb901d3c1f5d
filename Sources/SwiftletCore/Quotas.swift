import Foundation

/// What a project may hold at most (Nova's quotas); nil for a resource: no limit.
public struct ProjectQuota: Codable, Sendable, Equatable {
    public var instances: Int?
    public var vcpus: Int?
    public var memoryMib: Int?
    public var imageBytes: Int64?
    public var networks: Int?

    public init(
        instances: Int? = nil, vcpus: Int? = nil, memoryMib: Int? = nil, imageBytes: Int64? = nil, networks: Int? = nil
    ) {
        self.instances = instances
        self.vcpus = vcpus
        self.memoryMib = memoryMib
        self.imageBytes = imageBytes
        self.networks = networks
    }

    public static let exceededCode = "quota.exceeded"

    /// Refuses a limit below zero (a limit below what is in use is accepted: it blocks new use only).
    public func validate() throws(SwiftletError) {
        let limits: [(String, Int64?)] = [
            ("instances", instances.map(Int64.init)), ("vcpus", vcpus.map(Int64.init)),
            ("memoryMib", memoryMib.map(Int64.init)), ("imageBytes", imageBytes),
            ("networks", networks.map(Int64.init)),
        ]
        for case let (name, limit?) in limits where limit < 0 {
            throw .badRequest("quota.invalid", "quota \(name) must be 0 or more, got \(limit)")
        }
    }

    /// Throws 403 `quota.exceeded`, saying which limit and by how much, when `usage` (with what is
    /// asked already counted) is over a limit.
    public func verify(_ usage: ProjectUsage, projectId: String) throws(SwiftletError) {
        let checks: [(String, Int64, Int64?)] = [
            ("instances", Int64(usage.instances), instances.map(Int64.init)),
            ("vCPUs", Int64(usage.vcpus), vcpus.map(Int64.init)),
            ("MiB of memory", Int64(usage.memoryMib), memoryMib.map(Int64.init)),
            ("bytes of images", usage.imageBytes, imageBytes),
            ("networks", Int64(usage.networks), networks.map(Int64.init)),
        ]
        for case let (what, used, limit?) in checks where used > limit {
            throw SwiftletError(
                .forbidden, Self.exceededCode,
                "project '\(projectId)' would hold \(used) \(what), \(used - limit) over its quota of \(limit)")
        }
    }
}

/// What a project holds now.
public struct ProjectUsage: Codable, Sendable, Equatable {
    public var instances: Int
    public var vcpus: Int
    public var memoryMib: Int
    public var imageBytes: Int64
    public var networks: Int

    public init(instances: Int = 0, vcpus: Int = 0, memoryMib: Int = 0, imageBytes: Int64 = 0, networks: Int = 0) {
        self.instances = instances
        self.vcpus = vcpus
        self.memoryMib = memoryMib
        self.imageBytes = imageBytes
        self.networks = networks
    }
}
