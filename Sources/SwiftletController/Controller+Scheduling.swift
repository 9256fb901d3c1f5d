import SwiftletCore
import SwiftletImages
import SwiftletScheduler
import SwiftletStore

extension Controller {
    /// Unikernel vCPUs are mostly idle threads, so vCPUs are overcommitted far beyond Nova's 16 per
    /// CPU (512 lets `maxCount` one-vCPU instances onto a 2-CPU host); memory is the real limit.
    static let schedulerPolicy = SchedulerPolicy(cpuAllocationRatio: 512)

    /// Chooses a host for each of `count` instances from the hosts that are UP, charging each placement
    /// before the next. A host's usage is what its building, running and paused instances hold.
    /// Throws 409 `scheduler.no_host` with the filter summary when one of them fits nowhere.
    /// With `target` (an admin's `--host`), only that host, which must be UP and not cordoned (409
    /// saying why otherwise).
    /// With `needsNetworks`, only hosts that carry networks (networking with the controller's device
    /// prefix).
    func placeInstances(
        count: Int, memoryMib: Int, vcpus: Int, image: Image, target: String? = nil, needsNetworks: Bool = false
    ) throws(SwiftletError) -> [String] {
        let usage = try store.hostUsage()
        let known = try launchCatalog.value("hosts", generation: store.catalogGeneration) {
            () throws(SwiftletError) in try store.hosts()
        }
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
            if let target, carrying.isEmpty {
                throw SwiftletError(
                    .conflict, "host.no_networks",
                    "host '\(target)' cannot carry networks (its agent has no networking, or another device prefix)")
            }
            candidates = carrying
        }
        let hosts = candidates.map { host in
            let used = usage[host.id] ?? HostUsage(memoryMib: 0, vcpus: 0, instances: 0)
            return HostState(
                id: host.id, cpus: host.cpus, memoryMib: host.memoryMib, usedMemoryMib: used.memoryMib,
                usedVcpus: used.vcpus, instances: used.instances, hypervisors: host.hypervisors,
                machineTypes: host.machineTypes, accelerators: host.accelerators)
        }
        var scheduler = Scheduler(hosts: hosts, policy: Self.schedulerPolicy)
        let request = PlacementRequest(
            memoryMib: memoryMib, vcpus: vcpus,
            machineType: image.properties[LaunchProfile.machineTypeProperty]
                ?? PlacementRequest.machineType(for: image.kind))
        var placed: [String] = []
        for index in 0..<count {
            do { placed.append(try scheduler.place(request).hostId) } catch {
                var failure = error.swiftletError
                if count > 1 { failure.message += " (instance \(index + 1) of \(count))" }
                throw failure
            }
        }
        return placed
    }
}
