import Foundation
import Hummingbird
import HummingbirdTLS
import NIOCore
import NIOSSL
import SwiftletAgentProtocol
import SwiftletCore

/// A request on the agent listener, with the connection it came on (for the client certificate).
public struct AgentContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The client certificate the agent presented (verified against the cluster CA by TLS).
    func peerCertificateDER() async -> [UInt8]? {
        guard let certificate = try? await channel.nioSSL_peerCertificate().get() else { return nil }
        return try? certificate.toDERBytes()
    }
}

/// Errors as `{"error": {"code", "message"}}`, as on the API.
struct AgentErrorMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: AgentContext, next: (Request, AgentContext) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as SwiftletError {
            return APIRouter.error(error)
        } catch let error as DecodingError {
            return APIRouter.error(.badRequest("agent.bad_message", "the message is not valid: \(error)"))
        } catch let error as HTTPError {
            let kind: SwiftletError.Kind = error.status.code == 404 ? .notFound : .badRequest
            return APIRouter.error(
                SwiftletError(kind, "http.\(error.status.code)", error.body ?? error.status.reasonPhrase))
        } catch {
            return APIRouter.error(SwiftletError(.internal, "internal", "internal error: \(error)"))
        }
    }
}

/// `/agent/v1`: the agents' side of the link, on its own TLS listener (docs/agent-protocol.md).
enum AgentRoutes {
    static let maxMessageBytes = 16 << 20

    static func build(cluster: ClusterService) -> Router<AgentContext> {
        let router = Router(context: AgentContext.self)
        router.add(middleware: AgentErrorMiddleware())
        let v1 = router.group("agent/v1")

        // The CA certificate, for a joining agent to check against its token's pin.
        v1.get("ca") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/x-pem-file"],
                body: .init(byteBuffer: ByteBuffer(string: cluster.ca.certificatePEM)))
        }
        v1.post("join") { request, context in
            let body = try await decode(JoinRequest.self, request, context)
            return APIRouter.json(try await cluster.join(body), status: .created)
        }
        v1.post("watch") { request, context in
            let hostId = try await cluster.authenticate(certificateDER: await context.peerCertificateDER())
            let body = try await decode(WatchRequest.self, request, context)
            let session = try await cluster.watch(hostId: hostId, body)
            let encoder = SwiftletJSON.encoder()
            return Response(
                status: .ok, headers: [.contentType: "application/x-ndjson"],
                body: ResponseBody { writer in
                    // The pump reads the host's feed into the stream while this writes it out; when
                    // the stream ends (or the agent goes), the pump goes with it.
                    do {
                        try await withThrowingDiscardingTaskGroup { group in
                            group.addTask { await session.pump() }
                            for await message in session.stream {
                                var line = try encoder.encode(message)
                                line.append(0x0A)
                                try await writer.write(ByteBuffer(bytes: line))
                            }
                            group.cancelAll()
                        }
                    } catch {
                        await session.end()
                        throw error
                    }
                    await session.end()
                    try await writer.finish(nil)
                })
        }
        v1.post("observations") { request, context in
            let hostId = try await cluster.authenticate(certificateDER: await context.peerCertificateDER())
            let body = try await decode([Observation].self, request, context)
            return APIRouter.json(try await cluster.observe(hostId: hostId, body))
        }
        v1.post("replies") { request, context in
            let hostId = try await cluster.authenticate(certificateDER: await context.peerCertificateDER())
            let reply = try await decode(AgentReply.self, request, context)
            try await cluster.link(hostId: hostId).resolve(reply)
            return Response(status: .noContent)
        }
        v1.post("lease") { _, context in
            let hostId = try await cluster.authenticate(certificateDER: await context.peerCertificateDER())
            try await cluster.renewLease(hostId: hostId)
            return APIRouter.json(cluster.leaseGrant)
        }
        v1.get("images/:sha256") { _, context in
            _ = try await cluster.authenticate(certificateDER: await context.peerCertificateDER())
            let sha256 = try context.parameters.require("sha256")
            // An image's bytes, or a snapshot's (a restore on this host fetches them the same way).
            guard sha256.count == 64, sha256.allSatisfy(\.isHexDigit),
                try await cluster.store.images(projectId: nil).contains(where: { $0.sha256 == sha256 })
                    ? true : cluster.controller.instanceSync.snapshotDigests().contains(sha256),
                let file = FileHandle(forReadingAtPath: cluster.controller.blobs.path(sha256: sha256))
            else { throw SwiftletError.notFound("image bytes", sha256) }
            return Response(
                status: .ok, headers: [.contentType: "application/octet-stream"],
                body: ResponseBody { writer in
                    defer { try? file.close() }
                    while let chunk = try file.read(upToCount: 1 << 20), !chunk.isEmpty {
                        try await writer.write(ByteBuffer(bytes: chunk))
                    }
                    try await writer.finish(nil)
                })
        }
        SnapshotRoutes.registerAgent(on: v1, cluster: cluster)
        return router
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: AgentContext) async throws -> T {
        let buffer = try await request.body.collect(upTo: maxMessageBytes)
        return try SwiftletJSON.decoder().decode(T.self, from: Data(buffer.readableBytesView))
    }

    /// The listener's TLS: the controller's certificate from the cluster CA, and client
    /// certificates asked for and verified against the CA when presented (a joining agent has
    /// none yet; every call but `ca` and `join` requires one).
    static func tlsConfiguration(cluster: ClusterService, names: [String]) throws -> TLSConfiguration {
        let issued = try cluster.ca.issueServerCertificate(names: names)
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [
                .certificate(try NIOSSLCertificate(bytes: Array(issued.certificate.utf8), format: .pem))
            ],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(issued.key.utf8), format: .pem)))
        tls.certificateVerification = .optionalVerification
        tls.trustRoots = .certificates([
            try NIOSSLCertificate(bytes: Array(cluster.ca.certificatePEM.utf8), format: .pem)
        ])
        tls.minimumTLSVersion = .tlsv12
        return tls
    }
}
