import SwiftletCore
import SwiftletScheduler
import Testing

/// Every host here is simulated (plain values); the scheduler is pure and never sees a real host.
@Suite struct SchedulerTests {
    static func simulatedHost(
        _ id: String, memory: Int = 4096, cpus: Int = 4, usedMemory: Int = 0, usedVcpus: Int = 0, instances: Int = 0,
        machineTypes: [String] = ["microvm", "pc"], accelerators: [String] = ["tcg"], zone: String? = nil,
        labels: [String: String] = [:], enabled: Bool = true
    ) -> HostState {
        HostState(
            id: id, cpus: cpus, memoryMib: memory, usedMemoryMib: usedMemory, usedVcpus: usedVcpus,
            instances: instances, hypervisors: ["qemu"], machineTypes: machineTypes, accelerators: accelerators,
            zone: zone, labels: labels, enabled: enabled)
    }

    // MARK: Filters

    @Test func memoryFilterSkipsFullHosts() throws {
        var scheduler = Scheduler(hosts: [
            Self.simulatedHost("sim-a", memory: 8192, usedMemory: 8000), Self.simulatedHost("sim-b", memory: 1024),
        ])
        #expect(try scheduler.place(PlacementRequest(memoryMib: 512, vcpus: 1)).hostId == "sim-b")
    }

    @Test func vcpuFilterHonoursTheAllocationRatio() throws {
        let hosts = [
            Self.simulatedHost("sim-a", cpus: 2, usedVcpus: 3), Self.simulatedHost("sim-b", memory: 1024, cpus: 2),
        ]
        var strict = Scheduler(hosts: hosts, policy: SchedulerPolicy(cpuAllocationRatio: 2))
        #expect(try strict.place(PlacementRequest(memoryMib: 16, vcpus: 2)).hostId == "sim-b")
        // sim-a has more free memory, so with room for the vCPUs it wins.
        var loose = Scheduler(hosts: hosts, policy: SchedulerPolicy(cpuAllocationRatio: 4))
        #expect(try loose.place(PlacementRequest(memoryMib: 16, vcpus: 2)).hostId == "sim-a")
    }

    @Test func staticFilters() throws {
        let hosts = [
            Self.simulatedHost("sim-disabled", memory: 65536, enabled: false),
            Self.simulatedHost("sim-pc-only", memory: 32768, machineTypes: ["pc"], zone: "z1"),
            Self.simulatedHost(
                "sim-kvm", memory: 16384, accelerators: ["kvm", "tcg"], zone: "z2", labels: ["ssd": "yes"]),
            Self.simulatedHost("sim-plain", memory: 8192, zone: "z1"),
        ]
        var scheduler = Scheduler(hosts: hosts)
        #expect(try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1)).hostId == "sim-pc-only")
        #expect(
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, machineType: "microvm")).hostId == "sim-kvm")
        #expect(
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, zone: "z1", labels: [:])).hostId
                == "sim-pc-only")
        #expect(
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, machineType: "microvm", zone: "z1")).hostId
                == "sim-plain")
        #expect(try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, accelerator: "kvm")).hostId == "sim-kvm")
        #expect(
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, labels: ["ssd": "yes"])).hostId == "sim-kvm")
        #expect(throws: NoValidHost.self) {
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, hypervisor: "firecracker"))
        }
    }

    @Test func machineTypeFollowsTheImageKind() {
        #expect(PlacementRequest.machineType(for: .pvh) == "microvm")
        #expect(PlacementRequest.machineType(for: .multiboot) == "pc")
        #expect(PlacementRequest.machineType(for: .initrd) == nil)
    }

    // MARK: Weighers

    @Test func spreadsByFreeMemory() throws {
        var scheduler = Scheduler(hosts: [
            Self.simulatedHost("sim-a", memory: 2048), Self.simulatedHost("sim-b", memory: 3072),
        ])
        var placed: [String] = []
        for _ in 0..<6 { placed.append(try scheduler.place(PlacementRequest(memoryMib: 512, vcpus: 1)).hostId) }
        // b first (more free), then whichever has more free memory: they end with equal usage.
        #expect(placed == ["sim-b", "sim-b", "sim-a", "sim-b", "sim-a", "sim-b"])
        #expect(scheduler.usage(of: "sim-a")?.freeMemoryMib == 1024)
        #expect(scheduler.usage(of: "sim-b")?.freeMemoryMib == 1024)
        #expect(scheduler.usage(of: "sim-b")?.instances == 4)
    }

    @Test func instanceCountBreaksEqualMemory() throws {
        var scheduler = Scheduler(hosts: [
            Self.simulatedHost("sim-a", instances: 5), Self.simulatedHost("sim-b", instances: 1),
        ])
        #expect(try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1)).hostId == "sim-b")
        let memoryOnly = SchedulerPolicy(instanceWeight: 0)
        var byId = Scheduler(
            hosts: [Self.simulatedHost("sim-b", instances: 1), Self.simulatedHost("sim-a", instances: 5)],
            policy: memoryOnly)
        #expect(
            try byId.place(PlacementRequest(memoryMib: 16, vcpus: 1)).hostId == "sim-a", "ties go to the smaller id")
    }

    @Test func scoreIsTheDocumentedFormula() {
        let policy = SchedulerPolicy(memoryWeight: 2, instanceWeight: 3, instanceScale: 10)
        #expect(policy.score(freeMemoryMib: 512, instances: 1, largestMemoryMib: 1024) == 2 * 500_000 - 3 * 100_000)
    }

    // MARK: Groups

    @Test func antiAffinityPutsEachMemberOnItsOwnHost() throws {
        let hosts = (0..<4).map { Self.simulatedHost("sim-\($0)", memory: 1024 * ($0 + 1)) }
        var scheduler = Scheduler(hosts: hosts)
        let group = PlacementGroup(name: "web", policy: .antiAffinity)
        var placed: Set<String> = []
        for _ in 0..<4 {
            placed.insert(try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, group: group)).hostId)
        }
        #expect(placed.count == 4)
        let error = #expect(throws: NoValidHost.self) {
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 1, group: group))
        }
        #expect(error?.removed == [.group: 4])
        // Other groups are unaffected.
        _ = try scheduler.place(
            PlacementRequest(memoryMib: 16, vcpus: 1, group: PlacementGroup(name: "db", policy: .antiAffinity)))
    }

    @Test func antiAffinityCountsExistingMembers() throws {
        let hosts = [Self.simulatedHost("sim-big", memory: 65536), Self.simulatedHost("sim-small", memory: 1024)]
        var scheduler = Scheduler(hosts: hosts, groupMembers: ["web": ["sim-big"]])
        let request = PlacementRequest(
            memoryMib: 16, vcpus: 1, group: PlacementGroup(name: "web", policy: .antiAffinity))
        #expect(try scheduler.place(request).hostId == "sim-small")
    }

    @Test func affinityKeepsMembersTogether() throws {
        let hosts = [Self.simulatedHost("sim-big", memory: 65536), Self.simulatedHost("sim-small", memory: 1024)]
        var scheduler = Scheduler(hosts: hosts, groupMembers: ["db": ["sim-small"]])
        let request = PlacementRequest(memoryMib: 256, vcpus: 1, group: PlacementGroup(name: "db", policy: .affinity))
        for _ in 0..<4 { #expect(try scheduler.place(request).hostId == "sim-small") }
        let error = #expect(throws: NoValidHost.self) { try scheduler.place(request) }
        #expect(error?.removed == [.group: 1, .memory: 1])
        // A new affinity group starts on the best host and then sticks to it.
        let fresh = PlacementRequest(memoryMib: 16, vcpus: 1, group: PlacementGroup(name: "cache", policy: .affinity))
        #expect(try scheduler.place(fresh).hostId == "sim-big")
        #expect(try scheduler.place(fresh).hostId == "sim-big")
    }

    // MARK: Errors

    @Test func errorCountsTheFirstFilterThatRemovedEachHost() {
        var hosts = (0..<9812).map { Self.simulatedHost("sim-full-\($0)", memory: 1024, usedMemory: 1000) }
        hosts += (0..<188).map { Self.simulatedHost("sim-off-\($0)", memory: 65536, enabled: false) }
        var scheduler = Scheduler(hosts: hosts)
        let error = #expect(throws: NoValidHost.self) { try scheduler.place(PlacementRequest(memoryMib: 64, vcpus: 1)) }
        #expect(error?.removed == [.memory: 9812, .disabled: 188])
        #expect(error?.description == "no host fits: 9,812 lacked memory, 188 disabled")
        #expect(error?.swiftletError.code == "scheduler.no_host")
        #expect(error?.swiftletError.kind.httpStatus == 409)
    }

    @Test func errorOnEmptyClusterAndStaticMismatch() {
        var empty = Scheduler(hosts: [])
        let none = #expect(throws: NoValidHost.self) { try empty.place(PlacementRequest(memoryMib: 16, vcpus: 1)) }
        #expect(none?.description == "no host fits: there are no hosts")
        var scheduler = Scheduler(hosts: [
            Self.simulatedHost("sim-a", zone: "z1"), Self.simulatedHost("sim-b", machineTypes: ["pc"], zone: "z2"),
            Self.simulatedHost("sim-c", cpus: 1, zone: "z2"),
        ])
        let error = #expect(throws: NoValidHost.self) {
            try scheduler.place(PlacementRequest(memoryMib: 16, vcpus: 32, machineType: "microvm", zone: "z2"))
        }
        #expect(error?.removed == [.zone: 1, .machineType: 1, .vcpus: 1])
        #expect(error?.description == "no host fits: 1 in another zone, 1 lacked the machine type, 1 lacked vCPUs")
    }

    @Test func failedPlacementChangesNothing() throws {
        var scheduler = Scheduler(hosts: [Self.simulatedHost("sim-a", memory: 1024)])
        #expect(throws: NoValidHost.self) { try scheduler.place(PlacementRequest(memoryMib: 2048, vcpus: 1)) }
        #expect(scheduler.usage(of: "sim-a")?.freeMemoryMib == 1024)
        #expect(scheduler.usage(of: "sim-a")?.instances == 0)
        #expect(scheduler.usage(of: "sim-missing") == nil)
    }

    // MARK: Determinism and scale

    @Test func sameInputSamePlacements() throws {
        let hosts = SimulatedCluster.hosts(count: 500, seed: 7)
        let requests = SimulatedCluster.requests(count: 3000, seed: 8)
        func run(_ hosts: [HostState]) -> [String] {
            var scheduler = Scheduler(hosts: hosts)
            return requests.map { (try? scheduler.place($0).hostId) ?? "none" }
        }
        let first = run(hosts)
        #expect(first == run(hosts))
        #expect(first == run(hosts.reversed()), "input order must not matter")
        #expect(Set(first).count > 100)
    }

    /// The indexed search against a brute-force scan of every host, placement by placement, on
    /// a simulated cluster small enough to run out of room (so failures are compared too).
    @Test func matchesBruteForceReference() throws {
        let hosts = SimulatedCluster.hosts(count: 1500, seed: 1)
        let requests = SimulatedCluster.requests(count: 4000, seed: 2, memoryScale: 24)
        let policy = SchedulerPolicy(cpuAllocationRatio: 4)
        var scheduler = Scheduler(hosts: hosts, policy: policy)
        var reference = ReferenceScheduler(hosts: hosts, policy: policy)
        var failures = 0
        for (index, request) in requests.enumerated() {
            let expected = reference.place(request)
            switch Result(catching: { () throws(NoValidHost) in try scheduler.place(request) }) {
            case .success(let placement):
                #expect(placement.hostId == expected.hostId, "placement \(index)")
                if placement.hostId != expected.hostId { return }
            case .failure(let error):
                failures += 1
                #expect(expected.hostId == nil, "placement \(index)")
                #expect(error.removed == expected.removed, "placement \(index)")
                if expected.hostId != nil { return }
            }
        }
        // The run must exercise both outcomes to mean anything.
        #expect(failures > 50)
        #expect(failures < requests.count / 2)
    }
}

/// Filters and weighs every host on every request, the obvious way.
struct ReferenceScheduler {
    var hosts: [HostState]
    var members: [String: [String: Int]] = [:]
    let policy: SchedulerPolicy

    init(hosts: [HostState], policy: SchedulerPolicy) {
        self.hosts = hosts
        self.policy = policy
    }

    mutating func place(_ request: PlacementRequest) -> (hostId: String?, removed: [SchedulerFilter: Int]) {
        let largest = hosts.map { Int(Double($0.memoryMib) * policy.ramAllocationRatio) }.max() ?? 1
        var removed: [SchedulerFilter: Int] = [:]
        var best: (score: Int, index: Int)?
        let groupHosts = request.group.flatMap { members[$0.name] } ?? [:]
        for (index, host) in hosts.enumerated() {
            let freeMemory = Int(Double(host.memoryMib) * policy.ramAllocationRatio) - host.usedMemoryMib
            let freeVcpus = Int(Double(host.cpus) * policy.cpuAllocationRatio) - host.usedVcpus
            var reason: SchedulerFilter?
            if !host.enabled {
                reason = .disabled
            } else if let zone = request.zone, host.zone != zone {
                reason = .zone
            } else if let hypervisor = request.hypervisor, !host.hypervisors.contains(hypervisor) {
                reason = .hypervisor
            } else if let machine = request.machineType, !host.machineTypes.contains(machine) {
                reason = .machineType
            } else if let accelerator = request.accelerator, !host.accelerators.contains(accelerator) {
                reason = .accelerator
            } else if request.labels.contains(where: { host.labels[$0.key] != $0.value }) {
                reason = .labels
            } else if let group = request.group, !groupHosts.isEmpty,
                group.policy == .affinity ? groupHosts[host.id] == nil : groupHosts[host.id] != nil
            {
                reason = .group
            } else if freeVcpus < request.vcpus {
                reason = .vcpus
            } else if freeMemory < request.memoryMib {
                reason = .memory
            }
            if let reason {
                removed[reason, default: 0] += 1
                continue
            }
            let score =
                policy.memoryWeight * (freeMemory * 1_000_000 / largest) - policy.instanceWeight
                * (host.instances * 1_000_000 / policy.instanceScale)
            if let current = best {
                let currentId = hosts[current.index].id
                if score > current.score || (score == current.score && host.id < currentId) { best = (score, index) }
            } else {
                best = (score, index)
            }
        }
        guard let best else { return (nil, removed) }
        hosts[best.index].usedMemoryMib += request.memoryMib
        hosts[best.index].usedVcpus += request.vcpus
        hosts[best.index].instances += 1
        if let group = request.group { members[group.name, default: [:]][hosts[best.index].id, default: 0] += 1 }
        return (hosts[best.index].id, removed)
    }
}

/// A seeded generator so simulated clusters are the same on every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Simulated hosts and requests with some variety: sizes, zones, capabilities, disabled hosts,
/// labels and groups.
enum SimulatedCluster {
    static func hosts(count: Int, seed: UInt64) -> [HostState] {
        var random = SplitMix64(state: seed)
        return (0..<count).map { index in
            let memory = [2048, 4096, 8192, 16384].randomElement(using: &random)!
            let cpus = [2, 4, 8].randomElement(using: &random)!
            return HostState(
                id: "sim-host-\(index)", cpus: cpus, memoryMib: memory,
                usedMemoryMib: Int.random(in: 0...(memory / 2), using: &random),
                usedVcpus: Int.random(in: 0...cpus, using: &random), instances: Int.random(in: 0...20, using: &random),
                hypervisors: Bool.random(using: &random) ? ["qemu"] : ["qemu", "firecracker"],
                machineTypes: Int.random(in: 0..<10, using: &random) == 0 ? ["pc", "q35"] : ["microvm", "pc", "q35"],
                accelerators: Bool.random(using: &random) ? ["kvm", "tcg"] : ["tcg"],
                zone: ["z1", "z2", "z3"].randomElement(using: &random)!,
                labels: Int.random(in: 0..<4, using: &random) == 0 ? ["disk": "ssd"] : [:],
                enabled: Int.random(in: 0..<50, using: &random) != 0)
        }
    }

    /// `memoryScale` multiplies request sizes, to fill a cluster up.
    static func requests(count: Int, seed: UInt64, memoryScale: Int = 1) -> [PlacementRequest] {
        var random = SplitMix64(state: seed)
        return (0..<count).map { _ in
            var request = PlacementRequest(
                memoryMib: [16, 64, 128, 256].randomElement(using: &random)! * memoryScale,
                vcpus: [1, 1, 1, 2].randomElement(using: &random)!)
            let roll = Int.random(in: 0..<100, using: &random)
            if roll < 20 { request.zone = ["z1", "z2", "z3"].randomElement(using: &random)! }
            if roll % 10 == 0 { request.machineType = "microvm" }
            if roll % 7 == 0 { request.accelerator = "kvm" }
            if roll % 11 == 0 { request.hypervisor = "firecracker" }
            if roll % 13 == 0 { request.labels = ["disk": "ssd"] }
            if roll % 9 == 0 {
                request.group = PlacementGroup(
                    name: "anti-\(Int.random(in: 0..<20, using: &random))", policy: .antiAffinity)
            } else if roll % 17 == 0 {
                request.group = PlacementGroup(name: "aff-\(Int.random(in: 0..<20, using: &random))", policy: .affinity)
            }
            return request
        }
    }
}
