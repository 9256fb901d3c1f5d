import Foundation
import SwiftletCore

// The network transport's messages (docs/agent-protocol.md, "Over the network"): an agent dials
// the controller's agent port over mutual TLS; everything below is JSON.

/// What a host offers: the scheduler places on it from these figures.
public struct HostCapabilities: Codable, Sendable, Equatable {
    public var cpus: Int
    public var memoryMib: Int
    public var hypervisors: [String]
    public var hypervisorVersion: String
    public var machineTypes: [String]
    public var accelerators: [String]
    public var chosenAccelerator: String
    /// Accelerator → measured milliseconds from VMM start to exit of a tiny calibration guest.
    public var calibrationMs: [String: Double]
    /// The device prefix of the host's networking (nil: it cannot make bridges, TAPs and VXLAN).
    public var networkPrefix: String?
    /// The host's address on the fabric between hosts, where VXLAN tunnels end.
    public var fabricAddress: String?

    public init(
        cpus: Int, memoryMib: Int, hypervisors: [String], hypervisorVersion: String, machineTypes: [String],
        accelerators: [String], chosenAccelerator: String, calibrationMs: [String: Double],
        networkPrefix: String? = nil, fabricAddress: String? = nil
    ) {
        self.networkPrefix = networkPrefix
        self.fabricAddress = fabricAddress
        self.cpus = cpus
        self.memoryMib = memoryMib
        self.hypervisors = hypervisors
        self.hypervisorVersion = hypervisorVersion
        self.machineTypes = machineTypes
        self.accelerators = accelerators
        self.chosenAccelerator = chosenAccelerator
        self.calibrationMs = calibrationMs
    }
}

/// `POST /agent/v1/join`, the only call made without a client certificate.
public struct JoinRequest: Codable, Sendable {
    /// The join token's id and secret (`<id>.<secret>`; the pin is not sent).
    public var token: String
    public var hostName: String
    /// PEM certificate signing request for the key the agent keeps.
    public var certificateRequest: String
    public var capabilities: HostCapabilities

    public init(token: String, hostName: String, certificateRequest: String, capabilities: HostCapabilities) {
        self.token = token
        self.hostName = hostName
        self.certificateRequest = certificateRequest
        self.capabilities = capabilities
    }
}

public struct JoinResponse: Codable, Sendable {
    public var hostId: String
    /// PEM client certificate naming `hostId`, signed by the cluster CA.
    public var certificate: String
    public var caCertificate: String

    public init(hostId: String, certificate: String, caCertificate: String) {
        self.hostId = hostId
        self.certificate = certificate
        self.caCertificate = caCertificate
    }
}

/// `POST /agent/v1/watch`: the agent says where it is, the answer is a stream of `AgentDown`
/// lines (newline-delimited JSON) for as long as the connection lasts.
public struct WatchRequest: Codable, Sendable {
    /// The last revision the agent applied, to resume from; nil for a full `HostSync`.
    public var revision: UInt64?
    /// The controller's epoch that revision belongs to (revisions restart with the controller).
    public var epoch: String?
    /// What runs on the host now: instance id → the generation its VM serves.
    public var running: [String: UInt64]
    public var capabilities: HostCapabilities

    public init(revision: UInt64?, epoch: String?, running: [String: UInt64], capabilities: HostCapabilities) {
        self.revision = revision
        self.epoch = epoch
        self.running = running
        self.capabilities = capabilities
    }
}

/// One line of the watch stream.
public enum AgentDown: Codable, Sendable, Equatable {
    /// Everything that should be on the host; `epoch` names the controller's revision sequence.
    case sync(HostSync, epoch: String)
    case event(WatchEvent)
    /// A call the controller makes on the agent; answered with `POST /agent/v1/replies`.
    case request(AgentRequest)
    /// Keeps an idle stream alive and tells the agent the link works.
    case ping
}

public struct AgentRequest: Codable, Sendable, Equatable {
    public var id: String
    public var call: Call

    public enum Call: Codable, Sendable, Equatable {
        case command(VMCommand, instanceId: String)
        case sendConsole(instanceId: String, line: String)
        case readConsole(instanceId: String, offset: UInt64)
        case poolReadyCounts
        /// Target: an incoming VMM for the assignment (with the instance's ports), listening, over
        /// TLS with `tls` (the target's end).
        case prepareIncoming(Assignment, tls: MigrationCredentials?)
        /// Source: streams the running VM's state to the endpoint; its guest is left paused.
        case migrateOut(instanceId: String, to: MoveEndpoint, settings: MoveSettings)
        /// Target: waits until the guest runs, and keeps the VM as the instance's under `generation`.
        case finishIncoming(instanceId: String, moveId: String, generation: UInt64)
        /// Target: ends a prepared VMM that will not take over.
        case abortIncoming(instanceId: String, moveId: String)
        /// Source: lets the guest a failed move left paused run on.
        case resumeAfterMove(instanceId: String)
        /// Source: calls off a transfer in progress (the guest runs on); false if none is.
        case cancelMigrateOut(instanceId: String)
        /// Target of a stateful move: a fresh VM of the assignment, booted silent (it answers
        /// nothing on the network until it takes over), with the instance's ports.
        case prepareStandby(Assignment)
        /// Source of a stateful move: quiesces the guest and takes its state; the guest is left
        /// quiesced.
        case exportState(instanceId: String)
        /// Source of a stateful move: pauses the quiesced guest before the target takes over.
        case pauseForMove(instanceId: String)
        /// Target of a stateful move: hands the state to the standby guest.
        case importState(instanceId: String, moveId: String, state: Data)
        /// Saves the running VM's state (the guest runs on) and sends the bytes to the controller.
        case saveSnapshot(instanceId: String)
    }

    public init(id: String, call: Call) {
        self.id = id
        self.call = call
    }
}

extension AgentRequest.Call {
    /// How long the controller waits for the answer.
    public var timeout: Duration {
        switch self {
        case .migrateOut(_, _, let settings): .milliseconds(settings.timeoutMs) + .seconds(10)
        case .prepareIncoming, .prepareStandby, .finishIncoming, .saveSnapshot: .seconds(60)
        case .exportState, .importState: .seconds(30)
        default: .seconds(10)
        }
    }

    /// A step of a live migration.
    public var isMoveStep: Bool {
        switch self {
        case .prepareIncoming, .migrateOut, .finishIncoming, .abortIncoming, .resumeAfterMove, .cancelMigrateOut,
            .prepareStandby, .exportState, .importState, .pauseForMove:
            true
        case .command, .sendConsole, .readConsole, .poolReadyCounts, .saveSnapshot: false
        }
    }
}

public struct AgentReply: Codable, Sendable, Equatable {
    public var id: String
    public var result: Result

    public enum Result: Codable, Sendable, Equatable {
        case done
        case console(ConsoleChunk)
        case pools([String: Int])
        case incoming(MoveEndpoint)
        case movedOut(MoveReport)
        case exported(StateExport)
        /// The VM handle of the instance's VM on the target.
        case tookOver(handle: Data)
        /// The state saved and its bytes in the controller's blob store.
        case snapshotSaved(SavedSnapshot)
        case failed(code: String, message: String, status: Int)
    }

    public init(id: String, result: Result) {
        self.id = id
        self.result = result
    }
}

/// `POST /agent/v1/lease`: the host is alive. The answer says how long the lease lasts.
public struct LeaseGrant: Codable, Sendable, Equatable {
    public var durationMs: Int
    public var renewEveryMs: Int

    public init(durationMs: Int, renewEveryMs: Int) {
        self.durationMs = durationMs
        self.renewEveryMs = renewEveryMs
    }
}

/// A join token as an operator pastes it: `<id>.<secret>.<sha256 of the CA certificate>`.
public struct JoinToken: Sendable, Equatable {
    public var id: String
    public var secret: String
    public var caFingerprint: String

    public init(id: String, secret: String, caFingerprint: String) {
        self.id = id
        self.secret = secret
        self.caFingerprint = caFingerprint
    }

    public var text: String { "\(id).\(secret).\(caFingerprint)" }
    /// What the agent sends: the pin stays with the agent.
    public var credential: String { "\(id).\(secret)" }

    public static func parse(_ text: String) throws(SwiftletError) -> JoinToken {
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").map(String.init)
        let hex = { (part: String, count: Int) in
            part.count == count && part.allSatisfy { $0.isHexDigit && !$0.isUppercase }
        }
        guard parts.count == 3, hex(parts[0], 12), hex(parts[1], 32), hex(parts[2], 64) else {
            throw .badRequest(
                "join.bad_token", "a join token is <12 hex>.<32 hex>.<64 hex> (from `swiftlet host join-token create`)")
        }
        return JoinToken(id: parts[0], secret: parts[1], caFingerprint: parts[2])
    }
}
