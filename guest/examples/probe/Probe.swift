// A UDP client: after READY it sends `probe <n> from <name>` (n = 1…count) to
// `peer=a.b.c.d:port`, one datagram every 200 ms, until every probe has been
// answered or 20 s have passed (unanswered probes are sent again in turn).
// Prints `probe: reply <n> from <address>: <payload>` per answer and
// `probe: done <replies>/<count>` at the end. Works against `echo`.
// Console: `netstats` prints the network counters, `poweroff` stops.

@main
struct Probe {
    static func main() {
        Config.load(allowed: ["name", "peer", "count"] + NetStack.configKeys)
        let peer = peerEndpoint()
        let prober = Prober(
            peer: peer.address, peerPort: peer.port, count: Config.integer("count", default: 5, range: 1...1000),
            name: Config.string("name", default: "swiftlet"))
        let stack = NetStack.start()
        stack.bindUDP(port: Prober.localPort) { _, datagram in prober.received(datagram) }
        stack.installConsoleCommands()
        Kit.ready(app: "probe")
        print(stack.summary)
        withExtendedLifetime(prober) {
            Kit.run { now in
                let deadline = stack.poll(now: now)
                let next = prober.tick(now: now, stack: stack)
                stack.flush()
                return min(deadline, next)
            }
        }
    }

    /// `peer=a.b.c.d:port`, required.
    static func peerEndpoint() -> (address: UInt32, port: UInt16) {
        guard let value = Config.string("peer") else { Config.fail(key: "peer", reason: "required (a.b.c.d:port)") }
        let parts = value.utf8.split(separator: 0x3A, omittingEmptySubsequences: false)
        guard parts.count == 2, let address = Config.parseAddress(parts[0]), let port = Config.parseDecimal(parts[1]),
            port >= 1, port <= 65535
        else {
            Config.fail(key: "peer", reason: "expected a.b.c.d:port: \(value)")
        }
        return (address, UInt16(port))
    }
}

final class Prober {
    static let localPort: UInt16 = 49152
    static let interval: UInt64 = 200_000
    static let timeLimit: UInt64 = 20_000_000

    let peer: UInt32
    let peerPort: UInt16
    let name: String
    /// answered[n - 1]: probe n got its reply.
    private var answered: [Bool]
    private var replies = 0
    private var nextProbe = 1
    private var startedAt: UInt64 = 0
    private var nextSend: UInt64 = 0
    private var finished = false

    init(peer: UInt32, peerPort: UInt16, count: Int, name: String) {
        self.peer = peer
        self.peerPort = peerPort
        self.name = name
        answered = [Bool](repeating: false, count: count)
    }

    /// Sends the next unanswered probe when one is due; returns when to run again.
    func tick(now: UInt64, stack: NetStack) -> UInt64 {
        if finished { return UInt64.max }
        if startedAt == 0 {
            startedAt = now
            nextSend = now
        }
        if now &- startedAt >= Self.timeLimit {
            finish()
            return UInt64.max
        }
        if now >= nextSend {
            send(stack: stack)
            nextSend = now + Self.interval
        }
        return min(nextSend, startedAt + Self.timeLimit)
    }

    func received(_ datagram: UDPDatagram) {
        guard !finished, datagram.source == peer, datagram.sourcePort == peerPort else { return }
        let payload = UnsafeRawBufferPointer(start: datagram.payload.base, count: datagram.payload.count)
        guard let number = Self.probeNumber(payload), number >= 1, number <= answered.count, !answered[number - 1]
        else { return }
        answered[number - 1] = true
        replies += 1
        print("probe: reply \(number) from \(ipv4Text(datagram.source)): \(String(decoding: payload, as: UTF8.self))")
        if replies == answered.count { finish() }
    }

    private func send(stack: NetStack) {
        while answered[nextProbe - 1] { nextProbe = nextProbe % answered.count + 1 }
        let payload = Array("probe \(nextProbe) from \(name)".utf8)
        payload.withUnsafeBytes { bytes in
            stack.sendUDP(
                from: Self.localPort, to: peer, port: peerPort,
                payload: PacketView(base: bytes.baseAddress!, count: bytes.count))
        }
        nextProbe = nextProbe % answered.count + 1
    }

    private func finish() {
        finished = true
        print("probe: done \(replies)/\(answered.count)")
    }

    /// n in a `probe <n> from …` payload.
    private static func probeNumber(_ payload: UnsafeRawBufferPointer) -> Int? {
        let prefix = Array("probe ".utf8)
        guard payload.starts(with: prefix) else { return nil }
        let digits = payload.dropFirst(prefix.count).prefix { $0 >= 0x30 && $0 <= 0x39 }
        guard digits.count <= 9, let number = Config.parseDecimal(digits) else { return nil }
        return Int(number)
    }
}
