// The network stack object: owns the NIC, the interface address, ARP, the UDP
// bindings and the TCP connection table. Single-threaded: everything runs from
// `poll`, called by the kit's run loop; the interrupt hook only acknowledges.

final class NetStack {
    let nic: VirtioNet
    let mac: MACAddress
    let address: UInt32
    let prefixLength: Int
    let netmask: UInt32
    /// 0 when there is no gateway: every destination is then treated as on-link.
    let gateway: UInt32
    var counters = NetCounters()
    /// The time of the current poll, in microseconds since entry.
    var now: UInt64 = 0
    var arp = ARPCache()
    var udpBindings: [UDPBinding] = []
    var listeners: [TCPListener] = []
    var connections: [TCPConnection] = []
    var ipIdentification: UInt16 = 1
    var random = SystemRandomNumberGenerator()

    private init(nic: VirtioNet, address: UInt32, prefixLength: Int, gateway: UInt32) {
        self.nic = nic
        self.mac = nic.mac
        self.address = address
        self.prefixLength = prefixLength
        self.netmask = prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength)
        self.gateway = gateway
    }

    /// Brings up the NIC with the `ip=a.b.c.d/prefix` and `gw=a.b.c.d` config
    /// keys (defaults: QEMU user networking, 10.0.2.15/24 via 10.0.2.2). A
    /// missing NIC is fatal: the app cannot do its job without it.
    static func start() -> NetStack {
        var address: UInt32 = 0x0a00_020f
        var prefixLength = 24
        var gateway: UInt32 = 0x0a00_0202
        if let configured = Config.ipv4("ip") {
            address = configured.address
            prefixLength = configured.prefixLength
            gateway = 0
        }
        if let configured = Config.ipv4Address("gw") { gateway = configured }
        let nic: VirtioNet
        switch VirtioNet.start() {
        case .success(let started): nic = started
        case .failure(let error):
            // No NIC (or one the kit cannot drive) is a deployment mistake, not a guest bug.
            Config.fail(key: "net", reason: error.message)
        }
        let stack = NetStack(nic: nic, address: address, prefixLength: prefixLength, gateway: gateway)
        stack.now = Clock.nowMicros()
        stack.sendGratuitousARP()
        stack.nic.flush()
        return stack
    }

    /// Drains received frames, runs timers and sends what they produced.
    /// Returns the next time it needs to run (UInt64.max: only on a frame).
    func poll(now: UInt64) -> UInt64 {
        self.now = now
        nic.receive { frame in receiveFrame(frame) }
        var deadline = tcpTimers()
        deadline = min(deadline, arpTimers())
        nic.flush()
        return deadline
    }

    /// One line describing the interface; apps print it after READY, since
    /// every console byte is a VM exit and READY should come first.
    var summary: String {
        "net: virtio-net \(nic.isLegacy ? "legacy" : "modern") slot \(nic.slot) mac \(mac.description)"
            + " ip \(ipv4Text(address))/\(prefixLength) gw \(gateway == 0 ? "none" : ipv4Text(gateway))"
    }

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

    var broadcastAddress: UInt32 { address | ~netmask }
}
