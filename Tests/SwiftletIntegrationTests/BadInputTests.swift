import Foundation
import SwiftletClient
import SwiftletCore
import SwiftletImages
import Testing

/// Bad input gets a clear 4xx and leaves nothing half-made.
@Suite(.serialized) struct BadInputTests {
    /// Raw HTTP, for bodies the typed client would never send; `allow` is the `Allow` header.
    static func raw(
        _ method: String, _ url: String, token: String?, body: Data? = nil, contentType: String = "application/json"
    ) throws -> (status: Int, body: String, allow: String) {
        var arguments = ["-s", "-o", "-", "-w", "\n%header{allow}\n%{http_code}", "-X", method, url]
        if let token { arguments += ["-H", "Authorization: Bearer \(token)"] }
        var bodyFile: String?
        if let body {
            let path = NSTemporaryDirectory() + "swiftlet-body-\(UUID())"
            FileManager.default.createFile(atPath: path, contents: body)
            bodyFile = path
            arguments += ["-H", "Content-Type: \(contentType)", "--data-binary", "@\(path)"]
        }
        defer { bodyFile.map { try? FileManager.default.removeItem(atPath: $0) } }
        let result = try Shell.run("/usr/bin/curl", arguments)
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
        return (
            Int(lines.last ?? "") ?? 0, lines.dropLast(2).joined(separator: "\n"), String(lines.dropLast().last ?? "")
        )
    }

    static func expectError(_ response: (status: Int, body: String, allow: String), _ status: Int, _ code: String) {
        #expect(response.status == status, "\(response.body)")
        let decoded = try? JSONDecoder().decode(ErrorBody.self, from: Data(response.body.utf8))
        #expect(decoded?.error.code == code, "\(response.body)")
        #expect(decoded?.error.message.isEmpty == false)
    }

    @Test(arguments: StoreEngine.allCases) func badRequestsAreRefusedCleanly(engine: StoreEngine) async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer(config: ["uploadLimitBytes": 300_000], engine: engine) { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let token = server.adminToken
            let base = server.url + "/v1"

            Self.expectError(
                try Self.raw("POST", base + "/instances", token: token, body: Data("{not json".utf8)), 400,
                "request.malformed_json")
            Self.expectError(
                try Self.raw("POST", base + "/instances", token: token, body: Data(#"{"image": 42}"#.utf8)), 400,
                "request.wrong_type")
            Self.expectError(
                try Self.raw("POST", base + "/instances", token: token, body: Data("{}".utf8)), 400,
                "request.missing_field")
            await expectAPIError(404, "image.not_found") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "nope"))
            }
            await expectAPIError(404, "flavor.not_found") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "hello", flavor: "huge"))
            }
            await expectAPIError(400, "instance.bad_memory") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "hello", memoryMib: 0))
            }
            await expectAPIError(400, "instance.bad_memory") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "hello", memoryMib: 1 << 30))
            }
            for name in ["a/b", "..", "../etc"] {
                await expectAPIError(400, "name.invalid") {
                    _ = try await client.createInstances(CreateInstanceRequest(name: name, image: "hello"))
                }
            }
            await expectAPIError(400, "instance.bad_arg") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "hello", args: ["no spaces=a b"]))
            }
            await expectAPIError(400, "publish.invalid") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "hello", publish: ["99999:80"]))
            }
            #expect(try await client.instances().isEmpty)

            // Uploads: a text file, over the limit, a bad name. Nothing stored.
            let text = NSTemporaryDirectory() + "swiftlet-text-\(UUID()).txt"
            FileManager.default.createFile(atPath: text, contents: Data("hello, I am not a kernel\n".utf8))
            defer { try? FileManager.default.removeItem(atPath: text) }
            await expectAPIError(422, "image.unsupported_format") {
                _ = try await client.uploadImage(path: text, name: "text")
            }
            let big = Data(repeating: 0x7F, count: 400_000)
            Self.expectError(
                try Self.raw(
                    "POST", base + "/images?name=big", token: token, body: big, contentType: "application/octet-stream"),
                413, "image.too_large")
            await expectAPIError(400, "name.invalid") {
                _ = try await client.uploadImage(path: kernel, name: "../evil")
            }
            #expect(try await client.images().map(\.name) == ["hello"])
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/blobs/sha256").count == 1)
            #expect(try FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/blobs/tmp").isEmpty)

            // Tokens.
            Self.expectError(try Self.raw("GET", base + "/instances", token: nil), 401, "auth.missing_token")
            Self.expectError(try Self.raw("GET", base + "/instances", token: "swl_wrong"), 401, "auth.invalid_token")
            Self.expectError(try Self.raw("GET", base + "/nothing-here", token: token), 404, "http.404")
        }
    }

    /// A known path asked with a method it does not have is 405 with the methods it has; an unknown
    /// path stays 404.
    /// An app that starts the kit's network stack stops at boot without a NIC: its build says so
    /// (`needs_network`), and a run without a network or a published port is refused up front
    /// with the way out, rather than booted into an ERROR.
    @Test func anImageThatNeedsANICIsRefusedWithoutOne() async throws {
        #expect(SourceBundle.startsNetworkStack(sourceDirectory: Repo.root + "/guest/examples/http"))
        #expect(!SourceBundle.startsNetworkStack(sourceDirectory: Repo.root + "/guest/examples/hello"))
        let kernel = try await Kernels.path("http")
        try await withServer { _, client in
            await expectAPIError(400, "image.bad_needs_network") {
                _ = try await client.uploadImage(path: kernel, name: "bad", properties: ["needs_network": "maybe"])
            }
            _ = try await client.uploadImage(path: kernel, name: "web", properties: ["needs_network": "true"])
            await expectAPIError(400, "instance.needs_network") {
                _ = try await client.createInstances(CreateInstanceRequest(name: "web", image: "web"))
            }
            #expect(try await client.instances().isEmpty, "nothing was made")
            var published = CreateInstanceRequest(name: "web", image: "web", wait: true)
            published.publish = ["\(try ServerProcess.freePort()):80"]
            let made = try #require(try await client.createInstances(published).first)
            #expect(made.state == .running, "\(made.reason ?? "")")
            try await client.deleteInstance(made.id)
        }
    }

    @Test func aMethodThePathDoesNotHaveIs405WithAllow() async throws {
        try await withServer { server, _ in
            let base = server.url + "/v1"
            let cases = [
                ("PUT", "/instances", "GET, POST"), ("PATCH", "/instances/nope", "DELETE, GET"),
                ("DELETE", "/instances/nope/console", "GET, POST"), ("GET", "/instances/nope/start", "POST"),
                ("TRACE", "/flavors", "GET, POST"), ("DELETE", "/health", "GET"),
            ]
            for (method, path, allow) in cases {
                let response = try Self.raw(method, base + path, token: server.adminToken)
                Self.expectError(response, 405, "request.method_not_allowed")
                #expect(response.allow == allow, "\(method) \(path)")
            }
            for (method, path) in [("PUT", "/nothing-here"), ("GET", "/instances/a/b/c"), ("GET", "/")] {
                let response = try Self.raw(method, base + path, token: server.adminToken)
                Self.expectError(response, 404, "http.404")
                #expect(response.allow.isEmpty, "\(method) \(path)")
            }
        }
    }

    /// `null` is no value where the contract says string, boolean, array or object: 400, and
    /// nothing changes (Codable alone would read it as an absent option). A field no request has
    /// is ignored, null or not.
    @Test func nullIsRefusedWhereTheContractSaysAType() async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let base = server.url + "/v1"
            let cases = [
                ("POST", "/instances", #"{"image": "hello", "name": null}"#, "'name' must not be null"),
                ("POST", "/instances", #"{"image": "hello", "wait": null}"#, "'wait' must not be null"),
                (
                    "POST", "/instances", #"{"image": "hello", "networks": [{"network": "lan", "ip": null}]}"#,
                    "'networks.0.ip' must not be null"
                ),
                ("POST", "/instances", "null", "the body must not be null"),
                ("PATCH", "/projects/prj-admin", #"{"requireSignedImages": null}"#, "'requireSignedImages' must not"),
                ("PATCH", "/images/hello", #"{"tags": null}"#, "'tags' must not be null"),
                ("PATCH", "/images/hello", #"{"properties": null}"#, "'properties' must not be null"),
                ("POST", "/security-groups", #"{"name": "web", "description": null}"#, "'description' must not"),
            ]
            for (method, path, body, message) in cases {
                let response = try Self.raw(method, base + path, token: server.adminToken, body: Data(body.utf8))
                Self.expectError(response, 400, "request.null_value")
                #expect(response.body.contains(message), "\(body): \(response.body)")
            }
            #expect(try await client.instances().isEmpty)
            // A field no request has is ignored, null or not, as before.
            let ignored = try Self.raw(
                "POST", base + "/projects", token: server.adminToken,
                body: Data(#"{"name": "team", "comment": null, "extra": {"note": null}}"#.utf8))
            #expect(ignored.status == 201, "\(ignored.body)")
        }
    }

    /// `follow` is a boolean: a value other than true or false is refused, not read as false.
    @Test func aBooleanQueryParameterIsTrueOrFalse() async throws {
        try await withServer { server, _ in
            for path in ["/instances/nope/console", "/builds/nope/log"] {
                for value in ["null", "yes", "1"] {
                    let response = try Self.raw(
                        "GET", server.url + "/v1" + path + "?follow=" + value, token: server.adminToken)
                    Self.expectError(response, 400, "request.bad_parameter")
                }
                let response = try Self.raw(
                    "GET", server.url + "/v1" + path + "?follow=false", token: server.adminToken)
                #expect(response.status == 404, "\(path): \(response.body)")
            }
        }
    }

    /// Console input over its 4,096 bytes is 413 (it was a 500), and the console still takes a line.
    @Test func consoleInputOverTheLimitIs413() async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let instance = try await client.createInstances(CreateInstanceRequest(image: "hello", wait: true))[0]
            let console = server.url + "/v1/instances/\(instance.id)/console"
            let long = Data(String(repeating: "0", count: 4097).utf8)
            Self.expectError(
                try Self.raw("POST", console, token: server.adminToken, body: long, contentType: "text/plain"), 413,
                "console.too_large")
            let line = try Self.raw("POST", console, token: server.adminToken, body: Data("heap\n".utf8))
            #expect(line.status == 204, "\(line.body)")
        }
    }

    @Test func refusedDuplicateLeavesNoVMMBehind() async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer { server, client in
            _ = try await client.uploadImage(path: kernel, name: "hello")
            let first = try await client.createInstances(
                CreateInstanceRequest(name: "twin", image: "hello", wait: true))
            for wait in [true, false] {
                await expectAPIError(409, "instance.duplicate_name") {
                    _ = try await client.createInstances(
                        CreateInstanceRequest(name: "twin", image: "hello", wait: wait))
                }
            }
            // A refused create's VMM (started while its insert ran) is gone, with its directory.
            let run = server.dataDirectory + "/run"
            try await eventually("only the first instance's VMM is left") {
                let directories = try FileManager.default.contentsOfDirectory(atPath: run)
                return processes(mentioning: run + "/").count == 1 && directories == [first[0].id]
            }
            #expect(try await client.instances().map(\.name) == ["twin"])
        }
    }

    @Test(arguments: StoreEngine.allCases) func projectsAreIsolated(engine: StoreEngine) async throws {
        let kernel = try await Kernels.path("hello")
        try await withServer(engine: engine) { server, admin in
            _ = try await admin.uploadImage(path: kernel, name: "hello")
            let running = try await admin.createInstances(
                CreateInstanceRequest(name: "admins", image: "hello", wait: true))
            let project = try await admin.createProject(CreateProjectRequest(name: "team"))
            let token = try #require(try await admin.createToken(project: project.id).token)
            let team = server.client(token: token)
            defer { Task { [team] in try? await team.shutdown() } }
            #expect(try await team.images().isEmpty)
            #expect(try await team.instances().isEmpty)
            await expectAPIError(404, "image.not_found") { _ = try await team.image("hello") }
            await expectAPIError(404, "instance.not_found") { _ = try await team.instance(running[0].id) }
            await expectAPIError(404, "instance.not_found") { try await team.deleteInstance(running[0].id) }
            await expectAPIError(403, "auth.admin_only") { _ = try await team.projects() }
            // The project's own image and instance work, under the same name as the admin's.
            _ = try await team.uploadImage(path: kernel, name: "hello")
            let own = try await team.createInstances(CreateInstanceRequest(name: "admins", image: "hello", wait: true))
            #expect(own.first?.state == .running)
            #expect(try await team.instances().count == 1)
            #expect(try await admin.instances().count == 2)
            await expectAPIError(409, "image.in_use") { try await team.deleteImage("hello") }
        }
    }
}
