import Foundation
import Glibc
import SwiftletClient
import SwiftletCore
import Synchronization
import Testing

@Suite struct ClientErrorTests {
    /// A port nothing listens on: bound (so no one else takes it meanwhile) but never listening.
    static func closedPort() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard fd >= 0, ok else { throw POSIXError(.EADDRNOTAVAIL) }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    @Test func serverDownIsOneClearLine() async throws {
        let (fd, port) = try Self.closedPort()
        defer { close(fd) }
        let url = "http://127.0.0.1:\(port)"
        do {
            _ = try await SwiftletClient.withClient(baseURL: url, token: "t") { try await $0.instances() }
            Issue.record("a request to a closed port succeeded")
        } catch let error as ClientError {
            #expect(error.kind == .unreachable(url: url))
            #expect(error.description == "cannot reach the Swiftlet server at \(url) (is `swiftlet server` running?)")
        }
        // A client that retried until the request deadline would end in `.timeout`, not here: no
        // wall-clock bound, since `make test` runs this beside suites booting VMs.
    }

    @Test func everyCallReportsUnreachable() async throws {
        let (fd, port) = try Self.closedPort()
        defer { close(fd) }
        let client = SwiftletClient(baseURL: "http://127.0.0.1:\(port)/", token: nil)
        #expect(client.baseURL == "http://127.0.0.1:\(port)")
        let calls: [@Sendable () async throws -> Void] = [
            { _ = try await client.health() }, { _ = try await client.images() },
            { try await client.deleteInstance("x") }, { _ = try await client.stop("x", timeout: 1) },
            { for try await _ in client.console("x") {} },
        ]
        for call in calls {
            await #expect(throws: ClientError(.unreachable(url: "http://127.0.0.1:\(port)"))) { try await call() }
        }
        try await client.shutdown()
    }

    @Test func apiErrorBodyBecomesCodeAndMessage() async throws {
        let server = try FakeServer { _ in
            FakeServer.response(
                404, "Not Found", json: #"{"error":{"code":"instance.not_found","message":"instance 'x' not found"}}"#)
        }
        defer { server.stop() }
        await #expect(
            throws: ClientError(.api(status: 404, code: "instance.not_found", message: "instance 'x' not found"))
        ) {
            _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "secret") {
                try await $0.instance("x")
            }
        }
        #expect(
            ClientError(.api(status: 404, code: "instance.not_found", message: "instance 'x' not found")).description
                == "instance.not_found: instance 'x' not found")
        let request = try #require(server.requests.first)
        #expect(request.method == "GET" && request.target == "/v1/instances/x")
        #expect(request.headers["authorization"] == "Bearer secret")
    }

    @Test func refusedTokenSaysSo() async throws {
        let server = try FakeServer { _ in
            FakeServer.response(401, "Unauthorized", json: #"{"error":{"code":"auth.invalid","message":"bad token"}}"#)
        }
        defer { server.stop() }
        do {
            _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "wrong") {
                try await $0.images()
            }
            Issue.record("a refused token was accepted")
        } catch let error as ClientError {
            #expect(error.description == "unauthorized: the token was refused (check SWIFTLET_TOKEN)")
        }
    }

    @Test func nonJSONErrorStillGivesOneLine() async throws {
        let server = try FakeServer { _ in
            let body = "upstream exploded\nsecond line\n"
            return [
                Array(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
                        .utf8)
            ]
        }
        defer { server.stop() }
        await #expect(throws: ClientError(.api(status: 502, code: "http.502", message: "upstream exploded"))) {
            _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: nil) {
                try await $0.hosts()
            }
        }
    }
}

@Suite struct ClientRequestTests {
    @Test func uploadStreamsTheWholeFileWithNameAndProperties() async throws {
        // 2.5 MiB: more than one read chunk.
        let bytes = (0..<(5 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let path = NSTemporaryDirectory() + "swiftlet-cli-test-\(getpid()).elf"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let server = try FakeServer { request in
            let image = """
                {"id":"img-1","projectId":"prj-admin","name":"web","kind":"pvh","sha256":"ab","sizeBytes":\(request.body.count),\
                "properties":{"ready_pattern":"^up$"},"createdAt":"2026-12-02T01:00:00Z"}
                """
            return FakeServer.response(201, "Created", json: image)
        }
        defer { server.stop() }
        let image = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "t") {
            try await $0.uploadImage(path: path, name: "web", properties: ["ready_pattern": "^up$"])
        }
        #expect(image.sizeBytes == Int64(bytes.count) && image.kind == .pvh)
        let request = try #require(server.requests.first)
        #expect(request.method == "POST")
        #expect(request.target == "/v1/images?name=web&property=ready_pattern%3D%5Eup$")
        #expect(request.headers["content-type"] == "application/octet-stream")
        #expect(request.headers["content-length"] == String(bytes.count))
        #expect(request.body == bytes)
    }

    @Test func uploadOfAMissingFileFailsLocally() async throws {
        await #expect(throws: ClientError(.local("cannot read '/nonexistent/k.elf': no such file or no permission"))) {
            _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:1", token: nil) {
                try await $0.uploadImage(path: "/nonexistent/k.elf", name: "k")
            }
        }
    }

    @Test func listWalksPagesAndStartsOverWhenItsMarkerIsDeleted() async throws {
        // The marker `i-1` is deleted after the first walk's first page; the second walk finds it again.
        let markerRequests = Mutex(0)
        let server = try FakeServer { request in
            guard request.target.contains("marker=i-1") else {
                return FakeServer.response(200, "OK", json: #"{"instances":[],"next":"i-1"}"#)
            }
            let attempt = markerRequests.withLock { count in
                count += 1
                return count
            }
            if attempt == 1 {
                return FakeServer.response(
                    400, "Bad Request", json: #"{"error":{"code":"instance.bad_marker","message":"gone"}}"#)
            }
            return FakeServer.response(200, "OK", json: #"{"instances":[]}"#)
        }
        defer { server.stop() }
        let listed = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "t") {
            try await $0.instances(state: .running, pageSize: 7)
        }
        #expect(listed.isEmpty)
        #expect(
            server.requests.map(\.target) == [
                "/v1/instances?limit=7&state=RUNNING", "/v1/instances?limit=7&state=RUNNING&marker=i-1",
                "/v1/instances?limit=7&state=RUNNING", "/v1/instances?limit=7&state=RUNNING&marker=i-1",
            ])
    }

    @Test func createSendsTheRequestBody() async throws {
        let server = try FakeServer { _ in FakeServer.response(201, "Created", json: #"{"instances":[]}"#) }
        defer { server.stop() }
        let request = CreateInstanceRequest(
            name: "web", image: "http", memoryMib: 32, vcpus: 1, args: ["name=web"], count: 2,
            restartPolicy: .onFailure, publish: ["8080:80/tcp"], wait: true)
        let created = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "t") {
            try await $0.createInstances(request)
        }
        #expect(created.isEmpty)
        let sent = try #require(server.requests.first)
        #expect(sent.method == "POST" && sent.target == "/v1/instances")
        let decoded = try JSONDecoder().decode(CreateInstanceRequest.self, from: Data(sent.body))
        #expect(decoded.publish == ["8080:80/tcp"] && decoded.restartPolicy == .onFailure && decoded.count == 2)
        #expect(decoded.wait == true && decoded.args == ["name=web"])
    }

    /// The server refuses `null` (no field of the contract is nullable): an absent option is left out.
    @Test func absentOptionsAreLeftOutNotSentAsNull() async throws {
        let server = try FakeServer { _ in FakeServer.response(201, "Created", json: #"{"instances":[]}"#) }
        defer { server.stop() }
        _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "t") {
            try await $0.createInstances(CreateInstanceRequest(image: "http"))
        }
        let sent = try #require(server.requests.first)
        let body = try #require(try JSONSerialization.jsonObject(with: Data(sent.body)) as? [String: Any])
        #expect(body.keys.sorted() == ["image"], "\(String(decoding: sent.body, as: UTF8.self))")
    }

    @Test func consoleStreamsChunksAndKeepsSplitCharactersWhole() async throws {
        // "héllo ✓\n" with the two-byte é and the three-byte ✓ cut across chunks.
        let text = Array("héllo ✓\nbye\n".utf8)
        let pieces = [Array(text[0..<2]), Array(text[2..<9]), Array(text[9...])]
        let server = try FakeServer { _ in
            var parts = [
                Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            ]
            for piece in pieces {
                parts.append(Array(String(piece.count, radix: 16).utf8) + [13, 10] + piece + [13, 10])
            }
            parts.append(Array("0\r\n\r\n".utf8))
            return parts
        }
        defer { server.stop() }
        let chunks = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "t") {
            client in
            var chunks: [String] = []
            for try await chunk in client.console("i-1", follow: true) { chunks.append(chunk) }
            return chunks
        }
        #expect(chunks.joined() == "héllo ✓\nbye\n")
        #expect(chunks.count >= 2)
        #expect(!chunks.joined().contains("\u{FFFD}"))
        #expect(server.requests.first?.target == "/v1/instances/i-1/console?follow=true")
    }

    @Test func namesAreEscapedInPaths() async throws {
        let server = try FakeServer { _ in [Array("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".utf8)] }
        defer { server.stop() }
        try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:\(server.port)", token: "t") {
            try await $0.deleteImage("a/b c")
        }
        #expect(server.requests.first?.method == "DELETE")
        #expect(server.requests.first?.target == "/v1/images/a%2Fb%20c")
    }
}

@Suite struct FetchTests {
    @Test func fetchReturnsStatusAndBody() async throws {
        let server = try FakeServer { _ in
            [Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nweb-1".utf8)]
        }
        defer { server.stop() }
        let answer = try await SwiftletClient.withClient(baseURL: "http://unused", token: nil) {
            try await $0.fetch("PUT", url: "http://127.0.0.1:\(server.port)/kv/a", body: "value")
        }
        #expect(answer.status == 200 && answer.body == "web-1")
        #expect(server.requests.first?.method == "PUT" && server.requests.first?.body == Array("value".utf8))
    }

    @Test func fetchErrorsNameTheWorkloadNotTheServer() async throws {
        let (fd, port) = try ClientErrorTests.closedPort()
        defer { close(fd) }
        let url = "http://127.0.0.1:\(port)/"
        do {
            _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:1", token: nil) {
                try await $0.fetch("GET", url: url)
            }
            Issue.record("fetching from a closed port succeeded")
        } catch let error as ClientError {
            #expect(error.description.hasPrefix("cannot connect to \(url)"))
        }
        // Silent far longer than the client waits, even when a loaded machine is slow to connect
        // or to run the client's timer (a loaded `make test` once took over 5 s).
        let silent = try FakeServer { _ in
            usleep(30_000_000)
            return []
        }
        defer { silent.stop() }
        await #expect(throws: ClientError(.local("no answer from http://127.0.0.1:\(silent.port)/ within 300 ms"))) {
            _ = try await SwiftletClient.withClient(baseURL: "http://127.0.0.1:1", token: nil) {
                try await $0.fetch("GET", url: "http://127.0.0.1:\(silent.port)/", timeout: .milliseconds(300))
            }
        }
    }
}
