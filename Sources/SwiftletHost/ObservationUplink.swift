import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import SwiftletAgentProtocol
import SwiftletCore

/// Sends the agent's observations and replies to the controller, in order, retrying while the
/// controller cannot be reached: an observation is dropped only when the controller refused it
/// (it says why, and the refusal is logged).
actor ObservationUplink: ObservationSink {
    private var client: HTTPClient?
    private var controllers: ControllerEndpoints?
    private let logger: Logger
    private var queue: [Outgoing] = []
    /// Wakes the sender; cancellation ends its wait.
    private let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))

    private enum Outgoing {
        case observation(Observation)
        case reply(AgentReply)
    }

    init(client: HTTPClient?, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    func connect(client: HTTPClient, controllers: ControllerEndpoints) {
        self.client = client
        self.controllers = controllers
    }

    nonisolated func observe(_ observation: Observation) async {
        await enqueue(.observation(observation))
    }

    func reply(_ reply: AgentReply) {
        enqueue(.reply(reply))
    }

    private func enqueue(_ item: Outgoing) {
        queue.append(item)
        wake.yield()
    }

    /// Sends until cancelled.
    func run() async {
        var wakes = self.wakes.makeAsyncIterator()
        while !Task.isCancelled {
            guard !queue.isEmpty else {
                guard await wakes.next() != nil else { return }
                continue
            }
            // Consecutive observations go in one request.
            var batch: [Observation] = []
            while batch.count < 256, case .observation(let observation) = queue.first {
                batch.append(observation)
                queue.removeFirst()
            }
            let sent: Bool
            if !batch.isEmpty {
                let taken = await send(batch)
                sent = taken == batch.count
                queue.insert(contentsOf: batch[taken...].map { .observation($0) }, at: 0)
            } else if case .reply(let reply) = queue.first {
                queue.removeFirst()
                // A reply that cannot be delivered is not retried: its caller has timed out.
                _ = await post("/agent/v1/replies", try? SwiftletJSON.encoder().encode(reply))
                sent = true
            } else {
                sent = true
            }
            if !sent { try? await Task.sleep(for: .milliseconds(200)) }
        }
    }

    /// How many of `batch`, from the front, the controller took (recorded or refused for good);
    /// the rest are sent again.
    private func send(_ batch: [Observation]) async -> Int {
        guard let answer = await post("/agent/v1/observations", try? SwiftletJSON.encoder().encode(batch)) else {
            return 0
        }
        guard let receipt = try? SwiftletJSON.decoder().decode(ObservationReceipt.self, from: Data(buffer: answer)),
            (0...batch.count).contains(receipt.taken)
        else { return batch.count }
        for refusal in receipt.refused where batch.indices.contains(refusal.index) {
            logger.warning(
                "the controller refused a report",
                metadata: [
                    "instance.id": "\(batch[refusal.index].instanceId)", "error.code": "\(refusal.code)",
                    "error": "\(refusal.message)",
                ])
        }
        return receipt.taken
    }

    /// The answer's body when delivered or refused for good (4xx, logged); nil to retry.
    private func post(_ path: String, _ body: Data?) async -> ByteBuffer? {
        guard let client, let controllers, let body else { return ByteBuffer() }
        var request = HTTPClientRequest(url: controllers.base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: body))
        do {
            let response = try await client.execute(request, timeout: .seconds(10))
            let answer = try await response.body.collect(upTo: 1 << 16)
            if (200..<300).contains(response.status.code) { return answer }
            if (400..<500).contains(response.status.code) {
                logger.warning(
                    "the controller refused a request",
                    metadata: ["http.status": "\(response.status.code)", "answer": "\(String(buffer: answer))"])
                return ByteBuffer()
            }
            return nil
        } catch {
            logger.debug("report not delivered, retrying", metadata: ["error": "\(error)"])
            return nil
        }
    }
}
