import Hummingbird
import NIOCore
import SwiftletCore
import SwiftletMetrics
import SwiftletStore

/// `GET /metrics`: the controller's figures in Prometheus' text format (docs/operations.md).
enum MetricsRoutes {
    static let path = "/metrics"

    static func register(on router: Router<APIContext>, controller: Controller, open: Bool) {
        router.get("metrics") { _, context in
            if !open { try controller.requireAdmin(try context.requirePrincipal()) }
            await controller.sampleGauges()
            return Response(
                status: .ok, headers: [.contentType: PrometheusMetrics.contentType],
                body: .init(byteBuffer: ByteBuffer(bytes: controller.metrics.exposition())))
        }
    }
}

/// Times every API request by its route template (`/v1/instances/{id}`: bounded, unlike the paths
/// called), method and status. A request no route takes, or one refused before routing (the
/// token is checked first), is counted under `unmatched`.
struct RequestMetricsMiddleware: RouterMiddleware {
    let metrics: PrometheusMetrics

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        let started = monotonicNanos()
        let status: Int
        do {
            let response = try await next(request, context)
            status = response.status.code
            record(request, context, status: status, since: started)
            return response
        } catch {
            // The error middleware answers almost everything; what passes it is answered by Hummingbird.
            status =
                switch error {
                case let error as SwiftletError: error.kind.httpStatus
                case let error as any HTTPResponseError: error.status.code
                default: 500
                }
            record(request, context, status: status, since: started)
            throw error
        }
    }

    private func record(_ request: Request, _ context: APIContext, status: Int, since started: UInt64) {
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? "unmatched"
        metrics.recordRequest(
            route: route, method: request.method.rawValue, status: status, nanoseconds: monotonicNanos() - started)
    }
}

extension Controller {
    /// Sets the gauges read at scrape time: instances by state and host, each host's capacity,
    /// what its instances reserve, whether it is UP and cordoned, and the warm pools. A store that
    /// cannot be read leaves the previous reading.
    func sampleGauges() async {
        guard let hosts = try? await hosts(), let usage = try? await store.hostUsage(),
            let instances = try? await store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
        else { return }
        var byStateAndHost: [MetricLabels: Double] = [:]
        // Every state of every host, so a count that falls to zero shows as 0, not as a gap.
        for state in InstanceState.allCases where state != .deleted {
            for host in hosts { byStateAndHost[["state": state.rawValue, "host": host.id]] = 0 }
        }
        for instance in instances.map(present) {
            byStateAndHost[["state": instance.state.rawValue, "host": instance.hostId ?? "none"], default: 0] += 1
        }
        metrics.setGauges(MetricName.instances, to: byStateAndHost)
        func perHost(_ value: (ComputeHost) -> Double) -> [MetricLabels: Double] {
            Dictionary(uniqueKeysWithValues: hosts.map { (["host": $0.id], value($0)) })
        }
        metrics.setGauges(MetricName.hostCPUs, to: perHost { Double($0.cpus) })
        metrics.setGauges(MetricName.hostMemory, to: perHost { Double($0.memoryMib) * 1_048_576 })
        metrics.setGauges(MetricName.hostUsedVCPUs, to: perHost { Double(usage[$0.id]?.vcpus ?? 0) })
        metrics.setGauges(MetricName.hostUsedMemory, to: perHost { Double(usage[$0.id]?.memoryMib ?? 0) * 1_048_576 })
        metrics.setGauges(MetricName.hostUp, to: perHost { $0.status == .up ? 1 : 0 })
        metrics.setGauges(MetricName.hostCordoned, to: perHost { $0.cordoned == true ? 1 : 0 })
        await sampleWarmPools()
    }

    private func sampleWarmPools() async {
        guard let poolStore = store as? any PoolStore, let pools = try? await poolStore.pools(projectId: nil) else {
            return
        }
        metrics.setGauges(MetricName.warmPools, to: [[:]: Double(pools.count)])
        metrics.setGauges(MetricName.warmPoolTargetVMs, to: [[:]: Double(pools.map(\.size).reduce(0, +))])
        var ready: [MetricLabels: Double] = [:]
        // Only hosts that are UP are asked: a scrape must not wait on a host that does not answer.
        for link in agents.all where isUp(hostId: link.hostId) {
            ready[["host": link.hostId], default: 0] += Double(await link.poolReadyCounts().values.reduce(0, +))
        }
        metrics.setGauges(MetricName.warmPoolReadyVMs, to: ready)
    }
}
