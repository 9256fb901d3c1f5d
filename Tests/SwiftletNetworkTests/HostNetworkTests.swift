import Foundation
import Logging
import SwiftletAgent
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletNetwork
import Testing

/// A fake network driver (no devices are made) that records what the host side asks of it and
/// fails where told: the host's network state machine without root.
final class RecordingNetworkDriver: NetworkDriver, @unchecked Sendable {
    // @unchecked: every member is guarded by `lock`.
    let prefix = "tst"
    private let lock = NSLock()
    private var segments: [String: SegmentSpec] = [:]
    private var tunnels: [String: TunnelSpec] = [:]
    private var taps: [String: String] = [:]
    private(set) var rulesets: [Ruleset] = []
    /// Segments whose tunnel cannot be made (as when a host lacks the vxlan module).
    var failingTunnels: Set<String> = []

    func ensureSegment(_ segment: SegmentSpec) async throws(SwiftletError) {
        locked { segments[segment.name] = segment }
    }
    func removeSegment(name: String) async { locked { segments[name] = nil } }
    func ensureTap(name: String, segment: String, mtu: Int) async throws(SwiftletError) {
        let known = locked { segments[segment] != nil }
        guard known else { throw SwiftletError(.internal, "test.no_segment", "no segment \(segment)") }
        locked { taps[name] = segment }
    }
    func removeTap(name: String) async { locked { taps[name] = nil } }
    func ensureTunnel(_ tunnel: TunnelSpec) async throws(SwiftletError) {
        if locked({ failingTunnels.contains(tunnel.segment) }) {
            throw SwiftletError(.internal, "network.host_failed", "vxlan: operation not supported")
        }
        locked { tunnels[tunnel.name] = tunnel }
    }
    func removeTunnel(name: String) async { locked { tunnels[name] = nil } }
    func devices() async throws(SwiftletError) -> HostDevices {
        locked { HostDevices(segments: Set(segments.keys), taps: Set(taps.keys), tunnels: Set(tunnels.keys)) }
    }
    func apply(_ ruleset: Ruleset) async throws(SwiftletError) { locked { rulesets.append(ruleset) } }
    func conflictingRoutes(_ block: CIDRBlock) async -> [String] { [] }

    var snapshot: (segments: [String: SegmentSpec], tunnels: [String: TunnelSpec], taps: [String: String]) {
        locked { (segments, tunnels, taps) }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}

@Suite struct HostNetworkTests {
    static func segment(_ id: String, vni: Int) -> NetworkSegment {
        NetworkSegment(
            networkId: id, bridge: "tst-" + id.suffix(8), cidr: "10.7.\(vni).0/24", gateway: "10.7.\(vni).1",
            prefixLength: 24, mtu: 1450, mode: .isolated, vni: vni, gatewayMac: "02:00:00:00:00:0\(vni)")
    }

    static func port(_ id: String, network: NetworkSegment, address: String) -> NetworkPort {
        NetworkPort(
            id: id, networkId: network.networkId, networkName: "n", instanceId: "i-1", address: address,
            prefixLength: 24, gateway: network.gateway, mac: "02:aa:00:00:00:0\(id.suffix(1))", tap: "tstt" + id)
    }

    @Test func segmentsAndTunnelsFollowTheStateAndAFailedTunnelFailsOnlyItsPorts() async throws {
        let driver = RecordingNetworkDriver()
        let network = HostNetwork(driver: driver, logger: Logger(label: "test"))
        let good = Self.segment("net-00000001", vni: 1)
        let bad = Self.segment("net-00000002", vni: 2)
        driver.failingTunnels = [bad.bridge]
        await network.apply(
            HostNetworkState(
                version: 1, devicePrefix: "tst", segments: [good, bad], peers: ["10.0.0.2", "10.0.0.3"],
                policies: [:]))
        var devices = driver.snapshot
        #expect(devices.segments[good.bridge]?.mac == good.gatewayMac, "every host gives the gateway one MAC")
        #expect(devices.tunnels["tstx00000001"]?.vni == 1)
        #expect(devices.tunnels["tstx00000001"]?.peers == ["10.0.0.2", "10.0.0.3"])
        #expect(devices.tunnels["tstx00000002"] == nil)

        // Two NICs, one on each network: the one whose tunnel failed fails the plug, and the TAP
        // already made for the other is removed again.
        let ports = [
            Self.port("p1", network: good, address: "10.7.1.5"), Self.port("p2", network: bad, address: "10.7.2.5"),
        ]
        await #expect(throws: SwiftletError.self) {
            _ = try await network.plug(instanceId: "i-1", ports: ports, filtered: false)
        }
        #expect(driver.snapshot.taps.isEmpty, "nothing is left half-plugged")
        let taps = try await network.plug(instanceId: "i-1", ports: [ports[0]], filtered: true)
        #expect(taps.map(\.name) == ["tsttp1"])
        // In a group with no policy sent yet: only replies get in (an empty rule list).
        #expect(driver.rulesets.last?.filteredPorts.first?.rules == [])

        // The other hosts went away and the second network was deleted: its bridge and every
        // tunnel go; the first network's bridge stays with its TAP.
        await network.apply(
            HostNetworkState(version: 3, devicePrefix: "tst", segments: [good], peers: [], policies: [:]))
        // A state made before that one, arriving late, changes nothing.
        await network.apply(
            HostNetworkState(
                version: 2, devicePrefix: "tst", segments: [good, bad], peers: ["10.0.0.2"], policies: [:]))
        devices = driver.snapshot
        #expect(devices.tunnels.isEmpty)
        #expect(Set(devices.segments.keys) == [good.bridge])
        #expect(devices.taps["tsttp1"] == good.bridge)
        await network.unplug(instanceId: "i-1")
        #expect(driver.snapshot.taps.isEmpty)
    }

    @Test func aStateForAnotherDevicePrefixIsIgnored() async {
        let driver = RecordingNetworkDriver()
        let network = HostNetwork(driver: driver, logger: Logger(label: "test"))
        await network.apply(
            HostNetworkState(
                version: 1, devicePrefix: "swl", segments: [Self.segment("net-00000001", vni: 1)], peers: [],
                policies: [:]))
        #expect(driver.snapshot.segments.isEmpty)
    }

    @Test func severalPortsBecomeAddressesTiedToTheirMACs() {
        let network = Self.segment("net-00000001", vni: 1)
        var instance = Instance(
            id: "i-1", projectId: "p", name: "fw", imageId: "img", flavor: nil, vcpus: 1, memoryMib: 16, args: [],
            restartPolicy: .no, publishedPorts: [], state: .building, timeline: .starting(at: 0), createdAt: .now,
            updatedAt: .now)
        instance.ports = [Self.port("p1", network: network, address: "10.7.1.5")]
        #expect(CommandLineRenderer.render(instance) == "name=fw ip=10.7.1.5/24 gw=10.7.1.1")
        instance.ports?.append(Self.port("p2", network: Self.segment("net-00000002", vni: 2), address: "10.7.2.5"))
        #expect(
            CommandLineRenderer.render(instance)
                == "name=fw ip=10.7.1.5/24 gw=10.7.1.1 mac=02:aa:00:00:00:01 ip1=10.7.2.5/24 mac1=02:aa:00:00:00:02")
    }

    /// A bare word is passed as it is and sets no key: a bare `name` does not stand for `name=`.
    @Test func bareWordsArePassedAsTheyAre() {
        let instance = Instance(
            id: "i-1", projectId: "p", name: "solo", imageId: "img", flavor: nil, vcpus: 1, memoryMib: 16,
            args: ["Hello_Solo5", "name"], restartPolicy: .no, publishedPorts: [], state: .building,
            timeline: .starting(at: 0), createdAt: .now, updatedAt: .now)
        #expect(CommandLineRenderer.render(instance) == "name=solo Hello_Solo5 name")
    }
}
