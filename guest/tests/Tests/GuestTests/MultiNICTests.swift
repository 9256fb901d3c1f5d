// Several NICs and the probe client, in real QEMU on TAPs: probe → echo over
// a bridge, a guest answering on two bridges whatever QEMU's device order,
// off-link traffic through the gateway NIC, and the NIC config errors.

import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension NetworkTests {
    @Test(.enabled(if: NetTest.isRoot, "needs root for a bridge and TAP devices"))
    func probeGetsEveryEchoReplyAcrossABridge() throws {
        let network = try TapNetwork(tapCount: 2)
        defer { network.remove() }
        let echo = try NetTest.boot(
            "echo", append: "ip=\(network.address(2))/24", nics: [(network.netdev(tap: 0), network.mac(2))],
            modern: false)
        defer { echo.stop() }
        let probe = try NetTest.boot(
            "probe", append: "name=p1 ip=\(network.address(3))/24 peer=\(network.address(2)):7 count=5",
            nics: [(network.netdev(tap: 1), network.mac(3))], modern: false)
        defer { probe.stop() }
        let done = try #require(
            probe.waitForLines(startingWith: "probe: done", timeout: 25)?.first, "console: \(probe.console)")
        #expect(done == "probe: done 5/5", "console: \(probe.console)")
        let replies = probe.console.split(separator: "\n").filter { $0.hasPrefix("probe: reply ") }
        for number in 1...5 {
            let line = "probe: reply \(number) from \(network.address(2)): probe \(number) from p1"
            #expect(replies.contains { $0 == line }, "no `\(line)` in: \(probe.console)")
        }
        probe.send("netstats")
        let stats = try #require(
            probe.waitForLines(startingWith: "net: rx_frames=", timeout: 10)?.first, "console: \(probe.console)")
        #expect(stats.contains(" udp_no_listener=0 "), "\(stats)")
    }

    /// echo with `ip=`/`mac=` on one bridge and `ip1=`/`mac1=` on another
    /// answers UDP and ping on both addresses, from the address asked: on
    /// legacy virtio-mmio in config order, on modern with the `mac1` NIC first
    /// on QEMU's command line (two cases, not four: the order and the
    /// transport are independent).
    @Test(
        .enabled(if: NetTest.isRoot, "needs root for bridges and TAP devices"),
        arguments: zip(virtioModes, [false, true]))
    func echoAnswersOnBothNICs(modern: Bool, secondNICFirst: Bool) throws {
        let first = try TapNetwork(index: 0)
        defer { first.remove() }
        let second = try TapNetwork(index: 1)
        defer { second.remove() }
        let firstNIC = (netdev: first.netdev(), mac: Optional(first.mac(2)))
        let secondNIC = (netdev: second.netdev(), mac: Optional(second.mac(2)))
        let guest = try NetTest.boot(
            "echo",
            append: "ip=\(first.guestAddress)/24 mac=\(first.mac(2)) gw=\(first.hostAddress)"
                + " ip1=\(second.guestAddress)/24 mac1=\(second.mac(2))",
            nics: secondNICFirst ? [secondNIC, firstNIC] : [firstNIC, secondNIC], modern: modern)
        defer { guest.stop() }
        #expect(
            guest.console.contains("mac \(first.mac(2)) ip \(first.guestAddress)/24 gw \(first.hostAddress)\n"),
            "console: \(guest.console)")
        #expect(
            guest.console.contains("mac \(second.mac(2)) ip \(second.guestAddress)/24 gw none\n"),
            "console: \(guest.console)")
        for network in [first, second] {
            let payload = Array("to \(network.guestAddress)".utf8)
            #expect(try udpRoundTrip(host: network.guestAddress, port: 7, payload: payload) == payload)
            // ping.py counts only replies from the address pinged.
            let ping = try NetTest.python(NetScripts.ping, [network.guestAddress, "2"])
            #expect(
                ping.output.trimmingCharacters(in: .whitespacesAndNewlines) == "2",
                "ping \(network.guestAddress): \(ping.output)")
        }
    }

    /// probe with two NICs and a peer on neither subnet: the datagrams leave
    /// by the NIC with the gateway, from its address (the host owns the
    /// peer's address on that bridge and echoes).
    @Test(.enabled(if: NetTest.isRoot, "needs root for bridges and TAP devices"))
    func probeReachesAnOffLinkPeerThroughTheGateway() throws {
        let first = try TapNetwork(index: 0)
        defer { first.remove() }
        let second = try TapNetwork(index: 1)
        defer { second.remove() }
        let peerAddress = "10.214.\(first.subnet).1"
        try first.addHostAddress(peerAddress)
        let server = try HostUDPEcho(address: peerAddress)
        defer { server.stop() }
        let probe = try NetTest.boot(
            "probe",
            append: "name=gw ip=\(first.guestAddress)/24 mac=\(first.mac(2)) gw=\(first.hostAddress)"
                + " ip1=\(second.guestAddress)/24 mac1=\(second.mac(2)) peer=\(peerAddress):\(server.port) count=3",
            nics: [(second.netdev(), second.mac(2)), (first.netdev(), first.mac(2))], modern: false)
        defer { probe.stop() }
        let done = try #require(
            probe.waitForLines(startingWith: "probe: done", timeout: 25)?.first, "console: \(probe.console)")
        #expect(done == "probe: done 3/3", "console: \(probe.console)")
        #expect(Set(server.senders) == [first.guestAddress])
    }

    static let badNICConfigs: [(app: String, append: String, message: String)] = [
        ("probe", "name=p", "swiftlet: bad config: peer: required"),
        ("probe", "peer=10.0.2.2", "swiftlet: bad config: peer: expected a.b.c.d:port"),
        ("echo", "mac=02:00:00:00:00", "swiftlet: bad config: mac: expected xx:xx:xx:xx:xx:xx"),
        ("echo", "mac=02:00:00:00:00:99", "swiftlet: bad config: mac: no virtio-net device with MAC 02:00:00:00:00:99"),
        ("echo", "mac1=52:54:00:12:34:56", "swiftlet: bad config: mac1: no ip1 for it"),
        ("echo", "ip1=10.9.0.2/24", "swiftlet: bad config: ip1: no virtio-net device left for it"),
    ]

    /// One NIC with QEMU's default MAC (52:54:00:12:34:56) on user networking.
    @Test(arguments: badNICConfigs.indices)
    func badNICConfigExitsWithStatusFive(index: Int) throws {
        let (app, append, message) = Self.badNICConfigs[index]
        let kernel = try KernelBuilds.shared.kernel(GuestPaths.example(app))
        let guest = try QEMUGuest(kernel: kernel, append: append, network: true)
        defer { guest.stop() }
        #expect(guest.waitForExit(timeout: 20) == 5, "console:\n\(guest.console)")
        #expect(guest.console.split(separator: "\n").contains { $0.hasPrefix(message) }, "console:\n\(guest.console)")
    }
}

/// A UDP echo server on a host address (any free port): answers every
/// datagram and remembers who sent it.
private final class HostUDPEcho: @unchecked Sendable {  // mutable state guarded by `lock`
    let port: UInt16
    private let fd: Int32
    private let lock = NSLock()
    private var sendersSeen: [String] = []
    private var stopped = false

    init(address: String) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw GuestTestError("socket: \(errno)") }
        // A short receive timeout lets the thread notice stop().
        var limit = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(address)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &local) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            let code = errno
            close(fd)
            throw GuestTestError("bind \(address): errno \(code)")
        }
        self.fd = fd
        port = UInt16(bigEndian: local.sin_port)
        Thread { self.serve() }.start()
    }

    var senders: [String] { lock.withLock { sendersSeen } }

    func stop() { lock.withLock { stopped = true } }

    private func serve() {
        var buffer = [UInt8](repeating: 0, count: 2048)
        while !lock.withLock({ stopped }) {
            var peer = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = buffer.withUnsafeMutableBytes { bytes in
                withUnsafeMutablePointer(to: &peer) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, bytes.baseAddress, bytes.count, 0, $0, &length)
                    }
                }
            }
            guard count > 0 else { continue }
            let sender = String(cString: inet_ntoa(peer.sin_addr))
            lock.withLock { sendersSeen.append(sender) }
            _ = buffer.withUnsafeBytes { bytes in
                withUnsafePointer(to: &peer) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, bytes.baseAddress, count, 0, $0, length)
                    }
                }
            }
        }
        close(fd)
    }
}
