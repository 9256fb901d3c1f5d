import Foundation
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor

/// A prepared target VM of a move, not the instance's VM until `finishIncoming`: an incoming
/// VMM waiting for a live migration's state, or a fresh guest booted silent for a stateful one.
struct IncomingVM {
    var handle: VMHandle
    var restartPolicy: RestartPolicy
    var successExitStatuses: Set<Int32>
    var standby = false
    /// A standby guest's state was imported: it may take over.
    var stateImported = false
}

// The agent's side of a live migration (docs/agent-protocol.md, "Moves"). The controller drives
// the steps; the agent only acts on the VMs it has, and says clearly when it cannot.
extension HostAgent {
    /// Target: starts a VMM for the assignment that waits for the VM's state, with the instance's
    /// ports plugged (same names and MACs as on the source), over TLS with `tls`.
    public func prepareIncoming(_ assignment: Assignment, tls: MigrationCredentials? = nil) async throws(SwiftletError)
        -> MoveEndpoint
    {
        let instanceId = assignment.instanceId
        try checkMoveTarget(assignment)
        guard await driver.moves().liveMigration else {
            throw SwiftletError(
                .conflict, "migration.unsupported", "the hypervisor of host '\(hostId)' cannot receive a live migration"
            )
        }
        let prepared: ImageCache.Prepared
        do { prepared = try await imageCache.prepare(assignment.boot) } catch {
            throw SwiftletError(.conflict, "migration.image_not_ready", "image not ready: \(error.message)")
        }
        let spec = vmSpec(for: assignment, prepared: prepared)
        let handle: VMHandle
        let port: Int
        do {
            port = try ListenPort.free(on: migrationAddress)
            handle = try await driver.prepareIncoming(spec, address: migrationAddress, port: port, tls: tls)
        } catch {
            throw SwiftletError(.internal, "migration.prepare_failed", "cannot start the incoming VMM: \(error)")
        }
        incoming[instanceId] = IncomingVM(
            handle: handle, restartPolicy: assignment.instance.restartPolicy,
            successExitStatuses: prepared.profile.successExitStatuses)
        logger.info(
            "prepared an incoming VMM",
            metadata: ["instance.id": "\(instanceId)", "vm.pid": "\(handle.pid)", "migration.port": "\(port)"])
        return MoveEndpoint(address: migrationAddress, port: port)
    }

    /// A target has no VM of the instance yet, and networking if the instance has ports.
    func checkMoveTarget(_ assignment: Assignment) throws(SwiftletError) {
        let instanceId = assignment.instanceId
        guard slots[instanceId] == nil, incoming[instanceId] == nil else {
            throw SwiftletError(
                .conflict, "migration.target_busy", "host '\(hostId)' already has a VM for instance '\(instanceId)'")
        }
        guard (assignment.instance.ports ?? []).isEmpty || network != nil else {
            throw SwiftletError(
                .conflict, "migration.no_networking", "host '\(hostId)' has no networking for the instance's ports")
        }
    }

    /// Source: streams the running VM's state to a prepared target; its guest is left paused, to
    /// be torn down once the target took over or resumed if the move fails.
    public func migrateOut(instanceId: String, to endpoint: MoveEndpoint, settings: MoveSettings)
        async throws(SwiftletError) -> MoveReport
    {
        guard case .running(let vm) = slots[instanceId] else {
            throw SwiftletError(
                .conflict, "instance.not_running", "instance '\(instanceId)' has no running VM on host '\(hostId)'")
        }
        let cancellation = MoveCancellation()
        outgoing[instanceId] = cancellation
        defer { outgoing[instanceId] = nil }
        do {
            let result = try await driver.migrateOut(
                vm.handle, to: endpoint.address, port: endpoint.port,
                settings: LiveMigrationSettings(
                    downtimeLimitMilliseconds: settings.downtimeLimitMs, autoConverge: settings.autoConverge,
                    maxBandwidthBytesPerSecond: settings.maxBandwidthBytesPerSecond ?? (1 << 30),
                    timeout: .milliseconds(settings.timeoutMs), cancellation: cancellation, tls: settings.tls))
            return MoveReport(
                downtimeMs: Double(result.downtimeMilliseconds), totalMs: Double(result.totalNanoseconds) / 1e6,
                transferredBytes: result.transferredBytes)
        } catch {
            if cancellation.isCancelled {
                throw SwiftletError(
                    .conflict, "migration.cancelled", "the transfer was called off; the VM runs on here")
            }
            throw SwiftletError(
                .conflict, "migration.transfer_failed", "the VM's state did not reach the target: \(error)")
        }
    }

    /// Source: calls off the transfer of the instance's VM in progress, if any.
    public func cancelMigrateOut(instanceId: String) {
        outgoing[instanceId]?.cancel()
    }

    /// Target: waits until the guest runs on the prepared VMM, then keeps it as the instance's VM
    /// under `generation` and returns its handle. A VMM that does not take over is destroyed.
    public func finishIncoming(instanceId: String, generation: UInt64) async throws(SwiftletError) -> Data {
        guard let vm = incoming.removeValue(forKey: instanceId) else {
            throw SwiftletError(
                .conflict, "migration.not_prepared", "host '\(hostId)' has no incoming VMM for instance '\(instanceId)'"
            )
        }
        do {
            if vm.standby {
                guard vm.stateImported else {
                    await driver.destroy(vm.handle)
                    throw SwiftletError(
                        .conflict, "migration.no_state", "the standby guest has not received the source's state")
                }
                try await GuestStateChannel(driver: driver, handle: vm.handle).activate()
            } else {
                try await driver.finishIncoming(vm.handle, timeout: .seconds(30))
            }
        } catch let error as SwiftletError {
            await driver.destroy(vm.handle)
            throw error
        } catch {
            await driver.destroy(vm.handle)
            throw SwiftletError(.conflict, "migration.finish_failed", "the target did not take over: \(error)")
        }
        guard slots[instanceId] == nil, let encoded = try? JSONEncoder().encode(vm.handle) else {
            await driver.destroy(vm.handle)
            throw SwiftletError(
                .conflict, "migration.target_busy", "host '\(hostId)' has another VM for instance '\(instanceId)'")
        }
        newestGeneration[instanceId] = max(newestGeneration[instanceId] ?? 0, generation)
        if vm.restartPolicy == .always { movable.insert(instanceId) }
        movedIn.insert(instanceId)
        slots[instanceId] = .running(
            RunningVM(
                generation: generation, handle: vm.handle,
                supervisor: supervise(instanceId: instanceId, handle: vm.handle),
                unreported: nil, successExitStatuses: vm.successExitStatuses))
        return encoded
    }

    /// Target: ends the VM of a move that will not be committed (it failed or was cancelled):
    /// the prepared VMM, or the VM that already took over. Returns once it is gone.
    public func abortIncoming(instanceId: String) async {
        if let vm = incoming.removeValue(forKey: instanceId) {
            await driver.destroy(vm.handle)
        } else if movedIn.contains(instanceId) {
            await teardown(instanceId: instanceId)
        } else {
            return
        }
        logger.info("ended the VM of a move rolled back", metadata: ["instance.id": "\(instanceId)"])
    }

    /// Source: the move failed after the guest was paused for its last pass; it runs on here.
    public func resumeAfterMove(instanceId: String) async throws(SwiftletError) {
        guard case .running(let vm) = slots[instanceId] else {
            throw SwiftletError(
                .conflict, "instance.not_running", "instance '\(instanceId)' has no VM on host '\(hostId)' to resume")
        }
        do { try await driver.resume(vm.handle) } catch {
            throw SwiftletError(.internal, "hypervisor.failed", "cannot resume the source VM: \(error)")
        }
        if quiesced.remove(instanceId) != nil {
            try await GuestStateChannel(driver: driver, handle: vm.handle).resume()
        }
    }
}

/// A TCP port the kernel reports free on an address (bound to port 0, then released).
enum ListenPort {
    static func free(on address: String) throws(SwiftletError) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else {
            throw SwiftletError(.internal, "migration.no_port", "socket: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        guard inet_pton(AF_INET, address, &socketAddress.sin_addr) == 1 else {
            throw SwiftletError(.internal, "migration.no_port", "'\(address)' is not an IPv4 address")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &socketAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            throw SwiftletError(
                .internal, "migration.no_port", "bind on \(address): \(String(cString: strerror(errno)))")
        }
        return Int(UInt16(bigEndian: socketAddress.sin_port))
    }
}
