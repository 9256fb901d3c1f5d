import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// Host-side probes for the network tests: every device and table a test server makes starts
/// with the server's own prefix, so parallel runs never touch each other's, and the clean-up
/// removes all of them even when the test failed half-way.
enum HostNet {
    static func ip(_ arguments: [String]) -> (status: Int32, output: String) {
        (try? Shell.run("/usr/sbin/ip", arguments)) ?? (-1, "cannot run ip")
    }

    /// In `namespace` when given (a namespace host of a cluster test), else on this host.
    static func nft(_ arguments: [String], namespace: String? = nil) -> (status: Int32, output: String) {
        run("/usr/sbin/nft", arguments, namespace: namespace)
    }

    static func run(_ program: String, _ arguments: [String], namespace: String?) -> (status: Int32, output: String) {
        let result =
            if let namespace {
                try? Shell.run("/usr/sbin/ip", ["netns", "exec", namespace, program] + arguments)
            } else {
                try? Shell.run(program, arguments)
            }
        return result ?? (-1, "cannot run \(program)")
    }

    /// Interface names on the host starting with `prefix`.
    static func links(prefix: String) -> [String] {
        ip(["-o", "link", "show"]).output.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", maxSplits: 2)
            guard fields.count >= 2 else { return nil }
            let name = fields[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first.map(String.init) ?? ""
            return name.hasPrefix(prefix) ? name : nil
        }
    }

    static func table(_ family: String, prefix: String) -> String? {
        let result = nft(["list", "table", family, "swiftlet_" + prefix])
        return result.status == 0 ? result.output : nil
    }

    static func curl(_ url: String, seconds: Int = 5, namespace: String? = nil) -> (status: Int32, output: String) {
        run("/usr/bin/curl", ["-s", "-m", "\(seconds)", url], namespace: namespace)
    }

    static func removeAll(prefix: String) {
        for line in ip(["netns", "list"]).output.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            if name.hasPrefix(prefix) { _ = ip(["netns", "del", name]) }
        }
        for link in links(prefix: prefix) { _ = ip(["link", "del", link]) }
        for family in ["inet", "bridge"] { _ = nft(["delete", "table", family, "swiftlet_" + prefix]) }
    }

    /// Packets the security groups kept out of `tap` (the counted drop ending its chain).
    static func dropped(prefix: String, tap: String, namespace: String? = nil) -> Int? {
        let chain = nft(["list", "chain", "bridge", "swiftlet_" + prefix, "port_" + tap], namespace: namespace).output
        for line in chain.split(separator: "\n") where line.hasSuffix(" drop") && line.contains("counter packets") {
            let words = line.split(separator: " ")
            if let index = words.firstIndex(of: "packets"), index + 1 < words.count { return Int(words[index + 1]) }
        }
        return nil
    }

    /// The guest's network counters, from the kit's `/_netstats` page.
    static func counter(_ name: String, at address: String, namespace: String? = nil) -> Int? {
        let page = curl("http://\(address)/_netstats", namespace: namespace).output
        for word in page.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix(name + "=") {
            return Int(word.dropFirst(name.count + 1))
        }
        return nil
    }
}

/// A network namespace plugged into a Swiftlet bridge through a veth pair: a second "host" on
/// the network, for probes the unikernels cannot originate.
struct Namespace {
    let name: String

    /// A namespace made elsewhere (a cluster test's namespace host).
    init(existing name: String) { self.name = name }

    init(prefix: String, index: Int, bridge: String, address: String, prefixLength: Int, gateway: String) throws {
        name = "\(prefix)ns\(index)"
        let hostSide = "\(prefix)v\(index)"
        let inside = "\(prefix)p\(index)"
        let steps: [[String]] = [
            ["netns", "add", name],
            ["link", "add", hostSide, "type", "veth", "peer", "name", inside],
            ["link", "set", inside, "netns", name],
            ["link", "set", hostSide, "master", bridge, "up"],
            ["-n", name, "addr", "add", "\(address)/\(prefixLength)", "dev", inside],
            ["-n", name, "link", "set", inside, "up"],
            ["-n", name, "link", "set", "lo", "up"],
            ["-n", name, "route", "add", "default", "via", gateway],
        ]
        for step in steps {
            let result = HostNet.ip(step)
            guard result.status == 0 else { throw TestFailure("ip \(step.joined(separator: " ")): \(result.output)") }
        }
    }

    func run(_ program: String, _ arguments: [String]) -> (status: Int32, output: String) {
        (try? Shell.run("/usr/sbin/ip", ["netns", "exec", name, program] + arguments)) ?? (-1, "")
    }

    func curl(_ url: String, seconds: Int = 3) -> (status: Int32, output: String) {
        run("/usr/bin/curl", ["-s", "-m", "\(seconds)", url])
    }

    /// Sends one UDP datagram with a forged source address (raw socket), so that the receiver
    /// answers to `source` — another instance — and not to this namespace.
    func sendUDP(from source: String, sourcePort: Int, to destination: String, port: Int) -> (
        status: Int32, output: String
    ) {
        run("/usr/bin/python3", ["-c", Self.forgeUDP, source, destination, "\(sourcePort)", "\(port)"])
    }

    private static let forgeUDP = """
        import socket, struct, sys
        src, dst, sport, dport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        payload = b"swiftlet-probe"
        def csum(data):
            if len(data) % 2: data += b"\\0"
            s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return ~s & 0xffff
        s_ip, d_ip = socket.inet_aton(src), socket.inet_aton(dst)
        length = 8 + len(payload)
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
        check = csum(s_ip + d_ip + struct.pack("!BBH", 0, 17, length) + udp) or 0xffff
        udp = struct.pack("!HHHH", sport, dport, length, check) + payload
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, s_ip, d_ip)
        header = header[:10] + struct.pack("!H", csum(header)) + header[12:]
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.sendto(header + udp, (dst, 0))
        """
}

/// A server with its own device prefix; afterwards every device, namespace and table with that
/// prefix is removed, whatever happened.
func withNetworkServer(_ body: (ServerProcess, SwiftletClient, String) async throws -> Void) async throws {
    let prefix = "n" + String(format: "%04x", UInt16.random(in: 0...UInt16.max))
    defer { HostNet.removeAll(prefix: prefix) }
    try await withServer(config: ["networkPrefix": prefix]) { server, client in
        try await body(server, client, prefix)
    }
}

/// Distinct random /24 blocks in 10.170-199.x.0, unlikely to meet anything else on the host:
/// apart from the fabrics' 10.200-249 and the overlay networks' 10.150-169 of the cluster tests,
/// which run meanwhile.
func randomCIDRs(_ count: Int) -> [String] {
    let second = Int.random(in: 170...199)
    let thirds = (0...255).shuffled().prefix(count)
    return thirds.map { "10.\(second).\($0).0/24" }
}
