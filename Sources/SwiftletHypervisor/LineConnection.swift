import Foundation
import Glibc
import NIOCore
import NIOPosix

/// Splits a byte stream into lines (without "\n" or a trailing "\r"); a line longer than
/// `maximumLength` is passed on in pieces.
private struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    let maximumLength: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws
        -> DecodingState
    {
        let view = buffer.readableBytesView
        let length: Int
        let skip: Int
        if let newline = view.firstIndex(of: UInt8(ascii: "\n")) {
            length = newline - view.startIndex
            skip = 1
        } else if view.count >= maximumLength {
            length = maximumLength
            skip = 0
        } else {
            return .needMoreData
        }
        var line = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: skip)
        if line.readableBytesView.last == UInt8(ascii: "\r") {
            line.moveWriterIndex(to: line.writerIndex - 1)
        }
        context.fireChannelRead(Self.wrapInboundOut(line))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool)
        throws -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 {
            context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: buffer.readableBytes)!))
        }
        return .needMoreData
    }
}

/// Hands each line and the end of the connection to callbacks (run on the channel's event loop).
private final class LineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onLine: @Sendable (String) -> Void
    private let onClose: @Sendable () -> Void

    init(onLine: @escaping @Sendable (String) -> Void, onClose: @escaping @Sendable () -> Void) {
        self.onLine = onLine
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = Self.unwrapInboundIn(data)
        onLine(String(decoding: line.readableBytesView, as: UTF8.self))
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Connects a Unix stream socket without blocking; returns the errno on failure so callers can
/// retry quickly while QEMU has not created the socket yet (ENOENT / ECONNREFUSED).
func connectUnixSocket(path: String) -> Result<Int32, HypervisorError> {
    unixSocket(path: path, action: "connect") { fd, address, length in connect(fd, address, length) }
}

/// Binds and listens on a Unix stream socket at `path` (replacing nothing: the path must be
/// free). The driver hands the listening descriptor to QEMU, so a client can connect the moment
/// QEMU is spawned, with no polling for QEMU to create the socket.
func listenUnixSocket(path: String) -> Result<Int32, HypervisorError> {
    unixSocket(path: path, action: "listen on") { fd, address, length in
        bind(fd, address, length) == 0 ? listen(fd, 16) : -1
    }
}

private func unixSocket(
    path: String, action: String, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
) -> Result<Int32, HypervisorError> {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    let bytes = Array(path.utf8)
    guard bytes.count < capacity else {
        return .failure(.invalidSpec("socket path longer than \(capacity - 1) bytes: \(path)"))
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return .failure(.console("socket(): \(errnoMessage())")) }
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            body(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard result == 0 else {
        let code = errno
        close(fd)
        return .failure(.notRunning("\(action) \(path): \(errnoMessage(code))"))
    }
    return .success(fd)
}

/// A line-oriented connection to one of QEMU's Unix sockets (QMP or the serial console).
struct LineConnection: Sendable {
    let channel: any Channel

    /// Longest console line kept whole; a guest printing a prompt without a newline still gets
    /// through.
    static let consoleLineLimit = 8192
    /// QMP replies are single-line JSON documents that must never be split.
    static let qmpLineLimit = 64 << 20

    /// Wraps an already connected socket in a NIO channel.
    static func attachFuture(
        fd: Int32, maximumLineLength: Int, onLine: @escaping @Sendable (String) -> Void,
        onClose: @escaping @Sendable () -> Void
    ) -> EventLoopFuture<LineConnection> {
        ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineDecoder(maximumLength: maximumLineLength)))
                    try channel.pipeline.syncOperations.addHandler(
                        LineHandler(onLine: onLine, onClose: onClose))
                }
            }
            .withConnectedSocket(fd)
            .map { LineConnection(channel: $0) }
    }

    static func attach(
        fd: Int32, maximumLineLength: Int, onLine: @escaping @Sendable (String) -> Void,
        onClose: @escaping @Sendable () -> Void
    ) async throws -> LineConnection {
        try await attachFuture(fd: fd, maximumLineLength: maximumLineLength, onLine: onLine, onClose: onClose).get()
    }

    func write(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text))
    }

    func close() {
        channel.close(promise: nil)
    }
}
