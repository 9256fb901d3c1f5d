import Foundation

/// No field of a request body is nullable in the contract (docs/openapi.yaml), but Codable reads a
/// `null` optional as absent, so the request would quietly mean something else. This finds such a
/// `null`; one in a field no request type has is ignored, as the field itself is.
enum NullFields {
    /// The dotted path of the first `null` in `data` that `decode` reads as a field, or nil when
    /// there is none or `data` is not JSON (the decoder then says what is wrong with it).
    static func firstReadField(in data: Data, decode: (Data) throws -> Void) -> String? {
        // Most bodies have no null at all: they are not parsed again.
        guard data.firstRange(of: Data("null".utf8)) != nil,
            let document = try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed)
        else {
            return nil
        }
        for path in nullPaths(in: document, at: []) {
            // A field the type reads refuses an object or an array in place of the null (no field
            // takes both); a field it ignores takes either.
            for substitute: Any in [[String: Any](), [Any]()] {
                let changed = replacing(path[...], in: document, with: substitute)
                guard let bytes = try? JSONSerialization.data(withJSONObject: changed) else { continue }
                if (try? decode(bytes)) == nil { return path.map(\.description).joined(separator: ".") }
            }
        }
        return nil
    }

    /// A key in an object or an index in an array.
    enum Step: CustomStringConvertible {
        case key(String), index(Int)

        var description: String {
            switch self {
            case .key(let key): key
            case .index(let index): String(index)
            }
        }
    }

    private static func nullPaths(in value: Any, at path: [Step]) -> [[Step]] {
        switch value {
        case is NSNull:
            return [path]
        case let object as [String: Any]:
            return object.keys.sorted().flatMap { key in nullPaths(in: object[key] as Any, at: path + [.key(key)]) }
        case let array as [Any]:
            return array.enumerated().flatMap { index, item in nullPaths(in: item, at: path + [.index(index)]) }
        default:
            return []
        }
    }

    private static func replacing(_ path: ArraySlice<Step>, in value: Any, with substitute: Any) -> Any {
        guard let step = path.first else { return substitute }
        switch (step, value) {
        case (.key(let key), var object as [String: Any]):
            object[key] = replacing(path.dropFirst(), in: object[key] as Any, with: substitute)
            return object
        case (.index(let index), var array as [Any]):
            array[index] = replacing(path.dropFirst(), in: array[index], with: substitute)
            return array
        default:
            return value
        }
    }
}
