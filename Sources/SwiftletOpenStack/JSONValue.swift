import Foundation
import SwiftletCore

/// A JSON document as OpenStack's APIs shape it: keys with colons (`OS-EXT-STS:vm_state`) and
/// fields that come and go with the microversion, which fixed Codable types would not fit.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value == value.rounded(), abs(value) < 1e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var int: Int? {
        if case .number(let value) = self, value == value.rounded(), abs(value) < 1e15 { return Int(value) }
        if case .string(let text) = self { return Int(text) }
        return nil
    }

    public var isNull: Bool { self == .null }

    static func int(_ value: Int) -> JSONValue { .number(Double(value)) }
    static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }

    /// Decodes a request body; anything that is not JSON is a 400 in the API's own shape.
    static func parse(_ data: Data) throws(SwiftletError) -> JSONValue {
        do { return try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw SwiftletError.badRequest("request.malformed_json", "the body is not valid JSON")
        }
    }

    /// The object under `key` of a request body (`{"server": {...}}`), or 400 naming it.
    func requireObject(_ key: String) throws(SwiftletError) -> JSONValue {
        guard let value = self[key], case .object = value else {
            throw SwiftletError.badRequest("request.missing_field", "the body must be an object with '\(key)'")
        }
        return value
    }

    /// An optional string field: absent or null is nil; another type is a 400.
    func optionalString(_ key: String) throws(SwiftletError) -> String? {
        guard let value = self[key], !value.isNull else { return nil }
        guard let text = value.string else {
            throw SwiftletError.badRequest("request.wrong_type", "'\(key)' must be a string")
        }
        return text
    }

    func requireString(_ key: String) throws(SwiftletError) -> String {
        guard let text = try optionalString(key) else {
            throw SwiftletError.badRequest("request.missing_field", "'\(key)' is required")
        }
        return text
    }

    /// An optional integer field; strings of digits pass, as OpenStack's clients send either.
    func optionalInt(_ key: String) throws(SwiftletError) -> Int? {
        guard let value = self[key], !value.isNull else { return nil }
        guard let number = value.int else {
            throw SwiftletError.badRequest("request.wrong_type", "'\(key)' must be an integer")
        }
        return number
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
