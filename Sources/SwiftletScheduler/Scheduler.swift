/// Filter-then-weigh placement over a cluster snapshot, updating the snapshot's usage after each
/// placement. Same snapshot and requests → same placements (ties go to the smaller host id).
///
/// Layout, for speed at 10,000+ hosts: hosts are sorted by id and kept as parallel arrays. Hosts
/// with identical static attributes (enabled, zone, capabilities, labels) form a class; the static
/// filters are decided once per class (and cached per distinct requirement). Each class keeps a
/// segment tree whose nodes hold the best (score, host) below them and the largest free memory and
/// vCPUs below them. A placement is a best-first search over the compatible classes' trees that
/// skips subtrees without room, so it touches O(classes + log hosts) nodes instead of every host;
/// the update after it is O(log hosts). Only the failure path scans every host, to count which
/// filter removed each.
public struct Scheduler: Sendable {
    public let policy: SchedulerPolicy
    /// Host ids, sorted; a host's index is its tie-break rank.
    private let ids: [String]
    private var freeMemory: [Int]
    private var freeVcpus: [Int]
    private var instances: [Int]
    private let hostClass: [Int32]
    /// A host's position among its class's leaves.
    private let leafSlot: [Int32]
    private let largestMemory: Int
    private let classes: [HostClass]
    /// All class trees, each at `classes[c].base` with 1-based heap numbering (slot 0 unused).
    private var nodes: [Node]
    /// Group name → host index → members placed there.
    private var members: [String: [Int32: Int]]
    private var compatibility: [StaticRequirement: Compatibility] = [:]
    /// Reused by every search so a placement allocates nothing once warm.
    private var heap: [Entry] = []

    /// `groupMembers`: for each group name, the host id of every existing member.
    public init(hosts: [HostState], groupMembers: [String: [String]] = [:], policy: SchedulerPolicy = .init()) {
        self.policy = policy
        let sorted = hosts.sorted { $0.id < $1.id }
        for index in sorted.indices.dropFirst() {
            precondition(sorted[index - 1].id != sorted[index].id, "duplicate host id \(sorted[index].id)")
        }
        ids = sorted.map(\.id)
        freeMemory = sorted.map { policy.capacity(memoryMib: $0.memoryMib) - $0.usedMemoryMib }
        freeVcpus = sorted.map { policy.capacity(cpus: $0.cpus) - $0.usedVcpus }
        instances = sorted.map(\.instances)
        largestMemory = sorted.map { policy.capacity(memoryMib: $0.memoryMib) }.max() ?? 1

        var classIndex: [HostClass.Attributes: Int] = [:]
        var classes: [HostClass] = []
        var classMembers: [[Int32]] = []
        var hostClass: [Int32] = []
        hostClass.reserveCapacity(sorted.count)
        for (index, host) in sorted.enumerated() {
            let attributes = HostClass.Attributes(host)
            let c: Int
            if let found = classIndex[attributes] {
                c = found
            } else {
                c = classes.count
                classIndex[attributes] = c
                classes.append(HostClass(attributes: attributes, base: 0, size: 0))
                classMembers.append([])
            }
            hostClass.append(Int32(c))
            classMembers[c].append(Int32(index))
        }
        var nodeCount = 0
        for c in classes.indices {
            var size = 1
            while size < classMembers[c].count { size *= 2 }
            classes[c].base = nodeCount
            classes[c].size = size
            nodeCount += 2 * size
        }
        self.classes = classes
        self.hostClass = hostClass
        nodes = Array(repeating: .empty, count: nodeCount)
        var leafSlot = Array(repeating: Int32(0), count: sorted.count)
        for c in classes.indices {
            for (slot, host) in classMembers[c].enumerated() { leafSlot[Int(host)] = Int32(slot) }
        }
        self.leafSlot = leafSlot
        var membersByName: [String: [Int32: Int]] = [:]
        let position = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, Int32($0)) })
        for (name, hostIds) in groupMembers {
            for id in hostIds {
                if let host = position[id] { membersByName[name, default: [:]][host, default: 0] += 1 }
            }
        }
        members = membersByName
        heap.reserveCapacity(256)
        for c in classes.indices {
            let base = classes[c].base
            let size = classes[c].size
            for (slot, host) in classMembers[c].enumerated() { nodes[base + size + slot] = leaf(Int(host)) }
            var k = size - 1
            while k >= 1 {
                nodes[base + k] = Node.combine(nodes[base + 2 * k], nodes[base + 2 * k + 1])
                k -= 1
            }
        }
    }

    /// Current free memory, free vCPUs (after overcommit) and instance count of a host.
    public func usage(of hostId: String) -> (freeMemoryMib: Int, freeVcpus: Int, instances: Int)? {
        guard let index = index(of: hostId) else { return nil }
        return (freeMemory[index], freeVcpus[index], instances[index])
    }

    /// Chooses a host for one instance and charges its memory, vCPUs and group membership to it.
    public mutating func place(_ request: PlacementRequest) throws(NoValidHost) -> Placement {
        let compatible = compatibility(for: request)
        // Negative demands would hand capacity back; the API rejects them before this point anyway.
        let memory = max(0, request.memoryMib)
        let vcpus = max(0, request.vcpus)
        var chosen = -1
        if let group = request.group, group.policy == .affinity, let hosts = members[group.name], !hosts.isEmpty {
            // Affinity with existing members: only their hosts qualify, and there are few of them.
            var best = Node.empty
            for host in hosts.keys.map(Int.init)
            where compatible.mask[Int(hostClass[host])] && freeMemory[host] >= memory && freeVcpus[host] >= vcpus {
                let candidate = leaf(host)
                if candidate.beats(best) { best = candidate }
            }
            chosen = Int(best.host)
        } else {
            let avoid = request.group.flatMap { $0.policy == .antiAffinity ? members[$0.name] : nil }
            chosen = search(classes: compatible.classes, memory: memory, vcpus: vcpus, avoid: avoid)
        }
        guard chosen >= 0 else { throw explain(request, memory: memory, vcpus: vcpus) }
        let score = policy.score(
            freeMemoryMib: freeMemory[chosen], instances: instances[chosen], largestMemoryMib: largestMemory)
        freeMemory[chosen] -= memory
        freeVcpus[chosen] -= vcpus
        instances[chosen] += 1
        if let group = request.group { members[group.name, default: [:]][Int32(chosen), default: 0] += 1 }
        refresh(chosen)
        return Placement(hostId: ids[chosen], score: score)
    }

    // MARK: - Search

    private mutating func search(classes compatible: [Int32], memory: Int, vcpus: Int, avoid: [Int32: Int]?) -> Int {
        // Fast path: the best host of all compatible classes usually fits; then no frontier is needed.
        var best = Node.empty
        for c in compatible {
            let root = nodes[classes[Int(c)].base + 1]
            if root.beats(best) { best = root }
        }
        let top = Int(best.host)
        if top >= 0, freeMemory[top] >= memory, freeVcpus[top] >= vcpus, avoid?[best.host] == nil { return top }
        heap.removeAll(keepingCapacity: true)
        for c in compatible {
            let root = classes[Int(c)].base + 1
            if nodes[root].fits(memory: memory, vcpus: vcpus) { push(Entry(nodes[root], node: root, classIndex: c)) }
        }
        while let entry = pop() {
            let hostClass = classes[Int(entry.classIndex)]
            let local = entry.node - hostClass.base
            if local >= hostClass.size {
                // A leaf that fits; only the anti-affinity group can still reject it.
                if let avoid, avoid[entry.host] != nil { continue }
                return Int(entry.host)
            }
            let left = hostClass.base + 2 * local
            if nodes[left].fits(memory: memory, vcpus: vcpus) {
                push(Entry(nodes[left], node: left, classIndex: entry.classIndex))
            }
            if nodes[left + 1].fits(memory: memory, vcpus: vcpus) {
                push(Entry(nodes[left + 1], node: left + 1, classIndex: entry.classIndex))
            }
        }
        return -1
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].beats(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func pop() -> Entry? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { break }
            var best = left
            if left + 1 < heap.count && heap[left + 1].beats(heap[left]) { best = left + 1 }
            guard heap[best].beats(heap[parent]) else { break }
            heap.swapAt(best, parent)
            parent = best
        }
        return top
    }

    private func leaf(_ host: Int) -> Node {
        Node(
            score: policy.score(
                freeMemoryMib: freeMemory[host], instances: instances[host], largestMemoryMib: largestMemory),
            host: Int32(host), maxFreeMemory: freeMemory[host], maxFreeVcpus: freeVcpus[host])
    }

    /// Recomputes a host's leaf and the path to its class's root.
    private mutating func refresh(_ host: Int) {
        let hostClass = classes[Int(self.hostClass[host])]
        let base = hostClass.base
        var k = hostClass.size + Int(leafSlot[host])
        nodes[base + k] = leaf(host)
        k /= 2
        while k >= 1 {
            nodes[base + k] = Node.combine(nodes[base + 2 * k], nodes[base + 2 * k + 1])
            k /= 2
        }
    }

    private func index(of hostId: String) -> Int? {
        var low = 0
        var high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < hostId { low = middle + 1 } else { high = middle }
        }
        return low < ids.count && ids[low] == hostId ? low : nil
    }

    // MARK: - Static filters

    private mutating func compatibility(for request: PlacementRequest) -> Compatibility {
        let requirement = StaticRequirement(request)
        if let cached = compatibility[requirement] { return cached }
        let reasons = classes.map { requirement.rejection(of: $0.attributes) }
        let found = Compatibility(
            classes: reasons.indices.filter { reasons[$0] == nil }.map(Int32.init),
            mask: reasons.map { $0 == nil }, reasons: reasons)
        compatibility[requirement] = found
        return found
    }

    /// Runs every filter over every host to say which one removed each.
    private mutating func explain(_ request: PlacementRequest, memory: Int, vcpus: Int) -> NoValidHost {
        let filters = SchedulerFilter.allCases
        let staticReason = compatibility(for: request).reasons.map { $0.flatMap { filters.firstIndex(of: $0) } ?? -1 }
        let groupFilter = filters.firstIndex(of: .group)!
        let vcpuFilter = filters.firstIndex(of: .vcpus)!
        let memoryFilter = filters.firstIndex(of: .memory)!
        var counts = [Int](repeating: 0, count: filters.count)
        var groupHosts: [Int32: Int] = [:]
        var affinity = false
        if let requested = request.group, let hosts = members[requested.name], !hosts.isEmpty {
            groupHosts = hosts
            affinity = requested.policy == .affinity
        }
        for host in ids.indices {
            var reason = staticReason[Int(hostClass[host])]
            if reason < 0, !groupHosts.isEmpty, affinity == (groupHosts[Int32(host)] == nil) {
                reason = groupFilter
            }
            if reason < 0, freeVcpus[host] < vcpus { reason = vcpuFilter }
            if reason < 0, freeMemory[host] < memory { reason = memoryFilter }
            precondition(reason >= 0, "host \(ids[host]) passes every filter but the search missed it")
            counts[reason] += 1
        }
        var removed: [SchedulerFilter: Int] = [:]
        for (index, count) in counts.enumerated() where count > 0 { removed[filters[index]] = count }
        return NoValidHost(hostCount: ids.count, removed: removed)
    }
}

// MARK: - Storage types

/// Hosts that share every static attribute, and where their tree lives in `nodes`.
private struct HostClass: Sendable {
    struct Attributes: Hashable, Sendable {
        var enabled: Bool
        var zone: String?
        var hypervisors: Set<String>
        var machineTypes: Set<String>
        var accelerators: Set<String>
        var labels: [String: String]

        init(_ host: HostState) {
            enabled = host.enabled
            zone = host.zone
            hypervisors = Set(host.hypervisors)
            machineTypes = Set(host.machineTypes)
            accelerators = Set(host.accelerators)
            labels = host.labels
        }
    }

    var attributes: Attributes
    var base: Int
    /// Leaf count, a power of two.
    var size: Int
}

/// The part of a request the static filters look at; the key of the compatibility cache.
private struct StaticRequirement: Hashable, Sendable {
    var hypervisor: String?
    var machineType: String?
    var accelerator: String?
    var zone: String?
    var labels: [String: String]

    init(_ request: PlacementRequest) {
        hypervisor = request.hypervisor
        machineType = request.machineType
        accelerator = request.accelerator
        zone = request.zone
        labels = request.labels
    }

    /// The first static filter that rejects hosts with these attributes, in pipeline order.
    func rejection(of host: HostClass.Attributes) -> SchedulerFilter? {
        if !host.enabled { return .disabled }
        if let zone, host.zone != zone { return .zone }
        if let hypervisor, !host.hypervisors.contains(hypervisor) { return .hypervisor }
        if let machineType, !host.machineTypes.contains(machineType) { return .machineType }
        if let accelerator, !host.accelerators.contains(accelerator) { return .accelerator }
        if labels.contains(where: { host.labels[$0.key] != $0.value }) { return .labels }
        return nil
    }
}

private struct Compatibility: Sendable {
    var classes: [Int32]
    var mask: [Bool]
    var reasons: [SchedulerFilter?]
}

/// A tree node: the best host below it and the most room any host below it has.
private struct Node: Sendable {
    var score: Int
    var host: Int32
    var maxFreeMemory: Int
    var maxFreeVcpus: Int

    static let empty = Node(score: .min, host: -1, maxFreeMemory: .min, maxFreeVcpus: .min)

    /// Higher score wins; equal scores go to the smaller host index (= smaller id).
    @inline(__always) func beats(_ other: Node) -> Bool {
        score != other.score ? score > other.score : host >= 0 && (other.host < 0 || host < other.host)
    }

    @inline(__always) func fits(memory: Int, vcpus: Int) -> Bool {
        maxFreeMemory >= memory && maxFreeVcpus >= vcpus
    }

    @inline(__always) static func combine(_ left: Node, _ right: Node) -> Node {
        let best = left.beats(right) ? left : right
        return Node(
            score: best.score, host: best.host, maxFreeMemory: max(left.maxFreeMemory, right.maxFreeMemory),
            maxFreeVcpus: max(left.maxFreeVcpus, right.maxFreeVcpus))
    }
}

/// A search frontier entry: a node, its key copied for cache-friendly heap compares.
private struct Entry: Sendable {
    var score: Int
    var host: Int32
    var classIndex: Int32
    var node: Int

    init(_ node: Node, node index: Int, classIndex: Int32) {
        score = node.score
        host = node.host
        self.node = index
        self.classIndex = classIndex
    }

    @inline(__always) func beats(_ other: Entry) -> Bool {
        score != other.score ? score > other.score : host < other.host
    }
}
