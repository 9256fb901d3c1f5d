// The network examples in real QEMU: virtio-net (legacy and modern
// virtio-mmio) on user-mode networking and on a TAP device on a host bridge.

import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.serialized)
struct NetworkTests {
    /// false: legacy virtio-mmio (microvm's default); true: modern (version 2).
    static let virtioModes = [false, true]

    @Test(arguments: virtioModes)
    func echoAnswersUDP(modern: Bool) throws {
        let port = try NetTest.freePort(udp: true)
        let guest = try NetTest.boot(
            "echo", append: "port=7",
            netdev: "user,hostfwd=udp:127.0.0.1:\(port)-:7", modern: modern)
        defer { guest.stop() }
        #expect(guest.console.contains(modern ? "virtio-net modern" : "virtio-net legacy"))
        for size in [1, 64, 512, 1400] {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ size) }
            #expect(try udpRoundTrip(host: "127.0.0.1", port: port, payload: payload) == payload)
        }
        // The counters are printable on the console.
        // The line reaches the console in pieces: wait for all of it before reading a counter.
        guest.send("netstats")
        let stats = try #require(
            guest.waitForLines(startingWith: "net: rx_frames=", timeout: 10)?.first, "console: \(guest.console)")
        #expect(stats.contains(" udp_no_listener=0 "), "\(stats)")
    }

    @Test(arguments: virtioModes)
    func httpAnswersThroughUserNetworking(modern: Bool) throws {
        let port = try NetTest.freePort()
        let guest = try NetTest.boot(
            "http", append: "name=user-net-web",
            netdev: "user,hostfwd=tcp:127.0.0.1:\(port)-:80", modern: modern)
        defer { guest.stop() }
        try checkHTTPBasics(host: "127.0.0.1", port: port, name: "user-net-web")
        // slirp's hostfwd socket listens with a backlog of 1 (see `ss -ltn`):
        // concurrent connects beyond it wait for the host's 1 s SYN
        // retransmission. Fewer connections and a longer timeout here; the TAP
        // test runs 32 and 64.
        try checkSequentialAndConcurrent(host: "127.0.0.1", port: port, connections: 8, timeout: 30)
        #expect(guest.waitForExit(timeout: 0) == nil, "guest exited: \(guest.console)")
    }

    @Test(.enabled(if: NetTest.isRoot, "needs root for a bridge and a TAP device"), arguments: virtioModes)
    func httpPingAndBadFramesOverTAP(modern: Bool) throws {
        let network = try TapNetwork()
        defer { network.remove() }
        let guest = try NetTest.boot(
            "http", append: "name=tap-web ip=\(network.guestAddress)/24 gw=\(network.hostAddress)",
            netdev: network.netdev(), modern: modern)
        defer { guest.stop() }
        #expect(guest.console.contains(modern ? "virtio-net modern" : "virtio-net legacy"))

        let ping = try NetTest.python(NetScripts.ping, [network.guestAddress, "3"])
        #expect(
            ping.status == 0 && ping.output.trimmingCharacters(in: .whitespacesAndNewlines) == "3",
            "ping: \(ping.output)")

        try checkHTTPBasics(host: network.guestAddress, port: 80, name: "tap-web")
        try checkSequentialAndConcurrent(host: network.guestAddress, port: 80)

        // Junk straight onto the wire: the guest drops and counts it, and serves on.
        let mac = try #require(guestMAC(guest.console), "no MAC in console: \(guest.console)")
        let before = try NetTest.curl("http://\(network.guestAddress)/_netstats").body
        let sent = try NetTest.python(
            NetScripts.frames,
            [network.tap, mac, network.guestAddress, network.hostAddress, "3000", "\(modern ? 2 : 1)"])
        #expect(
            sent.status == 0 && (Int(sent.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 2500,
            "frames: \(sent.output)")
        let after = try NetTest.curl("http://\(network.guestAddress)/_netstats").body
        let droppedBefore = try #require(NetTest.counter("dropped", in: before))
        let droppedAfter = try #require(NetTest.counter("dropped", in: after), "counters: \(after)")
        #expect(droppedAfter > droppedBefore + 1000, "counters: \(after)")
        for name in ["truncated", "bad_checksum", "bad_header", "fragments"] {
            #expect((NetTest.counter(name, in: after) ?? 0) > 0, "\(name) not counted: \(after)")
        }
        try checkHTTPBasics(host: network.guestAddress, port: 80, name: "tap-web")
        try checkSequentialAndConcurrent(host: network.guestAddress, port: 80, connections: 64)
        let pingAgain = try NetTest.python(NetScripts.ping, [network.guestAddress, "2"])
        #expect(pingAgain.output.trimmingCharacters(in: .whitespacesAndNewlines) == "2")
        #expect(guest.waitForExit(timeout: 0) == nil, "guest exited: \(guest.console)")
    }

    @Test(.enabled(if: NetTest.isRoot, "needs root for a bridge, a TAP device and raw sockets"))
    func tcpDropsOutOfOrderDataRetransmitsWithBackoffAndCloses() throws {
        let network = try TapNetwork()
        defer { network.remove() }
        let guest = try NetTest.boot(
            "http", append: "ip=\(network.guestAddress)/24", netdev: network.netdev(), modern: false)
        defer { guest.stop() }
        let mac = try #require(guestMAC(guest.console), "no MAC in console: \(guest.console)")
        let probe = try NetTest.python(
            NetScripts.tcpProbe, [network.tap, mac, network.guestAddress, "10.213.\(network.subnet).77"])
        #expect(probe.status == 0 && probe.output.contains("PASS"), "\(probe.output)")
        let stats = try NetTest.curl("http://\(network.guestAddress)/_netstats").body
        #expect((NetTest.counter("tcp_out_of_order", in: stats) ?? 0) >= 1, "\(stats)")
        #expect((NetTest.counter("tcp_retransmits", in: stats) ?? 0) >= 2, "\(stats)")
    }

    @Test func malformedRequestsGet400AndPipelinedOnesAreAnsweredInOrder() throws {
        let port = try NetTest.freePort()
        let guest = try NetTest.boot(
            "http", append: "name=strict", netdev: "user,hostfwd=tcp:127.0.0.1:\(port)-:80", modern: false)
        defer { guest.stop() }
        let malformed = [
            "GARBAGE\r\n\r\n", "GET /\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "GET noslash HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "\u{1}\u{2}\u{3}\u{4}",
        ]
        for request in malformed {
            let connection = try HTTPTestConnection(host: "127.0.0.1", port: port)
            try connection.write(Array(request.utf8))
            let response = try connection.readResponse()
            #expect(response.status == 400, "\(request.debugDescription) → \(response.status)")
            #expect(response.header("Connection") == "close")
            #expect(connection.isClosedByPeer())
        }
        let connection = try HTTPTestConnection(host: "127.0.0.1", port: port)
        try connection.write(
            Array("GET /healthz HTTP/1.1\r\n\r\nGET /missing HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n".utf8))
        #expect(try connection.readResponse().text == "ok")
        #expect(try connection.readResponse().status == 404)
        #expect(try connection.readResponse().text.contains("<h1>strict</h1>"))
        // Thousands pipelined before reading any answer: all answered, in order.
        let eager = try HTTPTestConnection(host: "127.0.0.1", port: port, timeout: 30)
        let pipelined = 3000
        try eager.write(
            Array(
                String(repeating: "GET /healthz HTTP/1.1\r\n\r\nGET /missing HTTP/1.1\r\n\r\n", count: pipelined / 2)
                    .utf8))
        Thread.sleep(forTimeInterval: 1)
        var answered = 0
        for index in 0..<pipelined {
            let response = try eager.readResponse()
            guard response.status == (index % 2 == 0 ? 200 : 404) else { break }
            answered += 1
        }
        #expect(answered == pipelined)
        // HTTP/1.0 without keep-alive: answered, then closed.
        let old = try HTTPTestConnection(host: "127.0.0.1", port: port)
        try old.write(Array("GET /healthz HTTP/1.0\r\n\r\n".utf8))
        #expect(try old.readResponse().text == "ok")
        #expect(old.isClosedByPeer())
    }

    @Test(arguments: virtioModes)
    func kvStateSurvivesExportAndImportIntoANewInstance(modern: Bool) throws {
        let firstPort = try NetTest.freePort()
        let first = try NetTest.boot(
            "kv", append: "name=kv-a", netdev: "user,hostfwd=tcp:127.0.0.1:\(firstPort)-:80", modern: modern)
        defer { first.stop() }
        let a = try HTTPTestConnection(host: "127.0.0.1", port: firstPort)
        let binary = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 31) }
        let entries: [(String, [UInt8])] = [
            ("alpha", Array("one".utf8)), ("beta", binary), ("z", []), ("gamma", Array("three".utf8)),
        ]
        for (key, value) in entries { #expect(try a.request("PUT", "/kv/\(key)", body: value).status == 204) }
        #expect(try a.request("PUT", "/kv/gamma", body: Array("THREE".utf8)).status == 204)
        #expect(try a.request("DELETE", "/kv/alpha").status == 204)
        #expect(try a.request("DELETE", "/kv/alpha").status == 404)
        #expect(try a.request("GET", "/kv/alpha").status == 404)
        #expect(try a.request("GET", "/kv/beta").body == binary)
        for expected in 1...3 { #expect(try a.request("POST", "/counter").text == "\(expected)") }
        let exported = try a.request("GET", "/_state")
        #expect(exported.status == 200 && exported.body.starts(with: Array("SKV1".utf8)))
        first.stop()

        let secondPort = try NetTest.freePort()
        let second = try NetTest.boot(
            "kv", append: "name=kv-b", netdev: "user,hostfwd=tcp:127.0.0.1:\(secondPort)-:80", modern: modern)
        defer { second.stop() }
        let b = try HTTPTestConnection(host: "127.0.0.1", port: secondPort)
        #expect(try b.request("PUT", "/kv/stale", body: Array("x".utf8)).status == 204)
        #expect(try b.request("PUT", "/_state", body: Array("SKV1 but not really".utf8)).status == 400)
        #expect(try b.request("GET", "/kv/stale").status == 200, "a rejected import must not touch the state")
        #expect(try b.request("PUT", "/_state", body: exported.body).status == 204)
        #expect(try b.request("GET", "/_state").body == exported.body)
        #expect(try b.request("GET", "/kv/stale").status == 404)
        #expect(try b.request("GET", "/kv/alpha").status == 404)
        #expect(try b.request("GET", "/kv/beta").body == binary)
        #expect(try b.request("GET", "/kv/gamma").text == "THREE")
        let empty = try b.request("GET", "/kv/z")
        #expect(empty.status == 200 && empty.body.isEmpty)
        #expect(try b.request("POST", "/counter").text == "4")
    }

    // MARK: - Shared checks

    private func checkHTTPBasics(host: String, port: UInt16, name: String) throws {
        let page = try NetTest.curl("http://\(host):\(port)/")
        #expect(page.status == 200 && page.body.contains("<h1>\(name)</h1>"), "GET /: \(page)")
        let health = try NetTest.curl("http://\(host):\(port)/healthz")
        #expect(health.status == 200 && health.body == "ok")
        #expect(try NetTest.curl("http://\(host):\(port)/no/such/page").status == 404)
        // Two requests on one curl connection (keep-alive).
        let twice = try runCommand(
            "/usr/bin/curl", ["-s", "-m", "10", "http://\(host):\(port)/healthz", "http://\(host):\(port)/healthz"])
        #expect(twice.output == "okok")
    }

    /// 200 sequential requests on fresh connections, then `connections`
    /// keep-alive connections open at once, 10 requests each.
    private func checkSequentialAndConcurrent(
        host: String, port: UInt16, connections: Int = 32, timeout: Int = 10
    ) throws {
        for index in 0..<200 {
            let connection = try HTTPTestConnection(host: host, port: port, timeout: timeout)
            let response = try connection.request("GET", index % 2 == 0 ? "/healthz" : "/", close: true)
            #expect(response.status == 200, "sequential request \(index)")
        }
        let barrier = ThreadBarrier(count: connections)
        let errors = runConcurrently(connections) { worker in
            let connection: HTTPTestConnection
            do {
                connection = try HTTPTestConnection(host: host, port: port, timeout: timeout)
            } catch {
                barrier.arriveAndWait()
                throw error
            }
            barrier.arriveAndWait()  // every connection is open before any request
            for request in 0..<10 {
                let response = try connection.request("GET", "/healthz")
                guard response.status == 200, response.text == "ok" else {
                    throw GuestTestError("worker \(worker) request \(request): \(response.status) \(response.text)")
                }
            }
        }
        #expect(errors.isEmpty, "\(errors)")
    }

    private func guestMAC(_ console: String) -> String? {
        guard let range = console.range(of: " mac ") else { return nil }
        return String(console[range.upperBound...].prefix(17))
    }
}
