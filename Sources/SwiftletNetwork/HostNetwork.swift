import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletHypervisor

/// The host side of networks, from the state the controller sends (it never reads a store):
/// a bridge per network, joined to the other hosts by VXLAN, a TAP per port of a running VM, and
/// the ruleset.
///
/// A TAP exists exactly while its instance's VM does (`plug` before spawn, `unplug` when the VM
/// goes); the rules cover exactly the plugged TAPs and the segments of the last state.
public actor HostNetwork {
    public nonisolated let driver: any NetworkDriver
    private let logger: Logger
    /// The last state applied (nil until the controller sent one).
    private var state: HostNetworkState?
    /// Network id → why its segment could not be set up here: ports on it cannot be plugged.
    private var broken: [String: SwiftletError] = [:]
    /// Instance id → its TAPs and whether its ports are filtered by security groups.
    private var plugged: [String: PluggedPorts] = [:]
    /// Whether the TAPs of the VMs that outlived the agent are known (`recover`): until then the
    /// rules in the kernel stay as the last agent left them, so no running VM goes unguarded.
    private var recovered = false

    private struct PluggedPorts {
        var taps: [String]
        var filtered: Bool
    }

    // Rules are re-rendered from the state; concurrent requests share one run.
    private var wantedGeneration = 0
    private var appliedGeneration = 0
    private var syncing = false
    private var lastSyncError: SwiftletError?
    private var syncWaiters: [(generation: Int, continuation: CheckedContinuation<SwiftletError?, Never>)] = []

    public init(driver: any NetworkDriver, logger: Logger) {
        self.driver = driver
        self.logger = logger
    }

    public nonisolated var prefix: String { driver.prefix }

    /// The bridge of a network on every host.
    public static func bridgeName(prefix: String, networkId: String) -> String { prefix + "-" + networkId.suffix(8) }
    /// What the name of every port's TAP starts with.
    public static func tapPrefix(_ prefix: String) -> String { prefix + "t" }
    /// The VXLAN device joining a network's bridge to the other hosts.
    static func tunnelName(prefix: String, networkId: String) -> String { prefix + "x" + networkId.suffix(8) }

    /// Refuses a CIDR the host already routes elsewhere (it would steal the host's traffic).
    public func checkHostRoutes(_ block: CIDRBlock) async throws(SwiftletError) {
        let conflicts = await driver.conflictingRoutes(block)
        if !conflicts.isEmpty {
            throw SwiftletError(
                .conflict, "network.host_route",
                "\(block.description) overlaps a route of this host (\(conflicts.joined(separator: ", ")))")
        }
    }

    // MARK: - State

    /// Makes the host's segments and tunnels match `state`, removes those of networks that are
    /// gone, and applies the rules. A segment that cannot be made (or would take a route this host
    /// has) is logged and remembered: the boots of instances on it fail with that reason, the other
    /// networks work. A state older than the one applied is ignored, unless it comes with a full
    /// sync (`resetting`: after a controller restart versions start again).
    public func apply(_ state: HostNetworkState, resetting: Bool = false) async {
        guard state.devicePrefix == driver.prefix else {
            logger.error(
                "network state for another device prefix ignored",
                metadata: ["network.prefix": "\(state.devicePrefix)", "host.prefix": "\(driver.prefix)"])
            return
        }
        if let current = self.state, !resetting {
            // Re-running every command for a state already in place costs a few ms per network.
            if state.version < current.version || (state == current && broken.isEmpty) { return }
        }
        self.state = state
        var broken: [String: SwiftletError] = [:]
        var wantedTunnels = Set<String>()
        let existing = (try? await driver.devices()) ?? HostDevices(segments: [], taps: [])
        for segment in state.segments {
            do throws(SwiftletError) {
                if !existing.segments.contains(segment.bridge), let block = CIDRBlock.parse(segment.cidr) {
                    try await checkHostRoutes(block)
                }
                try await driver.ensureSegment(spec(segment))
                if !state.peers.isEmpty {
                    let tunnel = Self.tunnelName(prefix: driver.prefix, networkId: segment.networkId)
                    // Kept when the update fails: a tunnel that worked keeps working.
                    wantedTunnels.insert(tunnel)
                    try await driver.ensureTunnel(
                        TunnelSpec(
                            name: tunnel, segment: segment.bridge, vni: segment.vni, mtu: segment.mtu,
                            peers: state.peers))
                }
            } catch {
                logger.error(
                    "cannot set up network on this host",
                    metadata: ["network.id": "\(segment.networkId)", "error": "\(error)"])
                broken[segment.networkId] = error
            }
        }
        self.broken = broken
        // What this run made is wanted: only devices found before it can be stale.
        for tunnel in existing.tunnels.subtracting(wantedTunnels) { await driver.removeTunnel(name: tunnel) }
        for bridge in existing.segments.subtracting(state.segments.map(\.bridge)) {
            logger.info("removing the bridge of a network that is gone", metadata: ["device": "\(bridge)"])
            await driver.removeSegment(name: bridge)
        }
        guard recovered else { return }
        if let error = await syncRules() { logger.error("cannot apply network rules", metadata: ["error": "\(error)"]) }
    }

    private func spec(_ segment: NetworkSegment) -> SegmentSpec {
        SegmentSpec(
            name: segment.bridge, gateway: segment.gateway, prefixLength: segment.prefixLength, mtu: segment.mtu,
            mac: segment.gatewayMac)
    }

    // MARK: - Ports

    /// Makes the TAPs of an instance's ports (with `filtered`, guarded by the instance's security
    /// groups; with no policy yet, nothing is let in but replies); returns what the VMM attaches.
    /// Nothing stays behind when it throws.
    public func plug(instanceId: String, ports: [NetworkPort], filtered: Bool) async throws(SwiftletError)
        -> [TapAttachment]
    {
        guard !ports.isEmpty else { return [] }
        var made: [String] = []
        do throws(SwiftletError) {
            for port in ports {
                if let error = broken[port.networkId] { throw error }
                guard let segment = state?.segments.first(where: { $0.networkId == port.networkId }) else {
                    throw SwiftletError(
                        .conflict, "network.not_on_host", "network '\(port.networkName)' is not set up on this host")
                }
                do {
                    try await driver.ensureTap(name: port.tap, segment: segment.bridge, mtu: segment.mtu)
                } catch {
                    // The bridge is made with the network's state; if something removed it since,
                    // bring it back once instead of failing the boot.
                    try await driver.ensureSegment(spec(segment))
                    try await driver.ensureTap(name: port.tap, segment: segment.bridge, mtu: segment.mtu)
                }
                made.append(port.tap)
            }
            plugged[instanceId] = PluggedPorts(taps: made, filtered: filtered)
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
        guard let ports = plugged.removeValue(forKey: instanceId) else { return }
        _ = await syncRules()
        for tap in ports.taps { await driver.removeTap(name: tap) }
        logger.debug("unplugged", metadata: ["instance.id": "\(instanceId)", "taps": "\(ports.taps)"])
    }

    // MARK: - Restart

    /// After the agent's start: keeps the TAPs of the VMs it re-attaches to (`keeping`: instance id
    /// → its ports and whether they are filtered) and removes every other TAP of this deployment.
    public func recover(keeping: [String: (ports: [NetworkPort], filtered: Bool)]) async {
        plugged = [:]
        recovered = true
        let byTap = Dictionary(
            keeping.flatMap { instanceId, kept in kept.ports.map { ($0.tap, instanceId) } },
            uniquingKeysWith: { a, _ in a })
        do {
            for tap in try await driver.devices().taps {
                if let instanceId = byTap[tap], let kept = keeping[instanceId] {
                    plugged[instanceId, default: PluggedPorts(taps: [], filtered: kept.filtered)].taps.append(tap)
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

    /// Re-renders the rules from the state and the plugged TAPs, applies them, and returns the
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
                try await driver.apply(currentRuleset())
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

    private func currentRuleset() -> Ruleset {
        guard let state else { return Ruleset(segments: [], filteredPorts: []) }
        let tunnels = !state.peers.isEmpty
        let segments = state.segments.map {
            Ruleset.Segment(
                device: $0.bridge, cidr: $0.cidr, mode: $0.mode,
                tunnel: tunnels ? Self.tunnelName(prefix: driver.prefix, networkId: $0.networkId) : nil,
                gatewayMac: $0.gatewayMac)
        }
        var filtered: [Ruleset.FilteredPort] = []
        for (instanceId, ports) in plugged.sorted(by: { $0.key < $1.key }) where ports.filtered {
            let policy = state.policies[instanceId] ?? PortPolicy(rules: [], peers: [])
            for tap in ports.taps {
                filtered.append(Ruleset.FilteredPort(tap: tap, peers: policy.peers, rules: policy.rules))
            }
        }
        return Ruleset(segments: segments, filteredPorts: filtered)
    }
}
