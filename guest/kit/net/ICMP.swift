// ICMP (RFC 792): echo requests are answered; everything else is ignored.

extension NetStack {
    /// `destination`: the address the request was sent to, which answers it.
    func receiveICMP(_ message: PacketView, source: UInt32, destination: UInt32) {
        guard message.count >= 8 else {
            counters.truncated += 1
            return
        }
        var checksum = InternetChecksum()
        checksum.add(message)
        guard checksum.value == 0 else {
            counters.badChecksum += 1
            return
        }
        guard message.u8(0) == 8, message.u8(1) == 0 else { return }
        counters.icmpEchoReplies += 1
        sendIPv4(from: destination, to: source, protocol: IPProtocol.icmp, payloadLength: message.count) { writer in
            writer.copy(0, from: message.base, count: message.count)
            writer.put8(0, 0)  // echo reply
            writer.put16(2, 0)
            var reply = InternetChecksum()
            reply.add(UnsafeRawPointer(writer.base), count: message.count)
            writer.put16(2, reply.value)
        }
    }
}
