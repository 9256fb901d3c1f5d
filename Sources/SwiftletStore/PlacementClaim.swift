import SwiftletCore

/// What a host offers to instances (after overcommit): the most its live instances may hold.
public struct HostCapacity: Sendable, Equatable {
    public var memoryMib: Int
    public var vcpus: Int

    public init(memoryMib: Int, vcpus: Int) {
        self.memoryMib = memoryMib
        self.vcpus = vcpus
    }
}

/// What an insert re-checks inside its write transaction, with the new instances counted: that
/// every host it places on still holds its live instances, and that the server group's policy
/// still holds. Placement reads usage before the insert; this closes the gap in which concurrent
/// creates could all take a host's last room.
public struct PlacementClaim: Sendable {
    /// The error code of a claim that no longer holds (a retry may place elsewhere).
    public static let lostCode = "scheduler.no_host"

    /// Host id → its capacity, for each host the instances are placed on.
    public var capacity: [String: HostCapacity]
    /// The group the instances join.
    public var group: ServerGroup?
    /// For a leader's write (an evacuation): the lease and term it acts under.
    public var leader: LeaderFence?
    /// The quota of the project the instances join, checked with them counted.
    public var quota: QuotaClaim?

    public init(
        capacity: [String: HostCapacity], group: ServerGroup? = nil, leader: LeaderFence? = nil,
        quota: QuotaClaim? = nil
    ) {
        self.capacity = capacity
        self.group = group
        self.leader = leader
        self.quota = quota
    }

    /// Public for the stores outside this module (PostgreSQL) that run the same check.
    public static func lost(_ message: String) -> SwiftletError { SwiftletError(.conflict, lostCode, message) }

    /// Throws the lost claim when `hostId`, with the new instances counted, holds more than its
    /// capacity (the engines sum its live instances inside the claiming transaction).
    public func verify(hostId: String, usedMemoryMib memory: Int, usedVcpus vcpus: Int) throws(SwiftletError) {
        guard let capacity = capacity[hostId], memory > capacity.memoryMib || vcpus > capacity.vcpus else { return }
        throw Self.lost(
            "host '\(hostId)' no longer has room: concurrent creates took it (\(memory) of "
                + "\(capacity.memoryMib) MiB, \(vcpus) of \(capacity.vcpus) vCPUs)")
    }

    /// Throws the lost claim when the hosts of the group's placed members break its policy.
    public func verifyGroup(memberHosts hosts: [String]) throws(SwiftletError) {
        guard let group else { return }
        let distinct = Set(hosts).count
        let broken = group.policy == .antiAffinity ? distinct < hosts.count : distinct > 1
        if broken {
            throw Self.lost(
                "server group '\(group.name)' is \(group.policy.rawValue): concurrent creates changed its members' hosts"
            )
        }
    }
}

/// A project's quota, checked inside the writing transaction with what it adds counted, so that
/// concurrent creates never take a project past it together.
public struct QuotaClaim: Sendable, Equatable {
    public var projectId: String
    public var quota: ProjectQuota

    public init(projectId: String, quota: ProjectQuota) {
        self.projectId = projectId
        self.quota = quota
    }
}

/// A leader's write commits only while its lease still stands with the term it acts under: the
/// store decides, at commit, not the leader's belief. A leader paused or cut off after it checked
/// its term writes nothing once another controller has taken the lease (the fencing token of
/// lease-based leader election).
public struct LeaderFence: Sendable, Equatable {
    public static let lostCode = "leader.lost"

    public var lease: String
    public var holder: String
    public var term: UInt64

    public init(lease: String, holder: String, term: UInt64) {
        self.lease = lease
        self.holder = holder
        self.term = term
    }

    /// Throws unless `held` (the lease's term while `holder` holds it unexpired, read inside the
    /// writing transaction) is this fence's term.
    public func verify(held: UInt64?) throws(SwiftletError) {
        guard held != term else { return }
        throw SwiftletError(
            .conflict, Self.lostCode,
            "leader '\(holder)' no longer holds lease '\(lease)' with term \(term): the write is refused")
    }
}
