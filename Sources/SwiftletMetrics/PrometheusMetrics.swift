import CoreMetrics
import Prometheus
import Synchronization

/// One process's metrics, kept in a Prometheus registry of its own and rendered for
/// `GET /metrics`. Whoever serves them (the server, an agent) owns one and hands it to the parts
/// that record: the process-wide `MetricsSystem` is never bootstrapped, so servers started side by
/// side in one process (the tests) keep their figures apart.
public final class PrometheusMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    /// The label sets each scrape-time gauge family was given last time, so that a set gone since
    /// (a host removed, a state no longer held) leaves the exposition instead of keeping its value.
    private let sampledLabelSets = Mutex<[String: Set<MetricLabels>]>([:])

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = MetricBuckets.request
        factory.durationHistogramBuckets = [
            MetricName.bootPhaseDuration: MetricBuckets.boot,
            MetricName.bootDuration: MetricBuckets.boot,
            MetricName.buildDuration: MetricBuckets.build,
            MetricName.migrationDowntime: MetricBuckets.boot,
        ]
        self.factory = factory
    }

    /// The counter of this name and labels (made on first use; later calls find the same one).
    public func counter(_ name: String, _ labels: MetricLabels = [:]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: name, dimensions: labels.dimensions, factory: factory)
    }

    /// The duration histogram of this name and labels; its buckets are `MetricBuckets`' for it.
    public func timer(_ name: String, _ labels: MetricLabels = [:]) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: name, dimensions: labels.dimensions, preferredDisplayUnit: .seconds, factory: factory)
    }

    /// Sets a gauge family to a reading taken now (at scrape time, from the store or the agents):
    /// each label set to its value, and label sets of the previous reading that are missing from
    /// this one removed.
    public func setGauges(_ name: String, to reading: [MetricLabels: Double]) {
        for (labels, value) in reading {
            CoreMetrics.Gauge(label: name, dimensions: labels.dimensions, factory: factory).record(value)
        }
        let gone = sampledLabelSets.withLock { sampled in
            let gone = (sampled[name] ?? []).subtracting(reading.keys)
            sampled[name] = Set(reading.keys)
            return gone
        }
        for labels in gone { CoreMetrics.Gauge(label: name, dimensions: labels.dimensions, factory: factory).destroy() }
    }

    /// The Prometheus text exposition format (version 0.0.4) of everything recorded.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(registry.internalBufferCapacity())
        registry.emit(into: &buffer)
        return buffer
    }

    /// The content type of `exposition()`.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

/// Label names and values of one series, ordered by name so that the same set always makes the
/// same series.
public struct MetricLabels: Hashable, Sendable, ExpressibleByDictionaryLiteral {
    public let pairs: [String: String]

    public init(_ pairs: [String: String]) { self.pairs = pairs }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }

    var dimensions: [(String, String)] { pairs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
}
