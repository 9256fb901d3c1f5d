import Hummingbird
import SwiftletCore

/// Image catalog and signing routes beside upload/list/get/delete (docs/images.md).
enum ImageRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        v1.patch("images/:id") { request, context in
            let body = try await APIRouter.decode(UpdateImageRequest.self, request, context)
            return APIRouter.json(
                try await controller.updateImage(
                    try context.parameters.require("id"), body, by: try context.requirePrincipal()))
        }
        v1.patch("projects/:id") { request, context in
            let body = try await APIRouter.decode(UpdateProjectRequest.self, request, context)
            return APIRouter.json(
                try await controller.updateProject(
                    try context.parameters.require("id"), body, by: try context.requirePrincipal()))
        }
        v1.get("projects/:id") { _, context in
            APIRouter.json(
                try await controller.projectDetail(
                    try context.parameters.require("id"), by: try context.requirePrincipal()))
        }
        v1.post("projects/:id/signing-keys") { request, context in
            let body = try await APIRouter.decode(AddSigningKeyRequest.self, request, context)
            let key = try await controller.addSigningKey(
                projectId: try context.parameters.require("id"), body, by: try context.requirePrincipal())
            return APIRouter.json(key, status: .created)
        }
        v1.get("projects/:id/signing-keys") { _, context in
            APIRouter.json(
                SigningKeyList(
                    try await controller.signingKeys(
                        projectId: try context.parameters.require("id"), by: try context.requirePrincipal())))
        }
        v1.delete("projects/:id/signing-keys/:key") { _, context in
            try await controller.deleteSigningKey(
                projectId: try context.parameters.require("id"), key: try context.parameters.require("key"),
                by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
    }

    /// Upload options read from the query (and the signature header).
    static func uploadOptions(_ request: Request) throws(SwiftletError) -> (
        signature: String?, visibility: ImageVisibility?, tags: [String]?
    ) {
        let query = request.uri.queryParameters
        let signature =
            request.headers.first { $0.name.canonicalName == Image.signatureHeader.lowercased() }?.value
            ?? query.get("signature")
        var visibility: ImageVisibility?
        if let text = query.get("visibility") {
            guard let value = ImageVisibility(rawValue: text) else {
                throw .badRequest("image.bad_visibility", "visibility must be private or public, got '\(text)'")
            }
            visibility = value
        }
        let tags = query.getAll("tag")
        return (signature, visibility, tags.isEmpty ? nil : tags)
    }
}
