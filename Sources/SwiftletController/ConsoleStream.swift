import Foundation
import Hummingbird
import NIOCore
import SwiftletCore

/// `GET /v1/instances/{id}/console`: the console log, and with `follow` the bytes written after,
/// until the instance's VM is gone. The bytes come from the instance's host, through its link.
enum ConsoleStream {
    static func response(instanceId: String, link: any AgentLink, follow: Bool) async throws -> Response {
        let headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
        guard follow else {
            let chunk = try await link.readConsole(instanceId: instanceId, from: 0)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: chunk.data)))
        }
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var offset: UInt64 = 0
                var idleAfterExit = 0
                while !Task.isCancelled {
                    let chunk = try await link.readConsole(instanceId: instanceId, from: offset)
                    if !chunk.data.isEmpty {
                        offset += UInt64(chunk.data.count)
                        try await writer.write(ByteBuffer(bytes: chunk.data))
                    }
                    if chunk.vmRunning {
                        idleAfterExit = 0
                    } else {
                        idleAfterExit += 1
                        if idleAfterExit > 2 { break }  // One last read after the VM went away.
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await writer.finish(nil)
            })
    }
}
