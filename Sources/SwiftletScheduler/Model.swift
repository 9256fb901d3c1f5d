import SwiftletCore

/// One compute host as the scheduler sees it: capacity, current usage and static capabilities.
public struct HostState: Sendable, Equatable {
    public var id: String
    public var cpus: Int
    public var memoryMib: Int
    public var usedMemoryMib: Int
    public var usedVcpus: Int
    public var instances: Int
    public var hypervisors: [String]
    public var machineTypes: [String]
    public var accelerators: [String]
    public var zone: String?
    public var labels: [String: String]
    public var enabled: Bool

    public init(
        id: String, cpus: Int, memoryMib: Int, usedMemoryMib: Int = 0, usedVcpus: Int = 0, instances: Int = 0,
        hypervisors: [String], machineTypes: [String], accelerators: [String], zone: String? = nil,
        labels: [String: String] = [:], enabled: Bool = true
    ) {
        self.id = id
        self.cpus = cpus
        self.memoryMib = memoryMib
        self.usedMemoryMib = usedMemoryMib
        self.usedVcpus = usedVcpus
        self.instances = instances
        self.hypervisors = hypervisors
        self.machineTypes = machineTypes
        self.accelerators = accelerators
        self.zone = zone
        self.labels = labels
        self.enabled = enabled
    }
}

public struct PlacementGroup: Sendable, Hashable {
    public var name: String
    public var policy: GroupPolicy

    public init(name: String, policy: GroupPolicy) {
        self.name = name
        self.policy = policy
    }
}

/// What one instance needs. `nil` requirements match every host.
public struct PlacementRequest: Sendable, Equatable {
    public var memoryMib: Int
    public var vcpus: Int
    public var hypervisor: String?
    public var machineType: String?
    public var accelerator: String?
    public var zone: String?
    /// Host labels that must be present with these values (Nova's aggregate extra specs).
    public var labels: [String: String]
    public var group: PlacementGroup?

    public init(
        memoryMib: Int, vcpus: Int, hypervisor: String? = nil, machineType: String? = nil,
        accelerator: String? = nil, zone: String? = nil, labels: [String: String] = [:],
        group: PlacementGroup? = nil
    ) {
        self.memoryMib = memoryMib
        self.vcpus = vcpus
        self.hypervisor = hypervisor
        self.machineType = machineType
        self.accelerator = accelerator
        self.zone = zone
        self.labels = labels
        self.group = group
    }

    /// The default QEMU machine an image kind boots on (microvm cannot load multiboot images or
    /// boot disks); nil for kinds that are never booted alone.
    public static func machineType(for kind: ImageKind) -> String? {
        switch kind {
        case .pvh, .bzImage: "microvm"
        case .multiboot, .raw, .qcow2: "pc"
        case .initrd: nil
        }
    }
}

/// The filters in the order they run; a host is counted against the first one that removes it.
public enum SchedulerFilter: String, Sendable, CaseIterable, Codable {
    case disabled, zone, hypervisor, machineType, accelerator, labels, group, vcpus, memory

    /// How the error summary phrases a host this filter removed.
    public var phrase: String {
        switch self {
        case .disabled: "disabled"
        case .zone: "in another zone"
        case .hypervisor: "lacked the hypervisor"
        case .machineType: "lacked the machine type"
        case .accelerator: "lacked the accelerator"
        case .labels: "lacked the labels"
        case .group: "broke the group policy"
        case .vcpus: "lacked vCPUs"
        case .memory: "lacked memory"
        }
    }
}

/// Overcommit and weigher settings.
public struct SchedulerPolicy: Sendable, Equatable {
    /// vCPUs a host offers per physical CPU (Nova's cpu_allocation_ratio; its default is 16).
    public var cpuAllocationRatio: Double
    /// Memory a host offers per MiB it has (Nova's ram_allocation_ratio).
    public var ramAllocationRatio: Double
    /// Weight of free memory (spread: the host with the most free memory wins).
    public var memoryWeight: Int
    /// Weight of the instance count (fewer instances wins).
    public var instanceWeight: Int
    /// Instances that cost as much score as all the free memory of the largest host.
    public var instanceScale: Int

    public init(
        cpuAllocationRatio: Double = 16, ramAllocationRatio: Double = 1, memoryWeight: Int = 1,
        instanceWeight: Int = 1, instanceScale: Int = 100
    ) {
        self.cpuAllocationRatio = cpuAllocationRatio
        self.ramAllocationRatio = ramAllocationRatio
        self.memoryWeight = memoryWeight
        self.instanceWeight = instanceWeight
        self.instanceScale = max(1, instanceScale)
    }

    /// Scores are normalised by fixed cluster constants (not per request, as Nova does) so that a
    /// host's score depends only on the host; that is what lets the scheduler keep hosts indexed by
    /// score instead of weighing every host on every request.
    public func score(freeMemoryMib: Int, instances: Int, largestMemoryMib: Int) -> Int {
        memoryWeight * (freeMemoryMib * 1_000_000 / max(1, largestMemoryMib))
            - instanceWeight * (instances * 1_000_000 / instanceScale)
    }

    /// The memory a host of `memoryMib` offers to instances.
    public func capacity(memoryMib: Int) -> Int { Int(Double(memoryMib) * ramAllocationRatio) }
    /// The vCPUs a host of `cpus` offers to instances.
    public func capacity(cpus: Int) -> Int { Int(Double(cpus) * cpuAllocationRatio) }
}

public struct Placement: Sendable, Equatable {
    public var hostId: String
    /// The winning host's weighed score before this placement.
    public var score: Int
}

/// No host passed every filter. `removed` counts, per filter, the hosts it was the first to reject.
public struct NoValidHost: Error, Sendable, Equatable, CustomStringConvertible {
    public var hostCount: Int
    public var removed: [SchedulerFilter: Int]

    /// `no host fits: 9,812 lacked memory, 188 disabled` (largest count first).
    public var description: String {
        if hostCount == 0 { return "no host fits: there are no hosts" }
        let order = SchedulerFilter.allCases
        let parts = removed.filter { $0.value > 0 }
            .sorted { a, b in
                a.value != b.value ? a.value > b.value : order.firstIndex(of: a.key)! < order.firstIndex(of: b.key)!
            }
            .map { "\(Self.grouped($0.value)) \($0.key.phrase)" }
        return "no host fits: " + parts.joined(separator: ", ")
    }

    /// The API error: 409 `scheduler.no_host` with the filter summary.
    public var swiftletError: SwiftletError { SwiftletError(.conflict, "scheduler.no_host", description) }

    static func grouped(_ value: Int) -> String {
        var digits = Array(String(value))
        var index = digits.count - 3
        while index > 0 {
            digits.insert(",", at: index)
            index -= 3
        }
        return String(digits)
    }
}
