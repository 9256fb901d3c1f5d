import Foundation
import Hummingbird
import SwiftletCore

/// `/v1/hosts/...` for joining and removing hosts (admin).
enum HostRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller, cluster: ClusterService?) {
        @Sendable func requireCluster() throws(SwiftletError) -> ClusterService {
            guard let cluster else {
                throw SwiftletError(
                    .conflict, "cluster.disabled",
                    "this server takes no remote hosts: start it with --agent-port to open the agent listener")
            }
            return cluster
        }
        v1.post("hosts/join-tokens") { request, context in
            let body = try await APIRouter.decode(CreateJoinTokenRequest.self, request, context)
            let ttl = body.ttlSeconds.map { Duration.seconds($0) }
            return APIRouter.json(
                try await requireCluster().createJoinToken(ttl: ttl, by: try context.requirePrincipal()),
                status: .created)
        }
        v1.post("hosts/:id/cordon") { _, context in
            try await controller.setCordoned(
                host: try context.parameters.require("id"), true, by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
        v1.post("hosts/:id/uncordon") { _, context in
            try await controller.setCordoned(
                host: try context.parameters.require("id"), false, by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
        v1.post("hosts/:id/drain") { _, context in
            APIRouter.json(
                try await controller.drain(
                    host: try context.parameters.require("id"), by: try context.requirePrincipal()),
                status: .accepted)
        }
        v1.post("hosts/:id/revoke") { _, context in
            try await requireCluster().revoke(
                host: try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
    }
}
