import AsyncHTTPClient
import Foundation
import NIOCore
import SwiftletAgent
import SwiftletCore

/// Image bytes from the controller, by digest, over the agent link (mutual TLS). The image cache
/// checks each download's sha256 before it uses the bytes.
struct RemoteImageSource: ImageSource {
    let client: HTTPClient
    let controllers: ControllerEndpoints

    func localPath(sha256: String) -> String? { nil }

    func canFetchAgain(sha256: String) -> Bool { true }

    func download(sha256: String, to path: String) async throws(SwiftletError) {
        do {
            let response = try await client.execute(
                HTTPClientRequest(url: controllers.base + "/agent/v1/images/" + sha256), timeout: .seconds(300))
            guard response.status == .ok else {
                throw SwiftletError(
                    .unavailable, "image.fetch_failed",
                    "the controller answered \(response.status.code) for image \(sha256)")
            }
            guard FileManager.default.createFile(atPath: path, contents: nil),
                let file = FileHandle(forWritingAtPath: path)
            else { throw SwiftletError(.internal, "image.cache_failed", "cannot write \(path)") }
            defer { try? file.close() }
            for try await chunk in response.body {
                try file.write(contentsOf: chunk.readableBytesView)
            }
        } catch let error as SwiftletError {
            throw error
        } catch {
            throw SwiftletError(.unavailable, "image.fetch_failed", "cannot fetch image \(sha256): \(error)")
        }
    }
}
