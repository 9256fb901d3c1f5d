import Foundation
import SwiftletAgent
import SwiftletAgentProtocol
import SwiftletCore
import Synchronization

/// The controller's end of its connection to one host agent: desired-state changes and commands
/// go down, console bytes come back. Observations come up on their own, to the `ReportRecorder`.
public protocol AgentLink: Sendable {
    var hostId: String { get }
    /// Delivers a desired-state change. With `pendingCommit`, the change may reach the agent before
    /// the record it is about commits (a transport that cannot carry that waits for the commit).
    func apply(_ change: DesiredChange, pendingCommit: PendingCommit?) async
    func command(_ command: VMCommand, instanceId: String) async throws(SwiftletError)
    func sendConsole(instanceId: String, line: String) async throws(SwiftletError)
    func readConsole(instanceId: String, from offset: UInt64) async throws(SwiftletError) -> ConsoleChunk
    /// Idle pre-booted VMs per pool id.
    func poolReadyCounts() async -> [String: Int]

    // The steps of a live migration (docs/agent-protocol.md, "Moves").
    func prepareIncoming(_ assignment: Assignment, tls: MigrationCredentials?) async throws(SwiftletError)
        -> MoveEndpoint
    func migrateOut(instanceId: String, to endpoint: MoveEndpoint, settings: MoveSettings)
        async throws(SwiftletError) -> MoveReport
    func finishIncoming(instanceId: String, moveId: String, generation: UInt64) async throws(SwiftletError) -> Data
    func abortIncoming(instanceId: String, moveId: String) async throws(SwiftletError)
    func resumeAfterMove(instanceId: String) async throws(SwiftletError)
    func cancelMigrateOut(instanceId: String) async throws(SwiftletError)
    // The steps of a stateful migration; `finishIncoming`, `abortIncoming` and `resumeAfterMove`
    // end it as they end a live one.
    func prepareStandby(_ assignment: Assignment) async throws(SwiftletError)
    func exportState(instanceId: String) async throws(SwiftletError) -> StateExport
    func pauseForMove(instanceId: String) async throws(SwiftletError)
    func importState(instanceId: String, moveId: String, state: Data) async throws(SwiftletError)

    /// Saves the instance's VM state (the guest runs on); its bytes are at the returned path on
    /// this machine (the in-process agent) or already in the blob store (a remote one).
    func saveSnapshot(instanceId: String) async throws(SwiftletError) -> SavedSnapshot
}

/// The in-process transport of `swiftlet server`: the controller and its own host's agent in one
/// process, messages passed as values (nothing encoded), and a boot allowed to start while its
/// record commits.
public struct LocalAgentLink: AgentLink {
    public let agent: HostAgent
    public var hostId: String { agent.hostId }

    public init(agent: HostAgent) { self.agent = agent }

    public func apply(_ change: DesiredChange, pendingCommit: PendingCommit?) async {
        await agent.apply(change, pendingCommit: pendingCommit)
    }

    public func command(_ command: VMCommand, instanceId: String) async throws(SwiftletError) {
        try await agent.command(command, instanceId: instanceId)
    }

    public func sendConsole(instanceId: String, line: String) async throws(SwiftletError) {
        try await agent.sendConsole(instanceId: instanceId, line: line)
    }

    public func readConsole(instanceId: String, from offset: UInt64) async -> ConsoleChunk {
        await agent.readConsole(instanceId: instanceId, from: offset)
    }

    public func poolReadyCounts() async -> [String: Int] { await agent.poolReadyCounts() }

    public func prepareIncoming(_ assignment: Assignment, tls: MigrationCredentials?) async throws(SwiftletError)
        -> MoveEndpoint
    {
        try await agent.prepareIncoming(assignment, tls: tls)
    }

    public func migrateOut(instanceId: String, to endpoint: MoveEndpoint, settings: MoveSettings)
        async throws(SwiftletError) -> MoveReport
    {
        try await agent.migrateOut(instanceId: instanceId, to: endpoint, settings: settings)
    }

    public func finishIncoming(instanceId: String, moveId: String, generation: UInt64) async throws(SwiftletError)
        -> Data
    {
        try await agent.finishIncoming(instanceId: instanceId, moveId: moveId, generation: generation)
    }

    public func abortIncoming(instanceId: String, moveId: String) async throws(SwiftletError) {
        await agent.abortIncoming(instanceId: instanceId, moveId: moveId)
    }

    public func resumeAfterMove(instanceId: String) async throws(SwiftletError) {
        try await agent.resumeAfterMove(instanceId: instanceId)
    }

    public func cancelMigrateOut(instanceId: String) async throws(SwiftletError) {
        await agent.cancelMigrateOut(instanceId: instanceId)
    }

    public func prepareStandby(_ assignment: Assignment) async throws(SwiftletError) {
        try await agent.prepareStandby(assignment)
    }

    public func exportState(instanceId: String) async throws(SwiftletError) -> StateExport {
        try await agent.exportState(instanceId: instanceId)
    }

    public func pauseForMove(instanceId: String) async throws(SwiftletError) {
        try await agent.pauseForMove(instanceId: instanceId)
    }

    public func importState(instanceId: String, moveId: String, state: Data) async throws(SwiftletError) {
        try await agent.importState(instanceId: instanceId, moveId: moveId, state: state)
    }

    public func saveSnapshot(instanceId: String) async throws(SwiftletError) -> SavedSnapshot {
        try await agent.saveSnapshot(instanceId: instanceId)
    }
}

/// The agents' links, by host id: where the controller sends each host's desired state.
public final class AgentRegistry: Sendable {
    private let links = Mutex<[String: any AgentLink]>([:])
    private let factory = Mutex<(@Sendable (String) -> any AgentLink)?>(nil)

    public init() {}

    /// Makes the link to a host not registered yet (with several hosts: its feed in the store);
    /// without it, such a host is unreachable.
    public var makeLink: (@Sendable (String) -> any AgentLink)? {
        get { factory.withLock { $0 } }
        set { factory.withLock { $0 = newValue } }
    }

    public func register(_ link: any AgentLink) {
        links.withLock { $0[link.hostId] = link }
    }

    /// The link to `hostId`, made on first use when the registry can make one, else 409
    /// `host.unreachable`.
    public func link(for hostId: String) throws(SwiftletError) -> any AgentLink {
        let make = makeLink
        let link = links.withLock { links -> (any AgentLink)? in
            if let link = links[hostId] { return link }
            guard let make else { return nil }
            let link = make(hostId)
            links[hostId] = link
            return link
        }
        guard let link else {
            throw SwiftletError(.conflict, "host.unreachable", "the agent of host '\(hostId)' is not connected")
        }
        return link
    }

    /// The link registered for `hostId`, if any (none is made).
    public func registered(_ hostId: String) -> (any AgentLink)? {
        links.withLock { $0[hostId] }
    }

    /// Every registered link.
    public var all: [any AgentLink] { links.withLock { Array($0.values) } }
}

extension Controller {
    /// Connects this process's own host agent (the in-process transport of `swiftlet server`):
    /// instances recorded before hosts were recorded on them are this host's, and the agent gets
    /// its host's whole desired state.
    public func connectLocalAgent(_ link: LocalAgentLink) async throws(SwiftletError) {
        let hostId = link.hostId
        for instance in try await store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
        where instance.hostId == nil {
            try await store.updateInstance(id: instance.id) { $0.hostId = hostId }
        }
        for instance in try await store.instances(projectId: nil, state: .deleted, name: nil, imageId: nil)
        where instance.hostId == hostId {
            // A delete cut short: its VM goes as an orphan in the sync.
            try await store.deleteInstance(id: instance.id)
        }
        setLocalHost(hostId)
        agents.register(link)
        await link.agent.sync(try instanceSync.hostSync(hostId: hostId), reports: instanceSync)
    }
}
