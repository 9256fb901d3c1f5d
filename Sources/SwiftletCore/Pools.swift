import Foundation

/// A warm pool: `size` unikernels of one image and shape, booted ahead of demand and waiting
/// for their instance config, so that a create is not a cold VMM start. Used automatically by
/// creates that match (image, memory, vCPUs) and have no bridged network ports.
public struct WarmPool: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    public var imageId: String
    public var memoryMib: Int
    public var vcpus: Int
    public var size: Int
    /// Pre-booted VMs waiting now (filled in by the agent when listed).
    public var ready: Int?
    public var createdAt: Date

    public init(
        id: String, projectId: String, imageId: String, memoryMib: Int, vcpus: Int, size: Int, ready: Int? = nil,
        createdAt: Date
    ) {
        self.id = id
        self.projectId = projectId
        self.imageId = imageId
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.size = size
        self.ready = ready
        self.createdAt = createdAt
    }

    public static let maxSize = 64
}

public struct CreatePoolRequest: Codable, Sendable {
    /// Image id or name.
    public var image: String
    public var flavor: String?
    public var memoryMib: Int?
    public var vcpus: Int?
    public var size: Int

    public init(image: String, flavor: String? = nil, memoryMib: Int? = nil, vcpus: Int? = nil, size: Int) {
        self.image = image
        self.flavor = flavor
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.size = size
    }
}

public struct PoolList: Codable, Sendable {
    public var pools: [WarmPool]
    public init(_ pools: [WarmPool]) { self.pools = pools }
}
