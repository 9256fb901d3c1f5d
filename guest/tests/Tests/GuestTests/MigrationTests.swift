// The guest side of stateful migration (guest/README.md, "Stateful
// migration"): the console's state export/import, standby and activate,
// quiesce and resume, on kv over QEMU user networking and (as root) a TAP.

import Foundation
import Testing

// In NetworkTests, which runs serialized: the TAP tests' bridge names are per
// process and index, so they must not run beside the other TAP tests.
extension NetworkTests {
    @Test func kvStateMovesOverTheConsoleIntoAStandbyInstance() throws {
        let sourcePort = try NetTest.freePort()
        let source = try bootKV(port: sourcePort)
        defer { source.stop() }
        let client = try HTTPTestConnection(host: "127.0.0.1", port: sourcePort)
        for expected in 1...3 { #expect(try client.request("POST", "/counter").text == "\(expected)") }
        let value = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }  // several console lines of state
        #expect(try client.request("PUT", "/kv/blob", body: value).status == 204)
        let exported = try exportState(source)
        #expect(exported.bytes == (try client.request("GET", "/_state").body), "console and /_state differ")

        let targetPort = try NetTest.freePort()
        let target = try bootKV(port: targetPort, standby: true)
        defer { target.stop() }
        // Silent: slirp accepts the connection on the host, the guest never answers it.
        #expect(tcpExchange(port: targetPort, request: "GET /_state HTTP/1.0\r\n\r\n", timeout: 1) == nil)
        try importState(target, exported.bytes, crc: exported.crc)
        #expect(target.command("activate") == "swiftlet: active")
        let moved = try HTTPTestConnection(host: "127.0.0.1", port: targetPort)
        #expect(try moved.request("GET", "/kv/blob").body == value)
        #expect(try moved.request("POST", "/counter").text == "4")
        let stats = try #require(target.command("netstats", answerPrefix: "net: rx_frames="))
        #expect((NetTest.counter("standby_dropped", in: stats) ?? 0) > 0, "\(stats)")
    }

    @Test func quiesceRefusesNewWorkAndResumeServesAgain() throws {
        let port = try NetTest.freePort()
        let guest = try bootKV(port: port)
        defer { guest.stop() }
        let kept = try HTTPTestConnection(host: "127.0.0.1", port: port)
        #expect(try kept.request("POST", "/counter").text == "1")
        #expect(guest.command("quiesce") == "swiftlet: quiesced")
        #expect(throws: (any Error).self, "a request on an open connection was served while quiesced") {
            try kept.request("POST", "/counter")
        }
        #expect(tcpExchange(port: port, request: "POST /counter HTTP/1.0\r\n\r\n", timeout: 1) == nil)
        let stats = try #require(guest.command("netstats", answerPrefix: "net: rx_frames="))
        #expect((NetTest.counter("quiesce_refused", in: stats) ?? 0) > 0, "\(stats)")
        let frozen = try exportState(guest)
        #expect(guest.command("resume") == "swiftlet: resumed")
        let again = try HTTPTestConnection(host: "127.0.0.1", port: port)
        #expect(try again.request("POST", "/counter").text == "2", "nothing may have counted while quiesced")
        #expect(try exportState(guest).bytes != frozen.bytes)
    }

    @Test func badImportsAreRefusedAndLeaveTheStateAlone() throws {
        let port = try NetTest.freePort()
        let guest = try bootKV(port: port)
        defer { guest.stop() }
        let client = try HTTPTestConnection(host: "127.0.0.1", port: port)
        #expect(try client.request("POST", "/counter").text == "1")
        let state = try exportState(guest)
        var other = state.bytes
        other[11] = 99  // the counter's low byte: a well-formed state that differs
        let otherCRC = try zlibCRC32(other)
        let chunk = "state-import " + Data(other).base64EncodedString()

        let refusals: [([String], String)] = [
            (["state-import-begin \(other.count) \(hex(state.crc))", chunk, "state-import-end"], "crc mismatch"),
            (["state-import-begin \(other.count + 1) \(hex(otherCRC))", chunk, "state-import-end"], "size mismatch"),
            (["state-import-begin \(other.count - 1) \(hex(otherCRC))", chunk], "size mismatch"),
            (["state-import-begin 65537 00000000"], "too large 65537"),
            (["state-import-begin \(other.count) \(hex(otherCRC))", "state-import abc*"], "bad base64"),
            ([chunk], "no import begun"),
            (["state-import-end"], "no import begun"),
            (["state-import-begin 12"], "malformed command"),
            (
                [
                    "state-import-begin 4 \(hex(try zlibCRC32(Array("SKV1".utf8))))", "state-import U0tWMQ==",
                    "state-import-end",
                ],
                "importer refused"
            ),
        ]
        for (lines, reason) in refusals {
            for line in lines.dropLast() { #expect(guest.command(line)?.hasPrefix("swiftlet: state-error") == false) }
            let answer = guest.command(lines.last!)
            #expect(answer?.hasPrefix("swiftlet: state-error \(reason)") == true, "\(lines) → \(answer ?? "nothing")")
        }
        #expect(try exportState(guest).bytes == state.bytes)
        #expect(try client.request("POST", "/counter").text == "2")

        let hello = try QEMUGuest(kernel: try KernelBuilds.shared.kernel(GuestPaths.example("hello")))
        defer { hello.stop() }
        #expect(hello.waitForReady() != nil)
        #expect(hello.command("state-export") == "swiftlet: state-error no state interface")
        #expect(hello.command("state-import-begin 4 00000000") == "swiftlet: state-error no state interface")
    }

    @Test(.enabled(if: NetTest.isRoot, "needs root for a bridge, a TAP device and raw sockets"))
    func standbyAnswersNoARPUntilActivateAnnouncesIt() throws {
        let network = try TapNetwork()
        defer { network.remove() }
        let guest = try NetTest.boot(
            "kv", append: "standby=1 ip=\(network.guestAddress)/24", netdev: network.netdev(), modern: false)
        defer { guest.stop() }
        let arp = [network.tap, network.guestAddress, network.address(77)]
        #expect(try NetTest.python(Self.arpScript, ["ask"] + arp).output == "none\n")
        final class Announcements: @unchecked Sendable { var output = "" }  // written before `done` is signalled
        let announcements = Announcements()
        let done = DispatchSemaphore(value: 0)
        let listening = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-arp-\(getpid())")
        defer { try? FileManager.default.removeItem(at: listening) }
        Thread {
            announcements.output =
                (try? NetTest.python(Self.arpScript, ["listen"] + arp + [listening.path]).output) ?? "failed"
            done.signal()
        }.start()
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: listening.path) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        #expect(guest.command("activate") == "swiftlet: active")
        done.wait()
        #expect(announcements.output == "2\n", "gratuitous ARPs seen: \(announcements.output)")
        let mac = try #require(guest.console.split(separator: " mac ").dropFirst().first?.prefix(17))
        let answer = try NetTest.python(Self.arpScript, ["ask"] + arp).output
        #expect(answer == "reply \(mac)\n")
        #expect(try NetTest.curl("http://\(network.guestAddress)/counter", ["-X", "POST"]).body == "1")
    }

    @Test(.enabled(if: NetTest.isRoot, "needs root for a bridge, a TAP device and raw sockets"))
    func quiesceWaitsForUnacknowledgedResponsesAtMostHalfASecond() throws {
        let network = try TapNetwork()
        defer { network.remove() }
        let guest = try NetTest.boot(
            "kv", append: "ip=\(network.guestAddress)/24", netdev: network.netdev(), modern: false)
        defer { guest.stop() }
        let value = String(repeating: "v", count: 3000)  // several segments at the peer's MSS of 512
        let put = try NetTest.curl("http://\(network.guestAddress)/kv/k", ["-X", "PUT", "--data-binary", value])
        #expect(put.status == 204)
        let mac = try #require(guest.console.split(separator: " mac ").dropFirst().first?.prefix(17))
        // The peer holds its ACK of the response for `hold` seconds after it has it all.
        for (hold, answer) in [("2", "swiftlet: quiesced pending=1"), ("0.1", "swiftlet: quiesced")] {
            let responseHeld = FileManager.default.temporaryDirectory.appendingPathComponent(
                "swiftlet-held-\(getpid())")
            defer { try? FileManager.default.removeItem(at: responseHeld) }
            final class Output: @unchecked Sendable { var text = "" }  // written before `done` is signalled
            let peer = Output()
            let done = DispatchSemaphore(value: 0)
            let arguments = [
                network.tap, String(mac), network.guestAddress, network.address(78), responseHeld.path, hold,
            ]
            Thread {
                peer.text = (try? NetTest.python(Self.heldResponseScript, arguments).output) ?? "failed"
                done.signal()
            }.start()
            let deadline = Date().addingTimeInterval(15)
            while !FileManager.default.fileExists(atPath: responseHeld.path) && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.005)
            }
            let start = Date()
            #expect(guest.command("quiesce") == answer)
            let waited = Date().timeIntervalSince(start)
            done.wait()
            #expect(peer.text.hasSuffix("PASS\n"), "hold \(hold): \(peer.text)")
            if hold == "2" { #expect(waited >= 0.45, "answered after \(waited) s with a response unacknowledged") }
            #expect(guest.command("resume") == "swiftlet: resumed")
        }
        #expect(try NetTest.curl("http://\(network.guestAddress)/kv/k").body == value)
    }

    /// `held.py IFACE GUEST_MAC GUEST_IP FAKE_IP HELD_FILE HOLD`: a TCP peer by
    /// hand that asks for /kv/k, creates HELD_FILE once it has the whole
    /// response, acknowledges it only HOLD seconds later, and checks that the
    /// guest closes with a FIN right after the response and resets the
    /// connection when another request comes. Prints `ok ...` lines and PASS.
    static let heldResponseScript = #"""
        import os, socket, struct, sys, time
        iface, gmac, gip, fip, held, hold = sys.argv[1:7]
        GMAC = bytes.fromhex(gmac.replace(':', '')); FMAC = bytes.fromhex('020000000078')
        GIP, FIP = socket.inet_aton(gip), socket.inet_aton(fip)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((iface, 0)); s.settimeout(0.05)
        SPORT = 20000 + os.getpid() % 20000
        def csum(b):
            if len(b) % 2: b += b'\0'
            t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while t >> 16: t = (t & 0xffff) + (t >> 16)
            return (~t) & 0xffff
        def send_tcp(seq, ack, flags, data=b'', opts=b''):
            seg = struct.pack('!HHIIBBHHH', SPORT, 80, seq, ack, (20 + len(opts)) // 4 << 4, flags, 65535, 0, 0) + opts + data
            seg = seg[:16] + struct.pack('!H', csum(FIP + GIP + struct.pack('!BBH', 0, 6, len(seg)) + seg)) + seg[18:]
            h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(seg), 1, 0, 64, 6, 0, FIP, GIP)
            s.send(GMAC + FMAC + b'\x08\x00' + h[:10] + struct.pack('!H', csum(h)) + h[12:] + seg)
        def pump(until, deadline):
            got = []
            while time.time() < deadline:
                try: f = s.recv(2048)
                except socket.timeout: continue
                if f[6:12] != GMAC: continue
                if f[12:14] == b'\x08\x06' and f[20:22] == b'\x00\x01' and f[38:42] == FIP:
                    s.send(f[6:12] + FMAC + b'\x08\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + FMAC + FIP + f[22:32]); continue
                if f[12:14] != b'\x08\x00' or f[23] != 6 or f[30:34] != FIP: continue
                ip = f[14:]; t = ip[(ip[0] & 15) * 4:struct.unpack('!H', ip[2:4])[0]]
                sp, dp, seq, ack, off, fl = struct.unpack('!HHIIBB', t[:14])
                if dp != SPORT: continue
                got.append(dict(seq=seq, flags=fl, data=t[(off >> 4) * 4:]))
                if until(got[-1]): return got
            return got
        def expect(cond, msg):
            if not cond: print('FAIL', msg); sys.exit(1)
            print('ok', msg)
        ISS = 5000
        for attempt in range(4):
            send_tcp(ISS, 0, 0x02, opts=b'\x02\x04\x02\x00')
            segs = pump(lambda g: g['flags'] & 0x12 == 0x12, time.time() + 3)
            if segs and segs[-1]['flags'] & 0x12 == 0x12: break
        expect(segs and segs[-1]['flags'] & 0x12 == 0x12, 'connected')
        gseq = segs[-1]['seq'] + 1
        send_tcp(ISS + 1, gseq, 0x10)
        req = b'GET /kv/k HTTP/1.1\r\nHost: x\r\n\r\n'
        send_tcp(ISS + 1, gseq, 0x18, req)
        response, fin = {}, [None]
        def collect(g):
            if g['data']: response[g['seq']] = g['data']
            if g['flags'] & 1: fin[0] = g['seq'] + len(g['data'])
            text = b''.join(response[k] for k in sorted(response))
            head = text.split(b'\r\n\r\n')[0].lower()
            return b'content-length: 3000' in head and len(text) == len(head) + 4 + 3000
        pump(collect, time.time() + 5)
        total = sum(len(d) for d in response.values())
        expect(total >= 3000, 'whole response received (%d bytes), not acknowledged' % total)
        open(held, 'w').close()
        pump(lambda g: collect(g) and False, time.time() + float(hold))
        send_tcp(ISS + 1 + len(req), gseq + total, 0x10)
        pump(lambda g: collect(g) and False or fin[0] is not None, time.time() + 3)
        expect(fin[0] == gseq + total, 'FIN right after the response (at %s, response ends at %d)' % (fin[0], gseq + total))
        send_tcp(ISS + 1 + len(req), gseq + total + 1, 0x18, req)
        segs = pump(lambda g: g['flags'] & 0x04, time.time() + 3)
        expect(segs and segs[-1]['flags'] & 0x04 and not any(g['data'] for g in segs), 'a new request is reset, not answered')
        print('PASS')
        """#

    /// `arp.py ask|listen IFACE GUEST_IP FAKE_IP [READY_FILE]`. ask: one who-has
    /// GUEST_IP from FAKE_IP, prints `reply <mac>` or `none` after 1 s. listen:
    /// creates READY_FILE once listening, then prints how many gratuitous ARPs
    /// for GUEST_IP pass within 5 s (stops early at 2). ETH_P_ALL: a bridge port
    /// hands frames to its bridge before protocol-specific packet sockets.
    static let arpScript = #"""
        import socket, struct, sys, time
        mode, iface, gip, fip = sys.argv[1:5]
        GIP, FIP, FMAC = socket.inet_aton(gip), socket.inet_aton(fip), bytes.fromhex('020000000077')
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((iface, 0)); s.settimeout(0.1)
        if mode == 'ask':
            s.send(bytes.fromhex('ffffffffffff') + FMAC + struct.pack('!HHHBBH', 0x0806, 1, 0x0800, 6, 4, 1) + FMAC + FIP + bytes(6) + GIP)
        else:
            open(sys.argv[5], 'w').close()
        seen, end = 0, time.time() + (1 if mode == 'ask' else 5)
        while time.time() < end and seen < 2:
            try: f = s.recv(100)
            except socket.timeout: continue
            if f[12:14] != b'\x08\x06': continue
            op, sha, spa, tpa = struct.unpack('!H', f[20:22])[0], f[22:28], f[28:32], f[38:42]
            if mode == 'ask' and op == 2 and spa == GIP and tpa == FIP:
                print('reply ' + ':'.join('%02x' % b for b in sha)); sys.exit(0)
            if mode == 'listen' and op == 1 and spa == GIP and tpa == GIP: seen += 1
        print('none' if mode == 'ask' else seen)
        """#

    // MARK: - Helpers

    private func bootKV(port: UInt16, standby: Bool = false) throws -> QEMUGuest {
        try NetTest.boot(
            "kv", append: standby ? "standby=1" : "", netdev: "user,hostfwd=tcp:127.0.0.1:\(port)-:80",
            modern: false)
    }

    /// `state-export`: the decoded bytes, checked against the size and the CRC-32 (by zlib) it announced.
    private func exportState(_ guest: QEMUGuest) throws -> (bytes: [UInt8], crc: UInt32) {
        let lines = try #require(guest.commandLines("state-export", until: "swiftlet: state-end"), "\(guest.console)")
        let begin = lines[0].split(separator: " ")
        try #require(begin.count == 4 && begin[1] == "state-begin", "\(lines[0])")
        var bytes: [UInt8] = []
        for line in lines.dropFirst().dropLast() {
            let fields = line.split(separator: " ")
            try #require(fields.count == 3 && fields[1] == "state" && fields[2].count <= 384, "\(line)")
            bytes += try #require(Data(base64Encoded: String(fields[2])), "\(line)")
        }
        #expect(Int(begin[2]) == bytes.count)
        let crc = try zlibCRC32(bytes)
        #expect(String(begin[3]) == hex(crc))
        return (bytes, crc)
    }

    /// Imports line by line, as the host does, each line waiting for its answer.
    private func importState(_ guest: QEMUGuest, _ bytes: [UInt8], crc: UInt32) throws {
        #expect(guest.command("state-import-begin \(bytes.count) \(hex(crc))") == "swiftlet: state-import ready")
        let text = Data(bytes).base64EncodedString()
        var offset = 0
        while offset < text.count {
            let end = min(offset + 384, text.count)
            let chunk = text.dropFirst(offset).prefix(end - offset)
            let decodedSoFar = end == text.count ? bytes.count : end / 4 * 3
            #expect(guest.command("state-import \(chunk)") == "swiftlet: state-import \(decodedSoFar)")
            offset = end
        }
        #expect(guest.command("state-import-end") == "swiftlet: state-imported \(bytes.count)")
    }

    private func hex(_ crc: UInt32) -> String { String(format: "%08x", crc) }

    /// CRC-32 as the host computes it: python3's zlib.
    private func zlibCRC32(_ bytes: [UInt8]) throws -> UInt32 {
        let result = try NetTest.python(
            "import sys, zlib, base64\nprint(zlib.crc32(base64.b64decode(sys.argv[1])))",
            [Data(bytes).base64EncodedString()])
        return try #require(UInt32(result.output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(result.output)")
    }
}

extension QEMUGuest {
    /// Types `line` and returns the first complete line after it that starts
    /// with `answerPrefix`, or nil after 10 s.
    func command(_ line: String, answerPrefix: String = "swiftlet: ") -> String? {
        commandLines(line, until: answerPrefix)?.last
    }

    /// Types `line` and returns the `swiftlet: ` lines printed after it, up to
    /// and including the first that starts with `last`; nil after 10 s.
    func commandLines(_ line: String, until last: String) -> [String]? {
        let before = console.utf8.count
        send(line)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let new = String(decoding: console.utf8.dropFirst(before), as: UTF8.self)
            let complete = new.prefix(upTo: new.lastIndex(of: "\n") ?? new.startIndex)
            var answer: [String] = []
            for printed in complete.split(separator: "\n") {
                let trimmed = printed.trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.hasPrefix("swiftlet: ") || trimmed.hasPrefix(last) { answer.append(trimmed) }
                if trimmed.hasPrefix(last) { return answer }
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return nil
    }
}
