import PostgresNIO
import SwiftletCore
import Synchronization

/// The statements in flight, so that one the driver will never answer is given up.
///
/// postgres-nio writes a statement to its channel without waiting to hear whether the write went
/// out: one written just as the server closes the connection (a database shutting down) is
/// dropped, and its answer never comes (vapor/postgres-nio #487, whose fix was reverted). So each
/// statement runs in a task of its own, and the caller waits on a continuation that either the
/// statement or `abandonClosed()` resumes: a statement whose connection is closed ends its
/// caller's wait with 503, and only the task stuck in the driver is left behind.
final class StatementWatch: Sendable {
    private struct Entry {
        let connection: PostgresConnection
        let waiter: Waiter
    }

    /// Resumes its continuation once, whoever comes first.
    final class Waiter: Sendable {
        private let continuation: Mutex<CheckedContinuation<[PostgresRow], any Error>?>

        init(_ continuation: CheckedContinuation<[PostgresRow], any Error>) {
            self.continuation = Mutex(continuation)
        }

        func resume(with result: Result<[PostgresRow], any Error>) {
            continuation.withLock { $0.take() }?.resume(with: result)
        }
    }

    private let entries = Mutex<(next: UInt64, open: [UInt64: Entry])>((0, [:]))

    /// How often `watch` looks for statements on closed connections.
    static let interval: Duration = .milliseconds(250)

    static let abandoned = SwiftletError(
        .unavailable, "store.unavailable", "the database is unreachable: its connection closed during a statement")

    /// Runs `query` on `connection` and collects its rows; 503 when the connection closes and the
    /// driver does not answer.
    func run(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws
        -> [PostgresRow]
    {
        try await withCheckedThrowingContinuation { continuation in
            let waiter = Waiter(continuation)
            let id = entries.withLock { entries in
                entries.next += 1
                entries.open[entries.next] = Entry(connection: connection, waiter: waiter)
                return entries.next
            }
            Task {
                let result = await Result { try await connection.query(query, logger: logger).collect() }
                _ = self.entries.withLock { $0.open.removeValue(forKey: id) }
                waiter.resume(with: result)
            }
        }
    }

    /// Gives up the statements whose connections are closed, every `interval`, until cancelled.
    func watch() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.interval)
            let closed = entries.withLock { entries in
                let ids = entries.open.filter { $0.value.connection.isClosed }.map(\.key)
                return ids.compactMap { entries.open.removeValue(forKey: $0)?.waiter }
            }
            for waiter in closed { waiter.resume(with: .failure(Self.abandoned)) }
        }
    }
}

extension Result where Failure == any Error {
    fileprivate init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
