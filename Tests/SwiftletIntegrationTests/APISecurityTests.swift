import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// The API over HTTPS, tokens that expire and are revoked, and the audit log, on a real server.
@Suite(.serialized) struct APISecurityTests {
    /// The swiftlet CLI with `environment` set; killed if it hangs.
    static func cli(_ arguments: [String], environment: [String: String] = [:]) throws -> (
        status: Int32, output: String
    ) {
        let settings = ["SWIFTLET_CA_CERT=", "SWIFTLET_TOKEN=", "SWIFTLET_URL="] + environment.map { "\($0)=\($1)" }
        return try Shell.run("/usr/bin/env", settings + [Repo.swiftletBinary] + arguments, timeout: .seconds(30))
    }

    static func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try Shell.run("/usr/bin/curl", ["-sS", "--max-time", "20"] + arguments, timeout: .seconds(30))
    }

    /// A CA and a server certificate it signs for 127.0.0.1 and localhost (openssl), in `directory`.
    static func makeCertificates(in directory: String, caName: String) throws {
        let steps: [[String]] = [
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=\(caName)", "-keyout", "\(directory)/ca.key", "-out", "\(directory)/ca.pem",
            ],
            [
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=swiftlet test",
                "-keyout", "\(directory)/server.key", "-out", "\(directory)/server.csr",
            ],
        ]
        for step in steps {
            let result = try Shell.run("/usr/bin/openssl", step)
            guard result.status == 0 else { throw TestFailure("openssl \(step[0]) failed: \(result.output)") }
        }
        let extensions = directory + "/server.ext"
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n".write(
            toFile: extensions, atomically: true, encoding: .utf8)
        let signed = try Shell.run(
            "/usr/bin/openssl",
            [
                "x509", "-req", "-in", "\(directory)/server.csr", "-CA", "\(directory)/ca.pem", "-CAkey",
                "\(directory)/ca.key", "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out",
                "\(directory)/server.pem",
            ])
        guard signed.status == 0 else { throw TestFailure("openssl x509 failed: \(signed.output)") }
    }

    @Test func theAPIOverHTTPSWithGivenFilesIsTrustedWithItsCAAndRefusedWithout() async throws {
        let directory = NSTemporaryDirectory() + "swiftlet-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/other", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.makeCertificates(in: directory, caName: "swiftlet test CA")
        try Self.makeCertificates(in: directory + "/other", caName: "another CA")
        let server = try ServerProcess()
        defer { server.cleanUp() }
        // The flags, as a person would give them.
        server.extraArguments = ["--tls-cert", directory + "/server.pem", "--tls-key", directory + "/server.key"]
        server.scheme = "https"
        server.caCertificate = directory + "/ca.pem"
        try await server.start()
        let token = server.adminToken

        // The CLI, with --ca-cert and with SWIFTLET_CA_CERT.
        let listed = try Self.cli(
            ["flavor", "list", "--url", server.url, "--token", token, "--ca-cert", directory + "/ca.pem"])
        #expect(listed.status == 0, "\(listed.output)")
        #expect(listed.output.contains("tiny"), "\(listed.output)")
        let fromEnvironment = try Self.cli(
            ["flavor", "list", "--url", server.url, "--token", token],
            environment: ["SWIFTLET_CA_CERT": directory + "/ca.pem"])
        #expect(fromEnvironment.status == 0, "\(fromEnvironment.output)")

        // Without the CA, or with another one: a clear error, at once (no hang).
        let started = ContinuousClock.now
        let untrusted = try Self.cli(["flavor", "list", "--url", server.url, "--token", token])
        #expect(untrusted.status == 1, "\(untrusted.output)")
        #expect(untrusted.output.contains("certificate does not verify"), "\(untrusted.output)")
        #expect(untrusted.output.contains("--ca-cert"), "\(untrusted.output)")
        let wrongCA = try Self.cli(
            ["flavor", "list", "--url", server.url, "--token", token, "--ca-cert", directory + "/other/ca.pem"])
        #expect(wrongCA.status == 1, "\(wrongCA.output)")
        #expect(wrongCA.output.contains("does not verify against the CA in"), "\(wrongCA.output)")
        #expect(ContinuousClock.now - started < .seconds(20))
        // Plain HTTP to the TLS listener is refused, not hung.
        let plain = try Self.cli(["flavor", "list", "--url", "http://127.0.0.1:\(server.port)", "--token", token])
        #expect(plain.status == 1, "\(plain.output)")

        // curl agrees: trusted with the CA, refused without (60: the peer's certificate did not verify).
        let health = try Self.curl(["--cacert", directory + "/ca.pem", server.url + "/v1/health"])
        #expect(health.status == 0 && health.output.contains("\"ok\""), "\(health.output)")
        let authorized = try Self.curl([
            "--cacert", directory + "/ca.pem", "-H", "Authorization: Bearer \(token)", server.url + "/v1/flavors",
        ])
        #expect(authorized.output.contains("tiny"), "\(authorized.output)")
        let refused = try Self.curl([server.url + "/v1/health"])
        #expect(refused.status == 60, "\(refused.output)")
    }

    @Test func theAPIOverHTTPSWithACertificateFromTheControllersOwnCA() async throws {
        // The config file, as for every other server option.
        try await withServer(config: ["tlsOwnCA": true]) { server, client in
            #expect(server.url.hasPrefix("https://"))
            let ca = try #require(server.caCertificate)
            #expect(try await client.flavors().isEmpty == false)
            let listed = try Self.cli(
                ["flavor", "list", "--url", server.url, "--token", server.adminToken, "--ca-cert", ca])
            #expect(listed.status == 0, "\(listed.output)")
            let viaLocalhost = try Self.curl(["--cacert", ca, "https://localhost:\(server.port)/v1/health"])
            #expect(viaLocalhost.output.contains("\"ok\""), "\(viaLocalhost.output)")
            let untrusted = try Self.cli(["flavor", "list", "--url", server.url, "--token", server.adminToken])
            #expect(untrusted.status == 1 && untrusted.output.contains("certificate does not verify"))
            // The OpenStack catalog links to https.
            let version = try Self.curl(["--cacert", ca, server.url + "/identity/v3"])
            #expect(version.output.contains("https://127.0.0.1:\(server.port)/identity/v3/"), "\(version.output)")
        }
    }

    @Test func anExpiredTokenAndARevokedOneAre401WithTheirCodes_theAdminTokenKeepsWorking() async throws {
        try await withServer { server, admin in
            let project = try await admin.createProject(CreateProjectRequest(name: "team"))
            let brief = try await admin.createToken(project: project.id, ttlSeconds: 2)
            let expiresAt = try #require(brief.expiresAt)
            #expect(expiresAt.timeIntervalSince(brief.createdAt) == 2)
            let briefClient = server.client(token: brief.token)
            defer { Task { try? await briefClient.shutdown() } }
            _ = try await briefClient.serverGroups()
            try await Task.sleep(for: .milliseconds(2500))
            await expectAPIError(401, "auth.token_expired") { _ = try await briefClient.serverGroups() }

            // Revoked with the CLI: refused at once, though it was just used (and cached).
            let lasting = try Self.cli([
                "token", "create", "team", "--url", server.url, "--token", server.adminToken, "--json",
            ])
            #expect(lasting.status == 0, "\(lasting.output)")
            let info = try SwiftletJSON.decoder().decode(TokenInfo.self, from: Data(lasting.output.utf8))
            #expect(info.expiresAt == nil)
            let lastingClient = server.client(token: info.token)
            defer { Task { try? await lastingClient.shutdown() } }
            _ = try await lastingClient.serverGroups()
            let revoked = try Self.cli(["token", "revoke", info.id, "--url", server.url, "--token", server.adminToken])
            #expect(revoked.status == 0 && revoked.output.contains("revoked \(info.id)"), "\(revoked.output)")
            await expectAPIError(401, "auth.token_revoked") { _ = try await lastingClient.serverGroups() }
            // The CLI says why.
            let refused = try Self.cli(["flavor", "list", "--url", server.url, "--token", info.token ?? ""])
            #expect(refused.status == 1 && refused.output.contains("auth.token_revoked"), "\(refused.output)")
            // The OpenStack APIs refuse it too.
            let nova = try Self.curl([
                "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Auth-Token: \(info.token ?? "")",
                server.url + "/compute/v2.1/flavors",
            ])
            #expect(nova.output == "401", "\(nova.output)")

            let listed = try await admin.tokens(project: project.id)
            #expect(listed.map(\.id).sorted() == [brief.id, info.id].sorted())
            #expect(listed.allSatisfy { $0.token == nil })
            #expect(listed.first { $0.id == info.id }?.revokedAt != nil)
            // Revoking again answers as the first time; unknown ids, bad TTLs and non-admins are refused.
            #expect(try await admin.revokeToken(info.id).revokedAt == listed.first { $0.id == info.id }?.revokedAt)
            await expectAPIError(404, "token.not_found") { _ = try await admin.revokeToken("tok-none") }
            await expectAPIError(400, "token.bad_ttl") {
                _ = try await admin.createToken(project: project.id, ttlSeconds: 0)
            }
            let member = try await admin.createToken(project: project.id)
            let memberClient = server.client(token: member.token)
            defer { Task { try? await memberClient.shutdown() } }
            await expectAPIError(403, "auth.admin_only") { _ = try await memberClient.revokeToken(member.id) }
            // The bootstrap admin token has no expiry and keeps working; revoked, the next start
            // writes a new one.
            let bootstrap = try #require(try await admin.tokens(project: Project.adminProjectId).first { $0.admin })
            #expect(bootstrap.expiresAt == nil)
            _ = try await admin.projects()
            let old = server.adminToken
            _ = try await admin.revokeToken(bootstrap.id)
            await expectAPIError(401, "auth.token_revoked") { _ = try await admin.projects() }
            server.terminate()
            try await server.start()
            #expect(server.adminToken != old)
            let renewed = server.client()
            defer { Task { try? await renewed.shutdown() } }
            _ = try await renewed.projects()
        }
    }

    @Test func theAuditLogRecordsWhoWhatWhenAndTheResult_refusalsToo_andNoSecret() async throws {
        try await withServer { server, admin in
            let before = Date().addingTimeInterval(-1)
            let project = try await admin.createProject(CreateProjectRequest(name: "audited"))
            let token = try await admin.createToken(project: project.id)
            let member = server.client(token: token.token)
            defer { Task { try? await member.shutdown() } }
            let group = try await member.createServerGroup(CreateServerGroupRequest(name: "web", policy: "affinity"))
            try await member.deleteServerGroup(group.id)
            // Refused: no token, then a project token on an admin route.
            let anonymous = server.client(token: "")
            defer { Task { try? await anonymous.shutdown() } }
            await expectAPIError(401) {
                _ = try await anonymous.createServerGroup(.init(name: "x", policy: "affinity"))
            }
            await expectAPIError(403, "auth.admin_only") { _ = try await member.createProject(.init(name: "nope")) }
            // An OpenStack change, with the API token as X-Auth-Token.
            let flavor = try Self.curl([
                "-X", "POST", "-H", "X-Auth-Token: \(server.adminToken)", "-H", "Content-Type: application/json",
                "-d", #"{"flavor": {"name": "audit.tiny", "vcpus": 1, "ram": 64, "disk": 0}}"#,
                server.url + "/compute/v2.1/flavors",
            ])
            #expect(flavor.output.contains("audit.tiny"), "\(flavor.output)")
            // Reads are not recorded.
            _ = try await member.serverGroups()

            let entries = try await admin.audit(since: before)
            let routes = entries.map { "\($0.method) \($0.route) \($0.status)" }
            let members = entries.filter { $0.tokenId == token.id }
            let created = try #require(members.first { $0.method == "POST" && $0.status == 201 }, "\(routes)")
            #expect(created.projectId == project.id)
            #expect(created.route.contains("server-groups"))
            #expect(created.resourceId == group.id)
            let deleted = try #require(members.first { $0.method == "DELETE" }, "\(routes)")
            #expect(deleted.status == 204 && deleted.resourceId == group.id && deleted.time >= created.time)
            let forbidden = try #require(members.first { $0.status == 403 }, "\(routes)")
            #expect(forbidden.code == "auth.admin_only" && forbidden.route.contains("projects"))
            let anonymousEntry = try #require(entries.first { $0.status == 401 }, "\(routes)")
            #expect(anonymousEntry.tokenId == nil && anonymousEntry.code == "auth.missing_token")
            let projectEntry = try #require(entries.first { $0.resourceId == project.id }, "\(routes)")
            #expect(projectEntry.method == "POST" && projectEntry.status == 201)
            #expect(projectEntry.projectId == Project.adminProjectId && projectEntry.tokenId != nil)
            let tokenEntry = try #require(entries.first { $0.resourceId == token.id }, "\(routes)")
            #expect(tokenEntry.status == 201)
            let nova = try #require(entries.first { $0.route.contains("compute") }, "\(routes)")
            #expect(nova.method == "POST" && [200, 201].contains(nova.status), "\(nova)")
            #expect(nova.tokenId == tokenEntry.tokenId)
            #expect(!entries.contains { $0.method == "GET" })
            // No secret anywhere: the raw answer holds neither token.
            let raw = try Self.curl(["-H", "Authorization: Bearer \(server.adminToken)", server.url + "/v1/audit"])
            #expect(!raw.output.contains(server.adminToken) && !raw.output.contains(token.token ?? "-"))
            #expect(raw.output.contains(group.id))

            // Newest first, limited; the CLI shows it; admins only; a bad `since` is a 400.
            #expect(try await admin.audit(limit: 1).map(\.route) == [entries.first?.route])
            let shown = try Self.cli(["audit", "--since", "5m", "--url", server.url, "--token", server.adminToken])
            #expect(shown.status == 0 && shown.output.contains(group.id), "\(shown.output)")
            await expectAPIError(403, "auth.admin_only") { _ = try await member.audit() }
            let badSince = try Self.curl([
                "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer \(server.adminToken)",
                server.url + "/v1/audit?since=yesterday",
            ])
            #expect(badSince.output == "400")
        }
    }
}
