import Foundation
import Hummingbird
import SwiftletCore

/// `/v1/instances/{id}/snapshot` and `/v1/snapshots` (docs/snapshots.md), and the agents' upload
/// of a saved state's bytes.
enum SnapshotRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        v1.post("instances/:id/snapshot") { request, context in
            let body =
                try await APIRouter.decodeOptional(CreateSnapshotRequest.self, request, context)
                ?? CreateSnapshotRequest()
            return APIRouter.json(
                try await controller.createSnapshot(
                    of: try context.parameters.require("id"), body, by: try context.requirePrincipal()),
                status: .created)
        }
        v1.get("snapshots") { _, context in
            APIRouter.json(SnapshotList(try await controller.snapshots(by: try context.requirePrincipal())))
        }
        v1.get("snapshots/:id") { _, context in
            APIRouter.json(
                try await controller.snapshot(try context.parameters.require("id"), by: try context.requirePrincipal()))
        }
        v1.delete("snapshots/:id") { _, context in
            try await controller.deleteSnapshot(
                try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
    }

    /// `PUT /agent/v1/snapshots/{sha256}`: a remote agent sends the bytes of a state it saved;
    /// they become a blob only if they hash to the digest named.
    static func registerAgent(on v1: RouterGroup<AgentContext>, cluster: ClusterService) {
        v1.put("snapshots/:sha256") { request, context in
            _ = try await cluster.authenticate(certificateDER: await context.peerCertificateDER())
            let sha256 = try context.parameters.require("sha256")
            guard sha256.count == 64, sha256.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw SwiftletError.badRequest("snapshot.bad_digest", "'\(sha256)' is not a sha256 digest")
            }
            let blobs = cluster.controller.blobs
            if blobs.contains(sha256: sha256) { return Response(status: .noContent) }
            let upload = try blobs.beginUpload(limit: cluster.controller.uploadLimit)
            do {
                for try await buffer in request.body {
                    try buffer.withUnsafeReadableBytes { bytes throws(SwiftletError) in try upload.append(bytes) }
                }
                _ = try await upload.commit { _ in
                    guard upload.sha256 == sha256 else {
                        throw SwiftletError(
                            .unprocessable, "snapshot.digest_mismatch",
                            "the bytes sent hash to \(upload.sha256), not \(sha256): refused")
                    }
                }
            } catch {
                upload.abort()
                throw error
            }
            return Response(status: .noContent)
        }
    }
}
