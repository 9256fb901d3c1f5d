import Hummingbird
import NIOCore
import SwiftletController

/// The web dashboard at `/ui` (docs/operations.md, "Dashboard"): one page shell, a stylesheet and
/// a script, all served from memory. The pages hold no data: the script asks `/v1` for it with
/// the token the operator signs in with, so a missing or wrong token only ever shows the sign-in.
public struct Dashboard: APIExtension {
    public init() {}

    /// The dashboard's files carry no secret, so they need no token; the data does, and `/v1` checks it.
    public var pathPrefixes: [String] { [DashboardAssets.root] }

    public func register(on router: Router<APIContext>, controller: Controller) {
        let serve: @Sendable (Request, APIContext) async throws -> Response = { request, _ in
            let asset = DashboardAssets.asset(for: request.uri.path)
            return Response(
                status: asset.status, headers: asset.headers, body: .init(byteBuffer: ByteBuffer(string: asset.body)))
        }
        router.get("ui", use: serve)
        router.get("ui/**", use: serve)
    }
}
