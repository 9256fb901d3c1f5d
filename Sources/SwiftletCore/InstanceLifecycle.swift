import Foundation

/// The instance state machine (pure). BUILDING → RUNNING ⇄ PAUSED, → STOPPED, → ERROR, → DELETED.
public enum InstanceState: String, Codable, Sendable, CaseIterable {
    case building = "BUILDING"
    case running = "RUNNING"
    case paused = "PAUSED"
    case stopped = "STOPPED"
    case error = "ERROR"
    case deleted = "DELETED"
    /// Shown, never stored: the instance should have a VM, but its host is DOWN, so whether it
    /// runs is not known (its `observed` state is what the host last reported).
    case unknown = "UNKNOWN"
}

/// What the user last asked of an instance, apart from what happened since.
public enum DesiredState: String, Codable, Sendable {
    case running, paused, stopped
}

/// What an instance's host last reported about its VM.
public struct ObservedState: Codable, Sendable, Equatable {
    public enum Phase: String, Codable, Sendable {
        /// READY: the guest runs.
        case running
        case paused
        /// Stopped because it was asked to.
        case stopped
        /// Ended on its own, or never came up (`failed`).
        case exited, failed
    }

    public var phase: Phase
    public var hostId: String
    public var at: Date

    public init(phase: Phase, hostId: String, at: Date) {
        self.phase = phase
        self.hostId = hostId
        self.at = at
    }
}

/// Work in progress on an instance that spans hosts: it runs (or ran) on `from` and is being made
/// to run on `to`. Cleared when the new host reports READY or the work fails.
public struct InstanceTask: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// Re-created elsewhere because its host went DOWN (restart policy `always`).
        case evacuating
        /// Moved live by a migration (`migrationId`): it runs on `from` until `to` takes over.
        case migrating
    }

    public var kind: Kind
    public var from: String
    public var to: String
    public var startedAt: Date
    /// The migration resource of a `migrating` task.
    public var migrationId: String?

    public init(kind: Kind, from: String, to: String, startedAt: Date, migrationId: String? = nil) {
        self.kind = kind
        self.from = from
        self.to = to
        self.startedAt = startedAt
        self.migrationId = migrationId
    }
}

/// What a user asks for through the API.
public enum InstanceCommand: String, Sendable, CaseIterable {
    case start, stop, reboot, pause, resume, delete

    /// What the agent does once the command is accepted.
    public var action: InstanceAction {
        switch self {
        case .start: .boot
        case .stop: .shutdown
        case .reboot: .reset
        case .pause: .pause
        case .resume: .resume
        case .delete: .destroy
        }
    }
}

/// What the host observed about the VM.
public enum InstanceObservation: Sendable, Equatable {
    case ready
    /// The VMM exited. `clean`: with a status the image calls success (by default the kit's
    /// power-off with 0; a run-to-completion unikernel's own, e.g. Solo5's 83).
    case exited(clean: Bool, reason: String)
    case failed(reason: String)
}

/// What the agent must do to make the host match.
public enum InstanceAction: Sendable, Equatable {
    case boot
    case shutdown
    case reset
    case pause
    case resume
    case destroy
    case none
}

public enum InstanceLifecycle {
    /// Applies a user command: the next state, or 409. The agent then carries out `command.action`.
    public static func apply(_ command: InstanceCommand, to state: InstanceState) throws(SwiftletError) -> InstanceState
    {
        switch (command, state) {
        case (.delete, .deleted): throw illegal(command, state)
        case (.delete, _): return .deleted
        case (.start, .stopped), (.start, .error): return .building
        case (.stop, .running), (.stop, .paused), (.stop, .building): return .stopped
        case (.reboot, .running): return .running
        case (.pause, .running): return .paused
        case (.resume, .paused): return .running
        default: throw illegal(command, state)
        }
    }

    /// Applies what the host saw. Returns the next state and whether to boot again (restart policy).
    public static func observe(
        _ observation: InstanceObservation, in state: InstanceState, policy: RestartPolicy
    ) -> (InstanceState, restart: Bool) {
        switch (observation, state) {
        case (.ready, .building): return (.running, false)
        case (.ready, _): return (state, false)
        case (.exited, .stopped), (.exited, .deleted), (.failed, .deleted), (.failed, .stopped):
            return (state, false)
        case (.exited(let clean, _), _):
            let restart = policy == .always || (policy == .onFailure && !clean)
            return restart ? (.building, true) : (clean ? .stopped : .error, false)
        case (.failed, _):
            return policy == .always ? (.building, true) : (.error, false)
        }
    }

    private static func illegal(_ command: InstanceCommand, _ state: InstanceState) -> SwiftletError {
        SwiftletError(
            .conflict, "instance.illegal_transition",
            "cannot \(command.rawValue) an instance in state \(state.rawValue)")
    }
}
