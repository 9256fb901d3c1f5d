import AsyncHTTPClient
import Foundation
import NIOCore
import SwiftletAgentProtocol
import SwiftletCore

extension RemoteAgent {
    /// Saves the instance's VM state and sends its bytes to the controller's blob store by digest
    /// (`PUT /agent/v1/snapshots/{sha256}`); the local file goes either way.
    func saveSnapshot(instanceId: String) async throws(SwiftletError) -> SavedSnapshot {
        let saved = try await agent.saveSnapshot(instanceId: instanceId)
        defer { try? FileManager.default.removeItem(atPath: saved.path) }
        do {
            var request = HTTPClientRequest(url: controllers.base + "/agent/v1/snapshots/" + saved.sha256)
            request.method = .PUT
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
            let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: saved.path))
            defer { try? file.close() }
            request.body = .bytes(ByteBuffer(data: try file.readToEnd() ?? Data()))
            let response = try await client.execute(request, timeout: .seconds(300))
            guard response.status == .noContent || response.status == .ok else {
                throw SwiftletError(
                    .unavailable, "snapshot.upload_failed",
                    "the controller answered \(response.status.code) to the snapshot's bytes")
            }
        } catch let error as SwiftletError {
            throw error
        } catch {
            throw SwiftletError(.unavailable, "snapshot.upload_failed", "cannot send the snapshot's bytes: \(error)")
        }
        return saved
    }
}
