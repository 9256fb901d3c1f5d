// Ethernet II framing: filter by destination, dispatch by EtherType, build
// outgoing headers (short frames padded to the 60-byte minimum).

enum EtherType {
    static let ipv4: UInt16 = 0x0800
    static let arp: UInt16 = 0x0806
}

extension NetStack {
    static let ethernetHeaderSize = 14

    func receiveFrame(_ frame: PacketView, on interface: NetInterface) {
        counters.rxFrames += 1
        counters.rxBytes += UInt64(frame.count)
        if standby {
            counters.standbyDropped += 1
            return
        }
        guard frame.count >= Self.ethernetHeaderSize else {
            counters.truncated += 1
            return
        }
        let destination = frame.mac(0)
        guard destination == interface.mac || destination.isBroadcast else {
            counters.notForUs += 1
            return
        }
        let payload = frame.slice(Self.ethernetHeaderSize, frame.count - Self.ethernetHeaderSize)
        switch frame.be16(12) {
        case EtherType.ipv4: receiveIPv4(payload, on: interface)
        case EtherType.arp: receiveARP(payload, on: interface)
        default: counters.unknownEtherType += 1
        }
    }

    /// Sends one frame on `interface`; `fill` writes `payloadLength` bytes after the header.
    func sendFrame(
        to destination: MACAddress, type: UInt16, payloadLength: Int, on interface: NetInterface,
        _ fill: (PacketWriter) -> Void
    ) {
        if standby { return }
        let length = max(Self.ethernetHeaderSize + payloadLength, 60)
        let sent = interface.nic.transmit { writer in
            writer.putMAC(0, destination)
            writer.putMAC(6, interface.mac)
            writer.put16(12, type)
            let payload = writer.slice(Self.ethernetHeaderSize)
            fill(payload)
            let padding = length - Self.ethernetHeaderSize - payloadLength
            if padding > 0 {
                (payload.base + payloadLength).initializeMemory(as: UInt8.self, repeating: 0, count: padding)
            }
            return length
        }
        if sent {
            counters.txFrames += 1
            counters.txBytes += UInt64(length)
        } else {
            counters.txRingFull += 1
        }
    }
}
