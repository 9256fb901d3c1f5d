import SwiftletCore

/// Every metric Swiftlet exposes (docs/operations.md lists their labels and meaning). Names
/// follow Prometheus' conventions: base units in the name, `_total` on counters; label values
/// are bounded sets (phases, states, host ids, image kinds, route templates), never an
/// instance's id or name.
public enum MetricName {
    // Boots, recorded when READY is reported.
    public static let bootPhaseDuration = "swiftlet_boot_phase_duration_seconds"
    public static let bootDuration = "swiftlet_boot_duration_seconds"
    public static let warmPoolHits = "swiftlet_warm_pool_hits_total"
    // Instances and hosts, read at scrape time.
    public static let instances = "swiftlet_instances"
    public static let hostCPUs = "swiftlet_host_cpus"
    public static let hostMemory = "swiftlet_host_memory_bytes"
    public static let hostUsedVCPUs = "swiftlet_host_used_vcpus"
    public static let hostUsedMemory = "swiftlet_host_used_memory_bytes"
    public static let hostUp = "swiftlet_host_up"
    public static let hostCordoned = "swiftlet_host_cordoned"
    // Warm pools, read at scrape time.
    public static let warmPools = "swiftlet_warm_pools"
    public static let warmPoolTargetVMs = "swiftlet_warm_pool_target_vms"
    public static let warmPoolReadyVMs = "swiftlet_warm_pool_ready_vms"
    // The API.
    public static let httpRequests = "swiftlet_http_requests_total"
    public static let httpRequestDuration = "swiftlet_http_request_duration_seconds"
    // Builds.
    public static let buildDuration = "swiftlet_build_duration_seconds"
    // Migrations, recorded when one completes.
    public static let migrationDowntime = "swiftlet_migration_downtime_seconds"
    public static let migrationTransferred = "swiftlet_migration_transferred_bytes_total"
    public static let migrations = "swiftlet_migrations_total"
    // An agent's own host (`swiftlet agent --metrics-listen`).
    public static let agentVMs = "swiftlet_agent_vms"
    public static let agentLeaseHeld = "swiftlet_agent_lease_held"

    /// Every name above: what docs/operations.md must list.
    public static let all = [
        bootPhaseDuration, bootDuration, warmPoolHits, instances, hostCPUs, hostMemory, hostUsedVCPUs,
        hostUsedMemory, hostUp, hostCordoned, warmPools, warmPoolTargetVMs, warmPoolReadyVMs, httpRequests,
        httpRequestDuration, buildDuration, migrationDowntime, migrationTransferred, migrations, agentVMs,
        agentLeaseHeld,
    ]
}

/// Histogram buckets: a boot phase takes from microseconds (a warm-pool hand-over) to seconds (a
/// cold boot under TCG); requests are mostly milliseconds; builds are minutes.
public enum MetricBuckets {
    public static let boot: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        .seconds(30),
    ]
    public static let request: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]
    public static let build: [Duration] = [
        .milliseconds(100), .seconds(1), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120),
        .seconds(300), .seconds(600), .seconds(1800),
    ]
}

extension Phase {
    /// The phase as a label value: snake case, as Prometheus label values usually are.
    public var metricLabel: String {
        switch self {
        case .accepted: "accepted"
        case .persisted: "persisted"
        case .scheduled: "scheduled"
        case .imageReady: "image_ready"
        case .vmmSpawned: "vmm_spawned"
        case .vmmUp: "vmm_up"
        case .ready: "ready"
        }
    }
}

extension PrometheusMetrics {
    /// A boot that reached READY: each phase's duration (the time since the phase before it) and
    /// accepted → READY, by host, image kind and boot path (`cold` or `warm-pool`); a boot that
    /// took a warm-pool VM also counts as a hit.
    public func recordBoot(_ timeline: Timeline, host: String, imageKind: String) {
        let bootPath = timeline.bootPath ?? "cold"
        let labels: [String: String] = ["host": host, "image_kind": imageKind, "boot_path": bootPath]
        for (phase, nanoseconds) in timeline.phaseDurations {
            var phaseLabels = labels
            phaseLabels["phase"] = phase.metricLabel
            timer(MetricName.bootPhaseDuration, MetricLabels(phaseLabels))
                .recordNanoseconds(Int64(clamping: nanoseconds))
        }
        if let total = timeline.total {
            timer(MetricName.bootDuration, MetricLabels(labels)).recordNanoseconds(Int64(clamping: total))
        }
        if bootPath == "warm-pool" { counter(MetricName.warmPoolHits, ["host": host]).increment() }
    }

    /// One API request: its route template (`/v1/instances/{id}`, never the path it was called
    /// with), method and status.
    public func recordRequest(route: String, method: String, status: Int, nanoseconds: UInt64) {
        let labels: MetricLabels = ["route": route, "method": method, "status": String(status)]
        counter(MetricName.httpRequests, labels).increment()
        timer(MetricName.httpRequestDuration, labels).recordNanoseconds(Int64(clamping: nanoseconds))
    }

    /// A migration that ended: by mode and result (`completed`, `failed`, `cancelled`); a completed
    /// one's downtime and the bytes it sent.
    public func recordMigration(mode: String, result: String, downtimeMs: Double?, bytes: Int64?) {
        counter(MetricName.migrations, ["mode": mode, "result": result]).increment()
        if let downtimeMs {
            timer(MetricName.migrationDowntime, ["mode": mode]).recordNanoseconds(Int64(downtimeMs * 1e6))
        }
        if let bytes { counter(MetricName.migrationTransferred, ["mode": mode]).increment(by: Int64(bytes)) }
    }

    /// A build that ended: `succeeded`, `failed` or `cached` (a cache hit, nothing compiled).
    public func recordBuild(result: String, nanoseconds: UInt64) {
        timer(MetricName.buildDuration, ["result": result]).recordNanoseconds(Int64(clamping: nanoseconds))
    }
}
