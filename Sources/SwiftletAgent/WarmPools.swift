import Foundation
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor

/// The agent's warm pools: per policy, VMs booted with `swiftlet.pool=1` that have printed
/// `SWIFTLET-POOLED` and wait for `swiftlet.config <words>` on their console (guest/kit/Pool.swift).
/// Taking one is actor-isolated, so a pre-booted VM is never handed to two instances.
struct WarmPoolState {
    struct Pooled {
        var handle: VMHandle
        var policyId: String
    }

    /// Policies this agent fills, with the image each boots, by id.
    var policies: [String: PoolAssignment] = [:]
    /// Booted and waiting, oldest first, by policy id.
    var idle: [String: [Pooled]] = [:]
    /// Boots in progress, by policy id.
    var filling: [String: Int] = [:]
    /// Per-policy supervisors of idle VMs, so an exit while idle is noticed.
    var watchers: [String: Task<Void, Never>] = [:]
}

extension HostAgent {
    /// How long a pool VM may take to print SWIFTLET-POOLED before it is discarded.
    static let poolBootTimeout: Duration = .seconds(20)

    /// Adds or replaces a policy and fills it in the background.
    func applyPool(_ assignment: PoolAssignment) {
        warm.policies[assignment.pool.id] = assignment
        refill(policyId: assignment.pool.id)
    }

    /// Drops a policy and destroys its idle VMs.
    func removePool(id: String) async {
        warm.policies[id] = nil
        for pooled in warm.idle.removeValue(forKey: id) ?? [] {
            warm.watchers.removeValue(forKey: pooled.handle.runtimeDirectory)?.cancel()
            await driver.destroy(pooled.handle)
        }
    }

    /// On shutdown: pooled VMs hold no instance, so none outlives the server (boots in flight
    /// are waited for, bounded by the pool boot timeout, and destroyed when they finish).
    public func drainPools() async {
        for id in Array(warm.policies.keys) { await removePool(id: id) }
        for sha256 in Array(heldForRestore.keys) { await dropHeldVMM(sha256: sha256) }
        let deadline = ContinuousClock.now + Self.poolBootTimeout
        while warm.filling.values.contains(where: { $0 > 0 }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Idle pre-booted VMs per policy id.
    public func poolReadyCounts() -> [String: Int] { warm.idle.mapValues(\.count) }

    /// Boots VMs until idle + booting reaches the policy's size.
    func refill(policyId: String) {
        guard let policy = warm.policies[policyId]?.pool else { return }
        let missing = policy.size - (warm.idle[policyId]?.count ?? 0) - (warm.filling[policyId] ?? 0)
        guard missing > 0 else { return }
        warm.filling[policyId, default: 0] += missing
        guard let boot = warm.policies[policyId]?.boot else { return }
        for _ in 0..<missing {
            Task { await self.bootPooled(policy: policy, boot: boot) }
        }
    }

    private func bootPooled(policy: WarmPool, boot: BootImage) async {
        defer { warm.filling[policy.id, default: 1] -= 1 }
        let image = boot.image
        let vmId = ResourceID.make("pool")
        do {
            let prepared = try await imageCache.prepare(boot)
            let spec = VMSpec(
                instanceID: vmId, kernelPath: prepared.kernelPath, bootKind: BootKind(image.kind),
                memoryMiB: policy.memoryMib, vcpus: policy.vcpus, commandLine: "swiftlet.pool=1", publishedPorts: [],
                runtimeDirectory: runRoot + "/" + vmId, userNetwork: true,
                machineType: prepared.profile.machineType)
            let (handle, _) = try await driver.spawn(spec)
            let events = driver.consoleEvents(handle)
            guard await waitForReady(events: events, pattern: "^SWIFTLET-POOLED", timeout: Self.poolBootTimeout) != nil
            else {
                logger.warning("pool VM never printed SWIFTLET-POOLED", metadata: ["pool.id": "\(policy.id)"])
                await driver.destroy(handle)
                return
            }
            guard warm.policies[policy.id] != nil else {
                await driver.destroy(handle)
                return
            }
            warm.idle[policy.id, default: []].append(WarmPoolState.Pooled(handle: handle, policyId: policy.id))
            watchIdle(handle, policyId: policy.id)
        } catch {
            logger.warning("pool VM failed to boot", metadata: ["pool.id": "\(policy.id)", "error": "\(error)"])
        }
    }

    /// An idle pool VM that exits is dropped and replaced.
    private func watchIdle(_ handle: VMHandle, policyId: String) {
        let driver = self.driver
        warm.watchers[handle.runtimeDirectory] = Task {
            _ = await driver.waitForExit(handle)
            guard !Task.isCancelled else { return }
            await self.idleExited(handle, policyId: policyId)
        }
    }

    private func idleExited(_ handle: VMHandle, policyId: String) async {
        warm.watchers[handle.runtimeDirectory] = nil
        warm.idle[policyId]?.removeAll { $0.handle == handle }
        await driver.destroy(handle)
        refill(policyId: policyId)
    }

    /// Whether a pool for the instance's image and shape has a pre-booted VM ready now.
    func hasIdlePooledVM(instance: Instance, imageId: String) -> Bool {
        guard let policy = pool(for: instance, imageId: imageId) else { return false }
        return !(warm.idle[policy.id]?.isEmpty ?? true)
    }

    private func pool(for instance: Instance, imageId: String) -> WarmPool? {
        warm.policies.values.lazy.map(\.pool).first {
            $0.imageId == imageId && $0.memoryMib == instance.memoryMib && $0.vcpus == instance.vcpus
        }
    }

    /// Takes a pooled VM matching the instance, gives it its ports and config, and returns it;
    /// nil when no pool matches or the hand-over failed (the caller then boots cold).
    func startPooled(instance: Instance, imageId: String, spec: VMSpec) async -> (handle: VMHandle, taken: UInt64)? {
        guard let policy = pool(for: instance, imageId: imageId), var queue = warm.idle[policy.id], !queue.isEmpty
        else { return nil }
        let pooled = queue.removeFirst()
        warm.idle[policy.id] = queue
        warm.watchers.removeValue(forKey: pooled.handle.runtimeDirectory)?.cancel()
        let taken = monotonicNanos()
        refill(policyId: policy.id)
        do {
            for port in spec.publishedPorts { try await driver.publishPort(pooled.handle, port) }
            try await driver.sendConsole(pooled.handle, line: "swiftlet.config " + spec.commandLine)
        } catch {
            logger.warning(
                "pool hand-over failed, booting cold", metadata: ["instance.id": "\(instance.id)", "error": "\(error)"])
            await driver.destroy(pooled.handle)
            return nil
        }
        return (pooled.handle, taken)
    }
}
