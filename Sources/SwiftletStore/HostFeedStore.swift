import Foundation
import SwiftletCore

/// One change in a host's feed: its revision and the encoded change.
public struct HostFeedEntry: Sendable, Equatable {
    public var revision: UInt64
    public var body: Data

    public init(revision: UInt64, body: Data) {
        self.revision = revision
        self.body = body
    }
}

/// A change to append to a host's feed (its revision is given at commit).
public struct HostChange: Sendable, Equatable {
    public var hostId: String
    public var body: Data

    public init(hostId: String, body: Data) {
        self.hostId = hostId
        self.body = body
    }
}

/// A read of a host's feed: the entries after a revision, and the bounds of what is kept.
public struct HostFeedPage: Sendable, Equatable {
    public var entries: [HostFeedEntry]
    /// The host's last revision (0 before its first change).
    public var latest: UInt64
    /// The oldest revision still kept (`latest + 1` when none is).
    public var oldest: UInt64

    public init(entries: [HostFeedEntry], latest: UInt64, oldest: UInt64) {
        self.entries = entries
        self.latest = latest
        self.oldest = oldest
    }

    /// Whether a reader that applied everything up to `revision` can go on from this feed
    /// (nothing it still needs was trimmed, and the revision is not from a future it never had).
    public func canResume(after revision: UInt64) -> Bool {
        revision <= latest && revision + 1 >= oldest
    }
}

/// What another writer (another controller) did that a controller may have to act on.
public enum HostFeedSignal: Sendable, Equatable {
    /// It appended to this host's feed.
    case appended(hostId: String)
    /// It asked a call of this host's agent.
    case called(hostId: String)
    /// The agent's answer to this call came in through it.
    case answered(callId: String)
    /// It recorded that this instance is no longer BUILDING (or deleted it).
    case settled(instanceId: String)
    /// Some may have been missed: every feed and call is to be looked at again.
    case missed
}

/// Each host's desired-state changes, numbered per host, kept in the store so that any
/// controller can hand them to the host's agent wherever it is connected
/// (docs/agent-protocol.md, "Watch"); and, in a store several controllers share, calls on an
/// agent made through a controller it is not connected to.
public protocol HostFeedStore: Sendable {
    /// Names this store's revision sequences: an agent that saw revisions of another store (a
    /// migrated or recreated one) starts again from a full sync.
    func feedIdentity() async throws(SwiftletError) -> String
    /// Appends the changes, in one transaction, and returns their revisions (a host's in the order
    /// given). A host's appends are serialised, so its revisions commit in order: a reader never
    /// sees a later one before an earlier one. Old entries are trimmed beyond `HostFeed.capacity`
    /// per host. `Store.createInstances` appends in the same way in the records' own transaction.
    func appendHostChanges(_ changes: [HostChange]) async throws(SwiftletError) -> [UInt64]
    /// Up to `limit` entries after `revision`, in order.
    func hostChanges(hostId: String, after revision: UInt64, limit: Int) async throws(SwiftletError)
        -> HostFeedPage
    /// Calls `observer` on what other writers do (never for this store's own writes). A store that
    /// has no other writer never calls it.
    func observeHostFeeds(_ observer: @escaping @Sendable (HostFeedSignal) -> Void)

    /// Whether calls on agents go through the store (it is shared by several controllers).
    var routesAgentCalls: Bool { get }
    /// Records `holder` as the controller holding the host's watch stream; with nil, clears it
    /// when `releasing` still holds it.
    func setWatchHolder(hostId: String, holder: String?, releasing: String?) async throws(SwiftletError)
    /// The controller holding the host's watch stream; nil when none does, or when the one
    /// recorded is gone (it died holding it: none of its connections to the database is left).
    func watchHolder(hostId: String) async throws(SwiftletError) -> String?
    /// Leaves a call for the controller holding the host's stream (calls older than a minute,
    /// whose callers are gone, are dropped).
    func sendAgentCall(id: String, hostId: String, body: Data) async throws(SwiftletError)
    /// The host's calls not taken yet, each taken once.
    func takeAgentCalls(hostId: String) async throws(SwiftletError) -> [(id: String, body: Data)]
    /// Records the agent's answer to a call taken (false when there is no such call any more).
    @discardableResult
    func answerAgentCall(id: String, body: Data) async throws(SwiftletError) -> Bool
    /// The answer, once there is one; the call is removed with it.
    func takeAgentCallAnswer(id: String) async throws(SwiftletError) -> Data?
    /// Removes a call its caller gave up on.
    func endAgentCall(id: String) async throws(SwiftletError)
}

extension HostFeedStore {
    /// Appends one change to `hostId`'s feed and returns its revision.
    public func appendHostChange(hostId: String, body: Data) async throws(SwiftletError) -> UInt64 {
        try await appendHostChanges([HostChange(hostId: hostId, body: body)])[0]
    }
}

public enum HostFeed {
    /// Entries kept per host for agents that resume.
    public static let capacity: UInt64 = 4096
    /// Appends between two trims of a host's feed.
    public static let trimEvery: UInt64 = 256
}
