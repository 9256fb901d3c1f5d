import Foundation

/// No field of a request body is nullable in the contract (docs/openapi.yaml): a `null` is refused,
/// where Codable would read it as an absent optional and the request would mean something else.
enum NullFields {
    /// The dotted path of the first `null` in a JSON document ("" for a `null` body), or nil when
    /// it has none or is not JSON (the decoder then says what is wrong with it).
    static func firstPath(in data: Data) -> String? {
        guard let value = try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed) else {
            return nil
        }
        return firstPath(in: value, at: [])
    }

    private static func firstPath(in value: Any, at path: [String]) -> String? {
        switch value {
        case is NSNull:
            return path.joined(separator: ".")
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                if let found = firstPath(in: object[key] as Any, at: path + [key]) { return found }
            }
        case let array as [Any]:
            for (index, item) in array.enumerated() {
                if let found = firstPath(in: item, at: path + [String(index)]) { return found }
            }
        default:
            break
        }
        return nil
    }
}
