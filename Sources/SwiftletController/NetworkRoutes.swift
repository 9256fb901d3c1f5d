import Hummingbird
import SwiftletCore

/// `/v1/networks` and `/v1/security-groups` (docs/networking.md, docs/openapi.yaml).
enum NetworkRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        v1.post("networks") { request, context in
            let body = try await APIRouter.decode(CreateNetworkRequest.self, request, context)
            return APIRouter.json(
                try await controller.createNetwork(body, by: try context.requirePrincipal()), status: .created)
        }
        v1.get("networks") { _, context in
            APIRouter.json(NetworkList(try await controller.networks(by: try context.requirePrincipal())))
        }
        v1.get("networks/:id") { _, context in
            APIRouter.json(
                try await controller.network(try context.parameters.require("id"), by: try context.requirePrincipal()))
        }
        v1.get("networks/:id/ports") { _, context in
            APIRouter.json(
                NetworkPortList(
                    try await controller.networkPorts(
                        try context.parameters.require("id"), by: try context.requirePrincipal())))
        }
        v1.delete("networks/:id") { _, context in
            try await controller.deleteNetwork(try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }

        v1.post("security-groups") { request, context in
            let body = try await APIRouter.decode(CreateSecurityGroupRequest.self, request, context)
            return APIRouter.json(
                try await controller.createSecurityGroup(body, by: try context.requirePrincipal()), status: .created)
        }
        v1.get("security-groups") { _, context in
            APIRouter.json(SecurityGroupList(try await controller.securityGroups(by: try context.requirePrincipal())))
        }
        v1.get("security-groups/:id") { _, context in
            APIRouter.json(
                try await controller.securityGroup(
                    try context.parameters.require("id"), by: try context.requirePrincipal()))
        }
        v1.delete("security-groups/:id") { _, context in
            try await controller.deleteSecurityGroup(
                try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
        v1.post("security-groups/:id/rules") { request, context in
            let body = try await APIRouter.decode(CreateSecurityGroupRuleRequest.self, request, context)
            let group = try await controller.addRule(
                body, to: try context.parameters.require("id"), by: try context.requirePrincipal())
            return APIRouter.json(group, status: .created)
        }
        v1.delete("security-groups/:id/rules/:rule") { _, context in
            try await controller.deleteRule(
                try context.parameters.require("rule"), from: try context.parameters.require("id"),
                by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
    }
}
