import Foundation
import SwiftletClient
import SwiftletCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `GET /metrics`: who may read it, and what the real Prometheus makes of it.
@Suite(.serialized) struct MetricsTests {
    @Test func metricsNeedTheAdminTokenUnlessConfiguredOpen() async throws {
        try await withServer { server, admin in
            let url = server.url + "/metrics"
            BadInputTests.expectError(try BadInputTests.raw("GET", url, token: nil), 401, "auth.missing_token")
            BadInputTests.expectError(try BadInputTests.raw("GET", url, token: "swl_wrong"), 401, "auth.invalid_token")
            let project = try await admin.createProject(CreateProjectRequest(name: "team"))
            let team = try #require(try await admin.createToken(project: project.id).token)
            BadInputTests.expectError(try BadInputTests.raw("GET", url, token: team), 403, "auth.admin_only")
            let scraped = try BadInputTests.raw("GET", url, token: server.adminToken)
            #expect(scraped.status == 200)
            #expect(scraped.body.contains("# TYPE swiftlet_host_up gauge"), "\(scraped.body.prefix(2000))")
        }
        try await withServer(config: ["metricsOpen": true]) { server, _ in
            let scraped = try BadInputTests.raw("GET", server.url + "/metrics", token: nil)
            #expect(scraped.status == 200)
            #expect(scraped.body.contains("swiftlet_host_up{host="), "\(scraped.body.prefix(2000))")
            // Open is for /metrics only: the API still needs a token.
            BadInputTests.expectError(
                try BadInputTests.raw("GET", server.url + "/v1/instances", token: nil), 401, "auth.missing_token")
        }
    }

    /// An agent serves its own host's figures on `--metrics-listen` (on its namespace's
    /// loopback): the boot it made, its VMs, its lease.
    @Test(.enabled(if: getuid() == 0, "namespace hosts need root"))
    func anAgentServesItsOwnHostsMetrics() async throws {
        let kernel = try await Kernels.path("hello")
        try await withCluster(hosts: 1) { _, client, fabric, agentPort in
            let token = try #require(try await client.createJoinToken(ttlSeconds: 600).token)
            let agent = try await fabric.startAgent(1, controllerPort: agentPort, token: token, servesMetrics: true)
            try await eventually("host-node1 UP", timeout: .seconds(30)) {
                try await client.hosts().contains { $0.id == "host-node1" && $0.status == .up }
            }
            _ = try await client.uploadImage(path: kernel, name: "hello")
            var request = CreateInstanceRequest(name: "remote", image: "hello", flavor: "tiny", wait: true)
            request.host = "node1"
            let created = try #require(try await client.createInstances(request).first)
            #expect(created.state == .running, "\(created.reason ?? "")")
            let text = try agent.metrics()
            let host = #"host="host-node1""#
            let expected: [(String, Double)] = [
                (#"swiftlet_boot_duration_seconds_count{boot_path="cold",\#(host),image_kind="pvh"}"#, 1),
                (#"swiftlet_agent_vms{\#(host)}"#, 1), (#"swiftlet_agent_lease_held{\#(host)}"#, 1),
                (#"swiftlet_warm_pool_ready_vms{\#(host)}"#, 0),
            ]
            for (series, value) in expected { #expect(Self.value(of: series, in: text) == value, "\(text)") }
            try await client.deleteInstance(created.id)
            try await eventually("the agent's VM gone from its metrics") {
                Self.value(of: #"swiftlet_agent_vms{\#(host)}"#, in: try agent.metrics()) == 0
            }
        }
    }

    /// A warm pool shows its size and idle VMs, and a create that takes a pooled VM is a hit.
    @Test func aWarmPoolBootIsAHit() async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            _ = try await client.createPool(CreatePoolRequest(image: "hello", size: 1))
            try await eventually("pool filled", timeout: .seconds(60)) { try await client.pools().first?.ready == 1 }
            let host = try #require(try await client.hosts().first).id
            func scrape() throws -> String {
                let answer = try BadInputTests.raw("GET", server.url + "/metrics", token: server.adminToken)
                guard answer.status == 200 else { throw TestFailure("GET /metrics: \(answer.status) \(answer.body)") }
                return answer.body
            }
            var text = try scrape()
            #expect(Self.value(of: "swiftlet_warm_pools", in: text) == 1, "\(text)")
            #expect(Self.value(of: "swiftlet_warm_pool_target_vms", in: text) == 1, "\(text)")
            #expect(Self.value(of: #"swiftlet_warm_pool_ready_vms{host="\#(host)"}"#, in: text) == 1, "\(text)")
            #expect(Self.value(of: #"swiftlet_warm_pool_hits_total{host="\#(host)"}"#, in: text) == nil)

            let created = try #require(
                try await client.createInstances(
                    CreateInstanceRequest(name: "warm", image: "hello", flavor: "tiny", wait: true)
                ).first)
            #expect(created.timeline.bootPath == "warm-pool")
            let warm = #"boot_path="warm-pool",host="\#(host)",image_kind="pvh""#
            // Recorded just after the create's wait is released.
            try await eventually("the warm boot recorded", timeout: .seconds(10)) {
                Self.value(of: "swiftlet_boot_duration_seconds_count{\(warm)}", in: try scrape()) == 1
            }
            text = try scrape()
            #expect(Self.value(of: #"swiftlet_warm_pool_hits_total{host="\#(host)"}"#, in: text) == 1, "\(text)")
            #expect(
                Self.value(of: #"swiftlet_boot_phase_duration_seconds_count{\#(warm),phase="ready"}"#, in: text) == 1,
                "\(text)")
        }
    }

    /// The value of one series (`name{labels}`) in an exposition; nil when it is not there.
    static func value(of series: String, in exposition: String) -> Double? {
        exposition.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap {
            Double($0.dropFirst(series.count + 1))
        }
    }

    /// Prometheus from Debian scrapes a live server every second with the admin token; its PromQL
    /// answers must match what was done: three boots (one request for two, one for one), one
    /// instance stopped since, the host cordoned.
    @Test func prometheusScrapesALiveServer() async throws {
        let binary = try PrometheusProcess.binary()
        let kernel = try await Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let pair = try await client.createInstances(
                CreateInstanceRequest(name: "pair", image: "hello", flavor: "tiny", count: 2, wait: true))
            let single = try await client.createInstances(
                CreateInstanceRequest(name: "single", image: "hello", flavor: "tiny", wait: true))
            #expect((pair + single).map(\.state) == [.running, .running, .running])
            _ = try await client.stop(single[0].id)
            try await eventually("the single instance stopped") {
                try await client.instance(single[0].id).state == .stopped
            }
            let host = try #require(try await client.hosts().first)
            try await client.cordonHost(host.id, true)
            let expected: [(String, Double?)] = [
                (#"up{job="swiftlet"}"#, 1),
                // Bad input: a scrape with a wrong token is refused, so Prometheus sees the target down.
                (#"up{job="wrong-token"}"#, 0),
                (#"sum(swiftlet_instances{state="RUNNING"})"#, 2),
                (#"sum(swiftlet_instances{state="STOPPED"})"#, 1),
                (#"sum(swiftlet_instances{state="RUNNING",host="\#(host.id)"})"#, 2),
                ("sum(swiftlet_boot_duration_seconds_count)", 3),
                (#"sum(swiftlet_boot_duration_seconds_count{image_kind="pvh",boot_path="cold"})"#, 3),
                (#"sum(swiftlet_boot_phase_duration_seconds_count{phase="ready"})"#, 3),
                (#"sum(swiftlet_http_requests_total{route="/v1/instances",method="POST",status="201"})"#, 2),
                (#"sum(swiftlet_http_requests_total{route="/v1/instances/{id}/{action}",status="202"})"#, 1),
                // Routes are templates: no instance id ever becomes a label value.
                (#"count(swiftlet_http_requests_total{route=~".*\#(single[0].id).*"})"#, nil),
                (#"swiftlet_host_cpus{host="\#(host.id)"}"#, Double(host.cpus)),
                (#"swiftlet_host_up{host="\#(host.id)"}"#, 1),
                (#"swiftlet_host_cordoned{host="\#(host.id)"}"#, 1),
                (#"swiftlet_host_used_memory_bytes{host="\#(host.id)"}"#, 2 * 16 * 1_048_576),
            ]
            try await PrometheusProcess.with(binary: binary, target: server.port, token: server.adminToken) {
                prometheus in
                for (query, value) in expected {
                    let seen = try await prometheus.poll(query, until: value)
                    #expect(seen == value, "\(query)")
                }
            }
        }
    }
}

/// The real Prometheus, from Debian (`scripts/setup-prometheus.sh` installs it), on a free port
/// with its own storage, scraping one swiftlet server every second: job `swiftlet` with the
/// given token, and job `wrong-token` with a token the server does not know.
final class PrometheusProcess: Sendable {
    private let directory: String
    let url: String
    private let client: SwiftletClient

    /// The binary's path, installing the package when it is missing.
    static func binary() throws -> String {
        let setup = try Shell.run(Repo.root + "/scripts/setup-prometheus.sh", [], timeout: .seconds(600))
        guard setup.status == 0, let path = setup.output.split(separator: "\n").last.map(String.init) else {
            throw TestFailure("setup-prometheus.sh failed: \(setup.output)")
        }
        return path
    }

    /// Runs Prometheus for `body`, then stops it and removes its storage, whatever the outcome.
    static func with(
        binary: String, target port: Int, token: String, _ body: (PrometheusProcess) async throws -> Void
    ) async throws {
        let prometheus = try PrometheusProcess(port: try ServerProcess.freePort())
        let config = """
            global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: swiftlet
                authorization: {type: Bearer, credentials: '\(token)'}
                static_configs: [{targets: ['127.0.0.1:\(port)']}]
              - job_name: wrong-token
                authorization: {type: Bearer, credentials: 'swl_not_a_token'}
                static_configs: [{targets: ['127.0.0.1:\(port)']}]
            """
        let directory = prometheus.directory
        _ = FileManager.default.createFile(atPath: directory + "/prometheus.yml", contents: Data(config.utf8))
        let process = try Shell.launch(
            binary,
            [
                "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                "--web.listen-address=\(prometheus.url.dropFirst("http://".count))", "--log.level=warn",
            ], appendingTo: directory + "/log")
        do {
            try await eventually("prometheus ready") {
                try await prometheus.client.fetch("GET", url: prometheus.url + "/-/ready").status == 200
            }
            try await body(prometheus)
        } catch {
            print(
                "---- prometheus log ----\n\((try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? "")")
            await prometheus.stop(process)
            throw error
        }
        await prometheus.stop(process)
    }

    private init(port: Int) throws {
        directory = NSTemporaryDirectory() + "swiftlet-prometheus-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        url = "http://127.0.0.1:\(port)"
        client = SwiftletClient(baseURL: url, token: nil)
    }

    private func stop(_ process: Process) async {
        process.terminate()
        process.waitUntilExit()
        try? await client.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Asks Prometheus `query` until it answers `value` (nil: an empty result) or 20 s pass;
    /// returns the last answer.
    func poll(_ query: String, until value: Double?) async throws -> Double? {
        var components = URLComponents(string: url + "/api/v1/query")!
        components.queryItems = [URLQueryItem(name: "query", value: query)]
        // `+` is a space in a query string.
        components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        let deadline = ContinuousClock.now + .seconds(20)
        var last: Double?
        repeat {
            let answer = try await client.fetch("GET", url: components.url!.absoluteString)
            last = Self.scalar(answer.body)
            if answer.status == 200, last == value { return last }
            try await Task.sleep(for: .milliseconds(250))
        } while ContinuousClock.now < deadline
        return last
    }

    /// The value of a one-sample vector answer; nil for an empty one.
    private static func scalar(_ body: String) -> Double? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]],
            let sample = result.first?["value"] as? [Any], let text = sample.last as? String
        else { return nil }
        return Double(text)
    }
}
