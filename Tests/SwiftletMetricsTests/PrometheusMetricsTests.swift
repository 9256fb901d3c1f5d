import Foundation
import SwiftletCore
import Testing

@testable import SwiftletMetrics

/// The samples of an exposition, by series (`name{label="value",…}`).
private func samples(_ metrics: PrometheusMetrics) -> [String: Double] {
    var samples: [String: Double] = [:]
    for line in String(decoding: metrics.exposition(), as: UTF8.self).split(separator: "\n")
    where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            continue
        }
        samples[String(line[..<space])] = value
    }
    return samples
}

/// `# TYPE` of each metric family in an exposition.
private func types(_ metrics: PrometheusMetrics) -> [String: String] {
    var types: [String: String] = [:]
    for line in String(decoding: metrics.exposition(), as: UTF8.self).split(separator: "\n")
    where line.hasPrefix("# TYPE ") {
        let words = line.split(separator: " ")
        types[String(words[2])] = String(words[3])
    }
    return types
}

private func timeline(_ phases: [(Phase, UInt64)], bootPath: String? = nil) -> Timeline {
    var timeline = Timeline()
    for (phase, at) in phases { timeline[phase] = at }
    timeline.bootPath = bootPath
    return timeline
}

@Suite struct PrometheusMetricsTests {
    @Test func aBootRecordsEachPhaseAndAcceptedToReady() {
        let metrics = PrometheusMetrics()
        // accepted 0, VMM spawned 1 ms, persisted 3 ms (after the spawn: phases are taken in time
        // order), VMM up 10 ms, READY 40 ms.
        metrics.recordBoot(
            timeline([
                (.accepted, 0), (.vmmSpawned, 1_000_000), (.persisted, 3_000_000), (.vmmUp, 10_000_000),
                (.ready, 40_000_000),
            ]),
            host: "host-a", imageKind: "pvh")
        let found = samples(metrics)
        let labels = #"boot_path="cold",host="host-a",image_kind="pvh""#
        #expect(found[#"swiftlet_boot_duration_seconds_count{\#(labels)}"#] == 1)
        #expect(found[#"swiftlet_boot_duration_seconds_sum{\#(labels)}"#] == 0.04)
        for (phase, seconds) in [("vmm_spawned", 0.001), ("persisted", 0.002), ("vmm_up", 0.007), ("ready", 0.03)] {
            #expect(
                found[#"swiftlet_boot_phase_duration_seconds_sum{\#(labels),phase="\#(phase)"}"#]
                    .map { abs($0 - seconds) < 1e-9 } == true, "phase \(phase)")
        }
        // The 40 ms boot is in the 50 ms bucket and not in the 25 ms one.
        #expect(found[#"swiftlet_boot_duration_seconds_bucket{\#(labels),le="0.05"}"#] == 1)
        #expect(found[#"swiftlet_boot_duration_seconds_bucket{\#(labels),le="0.025"}"#] == 0)
        // Phases never reached and the first one (nothing before it) have no series.
        #expect(!found.keys.contains { $0.contains(#"phase="accepted""#) || $0.contains(#"phase="scheduled""#) })
        #expect(found[#"swiftlet_warm_pool_hits_total{host="host-a"}"#] == nil)
    }

    @Test func aWarmPoolBootCountsAsAHit() {
        let metrics = PrometheusMetrics()
        for _ in 0..<2 {
            metrics.recordBoot(
                timeline([(.accepted, 100), (.ready, 2_100)], bootPath: "warm-pool"), host: "host-b",
                imageKind: "multiboot")
        }
        let found = samples(metrics)
        #expect(found[#"swiftlet_warm_pool_hits_total{host="host-b"}"#] == 2)
        #expect(
            found[#"swiftlet_boot_duration_seconds_count{boot_path="warm-pool",host="host-b",image_kind="multiboot"}"#]
                == 2)
    }

    @Test func aBootWithoutReadyHasNoTotal() {
        let metrics = PrometheusMetrics()
        metrics.recordBoot(timeline([(.accepted, 0), (.vmmSpawned, 500)]), host: "h", imageKind: "pvh")
        let found = samples(metrics)
        #expect(!found.keys.contains { $0.hasPrefix("swiftlet_boot_duration_seconds") })
        #expect(found.keys.contains { $0.hasPrefix("swiftlet_boot_phase_duration_seconds_count") })
    }

    @Test func requestsAreCountedByRouteMethodAndStatus() {
        let metrics = PrometheusMetrics()
        metrics.recordRequest(route: "/v1/instances", method: "POST", status: 201, nanoseconds: 3_000_000)
        metrics.recordRequest(route: "/v1/instances", method: "POST", status: 201, nanoseconds: 1_000_000)
        metrics.recordRequest(route: "/v1/instances", method: "POST", status: 400, nanoseconds: 1_000)
        let found = samples(metrics)
        #expect(found[#"swiftlet_http_requests_total{method="POST",route="/v1/instances",status="201"}"#] == 2)
        #expect(found[#"swiftlet_http_requests_total{method="POST",route="/v1/instances",status="400"}"#] == 1)
        #expect(
            found[#"swiftlet_http_request_duration_seconds_sum{method="POST",route="/v1/instances",status="201"}"#]
                .map { abs($0 - 0.004) < 1e-9 } == true)
    }

    @Test func buildsAreTimedByResult() {
        let metrics = PrometheusMetrics()
        metrics.recordBuild(result: "succeeded", nanoseconds: 42_000_000_000)
        let found = samples(metrics)
        #expect(found[#"swiftlet_build_duration_seconds_count{result="succeeded"}"#] == 1)
        #expect(found[#"swiftlet_build_duration_seconds_bucket{result="succeeded",le="60.0"}"#] == 1)
        #expect(found[#"swiftlet_build_duration_seconds_bucket{result="succeeded",le="30.0"}"#] == 0)
    }

    @Test func aGaugeReadingReplacesThePreviousOne() {
        let metrics = PrometheusMetrics()
        metrics.setGauges(
            MetricName.instances,
            to: [["state": "RUNNING", "host": "a"]: 3, ["state": "RUNNING", "host": "b"]: 1])
        metrics.setGauges(MetricName.instances, to: [["state": "RUNNING", "host": "a"]: 2])
        let found = samples(metrics)
        #expect(found[#"swiftlet_instances{host="a",state="RUNNING"}"#] == 2)
        // Host b is gone from the reading, so from the exposition: not left at 1.
        #expect(found[#"swiftlet_instances{host="b",state="RUNNING"}"#] == nil)
    }

    @Test func twoRegistriesKeepApart() {
        let first = PrometheusMetrics()
        let second = PrometheusMetrics()
        first.recordRequest(route: "/metrics", method: "GET", status: 200, nanoseconds: 1)
        #expect(samples(first)[#"swiftlet_http_requests_total{method="GET",route="/metrics",status="200"}"#] == 1)
        #expect(samples(second).isEmpty)
    }

    /// Units in names, `_total` only on counters, every name in the `swiftlet_` namespace.
    @Test func namesFollowPrometheusConventions() {
        let metrics = PrometheusMetrics()
        metrics.recordBoot(
            timeline([(.accepted, 0), (.ready, 10)], bootPath: "warm-pool"), host: "h", imageKind: "pvh")
        metrics.recordRequest(route: "/r", method: "GET", status: 200, nanoseconds: 1)
        metrics.recordBuild(result: "failed", nanoseconds: 1)
        metrics.recordMigration(mode: "live", result: "completed", downtimeMs: 2, bytes: 10)
        for name in [
            MetricName.instances, MetricName.hostCPUs, MetricName.hostMemory, MetricName.hostUsedVCPUs,
            MetricName.hostUsedMemory, MetricName.hostUp, MetricName.hostCordoned, MetricName.warmPools,
            MetricName.warmPoolTargetVMs, MetricName.warmPoolReadyVMs, MetricName.agentVMs, MetricName.agentLeaseHeld,
        ] {
            metrics.setGauges(name, to: [["host": "h"]: 1])
        }
        let families = types(metrics)
        #expect(Set(families.keys) == Set(MetricName.all))
        for (name, type) in families {
            #expect(name.hasPrefix("swiftlet_"), "\(name)")
            #expect(name.wholeMatch(of: /[a-z_][a-z0-9_]*/) != nil, "\(name)")
            #expect(name.hasSuffix("_total") == (type == "counter"), "\(name) is a \(type)")
            if type == "histogram" { #expect(name.hasSuffix("_seconds"), "\(name)") }
            if name.contains("memory") { #expect(name.hasSuffix("_bytes"), "\(name)") }
        }
    }

    /// docs/operations.md lists every metric, by its full name.
    @Test func everyMetricIsDocumented() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let page = try String(contentsOf: root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        for name in MetricName.all { #expect(page.contains("`\(name)`"), "\(name) is not in docs/operations.md") }
    }
}
