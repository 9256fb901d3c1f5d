import Hummingbird
import Logging
import NIOCore
import SwiftletHost
import SwiftletMetrics

/// `swiftlet agent --metrics-listen ADDR:PORT`: `GET /metrics` with this process's hosts' own
/// figures (docs/operations.md). It asks for no token: an agent holds no API tokens to check one
/// against, so it listens only where it is told, on loopback unless given another address.
enum AgentMetricsListener {
    static func application(
        agents: [RemoteAgent], metrics: PrometheusMetrics, host: String, port: Int, logger: Logger
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("metrics") { _, _ in
            // Each agent reads its own host; the families are set once with every host in them.
            var readings: [String: [MetricLabels: Double]] = [:]
            for agent in agents {
                for (name, reading) in await agent.gaugeReadings() {
                    readings[name, default: [:]].merge(reading) { _, last in last }
                }
            }
            for (name, reading) in readings { metrics.setGauges(name, to: reading) }
            return Response(
                status: .ok, headers: [.contentType: PrometheusMetrics.contentType],
                body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "swiftlet-agent"),
            logger: logger)
    }

    /// `ADDR:PORT`, or `PORT` alone for loopback.
    static func parse(_ text: String) -> (host: String, port: Int)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: return Int(parts[0]).flatMap { (1...65535).contains($0) ? ("127.0.0.1", $0) : nil }
        case 2:
            guard !parts[0].isEmpty, let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
            return (String(parts[0]), port)
        default: return nil
        }
    }
}
