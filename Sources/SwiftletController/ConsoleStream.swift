import Foundation
import Hummingbird
import NIOCore
import SwiftletAgent
import SwiftletCore

/// `GET /v1/instances/{id}/console`: the console log, and with `follow` the bytes written after,
/// until the instance's VM is gone.
enum ConsoleStream {
    static func response(instanceId: String, agent: HostAgent, follow: Bool) async throws -> Response {
        let path = await agent.consoleLogPath(instanceId: instanceId)
        let headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
        guard follow else {
            let data = path.flatMap { FileManager.default.contents(atPath: $0) } ?? Data()
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var offset: UInt64 = 0
                var idleAfterExit = 0
                while !Task.isCancelled {
                    let currentPath = await agent.consoleLogPath(instanceId: instanceId)
                    if let currentPath, let handle = FileHandle(forReadingAtPath: currentPath) {
                        try handle.seek(toOffset: offset)
                        let data = try handle.readToEnd() ?? Data()
                        try? handle.close()
                        if !data.isEmpty {
                            offset += UInt64(data.count)
                            try await writer.write(ByteBuffer(bytes: data))
                        }
                    }
                    if await agent.isRunning(instanceId: instanceId) {
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
