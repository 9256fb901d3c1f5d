import Foundation
import Hummingbird
import SwiftletCore

/// `/v1/instances/{id}/migrate` and `/v1/migrations`: moving instances between hosts.
enum MigrationRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        v1.post("instances/:id/migrate") { request, context in
            // No body means the defaults: live, to the host the scheduler picks.
            let body =
                request.headers[.contentLength] == "0"
                ? MigrateInstanceRequest() : try await APIRouter.decode(MigrateInstanceRequest.self, request, context)
            return APIRouter.json(
                try await controller.migrate(
                    try context.parameters.require("id"), body, by: try context.requirePrincipal()),
                status: .accepted)
        }
        v1.get("migrations") { request, context in
            APIRouter.json(
                MigrationList(
                    try await controller.migrations(
                        instance: request.uri.queryParameters.get("instance"), by: try context.requirePrincipal())))
        }
        v1.post("migrations/:id/cancel") { _, context in
            APIRouter.json(
                try await controller.cancelMigration(
                    try context.parameters.require("id"), by: try context.requirePrincipal()),
                status: .accepted)
        }
        v1.get("migrations/:id") { _, context in
            APIRouter.json(
                try await controller.migration(try context.parameters.require("id"), by: try context.requirePrincipal())
            )
        }
    }
}
