import Foundation
import Hummingbird
import NIOCore
import SwiftletCore

/// `/v1/builds` (docs/images.md): start a build from a tar body or a host path, list, show, log.
enum BuildRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        let service = BuildService(controller: controller)
        v1.post("builds") { request, context in
            let principal = try context.requirePrincipal()
            let query = request.uri.queryParameters
            guard let name = query.get("name") else {
                throw SwiftletError.badRequest("build.name_required", "query parameter 'name' is required")
            }
            let flags = query.getAll("flag")
            let source: BuildService.Source
            if let path = query.get("path") {
                source = .path(path)
            } else {
                if let declared = request.headers[.contentLength].flatMap(Int64.init), declared > controller.uploadLimit
                {
                    throw SwiftletError(
                        .payloadTooLarge, "build.too_large",
                        "declared size \(declared) bytes is over the limit of \(controller.uploadLimit) bytes")
                }
                source = .bundle { sink in
                    for try await buffer in request.body {
                        try buffer.withUnsafeReadableBytes { bytes throws(SwiftletError) in try sink.append(bytes) }
                    }
                }
            }
            let build = try await service.start(name: name, flags: flags, source: source, by: principal)
            return APIRouter.json(build, status: build.state == .running ? .accepted : .created)
        }
        v1.get("builds") { _, context in
            let principal = try context.requirePrincipal()
            return APIRouter.json(
                BuildList(try await service.store.builds(projectId: principal.isAdmin ? nil : principal.projectId)))
        }
        v1.get("builds/:id") { _, context in
            APIRouter.json(
                try await find(service, try context.parameters.require("id"), try context.requirePrincipal()))
        }
        v1.get("builds/:id/log") { request, context in
            let follow = try APIRouter.flag("follow", request)
            let build = try await find(service, try context.parameters.require("id"), try context.requirePrincipal())
            let path = service.logPath(build.id)
            let headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
            guard follow else {
                let data = FileManager.default.contents(atPath: path) ?? Data()
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
            }
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    var offset: UInt64 = 0
                    var finished = false
                    while !Task.isCancelled {
                        // Read the state before the file so the last lines are never missed.
                        finished =
                            await (try? service.store.build(id: build.id, projectId: nil))??.state.isFinished ?? true
                        if let handle = FileHandle(forReadingAtPath: path) {
                            try handle.seek(toOffset: offset)
                            let data = try handle.readToEnd() ?? Data()
                            try? handle.close()
                            if !data.isEmpty {
                                offset += UInt64(data.count)
                                try await writer.write(ByteBuffer(bytes: data))
                            }
                        }
                        if finished { break }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    try await writer.finish(nil)
                })
        }
    }

    private static func find(_ service: BuildService, _ id: String, _ principal: Principal) async throws(SwiftletError)
        -> Build
    {
        guard
            let build = try await service.store.build(id: id, projectId: principal.isAdmin ? nil : principal.projectId)
        else {
            throw .notFound("build", id)
        }
        return build
    }
}
