import Foundation
import SwiftletCore
import SwiftletHypervisor

/// Wraps a hypervisor driver so that every VM gets its instance's TAPs before it starts and
/// loses them when it goes, whichever path ends it (delete, stop, crash, restart, recovery).
/// The agent names each VM's runtime directory after its instance id; that is how `destroy`
/// finds the instance.
public struct NetworkedHypervisorDriver: HypervisorDriver {
    public let base: any HypervisorDriver
    public let network: HostNetwork

    public init(base: any HypervisorDriver, network: HostNetwork) {
        self.base = base
        self.network = network
    }

    public func spawn(_ spec: VMSpec) async throws -> (VMHandle, BootTimestamps) {
        try await spawn(spec, holdingGuestUntil: {})
    }

    public func spawn(_ spec: VMSpec, holdingGuestUntil release: @Sendable () async throws -> Void) async throws
        -> (VMHandle, BootTimestamps)
    {
        try await plugged(spec) { spec in try await base.spawn(spec, holdingGuestUntil: release) }
    }

    /// A restored VM gets its instance's TAPs as a booted one does (same names, same MACs).
    public func restore(_ spec: VMSpec, from snapshot: VMSnapshot) async throws -> (VMHandle, BootTimestamps) {
        try await plugged(spec) { spec in try await base.restore(spec, from: snapshot) }
    }

    /// Held VMMs have no TAPs: the agent holds them only for VMs without ports on networks.
    public func prepareRestore(_ spec: VMSpec) async throws -> VMHandle { try await base.prepareRestore(spec) }
    public func loadState(_ handle: VMHandle, from snapshot: VMSnapshot) async throws {
        try await base.loadState(handle, from: snapshot)
    }

    /// Runs `start` with the instance's TAPs plugged, and unplugs them if it fails.
    private func plugged(
        _ spec: VMSpec, _ start: (VMSpec) async throws -> (VMHandle, BootTimestamps)
    ) async throws -> (VMHandle, BootTimestamps) {
        var spec = spec
        spec.taps = try await network.plug(
            instanceId: spec.instanceID, ports: spec.networkPorts, filtered: spec.portsFiltered)
        do {
            return try await start(spec)
        } catch {
            await network.unplug(instanceId: spec.instanceID)
            throw error
        }
    }

    public func destroy(_ handle: VMHandle) async {
        await base.destroy(handle)
        await network.unplug(instanceId: URL(fileURLWithPath: handle.runtimeDirectory).lastPathComponent)
    }

    public func capabilities() async -> HypervisorCapabilities { await base.capabilities() }
    public func recover(_ handle: VMHandle) async -> Bool { await base.recover(handle) }
    public func state(_ handle: VMHandle) async throws -> VMRunState { try await base.state(handle) }
    public func pause(_ handle: VMHandle) async throws { try await base.pause(handle) }
    public func resume(_ handle: VMHandle) async throws { try await base.resume(handle) }
    public func reboot(_ handle: VMHandle) async throws { try await base.reboot(handle) }
    public func stop(_ handle: VMHandle, timeout: Duration) async throws -> VMExit {
        try await base.stop(handle, timeout: timeout)
    }
    public func waitForExit(_ handle: VMHandle) async -> VMExit { await base.waitForExit(handle) }
    public func consoleLines(_ handle: VMHandle) -> AsyncStream<String> { base.consoleLines(handle) }
    public func consoleEvents(_ handle: VMHandle) -> AsyncStream<ConsoleLine> { base.consoleEvents(handle) }
    public func sendConsole(_ handle: VMHandle, line: String) async throws {
        try await base.sendConsole(handle, line: line)
    }
    public func publishPort(_ handle: VMHandle, _ port: PortMapping) async throws {
        try await base.publishPort(handle, port)
    }
    public func moves() async -> VMMoves { await base.moves() }
    public func migrateOut(_ handle: VMHandle, to address: String, port: Int, settings: LiveMigrationSettings)
        async throws -> LiveMigrationResult
    {
        try await base.migrateOut(handle, to: address, port: port, settings: settings)
    }
    public func finishIncoming(_ handle: VMHandle, timeout: Duration) async throws {
        try await base.finishIncoming(handle, timeout: timeout)
    }
    /// The target gets the instance's TAPs (same names and MACs) before the state comes in.
    public func prepareIncoming(_ spec: VMSpec, address: String, port: Int, tls: MigrationCredentials?) async throws
        -> VMHandle
    {
        try await plugged(spec) { spec in
            (
                try await base.prepareIncoming(spec, address: address, port: port, tls: tls),
                BootTimestamps(spawned: 0, vmmUp: 0)
            )
        }.0
    }
    public func saveState(_ handle: VMHandle, to path: String, resume: Bool) async throws -> VMSnapshot {
        try await base.saveState(handle, to: path, resume: resume)
    }
}
