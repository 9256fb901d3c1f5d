import SwiftletCore
import SwiftletImages
import SwiftletScheduler
import SwiftletStore

extension Controller {
    /// Unikernel vCPUs are mostly idle threads, so vCPUs are overcommitted far beyond Nova's 16 per
    /// CPU (512 lets `maxCount` one-vCPU instances onto a 2-CPU host); memory is the real limit.
    static let schedulerPolicy = SchedulerPolicy(cpuAllocationRatio: 512)

    /// Chooses a host for each of `count` instances from the stored hosts, charging each placement
    /// before the next. A host's usage is what its building, running and paused instances hold.
    /// Throws 409 `scheduler.no_host` with the filter summary when one of them fits nowhere.
    func placeInstances(count: Int, memoryMib: Int, vcpus: Int, image: Image) throws(SwiftletError) -> [String] {
        let usage = try store.hostUsage()
        let known = try launchCatalog.value("hosts", generation: store.catalogGeneration) {
            () throws(SwiftletError) in try store.hosts()
        }
        let hosts = known.map { host in
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
