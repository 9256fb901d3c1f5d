/// Every failure of a client call, described in one line a person can act on.
public struct ClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with `{"error": {code, message}}` (or a bare status).
        case api(status: Int, code: String, message: String)
        /// The server refused the bearer token (401).
        case unauthorized
        /// No TCP connection to the server could be made.
        case unreachable(url: String)
        /// A TLS connection to the server could not be set up (its certificate did not verify).
        case tls(url: String, detail: String)
        /// The server took longer than the request's deadline.
        case timeout(url: String)
        /// The server's answer was not what the API promises.
        case invalidResponse(String)
        /// A problem on this side: a bad URL, an unreadable file.
        case local(String)
    }

    public var kind: Kind

    public init(_ kind: Kind) { self.kind = kind }

    public var description: String {
        switch kind {
        case .api(_, let code, let message): "\(code): \(message)"
        case .unauthorized: "unauthorized: the token was refused (check SWIFTLET_TOKEN)"
        case .unreachable(let url): "cannot reach the Swiftlet server at \(url) (is `swiftlet server` running?)"
        case .timeout(let url): "the Swiftlet server at \(url) did not answer in time"
        case .tls(let url, let detail): "TLS with the Swiftlet server at \(url) failed: \(detail)"
        case .invalidResponse(let detail): "unexpected answer from the server: \(detail)"
        case .local(let detail): detail
        }
    }

    /// The API error code (`instance.not_found`), when the server sent one.
    public var code: String? {
        if case .api(_, let code, _) = kind { return code }
        return nil
    }

    /// The HTTP status, when the server answered.
    public var status: Int? {
        switch kind {
        case .api(let status, _, _): status
        case .unauthorized: 401
        default: nil
        }
    }
}
