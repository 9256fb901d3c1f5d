import Foundation
import SwiftletCore

/// Glance's JSON-patch image update (`[{"op": "replace", "path": "/name", "value": …}]`): ops
/// `add`, `replace` and `remove` on `/name`, `/visibility`, `/tags` and properties (`/key`).
/// A stored image keeps its name and formats (Swiftlet renames no image); a queued one may change any.
struct ImagePatch {
    enum Change: Equatable {
        case set(String, JSONValue)
        case remove(String)
    }

    var changes: [Change] = []

    /// Fields that are Glance's own, not properties, and that nothing changes.
    static let readOnly: Set<String> = [
        "id", "status", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size", "owner", "created_at",
        "updated_at", "file", "self", "schema", "swiftlet_kind", "direct_url", "locations",
    ]

    init(_ body: JSONValue) throws(SwiftletError) {
        guard case .array(let operations) = body else {
            throw SwiftletError.badRequest("image.bad_patch", "the body must be a JSON-patch list of operations")
        }
        for operation in operations {
            let op = try operation.requireString("op")
            let path = try operation.requireString("path")
            guard path.hasPrefix("/"), path.count > 1, !path.dropFirst().contains("/") else {
                throw SwiftletError.badRequest("image.bad_patch_path", "path '\(path)' must be /name or /property")
            }
            let field = String(path.dropFirst())
            if Self.readOnly.contains(field) {
                throw SwiftletError(.forbidden, "image.read_only", "Attribute '\(field)' is read-only.")
            }
            switch op {
            case "add", "replace":
                guard let value = operation["value"] else {
                    throw SwiftletError.badRequest("image.bad_patch", "'\(op)' needs a 'value'")
                }
                changes.append(.set(field, value))
            case "remove": changes.append(.remove(field))
            default:
                throw SwiftletError.badRequest(
                    "image.bad_patch_op", "op '\(op)' is not supported (add, replace, remove)")
            }
        }
    }

    static func text(_ field: String, _ value: JSONValue) throws(SwiftletError) -> String {
        guard let text = value.string else {
            throw SwiftletError.badRequest("image.bad_property", "'\(field)' must be a string")
        }
        return text
    }

    static func tags(_ value: JSONValue) throws(SwiftletError) -> [String] {
        guard case .array(let values) = value, values.allSatisfy({ $0.string != nil }) else {
            throw SwiftletError.badRequest("image.bad_tags", "'tags' must be a list of strings")
        }
        return values.compactMap(\.string)
    }

    static func visibility(_ value: JSONValue) throws(SwiftletError) -> ImageVisibility {
        guard let parsed = value.string.flatMap(ImageVisibility.init(rawValue:)) else {
            throw SwiftletError.badRequest("image.bad_visibility", "visibility must be private or public")
        }
        return parsed
    }

    /// Fields that must stay as they are (or take their only value).
    static func checkFixed(_ field: String, _ value: JSONValue) throws(SwiftletError) -> Bool {
        switch field {
        case "protected":
            guard value == .bool(false) else {
                throw SwiftletError.badRequest("image.protected_unsupported", "protected images are not supported")
            }
            return true
        case "min_disk", "min_ram":
            guard value.int == 0 else {
                throw SwiftletError.badRequest("image.minimums_unsupported", "'\(field)' must be 0: flavors decide")
            }
            return true
        default: return false
        }
    }

    /// The fields set (less those given their only value) and the fields removed, in order.
    func split() throws(SwiftletError) -> (sets: [(String, JSONValue)], removals: [String]) {
        var sets: [(String, JSONValue)] = []
        var removals: [String] = []
        for change in changes {
            switch change {
            case .set(let field, let value): if try !Self.checkFixed(field, value) { sets.append((field, value)) }
            case .remove(let field): removals.append(field)
            }
        }
        return (sets, removals)
    }

    func apply(to entry: inout QueuedImages.Entry) throws(SwiftletError) {
        let (sets, removals) = try split()
        for (field, value) in sets {
            switch field {
            case "name":
                let name = try Self.text(field, value)
                try ResourceID.validateName(name)
                entry.name = name
            case "visibility": entry.visibility = try Self.visibility(value)
            case "tags": entry.tags = try Self.tags(value)
            default: entry.properties[field] = try Self.text(field, value)
            }
        }
        for field in removals {
            guard !["name", "visibility", "tags"].contains(field) else {
                throw SwiftletError(.forbidden, "image.required", "'\(field)' cannot be removed")
            }
            entry.properties[field] = nil
        }
    }

    /// The native update this patch is for a stored image.
    func update(of image: Image) throws(SwiftletError) -> UpdateImageRequest {
        var update = UpdateImageRequest()
        var properties: [String: String] = [:]
        let (sets, removals) = try split()
        for (field, value) in sets {
            switch field {
            case "name":
                guard value.string == image.name else {
                    throw SwiftletError(
                        .conflict, "image.rename_unsupported",
                        "a stored image keeps its name: Swiftlet does not rename images")
                }
            case "visibility": update.visibility = try Self.visibility(value)
            case "tags": update.tags = try Self.tags(value)
            case "disk_format", "container_format":
                guard image.properties[field] == value.string || GlanceRoutes.body(image)[field] == value else {
                    throw SwiftletError(.forbidden, "image.read_only", "'\(field)' of an active image is read-only")
                }
            default: properties[field] = try Self.text(field, value)
            }
        }
        for field in removals {
            guard image.properties[field] != nil else {
                throw SwiftletError(.conflict, "image.no_property", "image has no property '\(field)'")
            }
            properties[field] = ""
        }
        if !properties.isEmpty { update.properties = properties }
        return update
    }
}
