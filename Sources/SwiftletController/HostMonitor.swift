import Foundation
import Logging
import ServiceLifecycle
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletStore

/// Watches remote hosts' leases. When one expires, the host is DOWN, and its instances with
/// restart policy `always` are re-created on a live host (evacuation) with a new boot timeline and
/// a new generation. The agent of a DOWN host stopped its VMs before its lease ran out (it fences
/// itself ahead of the controller's expiry), and whatever it reports later for the moved
/// instances is refused, so no instance runs on two hosts.
///
/// Every controller runs one: each refreshes its copy of the leases from the store and pings its
/// own agents' watch streams, but only the leader evacuates.
struct HostMonitor: Service {
    let cluster: ClusterService
    let leadership: LeaderElection
    var controller: Controller { cluster.controller }
    let interval: Duration
    let logger: Logger
    static let pingInterval: Duration = .seconds(2)

    /// On graceful shutdown (this service is the group's last, so it stops first) the agents'
    /// watch streams end, so the agent listener can drain.
    func run() async throws {
        await cancelWhenGracefulShutdown { await monitor() }
        cluster.close()
    }

    private func monitor() async {
        var lastPing = ContinuousClock.now
        while !Task.isCancelled {
            if let ages = try? await cluster.store.hostLeaseAges() { controller.leases.refresh(ages: ages) }
            await self.evacuateDownHosts()
            for link in controller.agents.all { await (link as? RemoteAgentLink)?.appendUnappended() }
            // An idle watch stream carries a ping now and then, so an agent can tell a dead one.
            if ContinuousClock.now - lastPing >= Self.pingInterval {
                for link in controller.agents.all { (link as? RemoteAgentLink)?.ping() }
                // Hosts that joined through another controller.
                try? await cluster.registerJoinedHosts()
                if leadership.currentTerm != nil { await controller.settleAbandonedMigrations() }
                lastPing = .now
            }
            try? await Task.sleep(for: interval)
        }
    }

    func evacuateDownHosts() async {
        guard leadership.currentTerm != nil, let hosts = try? await controller.store.hosts() else { return }
        let down = Set(hosts.map(\.id).filter { !controller.isUp(hostId: $0) })
        guard !down.isEmpty,
            let instances = try? await controller.store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
        else { return }
        for instance in instances
        where instance.restartPolicy == .always && instance.state.wantsVM && down.contains(instance.hostId ?? "") {
            // Checked before each: leadership may have moved on meanwhile.
            guard let term = leadership.currentTerm else { return }
            await evacuate(instance, term: term)
        }
    }

    private func evacuate(_ instance: Instance, term: UInt64) async {
        let from = instance.hostId ?? ""
        do {
            guard let image = try await controller.store.image(idOrName: instance.imageId, projectId: nil) else {
                return
            }
            let placement = try await controller.placeInstances(
                count: 1, memoryMib: instance.memoryMib, vcpus: instance.vcpus, image: image,
                needsNetworks: !(instance.ports ?? []).isEmpty, group: controller.serverGroup(of: instance),
                excluding: instance.id)
            let target = placement.hostIds[0]
            let accepted = monotonicNanos()
            // The store commits the move only while this term still holds the lease; a lost
            // claim fails this round, and the next one places again.
            var claim = placement.claim
            claim.leader = LeaderFence(lease: LeaderElection.leaseName, holder: leadership.holder, term: term)
            let moved = try await controller.store.updateInstance(
                id: instance.id,
                events: [("evacuated", "host \(from) is DOWN: re-created on \(target) by leader term \(term)")],
                handle: nil, claim: claim
            ) { record throws(SwiftletError) in
                // Changed meanwhile (deleted, stopped, moved): nothing to do.
                guard record.hostId == from, record.state.wantsVM else {
                    throw SwiftletError(.conflict, "instance.changed", "instance changed while it was evacuated")
                }
                record.hostId = target
                record.generation = (record.generation ?? 0) + 1
                record.state = .building
                record.timeline = .starting(at: accepted)
                record.reason = "evacuated from \(from) (DOWN)"
                record.task = InstanceTask(kind: .evacuating, from: from, to: target, startedAt: Date())
            }
            try? await controller.store.removeHandle(instanceId: instance.id)
            logger.notice(
                "evacuated an instance from a DOWN host",
                metadata: [
                    "instance.id": "\(instance.id)", "host.from": "\(from)", "host.to": "\(target)",
                    "leader.term": "\(term)",
                ])
            // The old host forgets it when it comes back, whatever it missed meanwhile.
            if let old = try? controller.agents.link(for: from) {
                await old.apply(
                    .unassign(instanceId: instance.id, generation: moved.generation ?? 0), pendingCommit: nil)
            }
            // Its new host gets its security-group policy before its assignment.
            if !(moved.securityGroups ?? []).isEmpty { await controller.publishNetworks() }
            await controller.instanceSync.dispatch(moved)
        } catch {
            logger.warning(
                "cannot evacuate an instance yet",
                metadata: ["instance.id": "\(instance.id)", "host.from": "\(from)", "error": "\(error)"])
        }
    }
}
