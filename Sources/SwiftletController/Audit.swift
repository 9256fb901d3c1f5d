import Foundation
import Hummingbird
import Logging
import NIOCore
import SwiftletCore
import SwiftletStore
import Synchronization

/// What a request learns about itself while it is handled, for its audit entry: who it is (set
/// where it authenticates, native or OpenStack), the error code it was refused with, and what a
/// create answered (for the new resources' ids). A task local, so that handlers and the code they
/// call need no extra parameter: set by `AuditMiddleware` for the requests it records only.
public final class AuditNote: Sendable {
    @TaskLocal public static var current: AuditNote?

    struct Fields: Sendable {
        var tokenId: String?
        var userId: String?
        var projectId: String?
        var code: String?
        var created: ByteBuffer?
    }

    let fields = Mutex(Fields())

    public init() {}

    /// The token (and user) the request authenticated with, and the project it acts in.
    public static func authenticated(tokenId: String?, userId: String? = nil, projectId: String) {
        current?.fields.withLock {
            $0.tokenId = tokenId
            $0.userId = userId
            $0.projectId = projectId
        }
    }

    /// The error code the request is answered with.
    public static func refused(code: String) {
        current?.fields.withLock { $0.code = code }
    }

    /// The body a create answered with: the audit log takes only the new resources' ids from it,
    /// later, off the request's path.
    public static func created(_ body: ByteBuffer) {
        current?.fields.withLock { $0.created = body }
    }
}

/// Records every request but GET and HEAD in the audit log, with the status it was answered with.
struct AuditMiddleware: RouterMiddleware {
    let log: AuditLog

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        if request.method == .get || request.method == .head { return try await next(request, context) }
        let note = AuditNote()
        let time = Date()
        do {
            let response = try await AuditNote.$current.withValue(note) { try await next(request, context) }
            log.record(note, time: time, request: request, context: context, status: response.status.code)
            return response
        } catch {
            let status =
                switch error {
                case let error as SwiftletError: error.kind.httpStatus
                case let error as any HTTPResponseError: error.status.code
                default: 500
                }
            log.record(note, time: time, request: request, context: context, status: status)
            throw error
        }
    }
}

/// The audit log's writer. A request only appends its entry to a bounded buffer in memory; a
/// background task writes what accumulated in one transaction, so recording adds no store
/// round-trip to any request. Reads (`entries`) write what is pending first, so they see every
/// change answered before them. When the store cannot keep up (the buffer is full), entries are
/// dropped and counted, never blocking the API.
public final class AuditLog: Sendable {
    struct Pending: Sendable {
        var entry: AuditEntry
        var created: ByteBuffer?
    }

    struct State: Sendable {
        var pending: [Pending] = []
        var writerRunning = false
        var dropped = 0
    }

    let store: (any AuditStore)?
    let logger: Logger
    let capacity: Int
    /// How long the writer waits for more entries before a write: creates in a burst share one.
    let delay: Duration
    private let state = Mutex(State())
    /// Serialises writes, so that entries reach the store in the order they were recorded.
    private let writing = AsyncLock()

    public init(store: any SwiftletStore, logger: Logger, capacity: Int = 10_000, delay: Duration = .milliseconds(200))
    {
        self.store = store as? any AuditStore
        self.logger = logger
        self.capacity = capacity
        self.delay = delay
    }

    /// Entries dropped because the buffer was full.
    public var dropped: Int { state.withLock { $0.dropped } }

    func record(_ note: AuditNote, time: Date, request: Request, context: APIContext, status: Int) {
        guard store != nil else { return }
        let fields = note.fields.withLock { $0 }
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? request.uri.path
        let entry = AuditEntry(
            time: time, tokenId: fields.tokenId, userId: fields.userId, projectId: fields.projectId,
            method: request.method.rawValue, route: route, resourceId: Self.pathResource(context.parameters),
            status: status, code: (200..<300).contains(status) ? nil : fields.code)
        append(Pending(entry: entry, created: fields.created))
    }

    private func append(_ pending: Pending) {
        let start = state.withLock { state -> Bool in
            guard state.pending.count < capacity else {
                state.dropped += 1
                return false
            }
            state.pending.append(pending)
            defer { state.writerRunning = true }
            return !state.writerRunning
        }
        guard start else { return }
        Task { await self.writeLoop() }
    }

    private func writeLoop() async {
        while true {
            try? await Task.sleep(for: delay)
            await flush()
            let done = state.withLock { state -> Bool in
                if state.pending.isEmpty { state.writerRunning = false }
                return !state.writerRunning
            }
            if done { return }
        }
    }

    /// Writes everything pending now; on a store failure the entries go back to be tried again.
    public func flush() async {
        guard let store else { return }
        await writing.withLock {
            let batch = state.withLock { state in
                defer { state.pending.removeAll(keepingCapacity: true) }
                return state.pending
            }
            guard !batch.isEmpty else { return }
            let entries = batch.map(Self.resolved)
            do {
                try await store.appendAudit(entries)
            } catch {
                logger.warning("cannot write the audit log", metadata: ["error": "\(error)"])
                state.withLock { state in
                    let room = max(0, capacity - state.pending.count)
                    state.dropped += max(0, batch.count - room)
                    state.pending.insert(contentsOf: batch.prefix(room), at: 0)
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Newest first; what is pending is written first.
    public func entries(since: Date?, limit: Int) async throws(SwiftletError) -> [AuditEntry] {
        guard let store else {
            throw SwiftletError(.unavailable, "audit.unsupported", "this store keeps no audit log")
        }
        await flush()
        return try await store.auditEntries(since: since, limit: limit)
    }

    /// The path's resource: its `id` parameter, else the first one that is not an action name.
    static func pathResource(_ parameters: Parameters) -> String? {
        if let id = parameters.get("id") { return id }
        for (key, value) in parameters where key != "action" { return String(value) }
        return nil
    }

    /// The entry with the ids a create answered with (rather than its path's, which names the
    /// parent of a sub-resource): `{"id"}`, `{"<kind>": {"id"}}` or `{"<kinds>": [{"id"}, …]}`.
    /// Nothing else of the body is kept.
    static func resolved(_ pending: Pending) -> AuditEntry {
        var entry = pending.entry
        guard let body = pending.created,
            let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
        else { return entry }
        if let id = object["id"] as? String {
            entry.resourceId = id
        } else if object.count == 1, let value = object.values.first {
            if let nested = value as? [String: Any], let id = nested["id"] as? String {
                entry.resourceId = id
            } else if let list = value as? [[String: Any]] {
                let ids = list.compactMap { $0["id"] as? String }
                if !ids.isEmpty { entry.resourceId = ids.joined(separator: ",") }
            }
        }
        return entry
    }
}

/// A lock held across suspension points (one writer at a time), waiters in order.
final class AsyncLock: Sendable {
    private let state = Mutex<(locked: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func withLock<T: Sendable>(_ body: () async -> T) async -> T {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state -> Bool in
                if state.locked {
                    state.waiters.append(continuation)
                    return false
                }
                state.locked = true
                return true
            }
            if acquired { continuation.resume() }
        }
        let result = await body()
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.locked = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
        return result
    }
}
