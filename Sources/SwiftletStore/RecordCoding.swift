import Foundation
import SwiftletCore

/// The JSON text of a record body, the same for every engine, so a body written by one decodes
/// in another (and a store moved between engines keeps its records as they are).
public enum RecordCoding {
    private static let encoder = SwiftletJSON.encoder()
    private static let decoder = SwiftletJSON.decoder()

    public static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    public static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try decoder.decode(type, from: Data(text.utf8))
    }
}
