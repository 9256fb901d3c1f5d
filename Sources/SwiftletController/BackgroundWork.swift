import ServiceLifecycle
import Synchronization

/// Work an API call starts and answers before it ends (a migration: 202, then its steps). Runs
/// as a `Service`: a graceful shutdown takes no new work and lets what runs finish, so no move is
/// left halfway by a controller that was asked to stop.
public final class BackgroundWork: Service, Sendable {
    public typealias Job = @Sendable () async -> Void

    private let jobs: AsyncStream<Job>
    private let sink: AsyncStream<Job>.Continuation
    private let open = Mutex(true)

    public init() {
        (jobs, sink) = AsyncStream.makeStream(of: Job.self)
    }

    /// Starts `job`; false once the service is shutting down (the caller answers 503).
    public func submit(_ job: @escaping Job) -> Bool {
        open.withLock { open in
            guard open else { return false }
            sink.yield(job)
            return true
        }
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                self.close()
            }
            for await job in jobs { group.addTask { await job() } }
        }
    }

    private func close() {
        open.withLock { open in
            open = false
            sink.finish()
        }
    }
}
