import SwiftletAgentProtocol
import SwiftletCore
import SwiftletMetrics
import Synchronization

/// The agent's reports on their way to the controller, recording each READY boot into this
/// host's own metrics (`swiftlet agent --metrics-listen`). An observation carries no image, so the
/// image kinds come from the assignments this host was sent.
final class MeasuredReports: ObservationSink {
    private let forward: any ObservationSink
    private let metrics: PrometheusMetrics
    private let imageKinds = Mutex<[String: String]>([:])

    init(forwardingTo forward: any ObservationSink, metrics: PrometheusMetrics) {
        self.forward = forward
        self.metrics = metrics
    }

    /// A whole desired state: only its instances are this host's now.
    func note(_ sync: HostSync) {
        let kinds = Dictionary(
            sync.assignments.map { ($0.instance.id, $0.boot.image.kind.rawValue) },
            uniquingKeysWith: { _, last in last })
        imageKinds.withLock { $0 = kinds }
    }

    func note(_ change: DesiredChange) {
        switch change {
        case .assign(let assignment):
            imageKinds.withLock { $0[assignment.instance.id] = assignment.boot.image.kind.rawValue }
        case .unassign(let instanceId, _):
            imageKinds.withLock { $0[instanceId] = nil }
        case .applyPool, .removePool, .evictImage, .networks:
            break
        }
    }

    func observe(_ observation: Observation) async {
        if case .ready(let timeline, _, _) = observation.report {
            let kind = imageKinds.withLock { $0[observation.instanceId] } ?? "unknown"
            metrics.recordBoot(timeline, host: observation.hostId, imageKind: kind)
        }
        await forward.observe(observation)
    }
}
