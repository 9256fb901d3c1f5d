import Foundation
import SwiftletCore

// The messages between the controller and a host agent (docs/agent-protocol.md). They are plain
// Codable values so that every transport carries the same thing: the in-process one passes them
// as they are, a network one encodes them as JSON.

/// Whether an assigned instance should have a VM on its host.
public enum DesiredVMState: String, Codable, Sendable {
    /// A VM should exist (the instance is BUILDING, RUNNING or PAUSED).
    case running
    /// No VM should exist; one that runs is stopped gracefully (STOPPED, ERROR).
    case stopped
}

/// The bytes an instance boots from, resolved by the controller: the image, its initrd, and for a
/// project that requires signed images, what the host re-verifies before it boots.
public struct BootImage: Codable, Sendable, Equatable {
    public var image: Image
    public var initrd: Image?
    public var signature: SignatureCheck?

    public init(image: Image, initrd: Image? = nil, signature: SignatureCheck? = nil) {
        self.image = image
        self.initrd = initrd
        self.signature = signature
    }
}

/// The project's trusted keys, for a host to re-verify an image's signature over the bytes it has.
public struct SignatureCheck: Codable, Sendable, Equatable {
    public var projectName: String
    public var keys: [SigningKey]

    public init(projectName: String, keys: [SigningKey]) {
        self.projectName = projectName
        self.keys = keys
    }
}

/// Desired state of one instance on one host. Every change the controller makes to it carries a
/// higher `generation`; the agent's observations carry the generation they were made under, and
/// the controller refuses those of an older one.
public struct Assignment: Codable, Sendable, Equatable {
    /// The instance as the controller recorded it: shape, config words, ports, timeline so far.
    public var instance: Instance
    public var generation: UInt64
    public var desired: DesiredVMState
    public var boot: BootImage
    /// The VM handle the agent last reported for this instance, so that an agent that restarted
    /// re-attaches to the VM it had (nil until READY was recorded).
    public var handle: Data?
    /// How long a graceful stop may take before the VMM is killed.
    public var stopTimeoutMs: Int
    /// The saved state the VM starts from instead of a boot (its bytes fetched by digest).
    public var snapshot: Snapshot? = nil

    public init(
        instance: Instance, generation: UInt64, desired: DesiredVMState, boot: BootImage, handle: Data? = nil,
        stopTimeoutMs: Int = 5000
    ) {
        self.instance = instance
        self.generation = generation
        self.desired = desired
        self.boot = boot
        self.handle = handle
        self.stopTimeoutMs = stopTimeoutMs
    }

    public var instanceId: String { instance.id }
}

/// A one-shot operation on an assigned instance's running VM.
public enum VMCommand: String, Codable, Sendable {
    case pause, resume, reboot
}

/// A warm pool the agent keeps filled, with the image its VMs boot.
public struct PoolAssignment: Codable, Sendable, Equatable {
    public var pool: WarmPool
    public var boot: BootImage

    public init(pool: WarmPool, boot: BootImage) {
        self.pool = pool
        self.boot = boot
    }
}

/// Everything that should be on a host, sent when an agent (re)connects: the agent re-attaches
/// to the VMs it still has, removes what is not here, and then reconciles each assignment.
public struct HostSync: Codable, Sendable, Equatable {
    public var revision: UInt64
    public var assignments: [Assignment]
    public var pools: [PoolAssignment]
    /// Every image digest some image record names: cached bytes of any other digest are dropped.
    public var imageDigests: Set<String>
    /// The networks this host carries and the filtering of its ports (nil: the host has no networking).
    public var networks: HostNetworkState?

    public init(
        revision: UInt64, assignments: [Assignment], pools: [PoolAssignment], imageDigests: Set<String>,
        networks: HostNetworkState? = nil
    ) {
        self.revision = revision
        self.assignments = assignments
        self.pools = pools
        self.imageDigests = imageDigests
        self.networks = networks
    }
}

/// A change to a host's desired state, in the order the controller made them.
public enum DesiredChange: Codable, Sendable, Equatable {
    case assign(Assignment)
    /// The instance was deleted: its VM, handle, runtime directory and kept console go.
    case unassign(instanceId: String, generation: UInt64)
    case applyPool(PoolAssignment)
    case removePool(id: String)
    /// No image names these bytes any more.
    case evictImage(sha256: String)
    /// The whole network state of the host, sent again whenever a part of it changes.
    case networks(HostNetworkState)
}

/// One entry of a host's watch stream; `revision` grows by one per change to that host.
public struct WatchEvent: Codable, Sendable, Equatable {
    public var revision: UInt64
    public var change: DesiredChange

    public init(revision: UInt64, change: DesiredChange) {
        self.revision = revision
        self.change = change
    }
}

/// An event line for an instance's event log, as the agent saw it.
public struct EventNote: Codable, Sendable, Equatable {
    public var type: String
    public var message: String

    public init(type: String, message: String) {
        self.type = type
        self.message = message
    }
}

/// What an agent saw happen to an assigned instance, under the generation it was acting on.
public struct Observation: Codable, Sendable, Equatable {
    public var hostId: String
    public var instanceId: String
    public var generation: UInt64
    public var report: Report

    public enum Report: Codable, Sendable, Equatable {
        /// The guest printed READY: its phase times, the VM handle and what the boot noted, in one report.
        case ready(timeline: Timeline, handle: Data, events: [EventNote])
        /// The VM ended on its own (or did not come up in time). `timeline` carries the phases a
        /// boot reached when it ended before READY.
        case exited(clean: Bool, reason: String, timeline: Timeline?)
        /// The boot failed before a guest ran.
        case failed(reason: String, timeline: Timeline?)
        /// The VM was stopped because the assignment asked for it.
        case stopped(reason: String)
        case event(EventNote)
    }

    public init(hostId: String, instanceId: String, generation: UInt64, report: Report) {
        self.hostId = hostId
        self.instanceId = instanceId
        self.generation = generation
        self.report = report
    }
}

/// A slice of an instance's console log, from a byte offset.
public struct ConsoleChunk: Codable, Sendable, Equatable {
    public var data: Data
    /// Whether the instance has a VM (booting or running) on the host now: a follower stops
    /// after the VM went away and the last bytes were read.
    public var vmRunning: Bool

    public init(data: Data, vmRunning: Bool) {
        self.data = data
        self.vmRunning = vmRunning
    }
}

/// The controller's answer to a batch of observations. It took the first `taken`, in order: each
/// recorded, or refused for good (listed in `refused`). It could not record the rest now (its
/// store is unavailable): the agent sends them again, in order.
public struct ObservationReceipt: Codable, Sendable, Equatable {
    public struct Refusal: Codable, Sendable, Equatable {
        /// The observation's place in the batch.
        public var index: Int
        public var code: String
        public var message: String

        public init(index: Int, code: String, message: String) {
            self.index = index
            self.code = code
            self.message = message
        }
    }

    public var taken: Int
    public var refused: [Refusal]

    public init(taken: Int, refused: [Refusal] = []) {
        self.taken = taken
        self.refused = refused
    }
}

/// Where an agent sends what it observes: the controller's recorder, directly (in process) or
/// through a network transport.
public protocol ObservationSink: Sendable {
    func observe(_ observation: Observation) async
}
