import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import SwiftletCore

/// A typed client of the Swiftlet HTTP API (/v1, docs/api.md). Call `shutdown()` when done
/// (or use `withClient`): the underlying HTTPClient must be shut down before it is released.
public final class SwiftletClient: Sendable {
    public let baseURL: String
    public let token: String?
    private let http: HTTPClient

    /// Deadline for ordinary calls; creating with `wait` and uploads get `longTimeout`.
    static let shortTimeout: TimeAmount = .seconds(60)
    static let longTimeout: TimeAmount = .minutes(15)
    /// Answers bigger than this are refused (lists of thousands of instances stay far below).
    private static let maxBodyBytes = 64 << 20

    /// An `https` server's certificate must verify against the system's trust store, or with
    /// `caCertificate` (a PEM file), against that CA only (a private one, as the controller's own).
    public init(baseURL: String, token: String?, caCertificate: String? = nil) {
        var trimmed = baseURL
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.baseURL = trimmed
        self.token = token
        var configuration = HTTPClient.Configuration()
        // Fail at once when nothing listens instead of retrying until the deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(5)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let caCertificate { tls.trustRoots = .file(caCertificate) }
        configuration.tlsConfiguration = tls
        self.caCertificate = caCertificate
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// The CA file an `https` server's certificate is verified against (nil: the system's).
    public let caCertificate: String?

    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// Runs `body` with a client and shuts it down afterwards, also when `body` throws.
    public static func withClient<T: Sendable>(
        baseURL: String, token: String?, caCertificate: String? = nil, _ body: (SwiftletClient) async throws -> T
    ) async throws -> T {
        if let caCertificate, !FileManager.default.isReadableFile(atPath: caCertificate) {
            throw ClientError(.local("cannot read the CA certificate '\(caCertificate)'"))
        }
        let client = SwiftletClient(baseURL: baseURL, token: token, caCertificate: caCertificate)
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    // MARK: health, projects, tokens

    /// True when `GET /v1/health` answers `{"status":"ok"}`.
    public func health() async throws -> Bool {
        struct Health: Decodable { var status: String }
        let health: Health = try await send("GET", "/v1/health")
        return health.status == "ok"
    }

    /// Whether this controller is the leader of those sharing its database (nil: it does not say).
    public func isLeader() async throws -> Bool? {
        struct Health: Decodable { var leader: Bool? }
        let health: Health = try await send("GET", "/v1/health")
        return health.leader
    }

    public func createProject(_ request: CreateProjectRequest) async throws -> Project {
        try await send("POST", "/v1/projects", body: request)
    }

    public func projects() async throws -> [Project] {
        let list: ProjectList = try await send("GET", "/v1/projects")
        return list.projects
    }

    /// Issues a token for a project; the secret is in `TokenInfo.token`, shown only once. With
    /// `ttlSeconds` it stops working that long after.
    public func createToken(project: String, ttlSeconds: Int? = nil) async throws -> TokenInfo {
        try await send(
            "POST", "/v1/projects/\(segment(project))/tokens", body: CreateTokenRequest(ttlSeconds: ttlSeconds))
    }

    /// The tokens of one project (nil: all), without their secrets (admin).
    public func tokens(project: String? = nil) async throws -> [TokenInfo] {
        let list: TokenList = try await send("GET", "/v1/tokens", query: project.map { [("project", $0)] } ?? [])
        return list.tokens
    }

    /// Revokes a token by id: it is refused from now on (admin).
    public func revokeToken(_ id: String) async throws -> TokenInfo {
        try await send("DELETE", "/v1/tokens/\(segment(id))")
    }

    /// The audit log, newest first: changes at or after `since`, at most `limit` (admin).
    public func audit(since: Date? = nil, limit: Int? = nil) async throws -> [AuditEntry] {
        var query: [(String, String)] = []
        if let since { query.append(("since", since.formatted(.iso8601))) }
        if let limit { query.append(("limit", String(limit))) }
        let list: AuditList = try await send("GET", "/v1/audit", query: query)
        return list.entries
    }

    // MARK: images

    /// Uploads the file at `path`, streamed from disk in chunks.
    /// `signature`: base64 Ed25519 over the file's sha256 (sent as `X-Swiftlet-Signature`).
    public func uploadImage(
        path: String, name: String, properties: [String: String] = [:], signature: String? = nil,
        visibility: ImageVisibility? = nil, tags: [String] = []
    ) async throws -> Image {
        let size: Int64
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            guard (attributes[.type] as? FileAttributeType) == .typeRegular else {
                throw ClientError(.local("'\(path)' is not a regular file"))
            }
            size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        } catch let error as ClientError {
            throw error
        } catch {
            throw ClientError(.local("cannot read '\(path)': no such file or no permission"))
        }
        var query = [("name", name)]
        for key in properties.keys.sorted() { query.append(("property", "\(key)=\(properties[key]!)")) }
        if let visibility { query.append(("visibility", visibility.rawValue)) }
        for tag in tags { query.append(("tag", tag)) }
        var request = try makeRequest("POST", "/v1/images", query: query)
        if let signature { request.headers.replaceOrAdd(name: Image.signatureHeader, value: signature) }
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/octet-stream")
        request.body = .stream(FileChunks(path: path), length: .known(size))
        return try await decode(execute(request, timeout: Self.longTimeout))
    }

    public func images() async throws -> [Image] {
        let list: ImageList = try await send("GET", "/v1/images")
        return list.images
    }

    public func image(_ idOrName: String) async throws -> Image {
        try await send("GET", "/v1/images/\(segment(idOrName))")
    }

    public func deleteImage(_ idOrName: String) async throws {
        try await sendNoContent("DELETE", "/v1/images/\(segment(idOrName))")
    }

    // MARK: flavors

    public func flavors() async throws -> [Flavor] {
        let list: FlavorList = try await send("GET", "/v1/flavors")
        return list.flavors
    }

    public func createFlavor(_ flavor: Flavor) async throws -> Flavor {
        try await send("POST", "/v1/flavors", body: flavor)
    }

    // MARK: instances

    /// Creates one or more instances; with `wait` the answer comes once all are RUNNING or ERROR.
    public func createInstances(_ request: CreateInstanceRequest) async throws -> [Instance] {
        let timeout = request.wait == true ? Self.longTimeout : Self.shortTimeout
        let list: InstanceList = try await send("POST", "/v1/instances", body: request, timeout: timeout)
        return list.instances
    }

    /// Every instance that passes the filters, fetched a page of `pageSize` at a time (as
    /// novaclient walks markers), so no single answer grows with the fleet.
    public func instances(
        state: InstanceState? = nil, name: String? = nil, image: String? = nil, pageSize: Int = 500
    ) async throws -> [Instance] {
        var filters: [(String, String)] = [("limit", String(pageSize))]
        if let state { filters.append(("state", state.rawValue)) }
        if let name { filters.append(("name", name)) }
        if let image { filters.append(("image", image)) }
        // A marker deleted between two pages has no place in the order any more: walk again.
        var attempts = 1
        while true {
            do { return try await walkInstancePages(filters) } catch let error as ClientError
                where error.code == "instance.bad_marker" && attempts < 3
            {
                attempts += 1
            }
        }
    }

    private func walkInstancePages(_ filters: [(String, String)]) async throws -> [Instance] {
        var instances: [Instance] = []
        var marker: String?
        repeat {
            let page: InstanceList = try await send(
                "GET", "/v1/instances", query: filters + (marker.map { [("marker", $0)] } ?? []))
            instances += page.instances
            marker = page.next
        } while marker != nil
        return instances
    }

    public func instance(_ idOrName: String) async throws -> Instance {
        try await send("GET", "/v1/instances/\(segment(idOrName))")
    }

    public func start(_ id: String) async throws -> Instance { try await action("start", id) }
    public func reboot(_ id: String) async throws -> Instance { try await action("reboot", id) }
    public func pause(_ id: String) async throws -> Instance { try await action("pause", id) }
    public func resume(_ id: String) async throws -> Instance { try await action("resume", id) }

    private func action(_ verb: String, _ id: String) async throws -> Instance {
        try await send("POST", "/v1/instances/\(segment(id))/\(verb)")
    }

    /// Stops gracefully, forcing after `timeout` seconds (the server's default when nil).
    public func stop(_ id: String, timeout: Int? = nil) async throws -> Instance {
        let query = timeout.map { [("timeout", String($0))] } ?? []
        // The server may wait for the graceful stop before answering.
        let deadline = TimeAmount.seconds(Int64(timeout ?? 0)) + Self.shortTimeout
        return try await send("POST", "/v1/instances/\(segment(id))/stop", query: query, timeout: deadline)
    }

    public func deleteInstance(_ id: String) async throws {
        try await sendNoContent("DELETE", "/v1/instances/\(segment(id))")
    }

    public func events(_ id: String) async throws -> [InstanceEvent] {
        let list: EventList = try await send("GET", "/v1/instances/\(segment(id))/events")
        return list.events
    }

    /// The instance's console as text chunks. With `follow` the stream lasts until the instance
    /// stops (or the consumer stops iterating, which closes the connection).
    public func console(_ id: String, follow: Bool = false) -> AsyncThrowingStream<String, Error> {
        textStream("/v1/instances/\(segment(id))/console", follow: follow, timeout: Self.shortTimeout)
    }

    /// Streams a text resource (console, build log) as UTF-8 text chunks, never splitting a
    /// character; with `follow` the server keeps the answer open while the source grows.
    func textStream(_ path: String, follow: Bool, timeout: TimeAmount) -> AsyncThrowingStream<String, Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: String.self)
        let task = Task {
            do {
                let request = try makeRequest("GET", path, query: follow ? [("follow", "true")] : [])
                let response = try await execute(request, timeout: timeout)
                guard response.status == .ok else { throw try await errorFrom(response) }
                var decoder = UTF8Chunks()
                for try await buffer in response.body {
                    let text = decoder.append(Array(buffer.readableBytesView))
                    if !text.isEmpty { continuation.yield(text) }
                }
                let rest = decoder.finish()
                if !rest.isEmpty { continuation.yield(rest) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: hosts

    public func hosts() async throws -> [ComputeHost] {
        let list: HostList = try await send("GET", "/v1/hosts")
        return list.hosts
    }

    public func host(_ id: String) async throws -> ComputeHost {
        try await send("GET", "/v1/hosts/\(segment(id))")
    }

    /// A single-use token for `swiftlet agent --join-token` (admin).
    public func createJoinToken(ttlSeconds: Int?) async throws -> JoinTokenInfo {
        try await send("POST", "/v1/hosts/join-tokens", body: CreateJoinTokenRequest(ttlSeconds: ttlSeconds))
    }

    /// Stops (`true`) or resumes new placements on a host (admin).
    public func cordonHost(_ id: String, _ cordoned: Bool) async throws {
        try await sendNoContent("POST", "/v1/hosts/\(segment(id))/\(cordoned ? "cordon" : "uncordon")")
    }

    /// Ends a host's access: its certificate is refused from now on (admin).
    public func revokeHost(_ id: String) async throws {
        try await sendNoContent("POST", "/v1/hosts/\(segment(id))/revoke")
    }

    // MARK: plain HTTP to workloads

    /// A plain request to any URL (no token), e.g. to check that a unikernel answers on its
    /// published port. Returns the status and the body as text.
    public func fetch(_ method: String, url: String, body: String? = nil, timeout: TimeAmount = .seconds(10))
        async throws -> (status: Int, body: String)
    {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        do {
            let response = try await http.execute(request, timeout: timeout)
            let bytes = try await response.body.collect(upTo: Self.maxBodyBytes)
            return (Int(response.status.code), String(buffer: bytes))
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            throw ClientError(.local("no answer from \(url) within \(timeout.nanoseconds / 1_000_000) ms"))
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as HTTPClientError where error == .cancelled {
            throw CancellationError()
        } catch {
            throw ClientError(.local("cannot connect to \(url): \(error)"))
        }
    }

    // MARK: plumbing

    func send<Response: Decodable>(
        _ method: String, _ path: String, query: [(String, String)] = [], timeout: TimeAmount = shortTimeout
    ) async throws -> Response {
        let request = try makeRequest(method, path, query: query)
        return try await decode(execute(request, timeout: timeout))
    }

    func send<Body: Encodable, Response: Decodable>(
        _ method: String, _ path: String, body: Body, timeout: TimeAmount = shortTimeout
    ) async throws -> Response {
        var request = try makeRequest(method, path)
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try SwiftletJSON.encoder().encode(body)))
        return try await decode(execute(request, timeout: timeout))
    }

    func sendNoContent(_ method: String, _ path: String) async throws {
        let response = try await execute(try makeRequest(method, path), timeout: Self.shortTimeout)
        guard (200..<300).contains(response.status.code) else { throw try await errorFrom(response) }
        _ = try await response.body.collect(upTo: Self.maxBodyBytes)
    }

    func makeRequest(_ method: String, _ path: String, query: [(String, String)] = []) throws
        -> HTTPClientRequest
    {
        var url = baseURL + path
        if !query.isEmpty {
            url += "?" + query.map { "\(queryEscape($0.0))=\(queryEscape($0.1))" }.joined(separator: "&")
        }
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        request.headers.add(name: "Accept", value: "application/json")
        if let token, !token.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        return request
    }

    /// Sends a request, turning transport failures into one-line `ClientError`s.
    func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        do {
            return try await http.execute(request, timeout: timeout)
        } catch let error as NIOSSLError {
            throw ClientError(.tls(url: hostPart(of: request.url), detail: Self.tlsDetail(error, ca: caCertificate)))
        } catch let error as BoringSSLError {
            throw ClientError(.tls(url: hostPart(of: request.url), detail: Self.tlsDetail(error, ca: caCertificate)))
        } catch let error as NIOSSLExtraError {
            throw ClientError(.tls(url: hostPart(of: request.url), detail: Self.tlsDetail(error, ca: caCertificate)))
        } catch let error as HTTPClientError {
            if [.deadlineExceeded, .readTimeout, .writeTimeout].contains(error) {
                throw ClientError(.timeout(url: baseURL))
            }
            if error == .cancelled { throw CancellationError() }
            if [.invalidURL, .emptyHost, .emptyScheme].contains(error) {
                throw ClientError(.local("invalid server URL '\(request.url)'"))
            }
            throw ClientError(.unreachable(url: hostPart(of: request.url)))
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as ClientError {
            throw error
        } catch {
            // Connection refused, unknown host, connect timeout: NIO reports them as various types.
            if Task.isCancelled { throw CancellationError() }
            throw ClientError(.unreachable(url: hostPart(of: request.url)))
        }
    }

    func decode<Response: Decodable>(_ response: HTTPClientResponse) async throws -> Response {
        guard (200..<300).contains(response.status.code) else { throw try await errorFrom(response) }
        let bytes = try await response.body.collect(upTo: Self.maxBodyBytes)
        do {
            return try SwiftletJSON.decoder().decode(Response.self, from: Data(bytes.readableBytesView))
        } catch {
            throw ClientError(.invalidResponse("cannot decode \(Response.self): \(error)"))
        }
    }

    func errorFrom(_ response: HTTPClientResponse) async throws -> ClientError {
        let status = Int(response.status.code)
        let bytes = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
        let body = try? SwiftletJSON.decoder().decode(ErrorBody.self, from: Data(bytes.readableBytesView))
        if status == 401 {
            // An expired or revoked token says so; any other refusal is "check your token".
            guard let body, ["auth.token_expired", "auth.token_revoked"].contains(body.error.code) else {
                return ClientError(.unauthorized)
            }
            return ClientError(.api(status: status, code: body.error.code, message: body.error.message))
        }
        if let body {
            return ClientError(.api(status: status, code: body.error.code, message: body.error.message))
        }
        let text = String(buffer: bytes).trimmingCharacters(in: .whitespacesAndNewlines)
        let firstLine = text.split(separator: "\n").first.map(String.init) ?? ""
        let message = firstLine.isEmpty ? response.status.reasonPhrase : firstLine
        return ClientError(.api(status: status, code: "http.\(status)", message: message))
    }

    /// Why a TLS connection failed, in words: most often a certificate that does not verify.
    static func tlsDetail(_ error: any Error, ca: String?) -> String {
        let text = String(describing: error)
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "its certificate does not verify against "
                + (ca.map { "the CA in \($0)" } ?? "the system's trust store (for a private CA, give --ca-cert)")
        }
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("PACKET_LENGTH_TOO_LONG") {
            return "it does not speak TLS (is the URL http://?)"
        }
        if text.contains("hostname") || text.contains("failedToValidateHostname") {
            return "its certificate does not name the host in the URL"
        }
        return text
    }

    /// The scheme://host:port part of a URL, for messages.
    private func hostPart(of url: String) -> String {
        guard let components = URLComponents(string: url), let scheme = components.scheme,
            let host = components.host
        else { return url }
        return components.port.map { "\(scheme)://\(host):\($0)" } ?? "\(scheme)://\(host)"
    }

    func segment(_ text: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#%")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    private func queryEscape(_ text: String) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+#%")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// A file read lazily in 1 MiB chunks: the upload never holds the whole image in memory.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String

    struct AsyncIterator: AsyncIteratorProtocol {
        let path: String
        var handle: FileHandle?
        var done = false

        mutating func next() async throws -> ByteBuffer? {
            if done { return nil }
            if handle == nil {
                guard let opened = FileHandle(forReadingAtPath: path) else {
                    throw ClientError(.local("cannot open '\(path)'"))
                }
                handle = opened
            }
            let data = try handle!.read(upToCount: 1 << 20) ?? Data()
            if data.isEmpty {
                done = true
                try handle?.close()
                return nil
            }
            return ByteBuffer(bytes: data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(path: path) }
}

/// Decodes UTF-8 arriving in arbitrary chunks, holding back a character split across chunks.
struct UTF8Chunks {
    private var pending: [UInt8] = []

    mutating func append(_ bytes: [UInt8]) -> String {
        pending += bytes
        // Find the last lead byte; if its sequence is not complete yet, keep it for later.
        var cut = pending.count
        var index = pending.count - 1
        while index >= 0, index >= pending.count - 4 {
            let byte = pending[index]
            if byte & 0xC0 != 0x80 {
                let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                if pending.count - index < length { cut = index }
                break
            }
            index -= 1
        }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }
}
