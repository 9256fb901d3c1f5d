// HTTP/1.1 server (RFC 9112 subset): request line and headers up to 8 KiB,
// Content-Length bodies, keep-alive (pipelined requests answered in order),
// `Connection: close`, HTTP/1.0. Malformed requests get 400 and a close; a
// chunked body gets 501. The parser is stateless: it reparses the
// connection's unconsumed bytes each time more arrive, so per-connection
// state is just the TCP receive buffer.

struct HTTPRequest {
    var method: [UInt8]
    /// The request target as sent (origin form, starts with "/").
    var target: [UInt8]
    var body: [UInt8]
    var keepAlive: Bool

    func isMethod(_ name: StaticString) -> Bool { Self.equal(method[...], name) }

    /// The target without its query string.
    var path: ArraySlice<UInt8> {
        if let question = target.firstIndex(of: UInt8(ascii: "?")) { return target[..<question] }
        return target[...]
    }

    func isPath(_ name: StaticString) -> Bool { Self.equal(path, name) }

    /// The rest of the path after `prefix`, if the path starts with it.
    func pathAfter(_ prefix: StaticString) -> ArraySlice<UInt8>? {
        let path = self.path
        let count = prefix.utf8CodeUnitCount
        guard path.count >= count,
            Self.equal(path[path.startIndex..<path.startIndex + count], prefix)
        else { return nil }
        return path[(path.startIndex + count)...]
    }

    static func equal(_ bytes: ArraySlice<UInt8>, _ text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount else { return false }
        let start = text.utf8Start
        var index = 0
        for byte in bytes {
            if byte != start[index] { return false }
            index += 1
        }
        return true
    }
}

struct HTTPResponse {
    var status: Int
    var contentType: StaticString
    var body: [UInt8]

    init(status: Int, contentType: StaticString = "text/plain; charset=utf-8", body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    init(status: Int, text: String) {
        self.init(status: status, body: Array(text.utf8))
    }

    static func reason(_ status: Int) -> StaticString {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 413: return "Content Too Large"
        case 431: return "Request Header Fields Too Large"
        case 501: return "Not Implemented"
        case 505: return "HTTP Version Not Supported"
        default: return "Unknown"
        }
    }

    /// Status line, headers and body in one buffer (one send, usually one segment).
    func serialized(keepAlive: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + body.count)
        HTTPResponse.append(&out, "HTTP/1.1 ")
        HTTPResponse.appendDecimal(&out, status)
        out.append(UInt8(ascii: " "))
        HTTPResponse.append(&out, HTTPResponse.reason(status))
        HTTPResponse.append(&out, "\r\nServer: swiftlet\r\n")
        if status != 204 {
            HTTPResponse.append(&out, "Content-Type: ")
            HTTPResponse.append(&out, contentType)
            HTTPResponse.append(&out, "\r\nContent-Length: ")
            HTTPResponse.appendDecimal(&out, body.count)
            HTTPResponse.append(&out, "\r\n")
        }
        HTTPResponse.append(&out, keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n")
        if status != 204 { out.append(contentsOf: body) }
        return out
    }

    static func append(_ out: inout [UInt8], _ text: StaticString) {
        out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    static func appendDecimal(_ out: inout [UInt8], _ value: Int) {
        if value >= 10 { appendDecimal(&out, value / 10) }
        out.append(UInt8(ascii: "0") + UInt8(value % 10))
    }
}

enum HTTPParseResult {
    /// Not all of the request is here yet; `needed` is the total byte count
    /// once known (headers parsed, body pending).
    case incomplete(needed: Int?)
    case malformed(status: Int)
    case complete(HTTPRequest, consumed: Int)
}

enum HTTPParser {
    static let maxHeaderBytes = 8 * 1024

    static func parse(_ bytes: UnsafeRawBufferPointer, maxBodyBytes: Int) -> HTTPParseResult {
        let count = bytes.count
        // Find the blank line that ends the head.
        var headEnd = -1
        var index = 0
        let limit = min(count, maxHeaderBytes)
        while index + 3 < limit {
            if bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
                headEnd = index
                break
            }
            index += 1
        }
        if headEnd < 0 {
            // A request must start with a method token; reject garbage early.
            for position in 0..<min(count, 16) where !isTokenByte(bytes[position]) {
                if bytes[position] != UInt8(ascii: " ") || position == 0 { return .malformed(status: 400) }
                break
            }
            return count >= maxHeaderBytes ? .malformed(status: 431) : .incomplete(needed: nil)
        }

        var lines = LineScanner(bytes: bytes, end: headEnd + 2)
        guard let requestLine = lines.next(), let parsed = parseRequestLine(bytes, requestLine) else {
            return .malformed(status: 400)
        }
        var keepAlive = parsed.minorVersion == 1
        var contentLength: Int? = nil
        while let line = lines.next() {
            guard let colon = firstIndex(of: UInt8(ascii: ":"), in: bytes, line), colon > line.lowerBound else {
                return .malformed(status: 400)
            }
            for position in line.lowerBound..<colon where !isTokenByte(bytes[position]) {
                return .malformed(status: 400)
            }
            let name = line.lowerBound..<colon
            let value = trimmed(bytes, (colon + 1)..<line.upperBound)
            if equalsIgnoringCase(bytes, name, "content-length") {
                guard let length = parseDecimal(bytes, value), contentLength == nil || contentLength == length else {
                    return .malformed(status: 400)
                }
                contentLength = length
            } else if equalsIgnoringCase(bytes, name, "transfer-encoding") {
                return .malformed(status: 501)
            } else if equalsIgnoringCase(bytes, name, "connection") {
                if containsIgnoringCase(bytes, value, "close") { keepAlive = false }
                if containsIgnoringCase(bytes, value, "keep-alive") && parsed.minorVersion == 0 { keepAlive = true }
            }
        }
        let bodyLength = contentLength ?? 0
        if bodyLength > maxBodyBytes { return .malformed(status: 413) }
        let total = headEnd + 4 + bodyLength
        if count < total { return .incomplete(needed: total) }
        let request = HTTPRequest(
            method: Array(UnsafeRawBufferPointer(rebasing: bytes[parsed.method])),
            target: Array(UnsafeRawBufferPointer(rebasing: bytes[parsed.target])),
            body: Array(UnsafeRawBufferPointer(rebasing: bytes[(headEnd + 4)..<total])),
            keepAlive: keepAlive)
        return .complete(request, consumed: total)
    }

    /// `METHOD SP /target SP HTTP/1.x`
    private static func parseRequestLine(
        _ bytes: UnsafeRawBufferPointer, _ line: Range<Int>
    ) -> (method: Range<Int>, target: Range<Int>, minorVersion: Int)? {
        guard let firstSpace = firstIndex(of: UInt8(ascii: " "), in: bytes, line), firstSpace > line.lowerBound else {
            return nil
        }
        for position in line.lowerBound..<firstSpace where !isTokenByte(bytes[position]) { return nil }
        let rest = (firstSpace + 1)..<line.upperBound
        guard let secondSpace = firstIndex(of: UInt8(ascii: " "), in: bytes, rest), secondSpace > rest.lowerBound else {
            return nil
        }
        guard bytes[rest.lowerBound] == UInt8(ascii: "/") else { return nil }
        for position in rest.lowerBound..<secondSpace where bytes[position] <= 32 || bytes[position] >= 127 {
            return nil
        }
        let version = (secondSpace + 1)..<line.upperBound
        guard version.count == 8, equalsIgnoringCase(bytes, version.lowerBound..<version.lowerBound + 7, "http/1.")
        else { return nil }
        let minor = bytes[version.lowerBound + 7]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1") else { return nil }
        return (line.lowerBound..<firstSpace, rest.lowerBound..<secondSpace, Int(minor - UInt8(ascii: "0")))
    }

    /// RFC 9110 token characters (method and header names).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func firstIndex(of byte: UInt8, in bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        for position in range where bytes[position] == byte { return position }
        return nil
    }

    private static func trimmed(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper && (bytes[lower] == 32 || bytes[lower] == 9) { lower += 1 }
        while upper > lower && (bytes[upper - 1] == 32 || bytes[upper - 1] == 9) { upper -= 1 }
        return lower..<upper
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= 65 && byte <= 90 ? byte + 32 : byte
    }

    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ text: StaticString)
        -> Bool
    {
        guard range.count == text.utf8CodeUnitCount else { return false }
        var index = 0
        for position in range {
            if lowercased(bytes[position]) != text.utf8Start[index] { return false }
            index += 1
        }
        return true
    }

    private static func containsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ text: StaticString)
        -> Bool
    {
        let length = text.utf8CodeUnitCount
        if range.count < length { return false }
        for start in range.lowerBound...(range.upperBound - length)
        where equalsIgnoringCase(bytes, start..<start + length, text) {
            return true
        }
        return false
    }

    private static func parseDecimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 12 else { return nil }
        var value = 0
        for position in range {
            let byte = bytes[position]
            guard byte >= 48 && byte <= 57 else { return nil }
            value = value * 10 + Int(byte - 48)
        }
        return value
    }
}

/// Splits a head into CRLF-terminated lines (without the CRLF).
private struct LineScanner {
    let bytes: UnsafeRawBufferPointer
    let end: Int
    var position = 0

    init(bytes: UnsafeRawBufferPointer, end: Int) {
        self.bytes = bytes
        self.end = end
    }

    mutating func next() -> Range<Int>? {
        var index = position
        while index + 1 < end {
            if bytes[index] == 13 && bytes[index + 1] == 10 {
                let line = position..<index
                position = index + 2
                return line
            }
            index += 1
        }
        return nil
    }
}

/// Serves HTTP on a TCP port with one handler for every request.
final class HTTPServer {
    /// Keep-alive connections quiet this long are closed, so idle clients
    /// cannot hold every connection slot.
    static let idleTimeout: UInt64 = 30_000_000
    /// A client that pipelines requests without reading the answers is not
    /// served past this much unacknowledged output; its requests wait in the
    /// receive buffer, whose window then closes (backpressure, bounded memory).
    static let maxQueuedOutput = 256 * 1024
    let maxBodyBytes: Int
    let handler: (HTTPRequest) -> HTTPResponse

    init(stack: NetStack, port: UInt16, maxBodyBytes: Int = 64 * 1024, handler: @escaping (HTTPRequest) -> HTTPResponse)
    {
        self.maxBodyBytes = maxBodyBytes
        self.handler = handler
        stack.listenTCP(port: port) { [self] connection in
            connection.idleTimeout = HTTPServer.idleTimeout
            connection.onReceive = { [self] connection in serve(connection) }
        }
    }

    /// Answers every complete request in the buffer, in order.
    private func serve(_ connection: TCPConnection) {
        while connection.state != .closed {
            if !connection.canSend {
                // Closing already: what else arrives gets no answer.
                connection.consume(connection.receivedCount)
                return
            }
            if connection.queuedSendCount > HTTPServer.maxQueuedOutput { return }
            let result = connection.withReceivedBytes { bytes in
                HTTPParser.parse(bytes, maxBodyBytes: maxBodyBytes)
            }
            switch result {
            case .complete(let request, let consumed):
                connection.consume(consumed)
                connection.receiveLimit = TCPConnection.defaultReceiveLimit
                let response = handler(request)
                connection.send(response.serialized(keepAlive: request.keepAlive))
                if !request.keepAlive {
                    connection.close()
                    return
                }
            case .malformed(let status):
                let response = HTTPResponse(status: status, text: "\(HTTPResponse.reason(status))\n")
                connection.send(response.serialized(keepAlive: false))
                connection.close()
                return
            case .incomplete(let needed):
                if let needed { connection.receiveLimit = max(needed, TCPConnection.defaultReceiveLimit) }
                if connection.peerClosed { connection.close() }
                return
            }
        }
    }
}
