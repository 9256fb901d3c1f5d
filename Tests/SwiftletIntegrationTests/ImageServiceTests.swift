import Foundation
import SwiftletClient
import SwiftletCore
import SwiftletImages
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The image service against a real server: every kind detected from real bytes and booted in
/// real QEMU, launch properties, signatures, visibility, the host cache, and bad input.
@Suite(.serialized) struct ImageServiceTests {
    static func blobs(_ server: ServerProcess) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/blobs/sha256")) ?? []
    }

    static func pendingUploads(_ server: ServerProcess) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: server.dataDirectory + "/blobs/tmp")) ?? []
    }

    /// Boots one instance and waits for READY; returns its console.
    static func bootReady(
        _ client: SwiftletClient, image: String, args: [String] = [], memoryMib: Int = 32
    ) async throws -> (Instance, String) {
        let created = try await client.createInstances(
            CreateInstanceRequest(image: image, memoryMib: memoryMib, args: args, wait: true))
        let instance = try #require(created.first)
        #expect(instance.state == .running, "\(image): \(instance.state) \(instance.reason ?? "")")
        var console = ""
        for try await line in client.console(instance.id) { console += line + "\n" }
        return (instance, console)
    }

    @Test func everyKindIsDetectedAndBoots() async throws {
        let pvh = try await Kernels.path("hello")
        try await withServer { server, client in
            let uploads: [(String, String, [String: String], ImageKind)] = [
                (pvh, "pvh", [:], .pvh),
                (try TestImages.multibootELF(), "mb-elf", ["cmdline_template": "unikraft"], .multiboot),
                (try TestImages.multibootAout(), "mb-aout", ["cmdline_template": "solo5"], .multiboot),
                (try TestImages.initrd(), "rd", [:], .initrd),
                (
                    try TestImages.bzImage(), "bz",
                    ["initrd": "rd", "ready_pattern": "^SWIFTLET-READY bzimage initrd=yes"], .bzImage
                ),
                (try TestImages.rawDisk(), "raw", [:], .raw),
                (try TestImages.qcow2Disk(), "qcow2", ["machine_type": "q35"], .qcow2),
                (try TestImages.createdQcow2(), "empty-qcow2", [:], .qcow2),
            ]
            for (path, name, properties, kind) in uploads {
                let image = try await client.uploadImage(path: path, name: name, properties: properties)
                #expect(image.kind == kind, "\(name)")
                #expect(image.properties["boot_protocol"] == LaunchProfile.bootProtocol(of: kind))
            }
            #expect(try await client.image("bz").properties["initrd"] == (try await client.image("rd")).id)

            let args = ["ip=10.0.0.2/24", "gw=10.0.0.1", "port=80"]
            let (_, unikraft) = try await Self.bootReady(client, image: "mb-elf", args: args)
            // Multiboot loaders pass the kernel's path as the first word, then the command line.
            #expect(unikraft.contains(" netdev.ip=10.0.0.2/24:10.0.0.1 -- port=80\n"), "\(unikraft)")
            let (_, solo5) = try await Self.bootReady(client, image: "mb-aout", args: args)
            #expect(solo5.contains(" --ipv4=10.0.0.2/24 --ipv4-gateway=10.0.0.1 port=80\n"), "\(solo5)")
            let (_, linux) = try await Self.bootReady(client, image: "bz")
            #expect(linux.contains("SWIFTLET-READY bzimage initrd=yes"))
            for disk in ["raw", "qcow2"] {
                let (_, console) = try await Self.bootReady(client, image: disk)
                #expect(console.contains("SWIFTLET-READY disk"), "\(disk): \(console)")
            }
            // Config changes never need a rebuild: the template is a property.
            _ = try await client.updateImage(
                "mb-elf", UpdateImageRequest(properties: ["cmdline_template": "app {args} at {addr}"]))
            let (_, custom) = try await Self.bootReady(client, image: "mb-elf", args: args)
            #expect(custom.contains(" app port=80 at 10.0.0.2\n"), "\(custom)")

            await expectAPIError(400, "image.not_bootable") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "rd"))
            }
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    /// A fixed command line reaches the guest as it is: a template without placeholders, Glance's
    /// `os_command_line`, and bare `--arg` words (a Solo5 test expects the word `Hello_Solo5`).
    @Test func fixedCommandLinesReachTheGuest() async throws {
        let kernel = try TestImages.multibootELF()
        try await withServer { _, client in
            _ = try await client.uploadImage(
                path: kernel, name: "fixed", properties: ["cmdline_template": "Hello_Solo5"])
            _ = try await client.uploadImage(
                path: kernel, name: "glance", properties: ["os_command_line": "--solo5:quiet Hello_Solo5"])
            _ = try await client.uploadImage(path: kernel, name: "kit")
            // Multiboot loaders pass the kernel's path as the first word, then the command line.
            let (_, fixed) = try await Self.bootReady(client, image: "fixed", args: ["port=80"])
            #expect(fixed.contains(" Hello_Solo5\n"), "\(fixed)")
            let (_, glance) = try await Self.bootReady(client, image: "glance")
            #expect(glance.contains(" --solo5:quiet Hello_Solo5\n"), "\(glance)")
            let (instance, bare) = try await Self.bootReady(client, image: "kit", args: ["Hello_Solo5"])
            #expect(bare.contains(" name=\(instance.name) Hello_Solo5\n"), "\(bare)")
            await expectAPIError(400, "instance.bad_arg") {
                _ = try await client.createInstances(CreateInstanceRequest(image: "kit", args: ["bare\u{1B}word"]))
            }
            await expectAPIError(400, "image.bad_os_command_line") {
                _ = try await client.uploadImage(path: kernel, name: "bad", properties: ["os_command_line": "{nope}"])
            }
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    /// A run-to-completion guest that powers off as Solo5's `solo5_exit(0)` does (41 to
    /// isa-debug-exit: QEMU exits 83) ends STOPPED when its image says 83 is success, and ERROR
    /// when it does not.
    @Test func aBatchGuestsOwnSuccessStatusEndsStopped() async throws {
        let kernel = try TestImages.multibootELF(exitValue: 41)
        try await withServer { _, client in
            _ = try await client.uploadImage(
                path: kernel, name: "batch", properties: ["success_exit_statuses": "1,83"])
            _ = try await client.uploadImage(path: kernel, name: "plain")
            // on-failure: a success is not restarted.
            let cases: [(String, RestartPolicy, InstanceState)] = [
                ("batch", .onFailure, .stopped), ("plain", .no, .error),
            ]
            for (image, policy, expected) in cases {
                let created = try #require(
                    try await client.createInstances(CreateInstanceRequest(image: image, restartPolicy: policy)).first)
                try await eventually("\(image) settled") {
                    let state = try await client.instance(created.id).state
                    return state == .stopped || state == .error
                }
                let instance = try await client.instance(created.id)
                #expect(instance.state == expected, "\(image): \(instance.state) \(instance.reason ?? "")")
                #expect(instance.reason?.contains("exited with status 83") == true, "\(instance.reason ?? "")")
                #expect(instance.restartCount == 0)
                try await client.deleteInstance(created.id)
            }
        }
    }

    /// The http example booted with no NIC (no published port, no network) gives up with its own
    /// reason; the instance's reason carries it, not only "exited with status 5".
    @Test func aGuestsOwnReasonForFailingReachesTheInstance() async throws {
        let kernel = try await Kernels.path("http")
        try await withServer { _, client in
            _ = try await client.uploadImage(path: kernel, name: "http")
            let created = try await client.createInstances(CreateInstanceRequest(image: "http", wait: true))
            let instance = try #require(created.first)
            let reason = instance.reason ?? ""
            #expect(instance.state == .error, "\(instance.state) \(reason)")
            #expect(reason.contains("exited with status 5"), "\(reason)")
            #expect(
                reason.contains(
                    "the guest said: swiftlet: bad config: net: no virtio-net device on the virtio-mmio slots"),
                "\(reason)")
            try await client.deleteInstance(instance.id)
        }
    }

    @Test func badImagesAreRefusedAndLeaveNothing() async throws {
        let pvh = try await Kernels.path("hello")
        try await withServer(config: ["uploadLimitBytes": 64 << 20]) { server, client in
            let elf = [UInt8](try Data(contentsOf: URL(fileURLWithPath: pvh)))
            let truncated = try TestImages.file("truncated.elf", Array(elf.prefix(elf.count / 3)))
            var noEntry = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TestImages.multibootELF())))
            for index in 24..<28 { noEntry[index] = 0 }
            let noEntryPath = try TestImages.file("noentry.elf", noEntry)
            var badKludge = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TestImages.multibootAout())))
            badKludge[0x18] = 0xFF  // load_end_addr far past the end of the file
            badKludge[0x19] = 0xFF
            badKludge[0x1A] = 0x7F
            let badKludgePath = try TestImages.file("badkludge.bin", badKludge)

            await expectAPIError(422, "image.unsupported_format") {
                _ = try await client.uploadImage(path: truncated, name: "t")
            }
            await expectAPIError(422, "image.unsupported_format") {
                _ = try await client.uploadImage(path: noEntryPath, name: "n")
            }
            await expectAPIError(422, "image.unsupported_format") {
                _ = try await client.uploadImage(path: badKludgePath, name: "k")
            }
            do {
                _ = try await client.uploadImage(path: try TestImages.lyingQcow2(), name: "lie")
                Issue.record("a qcow2 whose header lies about its size was accepted")
            } catch let error as ClientError {
                #expect(error.status == 422)
                #expect("\(error)".contains("does not open"), "\(error)")
            }
            await expectAPIError(400, "image.bad_machine_type") {
                _ = try await client.uploadImage(
                    path: try TestImages.rawDisk(), name: "d", properties: ["machine_type": "microvm"])
            }
            await expectAPIError(400, "image.bad_cmdline_template") {
                _ = try await client.uploadImage(path: pvh, name: "c", properties: ["cmdline_template": "{nope}"])
            }
            await expectAPIError(400, "image.initrd_not_linux") {
                _ = try await client.uploadImage(path: try TestImages.initrd(), name: "rd")
                _ = try await client.uploadImage(path: pvh, name: "p", properties: ["initrd": "rd"])
            }
            try await client.deleteImage("rd")

            // A declared 5 GiB upload is refused before any byte is read.
            let started = ContinuousClock.now
            let huge = try Shell.run(
                "/usr/bin/curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-X", "POST",
                    "-H", "Authorization: Bearer \(server.adminToken)", "-H", "Content-Type: application/octet-stream",
                    "-H", "Content-Length: 5368709120", "--data-binary", "@\(pvh)", server.url + "/v1/images?name=huge",
                ])
            #expect(huge.output == "413", "\(huge.output)")
            #expect(ContinuousClock.now - started < .seconds(5))

            // A killed upload: headers for the whole file, half the bytes, then the client dies.
            let port = URL(string: server.url)!.port!
            let script = """
                import socket, sys, time
                data = open(sys.argv[1], 'rb').read()
                s = socket.create_connection(('127.0.0.1', \(port)))
                s.sendall(('POST /v1/images?name=killed HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer %s\\r\\n'
                    'Content-Type: application/octet-stream\\r\\nContent-Length: %d\\r\\n\\r\\n' % (sys.argv[2], len(data))).encode())
                s.sendall(data[:len(data) // 2])
                time.sleep(60)
                """
            let uploader = Process()
            uploader.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            uploader.arguments = ["-c", script, pvh, server.adminToken]
            try uploader.run()
            try await eventually("partial upload reaches the server") { !Self.pendingUploads(server).isEmpty }
            kill(uploader.processIdentifier, SIGKILL)
            uploader.waitUntilExit()
            try await eventually("killed upload cleaned up") { Self.pendingUploads(server).isEmpty }
            #expect(try await client.images().isEmpty)
            #expect(Self.blobs(server).isEmpty)
        }
    }

    @Test func sameBytesAreStoredOnceAndCachedOnTheHost() async throws {
        let pvh = try await Kernels.path("hello")
        try await withServer { server, client in
            let first = try await client.uploadImage(path: pvh, name: "a")
            let second = try await client.uploadImage(path: pvh, name: "b", tags: ["v1", "stable"])
            #expect(first.sha256 == second.sha256)
            #expect(Self.blobs(server) == [first.sha256])
            #expect(second.tags == ["stable", "v1"])

            let (booted, _) = try await Self.bootReady(client, image: "a")
            let events = try await client.events(booted.id).map(\.message)
            #expect(events.contains { $0.contains("fetched into host cache") }, "\(events)")
            let cached = server.dataDirectory + "/image-cache/" + first.sha256
            #expect(FileManager.default.fileExists(atPath: cached))
            // The blob store loses the bytes: a boot on this host still works from its cache.
            try FileManager.default.removeItem(atPath: server.dataDirectory + "/blobs/sha256/" + first.sha256)
            let (again, _) = try await Self.bootReady(client, image: "b")
            #expect(try await client.events(again.id).map(\.message).contains { $0.contains("cached on host") })
            let ready = try #require(try await client.instance(again.id).timeline)
            let imageTime = try #require(ready.imageReady.flatMap { end in ready.scheduled.map { end - $0 } })
            #expect(imageTime < 50_000_000, "imageReady took \(imageTime) ns on a cache hit")
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    @Test func deletingTheLastImageOfItsBytesEvictsTheHostCache() async throws {
        let pvh = try await Kernels.path("hello")
        try await withServer { server, client in
            let first = try await client.uploadImage(path: pvh, name: "a")
            _ = try await client.uploadImage(path: pvh, name: "b")
            let (booted, _) = try await Self.bootReady(client, image: "a")
            try await client.deleteInstance(booted.id)
            let cache = server.dataDirectory + "/image-cache/"
            let cached = cache + first.sha256
            #expect(FileManager.default.fileExists(atPath: cached))
            // "b" still names the same bytes: both copies stay.
            try await client.deleteImage("a")
            #expect(FileManager.default.fileExists(atPath: cached) && Self.blobs(server) == [first.sha256])
            try await client.deleteImage("b")
            #expect(!FileManager.default.fileExists(atPath: cached))
            #expect(Self.blobs(server).isEmpty)

            // A restart drops entries no image names (deleted while the server was down, or a
            // fetch cut short), and keeps the ones still named.
            let kept = try await client.uploadImage(path: pvh, name: "c")
            _ = try await Self.bootReady(client, image: "c")
            server.crash()
            for stray in ["0123abcd", ".tmp-fetch-1"] {
                #expect(FileManager.default.createFile(atPath: cache + stray, contents: Data("x".utf8)))
            }
            try await server.start()
            let entries = try FileManager.default.contentsOfDirectory(atPath: cache)
            #expect(entries == [kept.sha256], "\(entries)")
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    /// A cache on another filesystem (tmpfs) than the blob store holds copies, not hard links:
    /// past its limit, a fetch evicts the least recently used copy the blob store can give back.
    @Test func aCacheOfCopiesStaysWithinItsLimit() async throws {
        // Three images of distinct bytes and sizes: `hello` with 0, 40,000 and 80,000 bytes of
        // padding after its ELF contents (the loader reads only what the program headers name).
        let hello = try Data(contentsOf: URL(fileURLWithPath: try await Kernels.path("hello")))
        let cache = "/dev/shm/swiftlet-test-cache-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var sizes: [String: Int] = [:]
        var paths: [String] = []
        for (name, padding) in [("a", 0), ("b", 40_000), ("c", 80_000)] {
            let path = NSTemporaryDirectory() + "swiftlet-padded-\(getpid())-\(name).elf"
            try (hello + Data(count: padding)).write(to: URL(fileURLWithPath: path))
            sizes[name] = hello.count + padding
            paths.append(path)
        }
        defer { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
        let (a, b, c) = (sizes["a"]!, sizes["b"]!, sizes["c"]!)
        // Room for a and c, or a and b, with half of b to spare; never for all three.
        let limit = a + c + b / 2
        try await withServer(config: ["imageCacheDirectory": cache, "imageCacheLimitBytes": limit]) { server, client in
            var devices = (stat(), stat())
            #expect(stat(server.dataDirectory, &devices.0) == 0 && stat("/dev/shm", &devices.1) == 0)
            try #require(devices.0.st_dev != devices.1.st_dev, "the test needs /dev/shm on another filesystem")
            var digest: [String: String] = [:]
            for (index, name) in ["a", "b", "c"].enumerated() {
                digest[name] = try await client.uploadImage(path: paths[index], name: name).sha256
            }
            func cached() -> Set<String> {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []
                return Set(names.compactMap { name in digest.first { $0.value == name }?.key })
            }
            func imageEvent(_ image: String) async throws -> String {
                let (instance, _) = try await Self.bootReady(client, image: image)
                return try await client.events(instance.id).first { $0.type == "image" }?.message ?? ""
            }

            _ = try await imageEvent("a")
            _ = try await imageEvent("b")
            #expect(cached() == ["a", "b"])
            #expect(try await imageEvent("a").contains("cached on host"))  // a is now used after b
            let third = try await imageEvent("c")
            #expect(third.contains("fetched into host cache; evicted \(digest["b"]!.prefix(12))"), "\(third)")
            #expect(cached() == ["a", "c"])
            // An evicted image is fetched again; a (used before c) makes room for it.
            #expect(try await imageEvent("b").contains("fetched into host cache"))
            #expect(cached() == ["b", "c"])
            // A copy whose blob is gone is the only one left: it stays, and c goes instead.
            try FileManager.default.removeItem(atPath: server.dataDirectory + "/blobs/sha256/" + digest["b"]!)
            _ = try await imageEvent("a")
            #expect(cached() == ["a", "b"], "limit \(limit), sizes \(sizes)")

            // A limit lowered while the server was down applies at start, with the same rule.
            server.crash()
            try server.writeConfig(["imageCacheDirectory": cache, "imageCacheLimitBytes": a])
            try await server.start()
            #expect(cached() == ["b"])
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    @Test func signedImagesBootAndTamperingIsRefused() async throws {
        let pvh = try await Kernels.path("hello")
        try await withServer { server, admin in
            let project = try await admin.createProject(CreateProjectRequest(name: "signed", requireSignedImages: true))
            let token = try #require(try await admin.createToken(project: project.id).token)
            let client = server.client(token: token)
            defer { Task { try? await client.shutdown() } }
            let pair = ImageSignature.generateKeyPair()
            let other = ImageSignature.generateKeyPair()
            let keyFile = try TestImages.file("signing.key", Array(pair.privateKey.utf8))
            let otherFile = try TestImages.file("other.key", Array(other.privateKey.utf8))

            await expectAPIError(403, "image.unsigned") { _ = try await client.uploadImage(path: pvh, name: "k") }
            let signature = try ImageSignature.sign(fileAt: pvh, privateKey: pair.privateKey).signature
            await expectAPIError(422, "image.no_trusted_keys") {
                _ = try await client.uploadImage(path: pvh, name: "k", signature: signature)
            }
            _ = try await client.addSigningKey(
                project: project.id, AddSigningKeyRequest(name: "ci", publicKey: pair.publicKey))
            await expectAPIError(400, "signing_key.invalid") {
                _ = try await client.addSigningKey(
                    project: project.id, AddSigningKeyRequest(name: "bad", publicKey: "AAAA"))
            }
            let wrong = try ImageSignature.sign(fileAt: pvh, privateKey: other.privateKey).signature
            await expectAPIError(422, "image.signature_mismatch") {
                _ = try await client.uploadImage(path: pvh, name: "k", signature: wrong)
            }
            // A flipped byte: the signature was made for the original bytes.
            var flipped = [UInt8](try Data(contentsOf: URL(fileURLWithPath: pvh)))
            flipped[flipped.count - 1] ^= 0xFF
            let flippedPath = try TestImages.file("flipped.elf", flipped)
            await expectAPIError(422, "image.signature_mismatch") {
                _ = try await client.uploadImage(path: flippedPath, name: "k", signature: signature)
            }
            #expect(Self.blobs(server).isEmpty)
            _ = otherFile
            _ = keyFile

            let image = try await client.uploadImage(path: pvh, name: "k", signature: signature)
            #expect(image.signingKeyId != nil)
            let (_, console) = try await Self.bootReady(client, image: "k")
            #expect(console.contains("SWIFTLET-READY"))

            // Tampering after upload (blob and host cache share the inode): refused at boot.
            let blob = server.dataDirectory + "/blobs/sha256/" + image.sha256
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: blob)))
            bytes[bytes.count - 1] ^= 0xFF
            let handle = try #require(
                FileHandle(forWritingAtPath: server.dataDirectory + "/image-cache/" + image.sha256))
            try handle.seek(toOffset: UInt64(bytes.count - 1))
            handle.write(Data([bytes[bytes.count - 1]]))
            try handle.close()
            let refused = try #require(
                try await client.createInstances(CreateInstanceRequest(image: "k", wait: true)).first)
            #expect(refused.state == .error)
            #expect(refused.reason?.contains("refusing to boot") == true, "\(refused.reason ?? "")")
            for instance in try await client.instances() { try await client.deleteInstance(instance.id) }
        }
    }

    @Test func propertiesVisibilityAndOwnership() async throws {
        let pvh = try await Kernels.path("hello")
        try await withServer { server, admin in
            let alpha = try await admin.createProject(CreateProjectRequest(name: "alpha"))
            let beta = try await admin.createProject(CreateProjectRequest(name: "beta"))
            let a = server.client(token: try #require(try await admin.createToken(project: alpha.id).token))
            let b = server.client(token: try #require(try await admin.createToken(project: beta.id).token))
            defer {
                Task {
                    try? await a.shutdown(); try? await b.shutdown()
                }
            }

            _ = try await a.uploadImage(path: pvh, name: "big", properties: ["min_memory_mib": "64"])
            await expectAPIError(400, "instance.below_min_memory") {
                _ = try await a.createInstances(CreateInstanceRequest(image: "big", memoryMib: 16))
            }
            await expectAPIError(404, "image.not_found") { _ = try await b.image("big") }
            let shared = try await a.updateImage("big", UpdateImageRequest(visibility: .public, tags: ["lts"]))
            #expect(shared.visibility == .public)
            #expect(try await b.image("big").id == shared.id)
            #expect(try await b.images().map(\.id) == [shared.id])
            await expectAPIError(403, "image.not_owner") { try await b.deleteImage("big") }
            await expectAPIError(403, "image.not_owner") {
                _ = try await b.updateImage("big", UpdateImageRequest(visibility: .private))
            }
            let (instance, _) = try await Self.bootReady(b, image: "big", memoryMib: 64)
            try await b.deleteInstance(instance.id)
        }
    }
}
