// ARP (RFC 826) for IPv4 over Ethernet: a small cache, requests with retries,
// replies, a gratuitous announcement at start, and a short queue of packets
// waiting for an address to resolve.

struct ARPEntry {
    var address: UInt32
    var mac: MACAddress
    var learnedAt: UInt64
}

/// An IPv4 packet (no Ethernet header) waiting for its next hop's MAC.
struct PendingPacket {
    let nextHop: UInt32
    let packet: [UInt8]
}

struct ARPQuery {
    let address: UInt32
    var lastSent: UInt64
    var attempts: Int
}

struct ARPCache {
    static let capacity = 64
    static let pendingCapacity = 32
    static let entryLifetime: UInt64 = 300_000_000
    static let retryInterval: UInt64 = 1_000_000
    static let maxAttempts = 3

    var entries: [ARPEntry] = []
    var pending: [PendingPacket] = []
    var queries: [ARPQuery] = []

    func lookup(_ address: UInt32, now: UInt64) -> MACAddress? {
        for entry in entries where entry.address == address {
            return now &- entry.learnedAt < Self.entryLifetime ? entry.mac : nil
        }
        return nil
    }

    func contains(_ address: UInt32) -> Bool {
        entries.contains { $0.address == address }
    }

    /// Records a mapping, evicting the oldest entry when full.
    mutating func learn(_ address: UInt32, _ mac: MACAddress, now: UInt64) {
        for index in entries.indices where entries[index].address == address {
            entries[index].mac = mac
            entries[index].learnedAt = now
            return
        }
        if entries.count >= Self.capacity {
            var oldest = 0
            for index in entries.indices where entries[index].learnedAt < entries[oldest].learnedAt {
                oldest = index
            }
            entries.remove(at: oldest)
        }
        entries.append(ARPEntry(address: address, mac: mac, learnedAt: now))
    }
}

extension NetStack {
    static let arpOpRequest: UInt16 = 1
    static let arpOpReply: UInt16 = 2

    func receiveARP(_ packet: PacketView, on interface: NetInterface) {
        guard packet.count >= 28 else {
            counters.truncated += 1
            return
        }
        guard packet.be16(0) == 1, packet.be16(2) == EtherType.ipv4, packet.u8(4) == 6, packet.u8(5) == 4
        else {
            counters.badHeader += 1
            return
        }
        let operation = packet.be16(6)
        let senderMAC = packet.mac(8)
        let senderAddress = packet.be32(14)
        let targetAddress = packet.be32(24)
        let address = interface.address
        if senderAddress != 0 && !senderMAC.isMulticast
            && (targetAddress == address || interface.arp.contains(senderAddress))
        {
            interface.arp.learn(senderAddress, senderMAC, now: now)
            releasePending(for: senderAddress, mac: senderMAC, on: interface)
        }
        if operation == Self.arpOpRequest && targetAddress == address && senderAddress != address {
            sendARP(
                operation: Self.arpOpReply, to: senderMAC, targetMAC: senderMAC, targetAddress: senderAddress,
                on: interface)
        }
    }

    func sendARP(
        operation: UInt16, to destination: MACAddress, targetMAC: MACAddress, targetAddress: UInt32,
        on interface: NetInterface
    ) {
        sendFrame(to: destination, type: EtherType.arp, payloadLength: 28, on: interface) { writer in
            writer.put16(0, 1)
            writer.put16(2, EtherType.ipv4)
            writer.put8(4, 6)
            writer.put8(5, 4)
            writer.put16(6, operation)
            writer.putMAC(8, interface.mac)
            writer.put32(14, interface.address)
            writer.putMAC(18, targetMAC)
            writer.put32(24, targetAddress)
        }
    }

    /// Announces our address so neighbours (and bridges) learn it at once.
    func sendGratuitousARP(on interface: NetInterface) {
        sendARP(
            operation: Self.arpOpRequest, to: .broadcast, targetMAC: .zero, targetAddress: interface.address,
            on: interface)
    }

    /// Queues an IPv4 packet until `nextHop` resolves, asking for it if needed.
    func enqueueForResolution(_ packet: [UInt8], nextHop: UInt32, on interface: NetInterface) {
        if interface.arp.pending.count >= ARPCache.pendingCapacity {
            interface.arp.pending.removeFirst()
            counters.arpUnresolved += 1
        }
        interface.arp.pending.append(PendingPacket(nextHop: nextHop, packet: packet))
        if !interface.arp.queries.contains(where: { $0.address == nextHop }) {
            interface.arp.queries.append(ARPQuery(address: nextHop, lastSent: now, attempts: 1))
            sendARP(
                operation: Self.arpOpRequest, to: .broadcast, targetMAC: .zero, targetAddress: nextHop, on: interface)
        }
    }

    private func releasePending(for resolved: UInt32, mac destination: MACAddress, on interface: NetInterface) {
        interface.arp.queries.removeAll { $0.address == resolved }
        if !interface.arp.pending.contains(where: { $0.nextHop == resolved }) { return }
        var waiting: [PendingPacket] = []
        for item in interface.arp.pending {
            if item.nextHop != resolved {
                waiting.append(item)
                continue
            }
            item.packet.withUnsafeBytes { bytes in
                sendFrame(to: destination, type: EtherType.ipv4, payloadLength: bytes.count, on: interface) { writer in
                    writer.copy(0, from: bytes.baseAddress!, count: bytes.count)
                }
            }
        }
        interface.arp.pending = waiting
    }

    /// Resends unanswered requests; gives up (dropping the queued packets)
    /// after a few tries. Returns the next retry time.
    func arpTimers() -> UInt64 {
        var next = UInt64.max
        for interface in interfaces { next = min(next, arpTimers(on: interface)) }
        return next
    }

    private func arpTimers(on interface: NetInterface) -> UInt64 {
        var next = UInt64.max
        var index = interface.arp.queries.count - 1
        while index >= 0 {
            var query = interface.arp.queries[index]
            if now &- query.lastSent >= ARPCache.retryInterval {
                if query.attempts >= ARPCache.maxAttempts {
                    let before = interface.arp.pending.count
                    interface.arp.pending.removeAll { $0.nextHop == query.address }
                    counters.arpUnresolved += UInt64(before - interface.arp.pending.count)
                    interface.arp.queries.remove(at: index)
                    index -= 1
                    continue
                }
                query.attempts += 1
                query.lastSent = now
                interface.arp.queries[index] = query
                sendARP(
                    operation: Self.arpOpRequest, to: .broadcast, targetMAC: .zero, targetAddress: query.address,
                    on: interface)
            }
            next = min(next, query.lastSent + ARPCache.retryInterval)
            index -= 1
        }
        return next
    }
}
