import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore

/// Image v2 (a Glance subset, read and delete) under `/image`: Swiftlet images as Glance shows
/// them, so that `openstack server create --image` can find them. Uploads go through `/v1`.
enum GlanceRoutes {
    static let listFilters: Set<String> = ["id", "name", "limit", "marker"]

    static func register(on router: Router<APIContext>, controller: Controller, identity: IdentityService) {
        let group = router.group("image").add(middleware: OpenStackErrorMiddleware(service: .identity))
        group.get { request, _ in
            OpenStack.json(
                .object([
                    "versions": .array([
                        .object([
                            "id": "v2.9", "status": "CURRENT",
                            "links": .array([OpenStack.link("self", OpenStack.baseURL(request) + "/image/v2/")]),
                        ])
                    ])
                ]), status: .multipleChoices)
        }
        group.get("v2/images") { request, _ in
            let principal = try await identity.principal(request)
            try OpenStack.refuseUnknownParameters(request, known: listFilters)
            let query = request.uri.queryParameters
            var images = try await controller.images(by: principal)
            if let name = query.get("name") { images = images.filter { $0.name == name } }
            // `id=in:a,b` (how the CLI looks up the images of a server list), or one id.
            if let id = query.get("id") {
                let ids = Set(id.hasPrefix("in:") ? id.dropFirst(3).split(separator: ",").map(String.init) : [id])
                images = images.filter { ids.contains($0.id) }
            }
            if let marker = query.get("marker") {
                guard let index = images.firstIndex(where: { $0.id == marker }) else {
                    throw SwiftletError.badRequest("image.bad_marker", "marker \(marker) not found")
                }
                images.removeFirst(index + 1)
            }
            if let limit = query.get("limit").flatMap(Int.init) { images = Array(images.prefix(limit)) }
            return OpenStack.json(
                .object([
                    "images": .array(images.map(body)), "first": "/v2/images", "schema": "/v2/schemas/images",
                ]))
        }
        group.get("v2/images/:id") { request, context in
            let principal = try await identity.principal(request)
            return OpenStack.json(body(try await controller.image(try context.parameters.require("id"), by: principal)))
        }
        group.delete("v2/images/:id") { request, context in
            let principal = try await identity.principal(request)
            try await controller.deleteImage(try context.parameters.require("id"), by: principal)
            return Response(status: .noContent)
        }
        group.post("v2/images") { request, _ -> Response in
            _ = try await identity.principal(request)
            throw SwiftletError(
                .notImplemented, "image.create_unsupported",
                "image create through the Image API is not supported yet: upload with `swiftlet image create`")
        }
    }

    /// A Swiftlet image as Glance's: a kernel (`aki`) in no container, active once stored.
    static func body(_ image: Image) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(image.id), "name": .string(image.name), "status": "active",
            "visibility": .string((image.visibility ?? .private).rawValue), "protected": false,
            "checksum": .null, "os_hash_algo": "sha256", "os_hash_value": .string(image.sha256),
            "size": .number(Double(image.sizeBytes)), "virtual_size": .null, "disk_format": "aki",
            "container_format": "bare", "min_disk": .int(0), "min_ram": .int(0),
            "owner": .string(image.projectId), "tags": .array((image.tags ?? []).map(JSONValue.string)),
            "created_at": OpenStack.date(image.createdAt), "updated_at": OpenStack.date(image.createdAt),
            "file": .string("/v2/images/\(image.id)/file"), "self": .string("/v2/images/\(image.id)"),
            "schema": "/v2/schemas/image", "swiftlet_kind": .string(image.kind.rawValue),
        ]
        for (key, value) in image.properties where fields[key] == nil { fields[key] = .string(value) }
        return .object(fields)
    }
}
