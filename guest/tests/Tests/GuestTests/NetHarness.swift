// Network test machinery: boot a network example with a NIC on QEMU user
// networking or on a TAP device, a host bridge with a TAP (created and always
// removed), a small blocking HTTP/1.1 client over POSIX sockets, UDP, and
// raw frames sent onto the TAP from a python3 AF_PACKET socket.

import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

enum NetTest {
    static var isRoot: Bool { geteuid() == 0 }

    /// A free localhost port for a QEMU hostfwd (bound and released; QEMU
    /// takes it right after).
    static func freePort(udp: Bool = false) throws -> UInt16 {
        let fd = socket(AF_INET, Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GuestTestError("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(fd, socketAddress, length) == 0 && getsockname(fd, socketAddress, &length) == 0
            }
        }
        guard bound else { throw GuestTestError("bind: \(errno)") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// QEMU arguments for virtio-net NICs, in this order on the command line
    /// (microvm then gives the last one the lowest slot). Each `netdev` is a
    /// -netdev spec without its id; `mac`, when given, is the device's MAC.
    /// `modern` asks for virtio-mmio version 2 (microvm's default is legacy
    /// version 1).
    static func nicArguments(_ nics: [(netdev: String, mac: String?)], modern: Bool) -> [String] {
        var arguments: [String] = []
        for (index, nic) in nics.enumerated() {
            arguments += [
                "-netdev", "\(nic.netdev),id=n\(index)",
                "-device", "virtio-net-device,netdev=n\(index)" + (nic.mac.map { ",mac=\($0)" } ?? ""),
            ]
        }
        if modern { arguments += ["-global", "virtio-mmio.force-legacy=false"] }
        return arguments
    }

    /// Boots `app` with one NIC (QEMU's default MAC) and waits for its READY line.
    static func boot(_ app: String, append: String, netdev: String, modern: Bool) throws -> QEMUGuest {
        try boot(app, append: append, nics: [(netdev, nil)], modern: modern)
    }

    /// Boots `app` and waits for its READY line and one interface line per
    /// NIC; stops QEMU if READY never comes.
    static func boot(
        _ app: String, append: String, nics: [(netdev: String, mac: String?)], modern: Bool
    ) throws -> QEMUGuest {
        let kernel = try KernelBuilds.shared.kernel(GuestPaths.example(app))
        let guest = try QEMUGuest(kernel: kernel, append: append, extraArguments: nicArguments(nics, modern: modern))
        guard let ready = guest.waitForReady(timeout: 60), ready.app == app else {
            guest.stop()
            throw GuestTestError("\(app) did not get ready; console:\n\(guest.console)")
        }
        // The interface summary follows READY; wait for its whole lines so the NICs are known.
        _ = guest.waitForLines(startingWith: "net: virtio-net", count: nics.count, timeout: 5)
        return guest
    }

    /// Runs curl and returns (HTTP status, body).
    static func curl(_ url: String, _ extra: [String] = []) throws -> (status: Int, body: String) {
        let marker = "\n--swiftlet-status:"
        let result = try runCommand(
            "/usr/bin/curl", ["-s", "-S", "-m", "10", "-w", marker + "%{http_code}"] + extra + [url])
        guard result.status == 0, let range = result.output.range(of: marker, options: .backwards) else {
            throw GuestTestError("curl \(url) failed (\(result.status)): \(result.output)")
        }
        return (Int(result.output[range.upperBound...]) ?? -1, String(result.output[..<range.lowerBound]))
    }

    /// Runs a python3 program given as text with `arguments`.
    static func python(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(
            "swiftlet-net-\(getpid())-\(UUID().uuidString).py")
        try program.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        return try runCommand("/usr/bin/env", ["python3", file.path] + arguments)
    }

    /// The value of `name=` in a `/_netstats` counters line.
    static func counter(_ name: String, in text: String) -> UInt64? {
        for field in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) where field.hasPrefix(name + "=") {
            return UInt64(field.dropFirst(name.count + 1))
        }
        return nil
    }
}

/// A Linux bridge with an address and TAP ports, named after this process
/// so parallel runs do not collide; `index` tells apart the networks of one
/// test (at most 3, each its own subnet). `remove()` deletes them all (call
/// it in a defer); deinit does too.
final class TapNetwork: @unchecked Sendable {
    let bridge: String
    let taps: [String]
    /// Third octet of the 10.213.x.0/24 subnet.
    let subnet: Int
    var tap: String { taps[0] }
    var hostAddress: String { "10.213.\(subnet).1" }
    var guestAddress: String { address(2) }
    private var removed = false

    init(index: Int = 0, tapCount: Int = 1) throws {
        precondition(index < 3 && tapCount < 10)
        Self.removeLeftovers()
        let id = Int(getpid())
        // Interface names have at most 15 characters.
        bridge = "swnbr\(id)-\(index)"
        taps = (0..<tapCount).map { "swnt\(id)-\(index)\($0)" }
        subnet = 100 + id % 50 * 3 + index
        do {
            try Self.ip(["link", "add", bridge, "type", "bridge"])
            try Self.ip(["addr", "add", "\(hostAddress)/24", "dev", bridge])
            try Self.ip(["link", "set", bridge, "up"])
            for tap in taps {
                try Self.ip(["tuntap", "add", "dev", tap, "mode", "tap"])
                try Self.ip(["link", "set", tap, "master", bridge])
                try Self.ip(["link", "set", tap, "up"])
            }
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    /// 10.213.<subnet>.<host>
    func address(_ host: Int) -> String { "10.213.\(subnet).\(host)" }

    /// A MAC that spells the address (02:00:0a:d5:<subnet>:<host>), so guests on one bridge differ.
    func mac(_ host: Int) -> String { String(format: "02:00:0a:d5:%02x:%02x", subnet, host) }

    /// The -netdev spec (without id) for TAP `index`.
    func netdev(tap index: Int = 0) -> String { "tap,ifname=\(taps[index]),script=no,downscript=no" }

    /// Gives the host one more address on the bridge (gone with the bridge).
    func addHostAddress(_ address: String) throws {
        try Self.ip(["addr", "add", "\(address)/32", "dev", bridge])
    }

    func remove() {
        if removed { return }
        removed = true
        for tap in taps { _ = try? runCommand("/usr/sbin/ip", ["link", "del", tap]) }
        _ = try? runCommand("/usr/sbin/ip", ["link", "del", bridge])
    }

    /// Deletes devices left by test runs that were killed before cleaning
    /// up (their pid, in the name, is gone).
    private static func removeLeftovers() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        for name in names {
            let rest = name.hasPrefix("swnbr") ? name.dropFirst(5) : name.hasPrefix("swnt") ? name.dropFirst(4) : ""
            guard let pid = Int32(rest.prefix { $0.isNumber }), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            _ = try? runCommand("/usr/sbin/ip", ["link", "del", name])
        }
    }

    private static func ip(_ arguments: [String]) throws {
        let result = try runCommand("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw GuestTestError("ip \(arguments.joined(separator: " ")) failed: \(result.output)")
        }
    }
}

struct HTTPTestResponse {
    let status: Int
    let headers: [(String, String)]
    let body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// One blocking TCP connection speaking HTTP/1.1 (keep-alive by default).
final class HTTPTestConnection {
    private let fd: Int32
    private var pending: [UInt8] = []

    init(host: String, port: UInt16, timeout: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GuestTestError("socket: \(errno)") }
        // SO_SNDTIMEO also bounds connect() on Linux.
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            let code = errno
            close(fd)
            throw GuestTestError("connect \(host):\(port): errno \(code)")
        }
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw GuestTestError("send: errno \(errno)") }
            offset += sent
        }
    }

    func request(_ method: String, _ path: String, body: [UInt8] = [], close: Bool = false) throws -> HTTPTestResponse {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: guest\r\n"
        if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        if close { head += "Connection: close\r\n" }
        try write(Array((head + "\r\n").utf8) + body)
        return try readResponse()
    }

    /// Reads one response (Content-Length framed).
    func readResponse() throws -> HTTPTestResponse {
        var headEnd: Int? = nil
        while true {
            if let end = Self.find([13, 10, 13, 10], in: pending) {
                headEnd = end
                break
            }
            try fill()
        }
        let head = String(decoding: pending[..<headEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            throw GuestTestError("bad status line in: \(head)")
        }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw GuestTestError("bad header line: \(line)") }
            headers.append(
                (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let length = Int(headers.first { $0.0.lowercased() == "content-length" }?.1 ?? "0") ?? 0
        let bodyStart = headEnd! + 4
        while pending.count < bodyStart + length { try fill() }
        let body = Array(pending[bodyStart..<bodyStart + length])
        pending.removeFirst(bodyStart + length)
        return HTTPTestResponse(status: status, headers: headers, body: body)
    }

    /// True when the peer has closed (EOF) with nothing more to read.
    func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw GuestTestError(count == 0 ? "connection closed" : "recv: errno \(errno)") }
        pending += chunk[..<count]
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where Array(haystack[start..<start + needle.count]) == needle {
            return start
        }
        return nil
    }
}

/// Sends one UDP datagram and waits for one back.
func udpRoundTrip(host: String, port: UInt16, payload: [UInt8], timeout: Int = 5) throws -> [UInt8] {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw GuestTestError("socket: \(errno)") }
    defer { close(fd) }
    var limit = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr(host)
    let sent = payload.withUnsafeBytes { bytes in
        withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
    guard sent == payload.count else { throw GuestTestError("sendto: errno \(errno)") }
    var reply = [UInt8](repeating: 0, count: 65536)
    let count = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
    guard count >= 0 else { throw GuestTestError("no UDP reply within \(timeout) s (errno \(errno))") }
    return Array(reply[..<count])
}

/// Holds threads until `count` have arrived (or 30 s passed), so that
/// connections opened before it are all open at the same time.
final class ThreadBarrier: @unchecked Sendable {  // state guarded by `condition`
    private let condition = NSCondition()
    private let count: Int
    private var arrived = 0

    init(count: Int) { self.count = count }

    func arriveAndWait() {
        condition.lock()
        defer { condition.unlock() }
        arrived += 1
        if arrived >= count {
            condition.broadcast()
            return
        }
        let deadline = Date().addingTimeInterval(30)
        while arrived < count && condition.wait(until: deadline) {}
    }
}

/// Runs `body(i)` for i in 0..<count on `count` threads at once; returns the
/// errors raised.
func runConcurrently(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Void) -> [String] {
    final class Errors: @unchecked Sendable {  // guarded by `lock`
        let lock = NSLock()
        var messages: [String] = []
    }
    let errors = Errors()
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            do { try body(index) } catch { errors.lock.withLock { errors.messages.append("\(index): \(error)") } }
            group.leave()
        }
        thread.start()
    }
    if group.wait(timeout: .now() + 120) == .timedOut {
        errors.lock.withLock { errors.messages.append("threads still running after 120 s") }
    }
    return errors.lock.withLock { errors.messages }
}

/// Python programs the tests run as root against the TAP.
enum NetScripts {
    /// ICMP echo over a raw socket: `ping.py ADDRESS COUNT` prints replies received.
    static let ping = """
        import os, socket, struct, sys, time
        def csum(b):
            if len(b) % 2: b += b'\\0'
            t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while t >> 16: t = (t & 0xffff) + (t >> 16)
            return (~t) & 0xffff
        target, count = sys.argv[1], int(sys.argv[2])
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.settimeout(2)
        ident, got = os.getpid() & 0xffff, 0
        for seq in range(count):
            data = bytes(range(56))
            msg = struct.pack('!BBHHH', 8, 0, 0, ident, seq) + data
            msg = msg[:2] + struct.pack('!H', csum(msg)) + msg[4:]
            s.sendto(msg, (target, 0))
            end = time.time() + 2
            while time.time() < end:
                try:
                    pkt, addr = s.recvfrom(2048)
                except socket.timeout:
                    break
                icmp = pkt[(pkt[0] & 15) * 4:]
                if addr[0] == target and icmp[0] == 0 and struct.unpack('!HH', icmp[4:8]) == (ident, seq) and icmp[8:] == data:
                    got += 1
                    break
        print(got)
        """

    /// Speaks TCP by hand from a made-up address on the TAP (the host stack
    /// never sees the connection, so it cannot interfere): out-of-order data,
    /// a withheld ACK, FIN, a segment after close. Prints `ok ...` lines and
    /// PASS; exits 1 on the first failed check.
    /// `tcpprobe.py IFACE GUEST_MAC GUEST_IP FAKE_IP`
    static let tcpProbe = #"""
        import socket, struct, sys, time
        iface, gmac, gip, fip = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
        GMAC = bytes.fromhex(gmac.replace(':', '')); FMAC = bytes.fromhex('020000000077')
        GIP, FIP = socket.inet_aton(gip), socket.inet_aton(fip)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((iface, 0)); s.settimeout(0.2)
        def csum(b):
            if len(b) % 2: b += b'\0'
            t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while t >> 16: t = (t & 0xffff) + (t >> 16)
            return (~t) & 0xffff
        SPORT = 40000 + int(time.time()) % 20000
        def send_tcp(seq, ack, flags, data=b'', win=65535, opts=b''):
            off = (20 + len(opts)) // 4
            seg = struct.pack('!HHIIBBHHH', SPORT, 80, seq, ack, off << 4, flags, win, 0, 0) + opts + data
            c = csum(FIP + GIP + struct.pack('!BBH', 0, 6, len(seg)) + seg)
            seg = seg[:16] + struct.pack('!H', c) + seg[18:]
            h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(seg), 1, 0, 64, 6, 0, FIP, GIP)
            h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
            s.send(GMAC + FMAC + b'\x08\x00' + h + seg)
        def pump(until, deadline):
            """Reads frames, answers ARP for the fake address, returns TCP segments until `until(seg)` or deadline."""
            got = []
            while time.time() < deadline:
                try: f = s.recv(2048)
                except socket.timeout: continue
                if f[6:12] != GMAC: continue
                et = struct.unpack('!H', f[12:14])[0]
                if et == 0x0806 and f[20:22] == b'\x00\x01' and f[38:42] == FIP:
                    rep = f[6:12] + FMAC + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + FMAC + FIP + f[22:28] + f[28:32]
                    s.send(rep); continue
                if et != 0x0800 or f[23] != 6 or f[30:34] != FIP: continue
                ip = f[14:]; ihl = (ip[0] & 15) * 4; tot = struct.unpack('!H', ip[2:4])[0]; t = ip[ihl:tot]
                sp, dp, seq, ack, off, fl, win = struct.unpack('!HHIIBBH', t[:16])
                if dp != SPORT: continue
                seg = dict(seq=seq, ack=ack, flags=fl, win=win, data=t[(off >> 4) * 4:], t=time.time())
                got.append(seg)
                if until(seg): return got
            return got
        def expect(cond, msg):
            if not cond: print('FAIL', msg); sys.exit(1)
            print('ok', msg)
        ISS = 1000
        # SYN, MSS 512; resent like a real client's if no SYN-ACK comes back (a busy host can
        # lose the first one while the guest is still resolving our address).
        for attempt in range(4):
            send_tcp(ISS, 0, 0x02, opts=b'\x02\x04\x02\x00')
            segs = pump(lambda g: g['flags'] & 0x12 == 0x12, time.time() + 3)
            if segs and segs[-1]['flags'] & 0x12 == 0x12: break
        expect(segs and segs[-1]['flags'] & 0x12 == 0x12 and segs[-1]['ack'] == ISS + 1, 'SYN-ACK acknowledges our SYN')
        gseq = segs[-1]['seq'] + 1
        send_tcp(ISS + 1, gseq, 0x10)
        req = b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'
        a, b = req[:10], req[10:]
        send_tcp(ISS + 1 + 10, gseq, 0x18, b)  # second half first: out of order
        segs = pump(lambda g: True, time.time() + 3)
        expect(segs and segs[0]['ack'] == ISS + 1 and not segs[0]['data'], 'out-of-order segment dropped with a duplicate ACK')
        send_tcp(ISS + 1, gseq, 0x18, a)
        segs = pump(lambda g: g['ack'] == ISS + 11, time.time() + 3)
        expect(segs and segs[-1]['ack'] == ISS + 11 and not any(g['data'] for g in segs), 'in-order first half acknowledged, nothing answered yet')
        send_tcp(ISS + 11, gseq, 0x18, b)
        segs = pump(lambda g: len(g['data']) > 0, time.time() + 3)
        first = segs[-1] if segs else None
        expect(first and first['data'].startswith(b'HTTP/1.1 200') and first['data'].endswith(b'ok') and first['ack'] == ISS + 1 + len(req), 'response after the gap is filled')
        # Do not acknowledge: the guest must retransmit the same bytes, with growing gaps.
        segs = pump(lambda g: False, time.time() + 5)
        again = [g for g in segs if g['seq'] == first['seq'] and g['data'] == first['data']]
        times = [round(g['t'] - first['t'], 2) for g in again]
        expect(len(again) >= 3, 'response retransmitted %d times in 5 s (at %s s)' % (len(again), times))
        gaps = [again[i + 1]['t'] - again[i]['t'] for i in range(len(again) - 1)]
        # RTO >= 200 ms, doubling each time (checked loosely: the host may be busy).
        expect(times[0] >= 0.15 and gaps[-1] >= 1.5 * gaps[0], 'backoff: retransmits at %s s' % times)
        end = first['seq'] + len(first['data'])
        send_tcp(ISS + 1 + len(req), end, 0x11)  # ACK + FIN
        segs = pump(lambda g: g['flags'] & 0x01, time.time() + 3)
        expect(any(g['ack'] == ISS + 2 + len(req) for g in segs), 'our FIN acknowledged')
        fin = [g for g in segs if g['flags'] & 0x01]
        expect(fin and fin[-1]['seq'] == end, 'guest closes after our FIN')
        send_tcp(ISS + 2 + len(req), end + 1, 0x10)
        send_tcp(ISS + 2 + len(req), end + 1, 0x18, b'late')  # after close: RST expected
        segs = pump(lambda g: g['flags'] & 0x04, time.time() + 3)
        expect(any(g['flags'] & 0x04 for g in segs), 'segment to a closed connection gets RST')
        print('PASS')
        """#

    /// Sends COUNT malformed, truncated and random frames (seeded) to the
    /// guest's MAC on IFACE: `frames.py IFACE GUEST_MAC GUEST_IP HOST_IP COUNT SEED`.
    static let frames = """
        import random, socket, struct, sys
        iface, mac, gip, hip, count, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        rnd = random.Random(seed)
        dst, src = bytes.fromhex(mac.replace(':', '')), bytes.fromhex('02aabbccddee')
        gipb, hipb = socket.inet_aton(gip), socket.inet_aton(hip)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((iface, 0))
        def csum(b):
            if len(b) % 2: b += b'\\0'
            t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while t >> 16: t = (t & 0xffff) + (t >> 16)
            return (~t) & 0xffff
        def rb(n): return bytes(rnd.getrandbits(8) for _ in range(n))
        def ip(proto, payload, frag=0, good=True):
            h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), rnd.getrandbits(16), frag, 64, proto, 0, hipb, gipb)
            c = csum(h) if good else (csum(h) ^ 0x5a5a)
            return h[:10] + struct.pack('!H', c) + h[12:] + payload
        def l4(proto, seg):
            off = {6: 16, 17: 6, 1: 2}[proto]
            c = csum(seg) if proto == 1 else csum(hipb + gipb + struct.pack('!BBH', 0, proto, len(seg)) + seg)
            return seg[:off] + struct.pack('!H', c) + seg[off + 2:]
        def tcp(flags, payload=b'', opts=b''):
            seg = struct.pack('!HHIIBBHHH', rnd.randrange(1024, 65535), 80, rnd.getrandbits(32), rnd.getrandbits(32), ((20 + len(opts)) // 4) << 4, flags, rnd.getrandbits(16), 0, 0) + opts + payload
            return l4(6, seg)
        def eth(t, payload): return dst + src + struct.pack('!H', t) + payload
        def frame():
            k = rnd.randrange(12)
            if k == 0: return dst + rb(rnd.randrange(0, 1500))
            if k == 1: return eth(0x0800, rb(rnd.randrange(0, 1500)))
            if k == 2: return eth(0x0806, rb(rnd.randrange(0, 40)))
            if k == 3: return eth(0x0800, ip(rnd.choice([1, 6, 17]), rb(rnd.randrange(0, 60)), good=False))
            if k == 4: return eth(0x0800, ip(rnd.choice([1, 6, 17]), rb(rnd.randrange(8, 60)), frag=rnd.choice([0x2000, 0x0010, 0x2005])))
            if k == 5: return eth(0x0800, ip(rnd.choice([1, 6, 17, 2, 47]), rb(rnd.randrange(0, 100))))
            if k == 6: return eth(0x0800, ip(6, tcp(rnd.getrandbits(8), rb(rnd.randrange(0, 40)), rb(rnd.choice([0, 4, 8, 40])))))
            if k == 7: return eth(0x0800, ip(6, tcp(0x18, b'GET / HTTP/1.1\\r\\n' + rb(50))))
            if k == 8: return eth(0x0800, ip(17, l4(17, struct.pack('!HHHH', 9999, rnd.randrange(1, 65535), 28, 0) + rb(20))))
            if k == 9: return eth(0x0800, ip(1, l4(1, struct.pack('!BBHHH', 8, 0, 0, 1, 1) + rb(rnd.randrange(0, 200)))))
            if k == 10:
                p = bytearray(ip(6, tcp(0x02)))
                p[2:4] = struct.pack('!H', rnd.randrange(0, 65536)); p[0] = 0x40 | rnd.randrange(0, 16)
                return eth(0x0800, bytes(p))
            f = eth(0x0800, ip(6, tcp(0x02, opts=b'\\x02\\x04\\x05\\xb4')))
            return f[:rnd.randrange(1, len(f))]
        sent = 0
        for _ in range(count):
            try:
                s.send(frame()); sent += 1
            except OSError:
                pass
        print(sent)
        """
}
