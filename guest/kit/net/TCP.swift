// TCP (RFC 9293), passive open only. In-order delivery: segments that start
// past rcv.nxt are dropped and answered with a duplicate ACK. Go-back-N
// retransmission on a timer (RFC 6298 estimator, exponential backoff), fast
// retransmit on three duplicate ACKs, a receive window bounded by what the
// application has not consumed, zero-window probes, MSS option, FIN/RST
// handling and a short, bounded TIME-WAIT.

enum TCPState {
    case synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait, closed
}

enum TCPFlag {
    static let fin: UInt8 = 0x01
    static let syn: UInt8 = 0x02
    static let rst: UInt8 = 0x04
    static let psh: UInt8 = 0x08
    static let ack: UInt8 = 0x10
}

@inline(__always) func seqLess(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
@inline(__always) func seqGreater(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }

struct TCPSegment {
    let sourcePort: UInt16
    let destinationPort: UInt16
    let seq: UInt32
    let ack: UInt32
    let flags: UInt8
    let window: UInt16
    let mss: Int?
    let payload: PacketView

    func has(_ flag: UInt8) -> Bool { flags & flag != 0 }
    /// Sequence space the segment occupies (SYN and FIN count one each).
    var length: Int { payload.count + (has(TCPFlag.syn) ? 1 : 0) + (has(TCPFlag.fin) ? 1 : 0) }
}

final class TCPListener {
    let port: UInt16
    let onAccept: (TCPConnection) -> Void
    init(port: UInt16, onAccept: @escaping (TCPConnection) -> Void) {
        self.port = port
        self.onAccept = onAccept
    }
}

/// One connection. The application reads with `withReceivedBytes`/`consume`,
/// writes with `send`, ends with `close` (graceful) or `abort` (RST).
final class TCPConnection {
    static let ourMSS = 1460
    static let defaultReceiveLimit = 16 * 1024
    static let initialRTO: UInt64 = 1_000_000
    static let minRTO: UInt64 = 200_000
    static let maxRTO: UInt64 = 30_000_000
    static let maxRetries = 8
    /// Half-open connections give up sooner: they may be spoofed.
    static let maxSynAckRetries = 4
    static let timeWaitDuration: UInt64 = 2_000_000
    static let finWait2Duration: UInt64 = 15_000_000

    let stack: NetStack
    /// Which of our addresses the peer connected to: every segment comes from it.
    let localAddress: UInt32
    let localPort: UInt16
    let remoteAddress: UInt32
    let remotePort: UInt16
    var state: TCPState = .synReceived

    /// Called when data or the peer's FIN arrived (see `peerClosed`).
    var onReceive: ((TCPConnection) -> Void)?
    /// Called once when the connection is gone (closed, reset or timed out).
    var onClose: ((TCPConnection) -> Void)?
    /// How many unconsumed received bytes the window allows; an application
    /// may raise it to take a large body in one piece.
    var receiveLimit = TCPConnection.defaultReceiveLimit
    /// Microseconds without a segment from the peer after which an
    /// established connection is closed (0: never).
    var idleTimeout: UInt64 = 0
    fileprivate(set) var peerClosed = false

    // Send side: sendBuffer[sendStart...] holds the bytes from sndUna on,
    // both in flight and not yet sent.
    fileprivate var sendBuffer: [UInt8] = []
    fileprivate var sendStart = 0
    fileprivate let iss: UInt32
    fileprivate var sndUna: UInt32
    fileprivate var sndNxt: UInt32
    fileprivate var sndWnd: UInt32 = 0
    fileprivate var mss = 536
    fileprivate var closeRequested = false
    fileprivate var finAcked = false
    fileprivate var duplicateAcks = 0

    // Receive side.
    fileprivate var receiveBuffer: [UInt8] = []
    fileprivate var receiveStart = 0
    fileprivate var rcvNxt: UInt32
    fileprivate var lastAdvertisedWindow = 0
    fileprivate var ackPending = false

    // Timers, in microseconds since entry; 0 = not armed.
    fileprivate var rto = TCPConnection.initialRTO
    fileprivate var smoothedRTT: UInt64 = 0
    fileprivate var rttVariance: UInt64 = 0
    fileprivate var rttTiming = false
    fileprivate var rttSeq: UInt32 = 0
    fileprivate var rttStart: UInt64 = 0
    fileprivate var retransmitDeadline: UInt64 = 0
    fileprivate var retries = 0
    fileprivate var stateDeadline: UInt64 = 0
    fileprivate var openedAt: UInt64 = 0
    fileprivate var lastHeard: UInt64 = 0
    fileprivate var acceptHandler: ((TCPConnection) -> Void)?

    fileprivate init(
        stack: NetStack, localAddress: UInt32, localPort: UInt16, remoteAddress: UInt32, remotePort: UInt16,
        iss: UInt32, irs: UInt32
    ) {
        self.stack = stack
        self.localAddress = localAddress
        self.localPort = localPort
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.iss = iss
        self.sndUna = iss
        self.sndNxt = iss
        self.rcvNxt = irs &+ 1
    }

    var receivedCount: Int { receiveBuffer.count - receiveStart }

    /// Bytes given to `send` that the peer has not acknowledged yet.
    var queuedSendCount: Int { sendBuffer.count - sendStart }

    func withReceivedBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        receiveBuffer.withUnsafeBytes { bytes in
            body(UnsafeRawBufferPointer(rebasing: bytes[receiveStart...]))
        }
    }

    /// Drops `count` bytes from the front of the received data, opening the window.
    func consume(_ count: Int) {
        receiveStart += min(count, receivedCount)
        if receiveStart == receiveBuffer.count {
            receiveBuffer.removeAll(keepingCapacity: receiveBuffer.capacity <= 64 * 1024)
            receiveStart = 0
        } else if receiveStart >= 8192 && receiveStart * 2 >= receiveBuffer.count {
            receiveBuffer.removeFirst(receiveStart)
            receiveStart = 0
        }
    }

    /// Queues bytes and sends what the peer's window allows.
    func send(_ bytes: [UInt8]) {
        guard canSend else { return }
        sendBuffer.append(contentsOf: bytes)
        stack.tcpOutput(self)
    }

    /// Sends the FIN after all queued data.
    func close() {
        guard canSend else { return }
        closeRequested = true
        stack.tcpOutput(self)
    }

    /// Resets the connection at once.
    func abort() {
        if state == .closed { return }
        stack.sendReset(self)
        stack.removeConnection(self)
    }

    /// Whether `send` and `close` still apply (no close requested, not torn down).
    var canSend: Bool {
        !closeRequested && (state == .established || state == .closeWait || state == .synReceived)
    }

    fileprivate var bufferedSendCount: Int { queuedSendCount }

    fileprivate var advertisedWindow: Int {
        min(max(receiveLimit - receivedCount, 0), 65535)
    }

    fileprivate func dropAcked(_ count: Int) {
        sendStart += count
        if sendStart == sendBuffer.count {
            sendBuffer.removeAll(keepingCapacity: sendBuffer.capacity <= 64 * 1024)
            sendStart = 0
        } else if sendStart >= 8192 && sendStart * 2 >= sendBuffer.count {
            sendBuffer.removeFirst(sendStart)
            sendStart = 0
        }
    }

    fileprivate func sampleRTT(_ sample: UInt64) {
        if smoothedRTT == 0 {
            smoothedRTT = sample
            rttVariance = sample / 2
        } else {
            let difference = smoothedRTT > sample ? smoothedRTT - sample : sample - smoothedRTT
            rttVariance = (3 * rttVariance + difference) / 4
            smoothedRTT = (7 * smoothedRTT + sample) / 8
        }
        rto = min(max(smoothedRTT + max(4 * rttVariance, 1000), TCPConnection.minRTO), TCPConnection.maxRTO)
    }
}

extension NetStack {
    static let maxConnections = 256

    /// Accepts connections on `port`; `onAccept` runs when the handshake completes.
    func listenTCP(port: UInt16, _ onAccept: @escaping (TCPConnection) -> Void) {
        listeners.append(TCPListener(port: port, onAccept: onAccept))
    }

    func receiveTCP(_ packet: PacketView, source: UInt32, destination: UInt32) {
        guard packet.count >= 20 else {
            counters.truncated += 1
            return
        }
        let headerLength = Int(packet.u8(12) >> 4) * 4
        guard headerLength >= 20, headerLength <= packet.count else {
            counters.badHeader += 1
            return
        }
        var checksum = InternetChecksum()
        checksum.addPseudoHeader(
            source: source, destination: destination, protocol: IPProtocol.tcp, length: packet.count)
        checksum.add(packet)
        guard checksum.value == 0 else {
            counters.badChecksum += 1
            return
        }
        let segment = TCPSegment(
            sourcePort: packet.be16(0), destinationPort: packet.be16(2), seq: packet.be32(4),
            ack: packet.be32(8), flags: packet.u8(13), window: packet.be16(14),
            mss: Self.parseMSS(packet.slice(20, headerLength - 20)),
            payload: packet.slice(headerLength, packet.count - headerLength))

        for connection in connections
        where connection.remotePort == segment.sourcePort && connection.localPort == segment.destinationPort
            && connection.remoteAddress == source && connection.localAddress == destination
        {
            // A new SYN past a TIME-WAIT connection's sequence space reopens it (RFC 6191).
            if connection.state == .timeWait && segment.has(TCPFlag.syn) && !segment.has(TCPFlag.ack)
                && seqGreater(segment.seq, connection.rcvNxt)
            {
                removeConnection(connection)
                break
            }
            connection.lastHeard = now
            segmentArrived(connection, segment)
            return
        }
        if segment.has(TCPFlag.rst) { return }
        if segment.has(TCPFlag.syn) && !segment.has(TCPFlag.ack),
            let listener = listeners.first(where: { $0.port == segment.destinationPort })
        {
            if !quiesced {
                accept(segment, from: source, to: destination, listener: listener)
                return
            }
            counters.quiesceRefused += 1
        } else {
            counters.tcpNoListener += 1
        }
        sendReset(replyingTo: segment, from: source, to: destination)
    }

    /// The MSS option, if well formed; malformed options end the scan.
    private static func parseMSS(_ options: PacketView) -> Int? {
        var offset = 0
        while offset < options.count {
            let kind = options.u8(offset)
            if kind == 0 { return nil }
            if kind == 1 {
                offset += 1
                continue
            }
            guard offset + 1 < options.count else { return nil }
            let length = Int(options.u8(offset + 1))
            guard length >= 2, offset + length <= options.count else { return nil }
            if kind == 2 && length == 4 { return Int(options.be16(offset + 2)) }
            offset += length
        }
        return nil
    }

    private func accept(_ segment: TCPSegment, from source: UInt32, to destination: UInt32, listener: TCPListener) {
        if connections.count >= Self.maxConnections && !reclaimSlot() {
            counters.tcpTableFull += 1
            return
        }
        let connection = TCPConnection(
            stack: self, localAddress: destination, localPort: segment.destinationPort, remoteAddress: source,
            remotePort: segment.sourcePort, iss: random.next(), irs: segment.seq)
        connection.mss = min(max(segment.mss ?? 536, 64), TCPConnection.ourMSS)
        connection.sndWnd = UInt32(segment.window)
        connection.acceptHandler = listener.onAccept
        connection.openedAt = now
        connection.lastHeard = now
        connections.append(connection)
        sendSynAck(connection)
        connection.sndNxt = connection.iss &+ 1
        connection.rttTiming = true
        connection.rttSeq = connection.sndNxt
        connection.rttStart = now
        connection.retransmitDeadline = now + connection.rto
    }

    /// Frees a slot for a new connection: the oldest TIME-WAIT one, else the
    /// oldest half-open one (so a SYN flood cannot lock out real clients).
    private func reclaimSlot() -> Bool {
        var victim: TCPConnection? = nil
        for connection in connections where connection.state == .timeWait {
            if victim == nil || connection.stateDeadline < victim!.stateDeadline { victim = connection }
        }
        if victim == nil {
            for connection in connections where connection.state == .synReceived {
                if victim == nil || connection.openedAt < victim!.openedAt { victim = connection }
            }
        }
        guard let victim else { return false }
        removeConnection(victim)
        return true
    }

    private func segmentArrived(_ connection: TCPConnection, _ segment: TCPSegment) {
        if connection.state == .synReceived {
            if segment.has(TCPFlag.rst) {
                if segment.seq == connection.rcvNxt {
                    counters.tcpResetsReceived += 1
                    removeConnection(connection)
                }
                return
            }
            if segment.has(TCPFlag.syn) {
                // The peer did not get our SYN-ACK: send it again.
                if segment.seq &+ 1 == connection.rcvNxt { sendSynAck(connection) }
                return
            }
            guard segment.has(TCPFlag.ack) else { return }
            guard segment.ack == connection.iss &+ 1 else {
                sendReset(replyingTo: segment, from: connection.remoteAddress, to: connection.localAddress)
                return
            }
            connection.state = .established
            connection.sndUna = segment.ack
            connection.sndWnd = UInt32(segment.window)
            if connection.rttTiming && connection.retries == 0 { connection.sampleRTT(now - connection.rttStart) }
            connection.rttTiming = false
            connection.retries = 0
            connection.retransmitDeadline = 0
            counters.tcpAccepted += 1
            let handler = connection.acceptHandler
            connection.acceptHandler = nil
            handler?(connection)
            if connection.state == .closed { return }
        }

        if segment.has(TCPFlag.rst) {
            if segment.seq == connection.rcvNxt {
                counters.tcpResetsReceived += 1
                removeConnection(connection)
            } else {
                connection.ackPending = true  // challenge ACK (RFC 5961)
                tcpOutput(connection)
            }
            return
        }
        if segment.has(TCPFlag.syn) {
            connection.ackPending = true
            tcpOutput(connection)
            return
        }
        guard segment.has(TCPFlag.ack) else { return }

        if seqGreater(segment.ack, connection.sndNxt) {
            connection.ackPending = true
            tcpOutput(connection)
            return
        }
        let previousUna = connection.sndUna
        if seqGreater(segment.ack, connection.sndUna) {
            let acked = Int(segment.ack &- connection.sndUna)
            let dataAcked = min(acked, connection.bufferedSendCount)
            connection.dropAcked(dataAcked)
            if acked > dataAcked { connection.finAcked = true }
            connection.sndUna = segment.ack
            connection.duplicateAcks = 0
            connection.retries = 0
            if connection.rttTiming && !seqLess(segment.ack, connection.rttSeq) {
                connection.sampleRTT(now - connection.rttStart)
                connection.rttTiming = false
            }
            connection.retransmitDeadline = connection.sndUna == connection.sndNxt ? 0 : now + connection.rto
        } else if segment.ack == connection.sndUna && segment.payload.count == 0 && !segment.has(TCPFlag.fin)
            && connection.sndNxt != connection.sndUna && UInt32(segment.window) == connection.sndWnd
        {
            connection.duplicateAcks += 1
            if connection.duplicateAcks == 3 {
                counters.tcpRetransmits += 1
                connection.sndNxt = connection.sndUna
                connection.rttTiming = false
            }
        }
        connection.sndWnd = UInt32(segment.window)

        if connection.finAcked {
            switch connection.state {
            case .finWait1:
                connection.state = .finWait2
                connection.stateDeadline = now + TCPConnection.finWait2Duration
            case .closing:
                enterTimeWait(connection)
            case .lastAck:
                removeConnection(connection)
                return
            default: break
            }
        }

        // Acknowledged data may unblock an application that stopped reading
        // until its output drained: let it look at what it has again.
        var delivered = connection.sndUna != previousUna && connection.receivedCount > 0
        switch connection.state {
        case .established, .finWait1, .finWait2:
            if receiveData(connection, segment) { delivered = true }
        case .closeWait, .closing, .lastAck, .timeWait:
            // Only a retransmitted FIN (or stray data) can arrive now: re-ACK it.
            if segment.payload.count > 0 || segment.has(TCPFlag.fin) {
                connection.ackPending = true
                if connection.state == .timeWait { connection.stateDeadline = now + TCPConnection.timeWaitDuration }
            }
        default: break
        }
        if delivered && !quiesced {
            connection.onReceive?(connection)
        } else if delivered && connection.receivedCount > 0 && connection.queuedSendCount == 0 {
            // Quiesced: a request that will never be answered; the RST tells its client now.
            connection.abort()
            return
        }
        if connection.state != .closed { tcpOutput(connection) }
    }

    /// Takes in-order payload and FIN; returns whether the application has
    /// something new to look at.
    private func receiveData(_ connection: TCPConnection, _ segment: TCPSegment) -> Bool {
        var seq = segment.seq
        var payload = segment.payload
        var fin = segment.has(TCPFlag.fin)
        if payload.count == 0 && !fin { return false }
        if seqLess(seq, connection.rcvNxt) {
            let skip = Int(connection.rcvNxt &- seq)
            if skip > payload.count {
                connection.ackPending = true  // a retransmission of what we have
                return false
            }
            payload = payload.slice(skip, payload.count - skip)
            seq = connection.rcvNxt
        }
        if seq != connection.rcvNxt {
            counters.tcpOutOfOrder += 1
            connection.ackPending = true  // duplicate ACK tells the peer what we miss
            return false
        }
        var delivered = false
        let accepted = min(payload.count, max(connection.receiveLimit - connection.receivedCount, 0))
        if accepted > 0 {
            connection.receiveBuffer.append(
                contentsOf: UnsafeRawBufferPointer(start: payload.base, count: accepted))
            connection.rcvNxt &+= UInt32(accepted)
            delivered = true
        }
        if payload.count > 0 { connection.ackPending = true }
        if accepted < payload.count { fin = false }  // the FIN lies past our window
        if fin {
            connection.rcvNxt &+= 1
            connection.peerClosed = true
            connection.ackPending = true
            delivered = true
            switch connection.state {
            case .established: connection.state = .closeWait
            case .finWait1: connection.state = .closing
            case .finWait2: enterTimeWait(connection)
            default: break
            }
        }
        return delivered
    }

    private func enterTimeWait(_ connection: TCPConnection) {
        connection.state = .timeWait
        connection.stateDeadline = now + TCPConnection.timeWaitDuration
        connection.retransmitDeadline = 0
    }

    /// Sends queued data (and the FIN once all data is out) within the peer's
    /// window, or a bare ACK if one is owed. `probe` forces one byte into a
    /// zero window.
    func tcpOutput(_ connection: TCPConnection, probe: Bool = false) {
        let state = connection.state
        let mayTransmit =
            state == .established || state == .closeWait || state == .finWait1 || state == .closing
            || state == .lastAck
        var forceByte = probe
        while mayTransmit {
            let buffered = connection.bufferedSendCount
            let offset = Int(connection.sndNxt &- connection.sndUna)
            if offset < buffered {
                var room = Int(connection.sndWnd) - offset
                if room <= 0 {
                    guard forceByte && offset == 0 else { break }
                    room = 1
                }
                forceByte = false
                let count = min(connection.mss, buffered - offset, room)
                let fin = connection.closeRequested && offset + count == buffered
                sendSegment(
                    connection, seq: connection.sndNxt,
                    flags: TCPFlag.ack | TCPFlag.psh | (fin ? TCPFlag.fin : 0), dataOffset: offset, count: count)
                if !connection.rttTiming {
                    connection.rttTiming = true
                    connection.rttSeq = connection.sndNxt &+ UInt32(count)
                    connection.rttStart = now
                }
                connection.sndNxt &+= UInt32(count + (fin ? 1 : 0))
                if fin { finSent(connection) }
            } else if connection.closeRequested && offset == buffered && !connection.finAcked {
                sendSegment(
                    connection, seq: connection.sndNxt, flags: TCPFlag.ack | TCPFlag.fin, dataOffset: 0, count: 0)
                connection.sndNxt &+= 1
                finSent(connection)
            } else {
                break
            }
        }
        let window = connection.advertisedWindow
        if window >= connection.lastAdvertisedWindow + 2 * TCPConnection.ourMSS
            || (connection.lastAdvertisedWindow == 0 && window > 0)
        {
            connection.ackPending = true  // window update
        }
        if connection.ackPending && state != .synReceived && state != .closed {
            sendSegment(connection, seq: connection.sndNxt, flags: TCPFlag.ack, dataOffset: 0, count: 0)
        }
        let waitingOnPeer =
            connection.sndNxt != connection.sndUna
            || (connection.bufferedSendCount > 0 && connection.sndWnd == 0)
        if !waitingOnPeer {
            connection.retransmitDeadline = 0
        } else if connection.retransmitDeadline == 0 {
            connection.retransmitDeadline = now + connection.rto
        }
    }

    private func finSent(_ connection: TCPConnection) {
        switch connection.state {
        case .established: connection.state = .finWait1
        case .closeWait: connection.state = .lastAck
        default: break
        }
    }

    private func sendSynAck(_ connection: TCPConnection) {
        sendSegment(
            connection, seq: connection.iss, flags: TCPFlag.syn | TCPFlag.ack, dataOffset: 0, count: 0,
            withMSS: true)
    }

    /// Emits one segment carrying `count` bytes of the send buffer starting
    /// `dataOffset` bytes past sndUna.
    private func sendSegment(
        _ connection: TCPConnection, seq: UInt32, flags: UInt8, dataOffset: Int, count: Int,
        withMSS: Bool = false
    ) {
        let headerLength = withMSS ? 24 : 20
        let window = connection.advertisedWindow
        connection.lastAdvertisedWindow = window
        connection.ackPending = false
        let length = headerLength + count
        let remote = connection.remoteAddress
        connection.sendBuffer.withUnsafeBytes { sendBytes in
            sendIPv4(from: connection.localAddress, to: remote, protocol: IPProtocol.tcp, payloadLength: length) {
                writer in
                writer.put16(0, connection.localPort)
                writer.put16(2, connection.remotePort)
                writer.put32(4, seq)
                writer.put32(8, connection.rcvNxt)
                writer.put8(12, UInt8(headerLength / 4) << 4)
                writer.put8(13, flags)
                writer.put16(14, UInt16(window))
                writer.put16(16, 0)
                writer.put16(18, 0)
                if withMSS {
                    writer.put8(20, 2)
                    writer.put8(21, 4)
                    writer.put16(22, UInt16(TCPConnection.ourMSS))
                }
                if count > 0 {
                    writer.copy(
                        headerLength, from: sendBytes.baseAddress! + connection.sendStart + dataOffset, count: count)
                }
                var checksum = InternetChecksum()
                checksum.addPseudoHeader(
                    source: connection.localAddress, destination: remote, protocol: IPProtocol.tcp, length: length)
                checksum.add(UnsafeRawPointer(writer.base), count: length)
                writer.put16(16, checksum.value)
            }
        }
    }

    /// RST for a segment that matches no connection (RFC 9293 §3.10.7.1).
    private func sendReset(replyingTo segment: TCPSegment, from source: UInt32, to destination: UInt32) {
        let hasAck = segment.has(TCPFlag.ack)
        let seq = hasAck ? segment.ack : 0
        let ack = segment.seq &+ UInt32(segment.length)
        let flags = hasAck ? TCPFlag.rst : TCPFlag.rst | TCPFlag.ack
        sendIPv4(from: destination, to: source, protocol: IPProtocol.tcp, payloadLength: 20) { writer in
            writer.put16(0, segment.destinationPort)
            writer.put16(2, segment.sourcePort)
            writer.put32(4, seq)
            writer.put32(8, hasAck ? 0 : ack)
            writer.put8(12, 5 << 4)
            writer.put8(13, flags)
            writer.put16(14, 0)
            writer.put16(16, 0)
            writer.put16(18, 0)
            var checksum = InternetChecksum()
            checksum.addPseudoHeader(source: destination, destination: source, protocol: IPProtocol.tcp, length: 20)
            checksum.add(UnsafeRawPointer(writer.base), count: 20)
            writer.put16(16, checksum.value)
        }
    }

    func sendReset(_ connection: TCPConnection) {
        counters.tcpAborted += 1
        sendSegment(connection, seq: connection.sndNxt, flags: TCPFlag.rst | TCPFlag.ack, dataOffset: 0, count: 0)
    }

    func removeConnection(_ connection: TCPConnection) {
        if connection.state == .closed { return }
        connection.state = .closed
        if let index = connections.firstIndex(where: { $0 === connection }) {
            connections.swapAt(index, connections.count - 1)
            connections.removeLast()
        }
        let handler = connection.onClose
        connection.onReceive = nil
        connection.onClose = nil
        connection.acceptHandler = nil
        handler?(connection)
    }

    /// Runs retransmission and state timers; returns the earliest next one.
    func tcpTimers() -> UInt64 {
        var next = UInt64.max
        var index = connections.count - 1
        while index >= 0 {
            if index >= connections.count {
                index = connections.count - 1
                continue
            }
            let connection = connections[index]
            index -= 1
            if connection.state == .timeWait || connection.state == .finWait2 {
                if connection.stateDeadline <= now {
                    removeConnection(connection)
                    continue
                }
                next = min(next, connection.stateDeadline)
            }
            if connection.retransmitDeadline != 0 && connection.retransmitDeadline <= now {
                retransmitTimeout(connection)
            }
            if connection.idleTimeout != 0 && connection.state == .established {
                let idleDeadline = connection.lastHeard + connection.idleTimeout
                if idleDeadline <= now {
                    connection.close()
                } else {
                    next = min(next, idleDeadline)
                }
            }
            if connection.state != .closed && connection.retransmitDeadline != 0 {
                next = min(next, connection.retransmitDeadline)
            }
        }
        return next
    }

    private func retransmitTimeout(_ connection: TCPConnection) {
        connection.retries += 1
        let limit = connection.state == .synReceived ? TCPConnection.maxSynAckRetries : TCPConnection.maxRetries
        if connection.retries > limit {
            connection.abort()
            return
        }
        counters.tcpRetransmits += 1
        connection.rto = min(connection.rto * 2, TCPConnection.maxRTO)
        connection.rttTiming = false
        if connection.state == .synReceived {
            sendSynAck(connection)
            connection.retransmitDeadline = now + connection.rto
            return
        }
        let probe = connection.sndNxt == connection.sndUna
        connection.sndNxt = connection.sndUna
        connection.retransmitDeadline = 0
        tcpOutput(connection, probe: probe)
        if connection.retransmitDeadline == 0 && connection.bufferedSendCount > 0 {
            connection.retransmitDeadline = now + connection.rto
        }
    }
}
