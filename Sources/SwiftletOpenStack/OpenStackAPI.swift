import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SwiftletController
import SwiftletCore
import SwiftletStore
import Synchronization

/// The OpenStack-compatible APIs (a Keystone, Nova, Glance and Neutron subset, docs/openstack.md),
/// served on the native API's listener under `/identity`, `/compute`, `/image` and `/network`, on the Controller's
/// own services: what they answer is what `/v1` would, in OpenStack's shapes.
public struct OpenStackAPI: APIExtension {
    public init() {}

    public var pathPrefixes: [String] { ["/identity", "/compute", "/image", "/network"] }

    public func register(on router: Router<APIContext>, controller: Controller) {
        OpenStack.scheme.withLock { $0 = controller.apiScheme }
        let identity = IdentityService(controller: controller)
        IdentityRoutes.register(on: router, identity: identity)
        let pending = PendingNetworks()
        ComputeRoutes.register(on: router, controller: controller, identity: identity, pending: pending)
        GlanceRoutes.register(on: router, controller: controller, identity: identity)
        NeutronRoutes.register(on: router, controller: controller, identity: identity, pending: pending)
    }
}

/// Which API's error body to answer with.
enum OpenStackService: Sendable {
    /// `{"error": {"code", "message", "title"}}` (Keystone; Glance answers alike here).
    case identity
    /// `{"itemNotFound": {"code", "message"}}`: the fault's name from the status, as Nova's.
    case compute
    /// `{"NeutronError": {"type", "message", "detail"}}`: the type from the error's code, as Neutron's.
    case network

    func body(status: Int, message: String, code: String = "") -> JSONValue {
        switch self {
        case .identity:
            let title = Self.titles[status] ?? "Error"
            return .object([
                "error": .object(["code": .int(status), "message": .string(message), "title": .string(title)])
            ])
        case .compute:
            return .object([Self.novaFaultName(status): .object(["code": .int(status), "message": .string(message)])])
        case .network:
            return .object([
                "NeutronError": .object([
                    "type": .string(Self.neutronType(status, code: code)), "message": .string(message), "detail": "",
                ])
            ])
        }
    }

    /// Neutron's exception names: `NetworkNotFound`, `NetworkInUse`, … from Swiftlet's error code
    /// (`network.not_found`), else the HTTP error's (`HTTPBadRequest`).
    static func neutronType(_ status: Int, code: String) -> String {
        let resources = [
            "network": "Network", "subnet": "Subnet", "port": "Port", "security_group": "SecurityGroup",
            "security_group_rule": "SecurityGroupRule", "rule": "SecurityGroupRule",
        ]
        let parts = code.split(separator: ".", maxSplits: 1).map(String.init)
        if parts.count == 2, let resource = resources[parts[0]] {
            switch (status, parts[1]) {
            case (404, _): return resource + "NotFound"
            case (409, "in_use"): return resource + "InUse"
            case (409, "exists"): return resource + "Exists"
            default: break
            }
        }
        switch status {
        case 400: return "HTTPBadRequest"
        case 401: return "HTTPUnauthorized"
        case 403: return "HTTPForbidden"
        case 404: return "HTTPNotFound"
        case 409: return "HTTPConflict"
        case 501: return "HTTPNotImplemented"
        case 503: return "ServiceUnavailable"
        default: return "HTTPInternalServerError"
        }
    }

    static let titles = [
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
        409: "Conflict", 413: "Request Entity Too Large", 500: "Internal Server Error", 501: "Not Implemented",
        503: "Service Unavailable",
    ]

    static func novaFaultName(_ status: Int) -> String {
        switch status {
        case 400: "badRequest"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 404: "itemNotFound"
        case 405: "badMethod"
        case 409: "conflictingRequest"
        case 413: "overLimit"
        case 501: "notImplemented"
        case 503: "serviceUnavailable"
        default: "computeFault"
        }
    }
}

/// Turns the errors of one API's routes into that API's error body (inside the native
/// `ErrorMiddleware`, which would answer Swiftlet's own shape).
struct OpenStackErrorMiddleware: RouterMiddleware {
    let service: OpenStackService

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as SwiftletError {
            AuditNote.refused(code: error.code)
            var response = OpenStack.json(
                service.body(status: error.kind.httpStatus, message: error.message, code: error.code),
                status: .init(code: error.kind.httpStatus))
            if error.kind == .unauthorized {
                response.headers[HTTPField.Name("WWW-Authenticate")!] =
                    "Keystone uri=\"\(OpenStack.baseURL(request))/identity\""
            }
            return response
        } catch let error as HTTPError {
            let status = Int(error.status.code)
            return OpenStack.json(
                service.body(status: status, message: error.body ?? error.status.reasonPhrase), status: error.status)
        } catch {
            context.logger.error("OpenStack request failed", metadata: ["error": "\(error)"])
            return OpenStack.json(service.body(status: 500, message: "internal error"), status: .internalServerError)
        }
    }
}

enum OpenStack {
    static let maxJSONBody = 1 << 20
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var fields = headers
        fields[.contentType] = "application/json"
        let buffer = ByteBuffer(bytes: data)
        if status == .created || status == .accepted { AuditNote.created(buffer) }
        return Response(status: status, headers: fields, body: .init(byteBuffer: buffer))
    }

    /// The request's body as JSON (at most 1 MiB).
    static func body(_ request: Request) async throws(SwiftletError) -> JSONValue {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: maxJSONBody) } catch {
            throw SwiftletError(.payloadTooLarge, "request.too_large", "request body is over \(maxJSONBody) bytes")
        }
        return try JSONValue.parse(Data(buffer.readableBytesView))
    }

    /// `http` or `https`, as the listener serves (set when the routes are registered).
    static let scheme = Mutex("http")

    /// `http://<Host header>`: the catalog and links point where the client reached us.
    static func baseURL(_ request: Request) -> String {
        scheme.withLock { $0 } + "://" + (request.head.authority ?? "127.0.0.1")
    }

    /// RFC 3339 in UTC without fractions, as Nova and Glance print their dates.
    static func date(_ date: Date) -> JSONValue { .string(date.formatted(.iso8601)) }

    /// With fractional seconds, as Keystone prints `expires_at` (`2026-12-07T22:30:00.123Z`).
    static func keystoneDate(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

    /// A quota answer's fields from (limit, in use) pairs: the limit alone, or with its use in detail.
    static func quotaFields(_ values: [String: (Int, Int)], detail: Bool, usedKey: String) -> [String: JSONValue] {
        values.mapValues { limit, used in
            detail ? .object(["limit": .int(limit), usedKey: .int(used), "reserved": .int(0)]) : .int(limit)
        }
    }

    static func link(_ rel: String, _ href: String) -> JSONValue {
        .object(["rel": .string(rel), "href": .string(href)])
    }

    /// Answers every other path under a group, once the caller is authenticated, with 404 in
    /// the API's own shape naming what is not supported (rather than the native API's 404).
    static func refuseUnsupportedPaths(
        on group: RouterGroup<APIContext>, api: String, identity: IdentityService
    ) {
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            group.on("**", method: method) { request, _ -> Response in
                _ = try await identity.principal(request)
                throw SwiftletError(
                    .notFound, "openstack.unsupported",
                    "\(method) \(request.uri.path) is not supported by Swiftlet's \(api) API (docs/openstack.md)")
            }
        }
    }

    /// 400 for query parameters the route does not know: an ignored filter would answer as if
    /// it had been applied.
    static func refuseUnknownParameters(_ request: Request, known: Set<String>) throws(SwiftletError) {
        for (name, _) in request.uri.queryParameters where !known.contains(String(name)) {
            throw SwiftletError.badRequest(
                "request.unknown_parameter",
                "query parameter '\(name)' is not supported (supported: \(known.sorted().joined(separator: ", ")))")
        }
    }
}
