import Foundation
import Hummingbird
import Logging
import NIOCore
import SwiftletCore

/// Per-request context: who is asking (set by the auth middleware).
public struct APIContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    func requirePrincipal() throws(SwiftletError) -> Principal {
        guard let principal else { throw SwiftletError(.unauthorized, "auth.missing_token", "missing token") }
        return principal
    }
}

/// Turns every error into `{"error": {"code", "message"}}` with the right status.
struct ErrorMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as SwiftletError {
            AuditNote.refused(code: error.code)
            return APIRouter.error(error)
        } catch let error as HTTPError {
            let code = error.status.code
            let kind: SwiftletError.Kind =
                switch code {
                case 404: .notFound
                case 413: .payloadTooLarge
                case 400..<500: .badRequest
                default: .internal
                }
            AuditNote.refused(code: "http.\(code)")
            return APIRouter.error(SwiftletError(kind, "http.\(code)", error.body ?? error.status.reasonPhrase))
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            return APIRouter.error(SwiftletError(.internal, "internal", "internal error: \(error)"))
        }
    }
}

/// Bearer-token authentication for everything but the health check, `/metrics` when it is
/// configured open, and the paths of extensions, which authenticate in their own API's way.
struct AuthMiddleware: RouterMiddleware {
    let controller: Controller
    let metricsOpen: Bool
    var selfAuthenticated: [String] = []

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws
        -> Response
    {
        let path = request.uri.path
        if path == "/v1/health" || metricsOpen && path == MetricsRoutes.path
            || selfAuthenticated.contains(where: { path == $0 || path.hasPrefix($0 + "/") })
        {
            return try await next(request, context)
        }
        var context = context
        context.principal = try await controller.authenticate(authorization: request.headers[.authorization])
        return try await next(request, context)
    }
}

/// Routes another module serves beside /v1 (the OpenStack APIs), on the same listener.
public protocol APIExtension: Sendable {
    /// Path prefixes (`/compute`) whose requests the extension authenticates itself.
    var pathPrefixes: [String] { get }
    func register(on router: Router<APIContext>, controller: Controller)
}

public enum APIRouter {
    static let encoder = SwiftletJSON.encoder()
    static let decoder = SwiftletJSON.decoder()
    /// JSON request bodies are small; image uploads stream separately.
    static let maxJSONBody = 1 << 20

    /// The API's routes; `metricsOpen`: `GET /metrics` needs no token.
    public static func build(
        controller: Controller, cluster: ClusterService? = nil, leadership: LeaderElection? = nil,
        metricsOpen: Bool = false, extensions: [any APIExtension] = []
    ) -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        // Outermost, so that it sees the status of every answer, errors included.
        router.add(middleware: RequestMetricsMiddleware(metrics: controller.metrics))
        // Outside the error middleware, so that it records the status every change was answered with.
        router.add(middleware: AuditMiddleware(log: controller.audit))
        router.add(middleware: ErrorMiddleware())
        router.add(
            middleware: AuthMiddleware(
                controller: controller, metricsOpen: metricsOpen,
                selfAuthenticated: extensions.flatMap(\.pathPrefixes)))
        MetricsRoutes.register(on: router, controller: controller, open: metricsOpen)
        let v1 = router.group("v1")

        v1.get("health") { _, _ in
            // Which of several controllers is the leader now (the one doing the work done once).
            struct Health: Encodable {
                var status = "ok"
                var leader: Bool?
            }
            return json(Health(leader: leadership.map { $0.currentTerm != nil }))
        }

        // Projects and tokens (admin)
        v1.post("projects") { request, context in
            let body = try await decode(CreateProjectRequest.self, request, context)
            let principal = try context.requirePrincipal()
            let project = try await controller.createProject(body, by: principal)
            return json(project, status: .created)
        }
        v1.get("projects") { _, context in
            try controller.requireAdmin(try context.requirePrincipal())
            return json(ProjectList(try await controller.store.projects()))
        }
        v1.post("projects/:id/tokens") { request, context in
            try controller.requireAdmin(try context.requirePrincipal())
            let id = try context.parameters.require("id")
            // The body is optional: a create without one (as before expiry existed) lasts until revoked.
            let body = try await decodeOptional(CreateTokenRequest.self, request, context) ?? CreateTokenRequest()
            return json(
                try await controller.createToken(projectId: id, admin: false, ttlSeconds: body.ttlSeconds),
                status: .created)
        }
        v1.get("tokens") { request, context in
            let principal = try context.requirePrincipal()
            return json(
                TokenList(
                    try await controller.tokens(projectId: request.uri.queryParameters.get("project"), by: principal)))
        }
        v1.delete("tokens/:id") { _, context in
            let principal = try context.requirePrincipal()
            return json(try await controller.revokeToken(id: try context.parameters.require("id"), by: principal))
        }
        v1.get("audit") { request, context in
            try controller.requireAdmin(try context.requirePrincipal())
            let query = request.uri.queryParameters
            var since: Date?
            if let text = query.get("since") {
                guard let parsed = parseTime(text) else {
                    throw SwiftletError.badRequest(
                        "audit.bad_since", "since must be an RFC 3339 time (2026-12-07T10:00:00Z), not '\(text)'")
                }
                since = parsed
            }
            var limit = 100
            if let text = query.get("limit") {
                guard let parsed = Int(text), (1...1000).contains(parsed) else {
                    throw SwiftletError.badRequest("audit.bad_limit", "limit must be 1 to 1,000")
                }
                limit = parsed
            }
            return json(AuditList(try await controller.audit.entries(since: since, limit: limit)))
        }

        // Images
        v1.post("images") { request, context in
            let principal = try context.requirePrincipal()
            guard let name = request.uri.queryParameters.get("name") else {
                throw SwiftletError.badRequest("image.name_required", "query parameter 'name' is required")
            }
            var properties: [String: String] = [:]
            for property in request.uri.queryParameters.getAll("property") {
                let parts = property.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else {
                    throw SwiftletError.badRequest("image.bad_property", "property '\(property)' must be key=value")
                }
                properties[String(parts[0])] = String(parts[1])
            }
            if let declared = request.headers[.contentLength].flatMap(Int64.init), declared > controller.uploadLimit {
                throw SwiftletError(
                    .payloadTooLarge, "image.too_large",
                    "declared size \(declared) bytes is over the limit of \(controller.uploadLimit) bytes")
            }
            let options = try ImageRoutes.uploadOptions(request)
            let image = try await controller.uploadImage(
                name: name, properties: properties, by: principal, signature: options.signature,
                visibility: options.visibility, tags: options.tags
            ) { upload in
                for try await buffer in request.body {
                    try buffer.withUnsafeReadableBytes { bytes throws(SwiftletError) in try upload.append(bytes) }
                }
            }
            return json(image, status: .created)
        }
        v1.get("images") { _, context in
            json(ImageList(try await controller.images(by: try context.requirePrincipal())))
        }
        v1.get("images/:id") { _, context in
            json(try await controller.image(try context.parameters.require("id"), by: try context.requirePrincipal()))
        }
        v1.delete("images/:id") { _, context in
            try await controller.deleteImage(try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }

        // Flavors
        v1.get("flavors") { _, _ in json(FlavorList(try await controller.store.flavors())) }
        v1.post("flavors") { request, context in
            let flavor = try await decode(Flavor.self, request, context)
            return json(try await controller.createFlavor(flavor, by: try context.requirePrincipal()), status: .created)
        }

        // Instances
        v1.post("instances") { request, context in
            let accepted = monotonicNanos()
            let body = try await decode(CreateInstanceRequest.self, request, context)
            let instances = try await controller.createInstances(
                body, by: try context.requirePrincipal(), accepted: accepted)
            return json(InstanceList(instances: instances), status: .created)
        }
        v1.get("instances") { request, context in
            let query = request.uri.queryParameters
            var state: InstanceState?
            if let text = query.get("state") {
                guard let parsed = InstanceState(rawValue: text.uppercased()) else {
                    throw SwiftletError.badRequest("instance.bad_state", "unknown state '\(text)'")
                }
                state = parsed
            }
            var limit: Int?
            if let text = query.get("limit") {
                // Checked before the cache is asked: an answer cached for another query must not hide it.
                guard let parsed = Int(text), parsed > 0 else {
                    throw SwiftletError.badRequest("instance.bad_limit", "limit must be a positive integer")
                }
                limit = parsed
            }
            let (name, image, marker) = (query.get("name"), query.get("image"), query.get("marker"))
            let principal = try context.requirePrincipal()
            let key = ResponseCache.key(
                "instances", "\(principal)", state?.rawValue, name, image, marker, limit.map(String.init),
                await controller.downHosts().joined(separator: ","))
            let answer = try await controller.responses.body(
                for: key, generation: controller.store.generation,
                gzip: ResponseCache.acceptsGzip(request.headers[.acceptEncoding])
            ) {
                let list = try await controller.instances(
                    by: principal, state: state, name: name, image: image, after: marker, limit: limit)
                return ByteBuffer(bytes: try encoder.encode(list))
            }
            var headers: HTTPFields = [.contentType: "application/json", .vary: "Accept-Encoding"]
            if answer.gzipped { headers[.contentEncoding] = "gzip" }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: answer.body))
        }
        v1.get("instances/:id") { _, context in
            json(
                controller.present(
                    try await controller.instance(
                        try context.parameters.require("id"), by: try context.requirePrincipal())))
        }
        v1.delete("instances/:id") { _, context in
            _ = try await controller.act(
                .delete, on: try context.parameters.require("id"), by: try context.requirePrincipal(),
                stopTimeout: .zero)
            return Response(status: .noContent)
        }
        v1.post("instances/:id/:action") { request, context in
            let actionName = try context.parameters.require("action")
            guard let command = InstanceCommand(rawValue: actionName), command != .delete else {
                throw SwiftletError(.notFound, "instance.unknown_action", "unknown action '\(actionName)'")
            }
            var timeout = Duration.seconds(5)
            if let text = request.uri.queryParameters.get("timeout") {
                guard let seconds = Double(text), seconds >= 0, seconds <= 600 else {
                    throw SwiftletError.badRequest("instance.bad_timeout", "timeout must be 0-600 seconds")
                }
                timeout = .milliseconds(Int(seconds * 1000))
            }
            let instance = try await controller.act(
                command, on: try context.parameters.require("id"), by: try context.requirePrincipal(),
                stopTimeout: timeout)
            return json(instance, status: .accepted)
        }
        v1.get("instances/:id/events") { _, context in
            json(
                EventList(
                    try await controller.events(
                        try context.parameters.require("id"), by: try context.requirePrincipal())))
        }
        v1.post("instances/:id/console") { request, context in
            let instance = try await controller.instance(
                try context.parameters.require("id"), by: try context.requirePrincipal())
            let buffer: ByteBuffer
            do { buffer = try await request.body.collect(upTo: 4096) } catch is NIOTooManyBytesError {
                throw SwiftletError(.payloadTooLarge, "console.too_large", "send at most 4,096 bytes at a time")
            }
            let text = String(decoding: buffer.readableBytesView, as: UTF8.self)
            let lines = text.split(whereSeparator: \.isNewline).map(String.init)
            guard !lines.isEmpty,
                lines.allSatisfy({ line in line.unicodeScalars.allSatisfy { $0.value >= 32 && $0.value < 127 } })
            else {
                throw SwiftletError.badRequest("console.bad_input", "send one or more lines of printable ASCII text")
            }
            let link = try controller.link(for: instance)
            for line in lines { try await link.sendConsole(instanceId: instance.id, line: line) }
            return Response(status: .noContent)
        }
        v1.get("instances/:id/console") { request, context in
            let follow = try flag("follow", request)
            let instance = try await controller.instance(
                try context.parameters.require("id"), by: try context.requirePrincipal())
            return try await ConsoleStream.response(
                instanceId: instance.id, link: try controller.link(for: instance), follow: follow)
        }

        NetworkRoutes.register(on: v1, controller: controller)
        ImageRoutes.register(on: v1, controller: controller)
        BuildRoutes.register(on: v1, controller: controller)
        PoolRoutes.register(on: v1, controller: controller)
        ServerGroupRoutes.register(on: v1, controller: controller)
        MigrationRoutes.register(on: v1, controller: controller)
        SnapshotRoutes.register(on: v1, controller: controller)

        // Hosts
        v1.get("hosts") { _, _ in json(HostList(try await controller.hosts())) }
        v1.get("hosts/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let host = try await controller.hosts().first(where: { $0.id == id || $0.name == id }) else {
                throw SwiftletError.notFound("host", id)
            }
            return json(host)
        }
        HostRoutes.register(on: v1, controller: controller, cluster: cluster)
        for api in extensions { api.register(on: router, controller: controller) }
        // Last, so that it sees only the requests no route took.
        router.add(middleware: MethodNotAllowedMiddleware(router.routes))
        return router
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: APIContext) async throws -> T {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: maxJSONBody) } catch {
            throw SwiftletError(.payloadTooLarge, "request.too_large", "request body is over \(maxJSONBody) bytes")
        }
        let data = Data(buffer.readableBytesView)
        let value: T
        do {
            value = try decoder.decode(T.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw SwiftletError.badRequest("request.missing_field", "missing field '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context) {
            throw SwiftletError.badRequest(
                "request.wrong_type", "wrong type for '\(path(context))': \(context.debugDescription)")
        } catch let DecodingError.valueNotFound(_, context) {
            throw nullValue(path(context))
        } catch let DecodingError.dataCorrupted(context) {
            let where_ = context.codingPath.isEmpty ? "" : " at '\(path(context))'"
            throw SwiftletError.badRequest(
                "request.malformed_json", "malformed JSON\(where_): \(context.debugDescription)")
        } catch {
            throw SwiftletError.badRequest("request.malformed_json", "malformed JSON body")
        }
        if let field = NullFields.firstReadField(in: data, decode: { _ = try decoder.decode(T.self, from: $0) }) {
            throw nullValue(field)
        }
        return value
    }

    /// `decode`, or nil for an empty body.
    static func decodeOptional<T: Decodable>(_ type: T.Type, _ request: Request, _ context: APIContext) async throws
        -> T?
    {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: maxJSONBody) } catch {
            throw SwiftletError(.payloadTooLarge, "request.too_large", "request body is over \(maxJSONBody) bytes")
        }
        guard buffer.readableBytes > 0 else { return nil }
        return try await decode(T.self, request, context)
    }

    /// An RFC 3339 time, with or without fractional seconds.
    static func parseTime(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        return try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)
    }

    private static func nullValue(_ field: String) -> SwiftletError {
        SwiftletError.badRequest(
            "request.null_value",
            field.isEmpty ? "the body must not be null" : "'\(field)' must not be null (leave it out instead)")
    }

    /// A boolean query parameter: absent is false; anything but `true` or `false` is refused.
    static func flag(_ name: String, _ request: Request) throws(SwiftletError) -> Bool {
        switch request.uri.queryParameters.get(name) {
        case nil, "false"?: return false
        case "true"?: return true
        case let text?:
            throw SwiftletError.badRequest(
                "request.bad_parameter", "query parameter '\(name)' must be true or false, not '\(text)'")
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        let buffer = ByteBuffer(bytes: data)
        if status == .created { AuditNote.created(buffer) }
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
    }

    static func error(_ error: SwiftletError) -> Response {
        json(ErrorBody(code: error.code, message: error.message), status: .init(code: error.kind.httpStatus))
    }
}
