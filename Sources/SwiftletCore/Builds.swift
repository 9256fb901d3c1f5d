import Foundation

public enum BuildState: String, Codable, Sendable, CaseIterable {
    case running
    case succeeded
    case failed

    public var isFinished: Bool { self != .running }
}

/// Milliseconds spent in each stage of a build, as the workflow timeline shows them.
public struct BuildStages: Codable, Sendable, Equatable {
    /// Receiving the source bundle (or reading the host path).
    public var upload: Double?
    /// Unpacking and hashing the sources (the cache key).
    public var unpack: Double?
    /// The recipe's compiler run (absent on a cache hit).
    public var compile: Double?
    /// Checking the kernel's format and storing it as an image.
    public var package: Double?

    public init() {}
}

/// One run of the build service: sources in, an image out.
public struct Build: Codable, Sendable, Equatable {
    public var id: String
    public var projectId: String
    /// Base name of the image; the image is `<name>-<first 8 of inputsDigest>`.
    public var name: String
    public var recipe: String
    public var flags: [String]
    public var state: BuildState
    public var reason: String?
    /// sha256 over recipe, toolchain version, flags and every source file: the cache key.
    public var inputsDigest: String?
    public var cacheHit: Bool
    public var imageId: String?
    public var stages: BuildStages
    public var createdAt: Date
    public var finishedAt: Date?

    public init(
        id: String, projectId: String, name: String, recipe: String, flags: [String], state: BuildState = .running,
        cacheHit: Bool = false, stages: BuildStages = BuildStages(), createdAt: Date
    ) {
        self.id = id
        self.projectId = projectId
        self.name = name
        self.recipe = recipe
        self.flags = flags
        self.state = state
        self.cacheHit = cacheHit
        self.stages = stages
        self.createdAt = createdAt
    }
}

public struct BuildList: Codable, Sendable {
    public var builds: [Build]
    public init(_ builds: [Build]) { self.builds = builds }
}
