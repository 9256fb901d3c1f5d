// IPv4 (RFC 791): header validation (checksum checked, fragments dropped and
// counted), dispatch to ICMP/UDP/TCP, and the send path with next-hop routing.

enum IPProtocol {
    static let icmp: UInt8 = 1
    static let tcp: UInt8 = 6
    static let udp: UInt8 = 17
}

extension NetStack {
    static let ipv4HeaderSize = 20
    static let mtu = 1500

    func receiveIPv4(_ packet: PacketView, on interface: NetInterface) {
        guard packet.count >= Self.ipv4HeaderSize else {
            counters.truncated += 1
            return
        }
        let versionAndLength = packet.u8(0)
        let headerLength = Int(versionAndLength & 0x0f) * 4
        guard versionAndLength >> 4 == 4, headerLength >= Self.ipv4HeaderSize else {
            counters.badHeader += 1
            return
        }
        let totalLength = Int(packet.be16(2))
        guard totalLength >= headerLength else {
            counters.badHeader += 1
            return
        }
        // Frames may carry padding past the datagram, never less than it.
        guard headerLength <= packet.count, totalLength <= packet.count else {
            counters.truncated += 1
            return
        }
        var checksum = InternetChecksum()
        checksum.add(packet.slice(0, headerLength))
        guard checksum.value == 0 else {
            counters.badChecksum += 1
            return
        }
        let fragment = packet.be16(6)
        guard fragment & 0x2000 == 0, fragment & 0x1fff == 0 else {
            counters.fragments += 1
            return
        }
        let source = packet.be32(12)
        let destination = packet.be32(16)
        let isBroadcast = destination == 0xffff_ffff || destination == interface.broadcastAddress
        // Any of our addresses on any NIC (weak host): replies leave by the
        // route, which need not be the NIC a request came in on.
        guard isLocalAddress(destination) || isBroadcast else {
            counters.notForUs += 1
            return
        }
        let payload = packet.slice(headerLength, totalLength - headerLength)
        switch packet.u8(9) {
        case IPProtocol.icmp where !isBroadcast: receiveICMP(payload, source: source, destination: destination)
        case IPProtocol.udp: receiveUDP(payload, source: source, destination: destination)
        case IPProtocol.tcp where !isBroadcast: receiveTCP(payload, source: source, destination: destination)
        case IPProtocol.icmp, IPProtocol.tcp: counters.notForUs += 1
        default: counters.unknownProtocol += 1
        }
    }

    /// Sends an IPv4 datagram from our address `source` by the interface
    /// `route` picks; `fill` writes the `payloadLength` bytes after the IP
    /// header. Queues it if the next hop is not yet resolved.
    func sendIPv4(
        from source: UInt32, to destination: UInt32, protocol proto: UInt8, payloadLength: Int,
        _ fill: (PacketWriter) -> Void
    ) {
        let totalLength = Self.ipv4HeaderSize + payloadLength
        guard totalLength <= Self.mtu else { return }
        let identification = ipIdentification
        ipIdentification &+= 1
        func build(_ writer: PacketWriter) {
            writer.put8(0, 0x45)
            writer.put8(1, 0)
            writer.put16(2, UInt16(totalLength))
            writer.put16(4, identification)
            writer.put16(6, 0x4000)  // don't fragment
            writer.put8(8, 64)
            writer.put8(9, proto)
            writer.put16(10, 0)
            writer.put32(12, source)
            writer.put32(16, destination)
            var checksum = InternetChecksum()
            checksum.add(UnsafeRawPointer(writer.base), count: Self.ipv4HeaderSize)
            writer.put16(10, checksum.value)
            fill(writer.slice(Self.ipv4HeaderSize))
        }
        let interface = route(destination)
        let hop = interface.nextHop(for: destination)
        if destination == 0xffff_ffff || destination == interface.broadcastAddress {
            sendFrame(to: .broadcast, type: EtherType.ipv4, payloadLength: totalLength, on: interface, build)
        } else if let destinationMAC = interface.arp.lookup(hop, now: now) {
            sendFrame(to: destinationMAC, type: EtherType.ipv4, payloadLength: totalLength, on: interface, build)
        } else {
            var packet = [UInt8](repeating: 0, count: totalLength)
            packet.withUnsafeMutableBytes { bytes in build(PacketWriter(base: bytes.baseAddress!)) }
            enqueueForResolution(packet, nextHop: hop, on: interface)
        }
    }
}
