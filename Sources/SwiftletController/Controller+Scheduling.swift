import SwiftletCore
import SwiftletImages
import SwiftletScheduler
import SwiftletStore

extension Controller {
    /// Unikernel vCPUs are mostly idle threads, so vCPUs are overcommitted far beyond Nova's 16 per
    /// CPU (512 lets `maxCount` one-vCPU instances onto a 2-CPU host); memory is the real limit.
    static let schedulerPolicy = SchedulerPolicy(cpuAllocationRatio: 512)

    /// How many times a create places its instances when concurrent creates keep taking the room
    /// its insert claims (each retry sees their commits).
    static let placementAttempts = 4

    /// Where `placeInstances` put each instance, and what the insert must re-check to claim it.
    struct Placements {
        var hostIds: [String]
        var claim: PlacementClaim
    }

    /// Chooses a host for each of `count` instances from the hosts that are UP, charging each placement
    /// before the next. A host's usage is what its building, running and paused instances hold.
    /// Throws 409 `scheduler.no_host` with the filter summary when one of them fits nowhere.
    /// With `target` (an admin's `--host`), only that host, which must be UP and not cordoned (409
    /// saying why otherwise).
    /// With `needsNetworks`, only hosts that carry networks (networking with the controller's device
    /// prefix).
    /// With `group`, its policy over the hosts of its members other than `excluding`.
    /// `avoiding`: a host never chosen (a migration's source).
    func placeInstances(
        count: Int, memoryMib: Int, vcpus: Int, image: Image, target: String? = nil, needsNetworks: Bool = false,
        group: ServerGroup? = nil, excluding: String? = nil, avoiding: String? = nil
    ) async throws(SwiftletError) -> Placements {
        let usage = try await store.hostUsage()
        let known = try await knownHosts().filter { $0.id != avoiding }
        var candidates = known.filter { isUp(hostId: $0.id) && $0.cordoned != true }
        if let target {
            guard let host = known.first(where: { $0.id == target || $0.name == target }) else {
                throw .notFound("host", target)
            }
            guard host.cordoned != true else {
                throw SwiftletError(
                    .conflict, "host.cordoned", "host '\(host.id)' is cordoned: it takes no new instances")
            }
            guard isUp(hostId: host.id) else {
                let seen = leases.status(hostId: host.id).lastSeen.map { " (last seen \($0))" } ?? ""
                throw SwiftletError(.conflict, "host.down", "host '\(host.id)' is DOWN\(seen)")
            }
            candidates = [host]
        }
        if needsNetworks {
            let carrying = candidates.filter { networking?.carriesNetworks($0) == true }
            if carrying.isEmpty && !candidates.isEmpty {
                throw SwiftletError(
                    .conflict, "host.no_networks",
                    (target.map { "host '\($0)'" } ?? "no host that takes instances")
                        + " can carry networks (no networking there, another device prefix, or no fabric address)")
            }
            candidates = carrying
        }
        var memberHosts: [String]?
        if let group {
            memberHosts = try await serverGroupStore.serverGroupHosts(id: group.id).filter { $0.key != excluding }
                .map(\.value)
        }
        if let group, group.policy == .affinity, let memberHosts, !memberHosts.isEmpty,
            !candidates.contains(where: { memberHosts.contains($0.id) })
        {
            // The scheduler only knows the candidates: unchecked, it would place the group afresh.
            throw SwiftletError(
                .conflict, "scheduler.no_host",
                "server group '\(group.name)' is affinity and its members' host takes no new instances here "
                    + "(DOWN, cordoned or not allowed)")
        }
        let hosts = candidates.map { host in
            let used = usage[host.id] ?? HostUsage(memoryMib: 0, vcpus: 0, instances: 0)
            return HostState(
                id: host.id, cpus: host.cpus, memoryMib: host.memoryMib, usedMemoryMib: used.memoryMib,
                usedVcpus: used.vcpus, instances: used.instances, hypervisors: host.hypervisors,
                machineTypes: host.machineTypes, accelerators: host.accelerators)
        }
        var scheduler = Scheduler(
            hosts: hosts, groupMembers: group.map { [$0.id: memberHosts ?? []] } ?? [:], policy: Self.schedulerPolicy)
        let request = PlacementRequest(
            memoryMib: memoryMib, vcpus: vcpus,
            machineType: image.properties[LaunchProfile.machineTypeProperty]
                ?? PlacementRequest.machineType(for: image.kind),
            group: group.map { PlacementGroup(name: $0.id, policy: $0.policy) })
        var placed: [String] = []
        for index in 0..<count {
            do { placed.append(try scheduler.place(request).hostId) } catch {
                var failure = error.swiftletError
                if let group { failure.message += " (server group '\(group.name)' is \(group.policy.rawValue))" }
                if count > 1 { failure.message += " (instance \(index + 1) of \(count))" }
                throw failure
            }
        }
        var capacity: [String: HostCapacity] = [:]
        let chosen = Set(placed)
        for host in candidates where chosen.contains(host.id) {
            capacity[host.id] = HostCapacity(
                memoryMib: Self.schedulerPolicy.capacity(memoryMib: host.memoryMib),
                vcpus: Self.schedulerPolicy.capacity(cpus: host.cpus))
        }
        return Placements(hostIds: placed, claim: PlacementClaim(capacity: capacity, group: group))
    }

    /// The recorded hosts, read through the launch catalog cache (placement and listings ask often).
    func knownHosts() async throws(SwiftletError) -> [ComputeHost] {
        try await launchCatalog.value("hosts", generation: store.catalogGeneration) {
            () async throws(SwiftletError) in try await store.hosts()
        }
    }
}
