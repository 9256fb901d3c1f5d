import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore

/// Image v2 (a Glance subset) under `/image`: Swiftlet images as Glance shows them; create,
/// upload (`PUT …/file`, streamed into `Controller.uploadImage`), download, list, show, delete.
enum GlanceRoutes {
    static let listFilters: Set<String> = ["id", "name", "limit", "marker"]

    static func register(on router: Router<APIContext>, controller: Controller, identity: IdentityService) {
        let queued = QueuedImages()
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
            var images = try await controller.images(by: principal).map(body)
            images += queued.all(by: principal).map(body)
            if let name = query.get("name") { images = images.filter { $0["name"]?.string == name } }
            // `id=in:a,b` (how the CLI looks up the images of a server list), or one id.
            if let id = query.get("id") {
                let ids = Set(id.hasPrefix("in:") ? id.dropFirst(3).split(separator: ",").map(String.init) : [id])
                images = images.filter { ids.contains($0["id"]?.string ?? "") }
            }
            if let marker = query.get("marker") {
                guard let index = images.firstIndex(where: { $0["id"]?.string == marker }) else {
                    throw SwiftletError.badRequest("image.bad_marker", "marker \(marker) not found")
                }
                images.removeFirst(index + 1)
            }
            if let text = query.get("limit") {
                guard let limit = Int(text), limit >= 0 else {
                    throw SwiftletError.badRequest("image.bad_limit", "limit must be a non-negative integer")
                }
                images = Array(images.prefix(limit))
            }
            return OpenStack.json(
                .object(["images": .array(images), "first": "/v2/images", "schema": "/v2/schemas/images"]))
        }
        group.get("v2/images/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            if let entry = queued.entry(id, by: principal) { return OpenStack.json(body(entry)) }
            return OpenStack.json(body(try await controller.image(id, by: principal)))
        }
        group.delete("v2/images/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            if queued.entry(id, by: principal) != nil, queued.remove(id) { return Response(status: .noContent) }
            try await controller.deleteImage(id, by: principal)
            return Response(status: .noContent)
        }
        group.patch("v2/images/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            let patch = try ImagePatch(try await OpenStack.body(request))
            if var entry = queued.entry(id, by: principal) {
                guard principal.isAdmin || entry.projectId == principal.projectId else {
                    throw SwiftletError(.forbidden, "image.not_owner", "the image belongs to another project")
                }
                try patch.apply(to: &entry)
                try queued.update(entry)
                return OpenStack.json(body(entry))
            }
            let image = try await controller.image(id, by: principal)
            let update = try patch.update(of: image)
            return OpenStack.json(body(try await controller.updateImage(image.id, update, by: principal)))
        }
        group.post("v2/images") { request, _ in
            let principal = try await identity.principal(request)
            let entry = try queuedEntry(try await OpenStack.body(request), principal: principal)
            try queued.add(entry)
            return OpenStack.json(body(entry), status: .created)
        }
        group.put("v2/images/:id/file") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            guard let entry = queued.entry(id, by: principal) else {
                if (try? await controller.image(id, by: principal)) != nil {
                    throw SwiftletError(.conflict, "image.has_data", "image \(id) has its data already")
                }
                throw SwiftletError.notFound("image", id)
            }
            try queued.beginUpload(id)
            var registered = false
            defer { queued.endUpload(id, registered: registered) }
            // The upload is streamed, hashed and checked as `POST /v1/images` does; a body cut
            // short leaves nothing behind and the image queued.
            _ = try await controller.uploadImage(
                name: entry.name, properties: entry.properties, by: principal, visibility: entry.visibility,
                tags: entry.tags, id: entry.id
            ) { upload in
                for try await buffer in request.body {
                    try buffer.withUnsafeReadableBytes { bytes throws(SwiftletError) in try upload.append(bytes) }
                }
            }
            registered = true
            return Response(status: .noContent)
        }
        group.get("v2/images/:id/file") { request, context in
            let principal = try await identity.principal(request)
            let image = try await controller.image(try context.parameters.require("id"), by: principal)
            let file = try await FileIO().loadFile(path: controller.blobs.path(sha256: image.sha256), context: context)
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: file)
        }
        OpenStack.refuseUnsupportedPaths(on: group, api: "Image", identity: identity)
    }

    static let diskFormats: Set<String> = ["aki", "ari", "ami", "raw", "qcow2"]
    static let containerFormats: Set<String> = ["bare", "aki", "ari", "ami"]
    /// Fields of an image create that are Glance's own, not properties.
    static let createFields: Set<String> = [
        "name", "visibility", "tags", "disk_format", "container_format", "protected", "min_disk", "min_ram", "id",
    ]

    /// An image create's record until its data comes. Other string fields are properties, as in
    /// Glance (Swiftlet's own, such as `ready_pattern`, take effect at boot).
    static func queuedEntry(_ body: JSONValue, principal: Principal) throws(SwiftletError) -> QueuedImages.Entry {
        guard case .object(let fields) = body else {
            throw SwiftletError.badRequest("request.malformed_json", "the body must be an object")
        }
        let name = try body.requireString("name")
        try ResourceID.validateName(name)
        if fields["id"] != nil {
            throw SwiftletError.badRequest("image.id_given", "image ids are assigned by Swiftlet: leave 'id' out")
        }
        var visibility = ImageVisibility.private
        if let text = try body.optionalString("visibility") {
            guard let parsed = ImageVisibility(rawValue: text) else {
                throw SwiftletError.badRequest("image.bad_visibility", "visibility must be private or public")
            }
            visibility = parsed
        }
        var properties: [String: String] = [:]
        for (field, allowed) in [("disk_format", diskFormats), ("container_format", containerFormats)] {
            guard let format = try body.optionalString(field) else { continue }
            guard allowed.contains(format) else {
                throw SwiftletError.badRequest(
                    "image.bad_format", "\(field) must be one of \(allowed.sorted().joined(separator: ", "))")
            }
            properties[field] = format
        }
        if case .bool(true)? = body["protected"] {
            throw SwiftletError.badRequest("image.protected_unsupported", "protected images are not supported")
        }
        for field in ["min_disk", "min_ram"] where try body.optionalInt(field) ?? 0 != 0 {
            throw SwiftletError.badRequest("image.minimums_unsupported", "'\(field)' must be 0: flavors decide")
        }
        var tags: [String] = []
        if case .array(let values)? = body["tags"] {
            tags = values.compactMap(\.string)
            guard tags.count == values.count else {
                throw SwiftletError.badRequest("image.bad_tags", "'tags' must be a list of strings")
            }
        }
        for (key, value) in fields where !createFields.contains(key) {
            guard let text = value.string else {
                throw SwiftletError.badRequest("image.bad_property", "property '\(key)' must be a string")
            }
            properties[key] = text
        }
        return QueuedImages.Entry(
            id: ResourceID.make("img"), name: name, projectId: principal.projectId, visibility: visibility,
            tags: tags, properties: properties, createdAt: Date())
    }

    /// An image whose data has not come yet.
    static func body(_ entry: QueuedImages.Entry) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(entry.id), "name": .string(entry.name), "status": "queued",
            "visibility": .string(entry.visibility.rawValue), "protected": false, "checksum": .null,
            "os_hash_algo": .null, "os_hash_value": .null, "size": .null, "virtual_size": .null,
            "disk_format": .optional(entry.properties["disk_format"]),
            "container_format": .optional(entry.properties["container_format"]), "min_disk": .int(0),
            "min_ram": .int(0), "owner": .string(entry.projectId), "tags": .array(entry.tags.map(JSONValue.string)),
            "created_at": OpenStack.date(entry.createdAt), "updated_at": OpenStack.date(entry.createdAt),
            "file": .string("/v2/images/\(entry.id)/file"), "self": .string("/v2/images/\(entry.id)"),
            "schema": "/v2/schemas/image",
        ]
        for (key, value) in entry.properties where fields[key] == nil { fields[key] = .string(value) }
        return .object(fields)
    }

    /// A Swiftlet image as Glance's: a kernel (`aki`) in no container, active once stored.
    static func body(_ image: Image) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(image.id), "name": .string(image.name), "status": "active",
            "visibility": .string((image.visibility ?? .private).rawValue), "protected": false,
            "checksum": .null, "os_hash_algo": "sha256", "os_hash_value": .string(image.sha256),
            "size": .number(Double(image.sizeBytes)), "virtual_size": .null,
            "disk_format": .string(diskFormat(image.kind)), "container_format": "bare", "min_disk": .int(0),
            "min_ram": .int(0),
            "owner": .string(image.projectId), "tags": .array((image.tags ?? []).map(JSONValue.string)),
            "created_at": OpenStack.date(image.createdAt), "updated_at": OpenStack.date(image.createdAt),
            "file": .string("/v2/images/\(image.id)/file"), "self": .string("/v2/images/\(image.id)"),
            "schema": "/v2/schemas/image", "swiftlet_kind": .string(image.kind.rawValue),
        ]
        for (key, value) in image.properties where fields[key] == nil || Self.formatFields.contains(key) {
            fields[key] = .string(value)
        }
        return .object(fields)
    }

    /// Glance's name for what the bytes are: a kernel (`aki`), a ramdisk (`ari`) or a disk.
    static func diskFormat(_ kind: ImageKind) -> String {
        switch kind {
        case .pvh, .multiboot, .bzImage: "aki"
        case .initrd: "ari"
        case .raw: "raw"
        case .qcow2: "qcow2"
        }
    }

    /// Given at create, they are kept and shown as given; otherwise derived from the kind.
    static let formatFields: Set<String> = ["disk_format", "container_format"]
}
