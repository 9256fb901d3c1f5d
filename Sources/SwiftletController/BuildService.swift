import Foundation
import Logging
import SwiftletCore
import SwiftletImages
import SwiftletMetrics
import SwiftletStore

#if canImport(Glibc)
    import Glibc
#endif

/// The build service: source bundle (or a host path) → recipe run as a job with a log → image.
/// Same inputs (sources, kit version, flags) give the cached image without compiling.
final class BuildService: Sendable {
    let controller: Controller
    let root: String
    let recipe: (any BuildRecipe)?
    private let logger: Logger
    /// Compiles at a time: a compiler run takes a core or more, and instances need CPU too.
    private let slots = JobSlots(count: max(1, ProcessInfo.processInfo.activeProcessorCount / 2))

    init(controller: Controller) {
        self.controller = controller
        root = (controller.blobs.root as NSString).deletingLastPathComponent + "/builds"
        recipe = SwiftKitRecipe.locate(from: [CommandLine.arguments[0], FileManager.default.currentDirectoryPath])
        logger = Logger(label: "swiftlet.build")
        // Work directories of builds cut short by a restart (logs stay).
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            try? FileManager.default.removeItem(atPath: root + "/" + entry + "/src")
            try? FileManager.default.removeItem(atPath: root + "/" + entry + "/bundle.tar")
        }
    }

    var store: any BuildStore {
        get throws(SwiftletError) {
            guard let store = controller.store as? any BuildStore else {
                throw SwiftletError(.unavailable, "build.unavailable", "this store keeps no builds")
            }
            return store
        }
    }

    func logPath(_ id: String) -> String { root + "/" + id + "/log" }

    enum Source {
        /// A tar bundle streamed in the request body.
        case bundle((BlobUploadSink) async throws -> Void)
        /// A directory on the server's host (admin only).
        case path(String)
    }

    /// Starts a build. Returns at once on a cache hit (succeeded) or once the job runs (running).
    func start(name: String, flags: [String], source: Source, by principal: Principal) async throws -> Build {
        let requested = monotonicNanos()
        try ResourceID.validateName(name)
        guard let recipe else {
            throw SwiftletError(
                .unavailable, "build.no_recipe", "the Swift kit (guest/build.sh) was not found on this server")
        }
        for flag in flags where !recipe.allowedFlags.contains(flag) {
            throw SwiftletError.badRequest(
                "build.bad_flag",
                "flag '\(flag)' is not known to recipe \(recipe.name) (known: \(recipe.allowedFlags.sorted()))")
        }
        var build = Build(
            id: ResourceID.make("bld"), projectId: principal.projectId, name: name, recipe: recipe.name,
            flags: flags.sorted(),
            createdAt: Date())
        let directory = root + "/" + build.id
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: logPath(build.id), contents: nil)
        var sourceDirectory = directory + "/src"
        do {
            var started = monotonicNanos()
            switch source {
            case .bundle(let receive):
                let tar = directory + "/bundle.tar"
                let sink = try BlobUploadSink(path: tar, limit: controller.uploadLimit)
                try await receive(sink)
                try sink.finish()
                build.stages.upload = Self.millis(since: started)
                started = monotonicNanos()
                try FileManager.default.createDirectory(atPath: sourceDirectory, withIntermediateDirectories: false)
                try SourceBundle.unpack(tarPath: tar, into: sourceDirectory)
                unlink(tar)
            case .path(let path):
                try controller.requireAdmin(principal)
                var isDirectory: ObjCBool = false
                guard path.hasPrefix("/"), FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory),
                    isDirectory.boolValue
                else {
                    throw SwiftletError.badRequest(
                        "build.bad_path", "'\(path)' is not an absolute path to a directory on the server")
                }
                sourceDirectory = path
                build.stages.upload = 0
            }
            let tree = try SourceBundle.treeDigest(root: sourceDirectory)
            let inputs =
                "\(recipe.name)\n\(try recipe.toolchainDigest())\n\(build.flags.joined(separator: ","))\n\(tree)"
            build.inputsDigest = ImageSignature.sha256(text: inputs)
            build.stages.unpack = Self.millis(since: started)
        } catch {
            cleanUp(directory)
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        let digest = build.inputsDigest!
        if let imageId = try await store.cachedImage(projectId: build.projectId, inputsDigest: digest),
            await (try? controller.image(imageId, by: principal)) != nil
        {
            build.state = .succeeded
            build.cacheHit = true
            build.imageId = imageId
            build.finishedAt = Date()
            appendLog(build.id, "build cache hit: inputs \(digest.prefix(12)) → image \(imageId); nothing compiled\n")
            cleanUp(directory)
            try await store.createBuild(build)
            // This build is now the newest of its name, which answers with its image: the image
            // records the build, a catalog change, so no create keeps resolving the name to the
            // image of an earlier build (the launch cache lives while the catalog is unchanged).
            try await controller.tagImage(imageId, with: "build:\(build.id)", by: principal)
            controller.metrics.recordBuild(result: "cached", nanoseconds: monotonicNanos() - requested)
            return build
        }
        try await store.createBuild(build)
        let source = sourceDirectory
        // Runs on after the answer, under the controller's background work: a graceful shutdown
        // lets it finish rather than leave the build half done.
        let accepted = build
        let started = controller.background.submit {
            await self.run(accepted, recipe: recipe, source: source, principal: principal, requested: requested)
        }
        guard started else {
            build.state = .failed
            build.reason = "the controller is shutting down"
            build.finishedAt = Date()
            try? await store.updateBuild(build)
            cleanUp(root + "/" + build.id)
            throw SwiftletError(.unavailable, "controller.shutting_down", "the controller is shutting down")
        }
        return build
    }

    /// The job: recipe → kernel file → image (through the same checks as an upload) → cache.
    private func run(
        _ initial: Build, recipe: any BuildRecipe, source: String, principal: Principal, requested: UInt64
    ) async {
        var build = initial
        let directory = root + "/" + build.id
        let output = directory + "/kernel"
        await execute(&build, recipe: recipe, source: source, output: output, principal: principal)
        cleanUp(directory)
        unlink(output)
        build.finishedAt = Date()
        try? await store.updateBuild(build)
        controller.metrics.recordBuild(
            result: build.state == .succeeded ? "succeeded" : "failed", nanoseconds: monotonicNanos() - requested)
    }

    private func execute(
        _ build: inout Build, recipe: any BuildRecipe, source: String, output: String, principal: Principal
    ) async {
        let (executable, arguments) = recipe.command(source: source, output: output, flags: build.flags)
        appendLog(build.id, "$ \(([executable] + arguments).joined(separator: " "))\n")
        if await !slots.tryAcquire() {
            appendLog(build.id, "waiting for a free build slot\n")
            await slots.acquire()
        }
        var started = monotonicNanos()
        let status = await Self.runProcess(executable, arguments, logPath: logPath(build.id))
        await slots.release()
        build.stages.compile = Self.millis(since: started)
        guard status == 0 else {
            build.state = .failed
            build.reason = "\(recipe.name) exited with status \(status); see the build log"
            appendLog(build.id, "build failed: exit status \(status)\n")
            return
        }
        started = monotonicNanos()
        let digest = build.inputsDigest ?? ""
        let imageName = "\(build.name)-\(digest.prefix(8))"
        do {
            let image: Image
            if let existing = try? await controller.image(imageName, by: principal),
                existing.projectId == principal.projectId
            {
                image = existing
            } else {
                let properties =
                    SourceBundle.startsNetworkStack(sourceDirectory: source)
                    ? [LaunchProfile.needsNetworkProperty: "true"] : [:]
                image = try await controller.uploadImage(
                    name: imageName, properties: properties, by: principal, tags: [build.name, "build:\(build.id)"]
                ) { upload in
                    guard let handle = FileHandle(forReadingAtPath: output) else {
                        throw SwiftletError(.internal, "build.no_output", "the recipe made no kernel file")
                    }
                    defer { try? handle.close() }
                    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                        try chunk.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) throws in try upload.append(bytes) }
                    }
                }
            }
            try await store.cacheImage(projectId: build.projectId, inputsDigest: digest, imageId: image.id)
            build.imageId = image.id
            build.state = .succeeded
            build.stages.package = Self.millis(since: started)
            appendLog(build.id, "image \(image.name) (\(image.id), \(image.kind.rawValue), \(image.sizeBytes) bytes)\n")
        } catch {
            build.state = .failed
            build.reason = "packaging failed: \((error as? SwiftletError)?.message ?? "\(error)")"
            appendLog(build.id, build.reason! + "\n")
        }
    }

    /// Removes the unpacked sources and a leftover bundle (never a host path: it is not under root).
    private func cleanUp(_ directory: String) {
        try? FileManager.default.removeItem(atPath: directory + "/src")
        unlink(directory + "/bundle.tar")
    }

    private func appendLog(_ id: String, _ text: String) {
        guard let handle = FileHandle(forWritingAtPath: logPath(id)) else { return }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: Data(text.utf8))
    }

    private static func runProcess(_ executable: String, _ arguments: [String], logPath: String) async -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        guard let log = FileHandle(forWritingAtPath: logPath) else { return -1 }
        _ = try? log.seekToEnd()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        return await withCheckedContinuation { continuation in
            process.terminationHandler = { finished in
                try? log.close()
                continuation.resume(returning: finished.terminationStatus)
            }
            do { try process.run() } catch {
                process.terminationHandler = nil
                try? log.close()
                continuation.resume(returning: -1)
            }
        }
    }

    static func millis(since start: UInt64) -> Double { Double(monotonicNanos() - start) / 1_000_000 }
}

/// Streams a request body into a file under a size limit (the bundle of a build).
final class BlobUploadSink {
    private let handle: FileHandle
    private let limit: Int64
    private(set) var size: Int64 = 0

    init(path: String, limit: Int64) throws(SwiftletError) {
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let handle = FileHandle(forWritingAtPath: path)
        else {
            throw SwiftletError(.internal, "build.write_failed", "cannot store the bundle")
        }
        self.handle = handle
        self.limit = limit
    }

    deinit { try? handle.close() }

    func append(_ bytes: UnsafeRawBufferPointer) throws(SwiftletError) {
        size += Int64(bytes.count)
        guard size <= limit else {
            throw SwiftletError(
                .payloadTooLarge, "build.too_large", "the bundle is larger than the limit of \(limit) bytes")
        }
        do { try handle.write(contentsOf: Data(bytes)) } catch {
            throw SwiftletError(.internal, "build.write_failed", "cannot store the bundle: \(error)")
        }
    }

    func finish() throws(SwiftletError) {
        try? handle.close()
        guard size > 0 else { throw SwiftletError.badRequest("build.empty", "the source bundle is empty") }
    }
}

/// A counting semaphore for build jobs (FIFO).
actor JobSlots {
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(count: Int) { free = count }

    func tryAcquire() -> Bool {
        guard free > 0 else { return false }
        free -= 1
        return true
    }

    func acquire() async {
        if tryAcquire() { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { free += 1 } else { waiters.removeFirst().resume() }
    }
}
