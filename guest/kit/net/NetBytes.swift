// Byte-level helpers shared by every protocol layer: big-endian field access on
// packet memory, the Internet checksum, address formatting and counters.

/// Read-only view of a received packet. Parsers check `count` before reading a
/// field, so the accessors themselves do no bounds checks.
struct PacketView {
    let base: UnsafeRawPointer
    let count: Int

    @inline(__always) func u8(_ offset: Int) -> UInt8 {
        base.load(fromByteOffset: offset, as: UInt8.self)
    }
    @inline(__always) func be16(_ offset: Int) -> UInt16 {
        base.loadUnaligned(fromByteOffset: offset, as: UInt16.self).bigEndian
    }
    @inline(__always) func be32(_ offset: Int) -> UInt32 {
        base.loadUnaligned(fromByteOffset: offset, as: UInt32.self).bigEndian
    }
    func mac(_ offset: Int) -> MACAddress {
        MACAddress(UInt64(be16(offset)) << 32 | UInt64(be32(offset + 2)))
    }
    /// The bytes from `offset` on, limited to `length`.
    func slice(_ offset: Int, _ length: Int) -> PacketView {
        PacketView(base: base + offset, count: length)
    }
}

/// Write access to a packet being built in a transmit buffer.
struct PacketWriter {
    let base: UnsafeMutableRawPointer

    @inline(__always) func put8(_ offset: Int, _ value: UInt8) {
        base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }
    @inline(__always) func put16(_ offset: Int, _ value: UInt16) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inline(__always) func put32(_ offset: Int, _ value: UInt32) {
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }
    func putMAC(_ offset: Int, _ mac: MACAddress) {
        put16(offset, UInt16(truncatingIfNeeded: mac.bits >> 32))
        put32(offset + 2, UInt32(truncatingIfNeeded: mac.bits))
    }
    func copy(_ offset: Int, from source: UnsafeRawPointer, count: Int) {
        if count > 0 { (base + offset).copyMemory(from: source, byteCount: count) }
    }
    func slice(_ offset: Int) -> PacketWriter { PacketWriter(base: base + offset) }
}

/// A 48-bit Ethernet address kept in the low bits of a UInt64.
struct MACAddress: Equatable {
    let bits: UInt64
    init(_ bits: UInt64) { self.bits = bits & 0xffff_ffff_ffff }
    static let broadcast = MACAddress(0xffff_ffff_ffff)
    static let zero = MACAddress(0)
    var isBroadcast: Bool { bits == 0xffff_ffff_ffff }
    /// Group bit: broadcast and multicast frames.
    var isMulticast: Bool { (bits >> 40) & 1 == 1 }

    var description: String {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        var shift = 40
        while shift >= 0 {
            let byte = Int((bits >> UInt64(shift)) & 0xff)
            out.append(hex[byte >> 4])
            out.append(hex[byte & 15])
            if shift > 0 { out.append(UInt8(ascii: ":")) }
            shift -= 8
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Dotted-quad text for an IPv4 address held in host order.
func ipv4Text(_ address: UInt32) -> String {
    "\(address >> 24).\((address >> 16) & 0xff).\((address >> 8) & 0xff).\(address & 0xff)"
}

/// RFC 1071 ones'-complement sum. Feed even-length pieces except the last.
struct InternetChecksum {
    private var sum: UInt64 = 0

    mutating func add(_ view: PacketView) { add(view.base, count: view.count) }

    mutating func add(_ pointer: UnsafeRawPointer, count: Int) {
        var index = 0
        while index + 4 <= count {
            sum &+= UInt64(pointer.loadUnaligned(fromByteOffset: index, as: UInt32.self).bigEndian)
            index += 4
        }
        if index + 2 <= count {
            sum &+= UInt64(pointer.loadUnaligned(fromByteOffset: index, as: UInt16.self).bigEndian)
            index += 2
        }
        if index < count {
            sum &+= UInt64(pointer.load(fromByteOffset: index, as: UInt8.self)) << 8
        }
    }

    mutating func add16(_ value: UInt16) { sum &+= UInt64(value) }
    mutating func add32(_ value: UInt32) { sum &+= UInt64(value) }

    /// Adds the IPv4 pseudo-header used by TCP and UDP.
    mutating func addPseudoHeader(source: UInt32, destination: UInt32, protocol proto: UInt8, length: Int) {
        add32(source)
        add32(destination)
        add16(UInt16(proto))
        add16(UInt16(truncatingIfNeeded: length))
    }

    /// The checksum field value; over data that already holds a valid
    /// checksum the result is 0.
    var value: UInt16 {
        var folded = sum
        while folded >> 16 != 0 { folded = (folded & 0xffff) + (folded >> 16) }
        return ~UInt16(truncatingIfNeeded: folded)
    }
}

/// Why frames were dropped, and how much went through. Printed by
/// `NetStack.countersText()` and served by the HTTP examples at `/_netstats`.
struct NetCounters {
    var rxFrames: UInt64 = 0
    var txFrames: UInt64 = 0
    var rxBytes: UInt64 = 0
    var txBytes: UInt64 = 0
    var truncated: UInt64 = 0
    var badChecksum: UInt64 = 0
    var badHeader: UInt64 = 0
    var fragments: UInt64 = 0
    var notForUs: UInt64 = 0
    var unknownEtherType: UInt64 = 0
    var unknownProtocol: UInt64 = 0
    var arpUnresolved: UInt64 = 0
    var txRingFull: UInt64 = 0
    var icmpEchoReplies: UInt64 = 0
    var udpNoListener: UInt64 = 0
    var tcpNoListener: UInt64 = 0
    var tcpTableFull: UInt64 = 0
    var tcpOutOfOrder: UInt64 = 0
    var tcpRetransmits: UInt64 = 0
    var tcpResetsReceived: UInt64 = 0
    var tcpAccepted: UInt64 = 0
    var tcpAborted: UInt64 = 0
    /// Frames dropped unread in standby.
    var standbyDropped: UInt64 = 0
    /// SYNs answered with RST and UDP datagrams dropped while quiesced.
    var quiesceRefused: UInt64 = 0

    /// Every frame that was dropped for being malformed or unwanted.
    var dropped: UInt64 {
        truncated + badChecksum + badHeader + fragments + unknownEtherType + unknownProtocol
    }

    var text: String {
        "rx_frames=\(rxFrames) tx_frames=\(txFrames) rx_bytes=\(rxBytes) tx_bytes=\(txBytes)"
            + " dropped=\(dropped) truncated=\(truncated) bad_checksum=\(badChecksum)"
            + " bad_header=\(badHeader) fragments=\(fragments) not_for_us=\(notForUs)"
            + " unknown_ethertype=\(unknownEtherType) unknown_protocol=\(unknownProtocol)"
            + " arp_unresolved=\(arpUnresolved) tx_ring_full=\(txRingFull)"
            + " icmp_echo_replies=\(icmpEchoReplies) udp_no_listener=\(udpNoListener)"
            + " tcp_no_listener=\(tcpNoListener) tcp_table_full=\(tcpTableFull)"
            + " tcp_out_of_order=\(tcpOutOfOrder) tcp_retransmits=\(tcpRetransmits)"
            + " tcp_resets_received=\(tcpResetsReceived) tcp_accepted=\(tcpAccepted)"
            + " tcp_aborted=\(tcpAborted) standby_dropped=\(standbyDropped)"
            + " quiesce_refused=\(quiesceRefused)"
    }
}
