import HTTPTypes
import Hummingbird
import SwiftletCore

/// Answers a known path asked with a method it does not have: 405 with `Allow` (RFC 9110
/// §15.5.6), where the router alone would answer 404 as for an unknown path.
///
/// Added to the router after every route, so it runs only for requests that matched none
/// (Hummingbird applies a middleware to the routes added after it, and to the not-found answer).
struct MethodNotAllowedMiddleware: RouterMiddleware {
    /// A registered path and the methods it answers.
    struct Route {
        let path: RouterPath
        var methods: [HTTPRequest.Method]

        /// 1 for each literal segment, 0 for each capture: the router prefers the literal.
        var literalSegments: [Int] { path.map { element in element == element.description ? 1 : 0 } }
    }

    let routes: [Route]

    init(_ routes: [Router<APIContext>.RouteDescription]) {
        var byPath: [Route] = []
        for route in routes {
            if let index = byPath.firstIndex(where: { $0.path == route.path }) {
                byPath[index].methods.append(route.method)
            } else {
                byPath.append(Route(path: route.path, methods: [route.method]))
            }
        }
        self.routes = byPath
    }

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        let allowed = methods(for: request.uri.path)
        guard !allowed.isEmpty, !allowed.contains(request.method) else { return try await next(request, context) }
        let names = allowed.map(\.rawValue).sorted()
        var response = APIRouter.error(
            SwiftletError(
                .methodNotAllowed, "request.method_not_allowed",
                "\(request.method.rawValue) is not allowed on \(request.uri.path); allowed: \(names.joined(separator: ", "))"
            ))
        response.headers[.allow] = names.joined(separator: ", ")
        return response
    }

    /// The methods of the route the router resolves `path` to: of the routes that match it, the
    /// one with a literal segment where the others capture, first from the left.
    func methods(for path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let matching = routes.filter { route in
            route.path.count == segments.count && zip(route.path, segments).allSatisfy { $0 ~= $1 }
        }
        return matching.max { $0.literalSegments.lexicographicallyPrecedes($1.literalSegments) }?.methods ?? []
    }
}
