// UDP (RFC 768): port bindings with a handler, checksums verified when
// present and always sent.

/// One received datagram; `payload` is valid only during the handler call.
struct UDPDatagram {
    let source: UInt32
    let sourcePort: UInt16
    let destinationPort: UInt16
    let payload: PacketView
}

struct UDPBinding {
    let port: UInt16
    let handler: (NetStack, UDPDatagram) -> Void
}

extension NetStack {
    /// Calls `handler` for every datagram to `port`.
    func bindUDP(port: UInt16, _ handler: @escaping (NetStack, UDPDatagram) -> Void) {
        udpBindings.append(UDPBinding(port: port, handler: handler))
    }

    func receiveUDP(_ datagram: PacketView, source: UInt32, destination: UInt32) {
        guard datagram.count >= 8 else {
            counters.truncated += 1
            return
        }
        let length = Int(datagram.be16(4))
        guard length >= 8 else {
            counters.badHeader += 1
            return
        }
        guard length <= datagram.count else {
            counters.truncated += 1
            return
        }
        if datagram.be16(6) != 0 {
            var checksum = InternetChecksum()
            checksum.addPseudoHeader(
                source: source, destination: destination, protocol: IPProtocol.udp, length: length)
            checksum.add(datagram.slice(0, length))
            guard checksum.value == 0 else {
                counters.badChecksum += 1
                return
            }
        }
        let port = datagram.be16(2)
        guard let binding = udpBindings.first(where: { $0.port == port }) else {
            counters.udpNoListener += 1
            return
        }
        if quiesced {
            counters.quiesceRefused += 1
            return
        }
        binding.handler(
            self,
            UDPDatagram(
                source: source, sourcePort: datagram.be16(0), destinationPort: port,
                payload: datagram.slice(8, length - 8)))
    }

    /// Sends `payload` (at most 1472 bytes) from `sourcePort` to `destination`,
    /// from the address of the interface that routes to it.
    func sendUDP(from sourcePort: UInt16, to destination: UInt32, port: UInt16, payload: PacketView) {
        let length = 8 + payload.count
        guard Self.ipv4HeaderSize + length <= Self.mtu else { return }
        let source = route(destination).address
        sendIPv4(from: source, to: destination, protocol: IPProtocol.udp, payloadLength: length) { writer in
            writer.put16(0, sourcePort)
            writer.put16(2, port)
            writer.put16(4, UInt16(length))
            writer.put16(6, 0)
            writer.copy(8, from: payload.base, count: payload.count)
            var checksum = InternetChecksum()
            checksum.addPseudoHeader(
                source: source, destination: destination, protocol: IPProtocol.udp, length: length)
            checksum.add(UnsafeRawPointer(writer.base), count: length)
            let value = checksum.value
            writer.put16(6, value == 0 ? 0xffff : value)
        }
    }
}
