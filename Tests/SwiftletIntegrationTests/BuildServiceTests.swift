import Foundation
import SwiftletClient
import SwiftletCore
import Testing

/// The build service against a real server and the real kit: builds, the build cache, the
/// streamed log, booting the result, and hostile bundles.
@Suite(.serialized) struct BuildServiceTests {
    /// A ustar archive built by hand, so the tests can write entries `tar` would refuse to make.
    struct Tar {
        var bytes: [UInt8] = []

        mutating func add(_ name: String, type: Character = "0", contents: String = "", link: String = "") {
            var header = [UInt8](repeating: 0, count: 512)
            func put(_ text: String, _ at: Int) {
                for (index, byte) in text.utf8.enumerated() { header[at + index] = byte }
            }
            let data = Array(contents.utf8)
            put(name, 0)
            put("0000644", 100)
            put("0000000", 108)
            put("0000000", 116)
            put(String(format: "%011o", data.count), 124)
            put("00000000000", 136)
            put("        ", 148)
            header[156] = type.asciiValue!
            put(link, 157)
            put("ustar", 257)
            put("00", 263)
            let sum = header.reduce(0) { $0 + Int($1) }
            put(String(format: "%06o", sum), 148)
            header[154] = 0
            header[155] = 32
            bytes += header + data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        }

        func write() throws -> String {
            let path = NSTemporaryDirectory() + "swiftlet-test-\(UUID().uuidString.prefix(8)).tar"
            try Data(bytes + [UInt8](repeating: 0, count: 1024)).write(to: URL(fileURLWithPath: path))
            return path
        }
    }

    /// Runs the swiftlet CLI with extra environment; its stdout.
    static func cli(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Repo.swiftletBinary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func tar(_ directory: String) throws -> String {
        let output = NSTemporaryDirectory() + "swiftlet-test-\(UUID().uuidString.prefix(8)).tar"
        let result = try Shell.run("/bin/tar", ["-C", directory, "-cf", output, "."])
        guard result.status == 0 else { throw TestFailure("tar failed: \(result.output)") }
        return output
    }

    /// Starts a build and waits for it through the followed log; returns the build and its log.
    static func build(_ client: SwiftletClient, _ directory: String, name: String) async throws -> (Build, String) {
        let tarPath = try tar(directory)
        defer { try? FileManager.default.removeItem(atPath: tarPath) }
        let started = try await client.startBuild(name: name, tarPath: tarPath)
        var log = ""
        for try await text in client.buildLog(started.id, follow: true) { log += text }
        return (try await client.build(started.id), log)
    }

    @Test func rebuildIsACacheHitAndAChangedSourceRebuilds() async throws {
        let app = NSTemporaryDirectory() + "swiftlet-app-\(UUID().uuidString.prefix(8))"
        try FileManager.default.copyItem(atPath: Repo.root + "/guest/examples/hello", toPath: app)
        defer { try? FileManager.default.removeItem(atPath: app) }
        try await withServer { server, client in
            let (first, log) = try await Self.build(client, app, name: "hello")
            #expect(first.state == .succeeded, "\(first.reason ?? "") \(log)")
            #expect(!first.cacheHit)
            #expect((first.stages.compile ?? 0) > 100, "a real compile takes time: \(first.stages)")
            #expect(log.contains("build.sh:"), "\(log)")
            let imageId = try #require(first.imageId)
            // The build's name is the name to run; the image's own name carries the digest.
            #expect(try await client.image("hello").id == imageId)
            #expect(try await client.image(imageId).name == "hello-\((first.inputsDigest ?? "").prefix(8))")

            let (again, againLog) = try await Self.build(client, app, name: "hello")
            #expect(again.state == .succeeded)
            #expect(again.cacheHit)
            #expect(again.imageId == imageId)
            #expect(again.stages.compile == nil)
            #expect(againLog.contains("cache hit"))

            // The CLI's one-command workflow on the same sources: cache hit → boot → READY, then the
            // workflow timeline of that instance.
            let environment = ["SWIFTLET_URL": server.url, "SWIFTLET_TOKEN": server.adminToken]
            let run = try Self.cli(["build", app, "--name", "hello", "--run", "--json"], environment: environment)
            #expect(run.status == 0, "\(run.output)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
            let stageList = try #require(report["stages"] as? [[String: Any]])
            let stages = stageList.compactMap { $0["stage"] as? String }
            #expect(stages.contains("compile") && stages.contains("READY (guest)"), "\(stages)")
            let ranInstance = try #require((report["instance"] as? [String: Any])?["id"] as? String)
            #expect(try await client.instance(ranInstance).timeline.ready != nil)
            let timeline = try Self.cli(["timeline", "--workflow", ranInstance], environment: environment)
            #expect(timeline.status == 0, "\(timeline.output)")
            #expect(
                timeline.output.contains("compile") && timeline.output.contains("READY (guest)"), "\(timeline.output)")
            try await client.deleteInstance(ranInstance)

            let source = try #require(
                try FileManager.default.contentsOfDirectory(atPath: app).first { $0.hasSuffix(".swift") })
            let original = try Data(contentsOf: URL(fileURLWithPath: app + "/" + source))
            let handle = try #require(FileHandle(forWritingAtPath: app + "/" + source))
            try handle.seekToEnd()
            handle.write(Data("\n// a changed source\n".utf8))
            try handle.close()
            let (changed, _) = try await Self.build(client, app, name: "hello")
            #expect(changed.state == .succeeded)
            #expect(!changed.cacheHit)
            #expect(changed.inputsDigest != first.inputsDigest)
            #expect(changed.stages.compile != nil)

            let changedImage = try #require(changed.imageId)
            // The newest build of the name answers to it.
            #expect(try await client.image("hello").id == changedImage)
            let created = try await client.createInstances(CreateInstanceRequest(image: "hello", wait: true))
            let instance = try #require(created.first)
            #expect(instance.imageId == changedImage)
            #expect(
                instance.state == .running || instance.state == .stopped, "\(instance.state) \(instance.reason ?? "")")
            #expect(instance.timeline.ready != nil)
            try await client.deleteInstance(instance.id)
            #expect(!FileManager.default.fileExists(atPath: server.dataDirectory + "/builds/\(changed.id)/src"))

            // Back to the first sources: a cache hit, now the newest build of the name, so the name
            // answers with the first image again, for a create too (whose image lookups are kept
            // while the catalog is unchanged).
            try original.write(to: URL(fileURLWithPath: app + "/" + source))
            let (reverted, _) = try await Self.build(client, app, name: "hello")
            #expect(reverted.cacheHit && reverted.imageId == imageId)
            #expect(try await client.image("hello").id == imageId)
            let rerun = try #require(
                try await client.createInstances(CreateInstanceRequest(image: "hello", wait: true)).first)
            #expect(rerun.imageId == imageId)
            try await client.deleteInstance(rerun.id)
            await expectAPIError(404, "image.not_found") { _ = try await client.image("hell") }
        }
    }

    @Test func hostileBundlesAreRefusedAndWriteNothing() async throws {
        try await withServer { server, client in
            let outside = "swiftlet-escape-\(UUID().uuidString.prefix(8))"
            var cases: [(String, Tar)] = []
            var dotdot = Tar()
            dotdot.add("App.swift", contents: "let x = 1\n")
            dotdot.add("../../../\(outside)", contents: "escaped\n")
            cases.append(("dot-dot path", dotdot))
            var absolute = Tar()
            absolute.add("/tmp/\(outside)", contents: "escaped\n")
            cases.append(("absolute path", absolute))
            var linkOut = Tar()
            linkOut.add("out", type: "2", link: "../../../..")
            cases.append(("symlink out", linkOut))
            var linkAbsolute = Tar()
            linkAbsolute.add("tmp", type: "2", link: "/tmp")
            linkAbsolute.add("tmp/\(outside)", contents: "escaped\n")
            cases.append(("absolute symlink", linkAbsolute))
            var throughLink = Tar()
            throughLink.add("sub", type: "5")
            throughLink.add("inner", type: "2", link: "sub")
            throughLink.add("inner/file", contents: "through a link\n")
            cases.append(("write through symlink", throughLink))
            var hardLink = Tar()
            hardLink.add("hard", type: "1", link: "/etc/passwd")
            cases.append(("hard link", hardLink))
            var device = Tar()
            device.add("dev", type: "3")
            cases.append(("device", device))

            for (what, tar) in cases {
                let path = try tar.write()
                defer { try? FileManager.default.removeItem(atPath: path) }
                do {
                    _ = try await client.startBuild(name: "evil", tarPath: path)
                    Issue.record("\(what): accepted")
                } catch let error as ClientError {
                    #expect(error.status == 400, "\(what): \(error)")
                    #expect(error.code == "build.bad_bundle", "\(what): \(error)")
                }
            }
            let garbage = try TestImages.file("garbage.tar", [UInt8](repeating: 0x41, count: 2048))
            await expectAPIError(400, "build.bad_bundle") {
                _ = try await client.startBuild(name: "evil", tarPath: garbage)
            }
            await expectAPIError(400, "build.bad_flag") {
                _ = try await client.startBuild(name: "evil", tarPath: garbage, flags: ["O3"])
            }

            #expect(!FileManager.default.fileExists(atPath: "/tmp/\(outside)"))
            #expect(!FileManager.default.fileExists(atPath: server.dataDirectory + "/\(outside)"))
            #expect(
                !FileManager.default.fileExists(
                    atPath: (server.dataDirectory as NSString).deletingLastPathComponent + "/\(outside)"))
            let leftovers =
                (try? FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/builds")) ?? []
            #expect(leftovers.isEmpty, "\(leftovers)")
            #expect(try await client.builds().isEmpty)
        }
    }
}
