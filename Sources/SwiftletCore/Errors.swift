/// The one error type that crosses module boundaries and the API. `code` is stable; the API maps
/// `kind` to an HTTP status and returns `{"error": {"code", "message"}}`.
public struct SwiftletError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        case badRequest, unauthorized, forbidden, notFound, methodNotAllowed, notAcceptable, conflict, payloadTooLarge
        case unprocessable, notImplemented
        case unavailable, `internal`

        public var httpStatus: Int {
            switch self {
            case .badRequest: 400
            case .unauthorized: 401
            case .forbidden: 403
            case .notFound: 404
            case .methodNotAllowed: 405
            case .notAcceptable: 406
            case .conflict: 409
            case .payloadTooLarge: 413
            case .unprocessable: 422
            case .notImplemented: 501
            case .unavailable: 503
            case .internal: 500
            }
        }
    }

    public var kind: Kind
    public var code: String
    public var message: String

    public init(_ kind: Kind, _ code: String, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    public static func notFound(_ what: String, _ id: String) -> SwiftletError {
        SwiftletError(.notFound, "\(what).not_found", "\(what) '\(id)' not found")
    }

    public static func badRequest(_ code: String, _ message: String) -> SwiftletError {
        SwiftletError(.badRequest, code, message)
    }
}
