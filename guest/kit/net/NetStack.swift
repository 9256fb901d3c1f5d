// The network stack object: owns the interfaces (up to four NICs, each with
// its address and ARP cache), the UDP bindings and the TCP connection table.
// Single-threaded: everything runs from `poll`, called by the kit's run loop;
// the interrupt hook only acknowledges.

/// One NIC and its IPv4 address.
final class NetInterface {
    let nic: VirtioNet
    let address: UInt32
    let prefixLength: Int
    let netmask: UInt32
    /// 0 when there is no gateway on this link.
    let gateway: UInt32
    var arp = ARPCache()

    init(nic: VirtioNet, address: UInt32, prefixLength: Int, gateway: UInt32) {
        self.nic = nic
        self.address = address
        self.prefixLength = prefixLength
        self.netmask = prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength)
        self.gateway = gateway
    }

    var mac: MACAddress { nic.mac }
    var broadcastAddress: UInt32 { address | ~netmask }

    func isOnLink(_ destination: UInt32) -> Bool { destination & netmask == address & netmask }

    /// The address whose MAC a packet to `destination` goes to.
    func nextHop(for destination: UInt32) -> UInt32 {
        gateway != 0 && !isOnLink(destination) ? gateway : destination
    }

    var summary: String {
        "net: virtio-net \(nic.isLegacy ? "legacy" : "modern") slot \(nic.slot) mac \(mac.description)"
            + " ip \(ipv4Text(address))/\(prefixLength) gw \(gateway == 0 ? "none" : ipv4Text(gateway))"
    }
}

final class NetStack {
    /// In config order: `interfaces[0]` has `ip=` (and `gw=`), the others `ip1=`…`ip3=`.
    let interfaces: [NetInterface]
    var counters = NetCounters()
    /// The time of the current poll, in microseconds since entry.
    var now: UInt64 = 0
    var udpBindings: [UDPBinding] = []
    var listeners: [TCPListener] = []
    var connections: [TCPConnection] = []
    var ipIdentification: UInt16 = 1
    var random = SystemRandomNumberGenerator()
    /// Silent until `activate`: every received frame is dropped, nothing is sent.
    var standby = false
    /// No new connection, request or datagram is taken until `resume`.
    var quiesced = false
    /// While `quiesce` waits for in-flight responses: when it answers anyway.
    var quiesceAnswerDeadline: UInt64? = nil

    /// The config keys `start()` reads; apps pass them to `Config.load(allowed:)`.
    static let configKeys = ["gw", "standby"] + Config.interfaceAddressKeys + Config.macKeys

    private init(interfaces: [NetInterface]) {
        self.interfaces = interfaces
    }

    /// Brings up one NIC per configured address: `ip=a.b.c.d/prefix` with
    /// `gw=a.b.c.d` (defaults: QEMU user networking, 10.0.2.15/24 via
    /// 10.0.2.2), and `ip1=` … `ip3=` for more NICs. `mac=` / `mac<i>=` name the
    /// NIC an address belongs to; addresses without one take the remaining NICs
    /// in slot order. A missing NIC is fatal: the app cannot do its job without it.
    static func start() -> NetStack {
        var wanted: [InterfaceConfig] = [InterfaceConfig(index: 0)]
        for index in 1..<VirtioNet.maxDevices {
            let ipKey = Config.interfaceAddressKeys[index]
            if Config.string(ipKey) != nil {
                wanted.append(InterfaceConfig(index: index))
            } else if Config.string(Config.macKeys[index]) != nil {
                Config.fail(key: Config.macKeys[index], reason: "no \(ipKey) for it")
            }
        }
        let devices = VirtioMMIO.all(deviceID: 1).map { found in
            (device: found.device, slot: found.slot, mac: VirtioNet.peekMAC(found.device))
        }
        // No NIC (or one the kit cannot drive) is a deployment mistake, not a guest bug.
        if devices.isEmpty { Config.fail(key: "net", reason: "no virtio-net device on the virtio-mmio slots") }
        var claimed = [Bool](repeating: false, count: devices.count)
        var deviceFor = [Int](repeating: -1, count: wanted.count)
        // Named NICs first, so an address without a MAC cannot take one another address names.
        for (position, config) in wanted.enumerated() {
            guard let mac = config.mac else { continue }
            guard let index = devices.indices.first(where: { !claimed[$0] && devices[$0].mac == mac }) else {
                Config.fail(key: config.macKey, reason: "no virtio-net device with MAC \(mac.description)")
            }
            claimed[index] = true
            deviceFor[position] = index
        }
        for (position, config) in wanted.enumerated() where config.mac == nil {
            guard let index = claimed.firstIndex(of: false) else {
                Config.fail(key: config.ipKey, reason: "no virtio-net device left for it")
            }
            claimed[index] = true
            deviceFor[position] = index
        }
        var interfaces: [NetInterface] = []
        for (position, config) in wanted.enumerated() {
            let device = devices[deviceFor[position]]
            switch VirtioNet.start(device: device.device, slot: device.slot) {
            case .success(let nic):
                interfaces.append(
                    NetInterface(
                        nic: nic, address: config.address, prefixLength: config.prefixLength, gateway: config.gateway))
            case .failure(let error): Config.fail(key: "net", reason: error.message)
            }
        }
        let stack = NetStack(interfaces: interfaces)
        stack.now = Clock.nowMicros()
        stack.standby = Config.integer("standby", default: 0, range: 0...1) == 1
        Console.subsystemHandlers.append { line in stack.handleMigrationCommand(line) }
        for interface in interfaces {
            stack.sendGratuitousARP(on: interface)
            interface.nic.flush()
        }
        return stack
    }

    /// Drains received frames, runs timers and sends what they produced.
    /// Returns the next time it needs to run (UInt64.max: only on a frame).
    func poll(now: UInt64) -> UInt64 {
        self.now = now
        for interface in interfaces {
            interface.nic.receive { frame in receiveFrame(frame, on: interface) }
        }
        var deadline = tcpTimers()
        deadline = min(deadline, arpTimers())
        flush()
        return min(deadline, answerQuiesceIfDrained())
    }

    /// Hands the NICs what was sent since the last flush; `poll` does it too,
    /// an app calls it after sending from its own timers.
    func flush() {
        for interface in interfaces { interface.nic.flush() }
    }

    /// The interface a packet to `destination` leaves by: the one whose subnet
    /// holds it, else the one with a gateway, else the first (with no gateway
    /// every destination is on-link there, as with a single NIC).
    func route(_ destination: UInt32) -> NetInterface {
        interfaces.first { $0.isOnLink(destination) } ?? interfaces.first { $0.gateway != 0 } ?? interfaces[0]
    }

    func isLocalAddress(_ address: UInt32) -> Bool {
        interfaces.contains { $0.address == address }
    }

    /// One line per interface; apps print it after READY, since every console
    /// byte is a VM exit and READY should come first.
    var summary: String {
        var lines = interfaces[0].summary
        for interface in interfaces.dropFirst() { lines += "\n" + interface.summary }
        return lines
    }

    /// The counters, summed over the interfaces.
    func countersText() -> String { "net: " + counters.text }

    /// Makes the console line `netstats` print the counters.
    func installConsoleCommands() {
        Console.lineHandler = { [self] line in
            if Config.same(line, "netstats") {
                print(countersText())
            } else {
                print("swiftlet: unknown command: \(line)")
            }
        }
    }
}

/// The config words of interface `index`: `ip`/`mac` (with `gw`) for 0,
/// `ip<index>`/`mac<index>` for the others.
private struct InterfaceConfig {
    let ipKey: String
    let macKey: String
    var address: UInt32 = 0x0a00_020f
    var prefixLength = 24
    var gateway: UInt32 = 0
    let mac: MACAddress?

    init(index: Int) {
        ipKey = Config.interfaceAddressKeys[index]
        macKey = Config.macKeys[index]
        mac = Config.mac(macKey)
        if let configured = Config.ipv4(ipKey) {
            address = configured.address
            prefixLength = configured.prefixLength
        } else if index == 0 {
            gateway = 0x0a00_0202  // QEMU user networking's, only with its default address
        }
        if index == 0, let configured = Config.ipv4Address("gw") { gateway = configured }
    }
}
