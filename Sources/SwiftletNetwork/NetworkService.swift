import Foundation
import Logging
import SwiftletCore
import SwiftletHypervisor
import SwiftletStore

/// The host side of networks: segments for networks, TAPs for the ports of running VMs, and
/// the ruleset, all derived from the store so that a restart finds and fixes everything.
///
/// A TAP exists exactly while its instance's VM does (`plug` before spawn, `unplug` when the VM
/// goes); the rules cover exactly the plugged TAPs and the stored networks.
public actor NetworkService {
    public typealias Store = SwiftletStore & NetworkStore

    public nonisolated let driver: any NetworkDriver
    public nonisolated let store: any Store
    private let logger: Logger
    /// Instance id → TAP names on the host.
    private var plugged: [String: [String]] = [:]

    // Rules are re-rendered from the store; concurrent requests share one run.
    private var wantedGeneration = 0
    private var appliedGeneration = 0
    private var syncing = false
    private var lastSyncError: SwiftletError?
    private var syncWaiters: [(generation: Int, continuation: CheckedContinuation<SwiftletError?, Never>)] = []

    public init(driver: any NetworkDriver, store: any Store, logger: Logger) {
        self.driver = driver
        self.store = store
        self.logger = logger
    }

    public nonisolated var segmentPrefix: String { driver.prefix + "-" }
    public nonisolated var tapPrefix: String { driver.prefix + "t" }

    public nonisolated func segmentName(networkId: String) -> String { segmentPrefix + networkId.suffix(8) }

    // MARK: - Networks

    /// Refuses a CIDR the host already routes elsewhere (it would steal the host's traffic).
    public func checkHostRoutes(_ block: CIDRBlock) async throws(SwiftletError) {
        let conflicts = await driver.conflictingRoutes(block)
        if !conflicts.isEmpty {
            throw SwiftletError(
                .conflict, "network.host_route",
                "\(block.description) overlaps a route of this host (\(conflicts.joined(separator: ", ")))")
        }
    }

    public func networkCreated(_ network: Network) async throws(SwiftletError) {
        try await driver.ensureSegment(spec(network))
        if let error = await syncRules() {
            await driver.removeSegment(name: network.bridge)
            throw error
        }
    }

    public func networkDeleted(_ network: Network) async {
        _ = await syncRules()
        await driver.removeSegment(name: network.bridge)
    }

    private func spec(_ network: Network) -> SegmentSpec {
        SegmentSpec(
            name: network.bridge, gateway: network.gateway,
            prefixLength: CIDRBlock.parse(network.cidr)?.prefixLength ?? 24,
            mtu: network.mtu)
    }

    // MARK: - Ports

    /// Makes the TAPs of an instance's ports and the rules that guard them; returns what the
    /// VMM attaches. Nothing stays behind when it throws.
    public func plug(instanceId: String) async throws(SwiftletError) -> [TapAttachment] {
        let ports = try store.ports(networkId: nil, instanceId: instanceId)
        guard !ports.isEmpty else { return [] }
        let networks = Dictionary(
            try store.networks(projectId: nil).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var made: [String] = []
        do throws(SwiftletError) {
            for port in ports {
                guard let network = networks[port.networkId] else {
                    throw SwiftletError.notFound("network", port.networkId)
                }
                do {
                    try await driver.ensureTap(name: port.tap, segment: network.bridge, mtu: network.mtu)
                } catch {
                    // The bridge is made with the network and on every start; if something removed
                    // it since, bring it back once instead of failing the boot.
                    try await driver.ensureSegment(spec(network))
                    try await driver.ensureTap(name: port.tap, segment: network.bridge, mtu: network.mtu)
                }
                made.append(port.tap)
            }
            plugged[instanceId] = made
            if let error = await syncRules() { throw error }
        } catch {
            plugged[instanceId] = nil
            for tap in made { await driver.removeTap(name: tap) }
            _ = await syncRules()
            throw error
        }
        logger.debug("plugged", metadata: ["instance.id": "\(instanceId)", "taps": "\(made)"])
        return ports.map { TapAttachment(name: $0.tap, mac: $0.mac) }
    }

    public func unplug(instanceId: String) async {
        guard let taps = plugged.removeValue(forKey: instanceId) else { return }
        _ = await syncRules()
        for tap in taps { await driver.removeTap(name: tap) }
        logger.debug("unplugged", metadata: ["instance.id": "\(instanceId)", "taps": "\(taps)"])
    }

    // MARK: - Restart

    /// After a start: brings back every network's segment, keeps the TAPs of instances whose VM
    /// may still run (a stored handle), and removes every other device and rule of this
    /// deployment. Run before the agent re-attaches its VMs.
    public func recover() async {
        do {
            let networks = try store.networks(projectId: nil)
            let handles = Set(try store.allHandles().map(\.instanceId))
            let ports = try store.ports(networkId: nil, instanceId: nil)
            let devices = try await driver.devices()
            for network in networks {
                do { try await driver.ensureSegment(spec(network)) } catch {
                    logger.error(
                        "cannot restore network", metadata: ["network.id": "\(network.id)", "error": "\(error)"])
                }
            }
            for segment in devices.segments.subtracting(networks.map(\.bridge)) {
                logger.warning("removing orphan bridge", metadata: ["device": "\(segment)"])
                await driver.removeSegment(name: segment)
            }
            plugged = [:]
            let byTap = Dictionary(ports.map { ($0.tap, $0.instanceId) }, uniquingKeysWith: { a, _ in a })
            for tap in devices.taps {
                if let instanceId = byTap[tap], handles.contains(instanceId) {
                    plugged[instanceId, default: []].append(tap)
                } else {
                    logger.warning("removing orphan TAP", metadata: ["device": "\(tap)"])
                    await driver.removeTap(name: tap)
                }
            }
        } catch {
            logger.error("network recovery failed", metadata: ["error": "\(error)"])
        }
        if let error = await syncRules() { logger.error("cannot apply network rules", metadata: ["error": "\(error)"]) }
    }

    // MARK: - Rules

    /// Re-renders the rules from the store and the plugged TAPs, applies them, and returns the
    /// error if that failed. Callers that arrive while a run is going share the next one.
    @discardableResult
    public func syncRules() async -> SwiftletError? {
        wantedGeneration += 1
        let mine = wantedGeneration
        if !syncing {
            syncing = true
            Task { await self.runSyncs() }
        }
        return await withCheckedContinuation { continuation in
            syncWaiters.append((mine, continuation))
        }
    }

    private func runSyncs() async {
        while appliedGeneration < wantedGeneration {
            let target = wantedGeneration
            do {
                try await driver.apply(try currentRuleset())
                lastSyncError = nil
            } catch {
                logger.error("applying network rules failed", metadata: ["error": "\(error)"])
                lastSyncError = error
            }
            appliedGeneration = target
            let done = syncWaiters.filter { $0.generation <= target }
            syncWaiters.removeAll { $0.generation <= target }
            for waiter in done { waiter.continuation.resume(returning: lastSyncError) }
        }
        syncing = false
    }

    private func currentRuleset() throws(SwiftletError) -> Ruleset {
        let networks = try store.networks(projectId: nil)
        let segments = networks.map { Ruleset.Segment(device: $0.bridge, cidr: $0.cidr, mode: $0.mode) }
        let membership = try store.securityGroupMembership()
        guard !membership.isEmpty, !plugged.isEmpty else { return Ruleset(segments: segments, filteredPorts: []) }
        let groups = Dictionary(
            try store.securityGroups(projectId: nil).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        // Peers are the members whose VM runs now: a stopped or deleted member's address may be
        // handed to someone else.
        let ports = try store.ports(networkId: nil, instanceId: nil).filter { plugged[$0.instanceId] != nil }
        let addresses = Dictionary(grouping: ports, by: \.instanceId).mapValues { $0.map(\.address) }
        var members: [String: Set<String>] = [:]
        for (instanceId, groupIds) in membership {
            for groupId in groupIds { members[groupId, default: []].formUnion(addresses[instanceId] ?? []) }
        }
        var filtered: [Ruleset.FilteredPort] = []
        for (instanceId, taps) in plugged.sorted(by: { $0.key < $1.key }) {
            guard let groupIds = membership[instanceId] else { continue }
            let peers = groupIds.reduce(into: Set<String>()) { $0.formUnion(members[$1] ?? []) }
            let rules = groupIds.flatMap { groups[$0]?.rules ?? [] }
            for tap in taps { filtered.append(Ruleset.FilteredPort(tap: tap, peers: peers.sorted(), rules: rules)) }
        }
        return Ruleset(segments: segments, filteredPorts: filtered)
    }
}
