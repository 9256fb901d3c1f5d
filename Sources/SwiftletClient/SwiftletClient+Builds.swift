import AsyncHTTPClient
import Foundation
import NIOCore
import SwiftletCore

extension SwiftletClient {
    /// Starts a build from a tar bundle on this machine (streamed) or a directory on the server.
    public func startBuild(name: String, tarPath: String? = nil, serverPath: String? = nil, flags: [String] = [])
        async throws -> Build
    {
        var query = [("name", name)]
        for flag in flags { query.append(("flag", flag)) }
        if let serverPath { query.append(("path", serverPath)) }
        var request = try makeRequest("POST", "/v1/builds", query: query)
        if let tarPath {
            let size =
                ((try? FileManager.default.attributesOfItem(atPath: tarPath))?[.size] as? NSNumber)?.int64Value ?? 0
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/x-tar")
            request.body = .stream(FileChunks(path: tarPath), length: .known(size))
        }
        return try await decode(execute(request, timeout: Self.longTimeout))
    }

    public func build(_ id: String) async throws -> Build {
        try await send("GET", "/v1/builds/\(segment(id))")
    }

    public func builds() async throws -> [Build] {
        let list: BuildList = try await send("GET", "/v1/builds")
        return list.builds
    }

    /// The build's log as text chunks; with `follow` until the build finishes.
    public func buildLog(_ id: String, follow: Bool = false) -> AsyncThrowingStream<String, Error> {
        textStream("/v1/builds/\(segment(id))/log", follow: follow, timeout: Self.longTimeout)
    }
}
