import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

/// `swiftlet build PATH`: source → image on the server's build service; with `--run` the whole
/// workflow (build → register → place → boot → READY) with the time of each stage.
struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build a Swift unikernel app on the kit into an image (and run it).",
        subcommands: [Start.self, List.self, Show.self, Log.self], defaultSubcommand: Start.self)

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "start", abstract: "Build an app directory.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "The app directory (its *.swift files use the guest kit).") var path: String
        @Option(
            help:
                "The build's name (default: the directory name): `swiftlet run NAME` boots its newest build, image NAME-<digest>."
        ) var name: String?
        @Option(help: "A recipe flag (repeatable), e.g. no-sse.") var flag: [String] = []
        @Flag(help: "PATH is a directory on the server's host (admin); nothing is uploaded.") var serverPath = false
        @Flag(help: "Stream the build log.") var follow = false
        @Flag(help: "Then boot an instance of the image and wait for READY.") var run = false
        @Option(help: "With --run: a config word for the instance, key=value or a bare word (repeatable).") var arg:
            [String] = []
        @Option(help: "With --run: publish a port HOST:GUEST[/tcp|/udp] (repeatable).") var publish: [String] = []

        func run() async throws {
            let started = ContinuousClock.now
            let directory = URL(fileURLWithPath: path).standardizedFileURL.path
            let imageName = name ?? URL(fileURLWithPath: directory).lastPathComponent
            var tarPath: String?
            var tarTime: Duration = .zero
            if !serverPath {
                let clock = ContinuousClock.now
                tarPath = try Self.tar(directory)
                tarTime = ContinuousClock.now - clock
            }
            defer { tarPath.map { try? FileManager.default.removeItem(atPath: $0) } }
            let (build, instance, uploadTime) = try await connection.withClient { client in
                let posted = ContinuousClock.now
                var build = try await client.startBuild(
                    name: imageName, tarPath: tarPath, serverPath: serverPath ? directory : nil, flags: flag)
                let uploadTime = ContinuousClock.now - posted
                // The followed log ends when the build does: it is also the wait.
                for try await text in client.buildLog(build.id, follow: true) where follow {
                    FileHandle.standardError.write(Data(text.utf8))
                }
                build = try await client.build(build.id)
                guard build.state == .succeeded, let imageId = build.imageId else {
                    throw ValidationError(
                        "build \(build.id) failed: \(build.reason ?? "unknown reason") (swiftlet build log \(build.id))"
                    )
                }
                var instance: Instance?
                if run {
                    instance = try await client.createInstances(
                        CreateInstanceRequest(image: imageId, args: arg, publish: publish, wait: true)
                    ).first
                }
                return (build, instance, uploadTime)
            }
            let total = ContinuousClock.now - started
            var stages: [Workflow.Stage] = [
                Workflow.Stage("package sources (tar)", serverPath ? nil : tarTime.milliseconds),
                Workflow.Stage("upload", uploadTime.milliseconds - (build.stages.unpack ?? 0)),
            ]
            stages += Workflow.buildStages(build)
            if let instance { stages += Workflow.instanceStages(instance) }
            if output.json {
                return try Output.json(
                    WorkflowReport(build: build, instance: instance, stages: stages, totalMs: total.milliseconds))
            }
            print("build \(build.id)  image \(build.imageId ?? "-")\(build.cacheHit ? "  (cache hit)" : "")")
            if let instance {
                print(
                    "instance \(instance.name)  \(instance.id)  \(instance.state.rawValue)\(instance.reason.map { "  \($0)" } ?? "")"
                )
            }
            Output.table(Workflow.table(stages, total: total.milliseconds, cacheHit: build.cacheHit))
            if let instance, instance.state != .running { throw ExitCode(1) }
        }

        /// The directory as a tar in a temp file (`tar` from the host: the client side is trusted).
        static func tar(_ directory: String) throws -> String {
            let output = NSTemporaryDirectory() + "swiftlet-build-\(UUID().uuidString.prefix(8)).tar"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/tar")
            process.arguments = ["-C", directory, "-cf", output, "."]
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw ValidationError("cannot tar '\(directory)'") }
            return output
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List builds.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let builds = try await connection.withClient { try await $0.builds() }
            if output.json { return try Output.json(BuildList(builds)) }
            var table = TextTable(
                ["ID", "NAME", "STATE", "CACHE", "COMPILE MS", "IMAGE", "CREATED (UTC)"], rightAligned: [4])
            for build in builds {
                table.add([
                    build.id, build.name, build.state.rawValue, build.cacheHit ? "hit" : "miss",
                    build.stages.compile.map(Format.ms) ?? "-", build.imageId ?? "-", Format.date(build.createdAt),
                ])
            }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a build.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Build id.") var build: String

        func run() async throws {
            let found = try await connection.withClient { try await $0.build(build) }
            if output.json { return try Output.json(found) }
            var fields = [
                ("id", found.id), ("name", found.name), ("recipe", found.recipe),
                ("flags", found.flags.joined(separator: " ")),
                ("state", found.state.rawValue), ("cache", found.cacheHit ? "hit" : "miss"),
                ("inputs sha256", found.inputsDigest ?? "-"), ("image", found.imageId ?? "-"),
            ]
            if let reason = found.reason { fields.append(("reason", reason)) }
            for stage in Workflow.buildStages(found) {
                fields.append((stage.stage, stage.ms.map { Format.ms($0) + " ms" } ?? "-"))
            }
            Output.fields(fields)
        }
    }

    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log", abstract: "Print a build's log.")
        @OptionGroup var connection: Connection
        @Argument(help: "Build id.") var build: String
        @Flag(help: "Follow until the build finishes.") var follow = false

        func run() async throws {
            try await connection.withClient { client in
                for try await text in client.buildLog(build, follow: follow) { print(text, terminator: "") }
            }
        }
    }
}

/// The stages of the deployment workflow, from a build and the instance booted from its image.
enum Workflow {
    struct Stage: Encodable {
        var stage: String
        /// nil: the stage did not run (a cache hit skips compile and package).
        var ms: Double?
        init(_ stage: String, _ ms: Double?) {
            self.stage = stage
            self.ms = ms
        }
    }

    static func buildStages(_ build: Build) -> [Stage] {
        [
            Stage("unpack + hash (server)", build.stages.unpack),
            Stage("compile", build.stages.compile),
            Stage("package (check + store image)", build.stages.package),
        ]
    }

    static func instanceStages(_ instance: Instance) -> [Stage] {
        let timeline = instance.timeline
        func span(_ from: UInt64?, _ to: UInt64?) -> Double? {
            guard let from, let to, to >= from else { return nil }
            return Double(to - from) / 1e6
        }
        return [
            Stage("schedule (accepted → placed)", span(timeline.accepted, timeline.scheduled)),
            Stage("image ready (host cache)", span(timeline.scheduled, timeline.imageReady)),
            Stage("boot (VMM spawned → up)", span(timeline.imageReady, timeline.vmmUp)),
            Stage("READY (guest)", span(timeline.vmmUp, timeline.ready)),
        ]
    }

    static func table(_ stages: [Stage], total: Double?, cacheHit: Bool) -> TextTable {
        var table = TextTable(["STAGE", "MS"], rightAligned: [1])
        for stage in stages {
            let skipped = cacheHit && (stage.stage == "compile" || stage.stage.hasPrefix("package (check"))
            table.add([stage.stage, stage.ms.map(Format.ms) ?? (skipped ? "0 (cache hit)" : "-")])
        }
        if let total { table.add(["total (this command)", Format.ms(total)]) }
        return table
    }

    /// `swiftlet timeline --workflow`: the latest build of the instance's image and its boot.
    static func show(instance idOrName: String?, client: SwiftletClient, json: Bool) async throws {
        let builds = try await client.builds()
        let instance: Instance
        if let idOrName {
            instance = try await client.instance(idOrName)
        } else {
            let imageIds = Set(builds.compactMap(\.imageId))
            guard let latest = try await client.instances().last(where: { imageIds.contains($0.imageId) }) else {
                return print("no instance runs an image made by the build service yet")
            }
            instance = latest
        }
        let build = builds.last { $0.imageId == instance.imageId }
        var stages: [Stage] = []
        if let build { stages = [Stage("upload (server receive)", build.stages.upload)] + buildStages(build) }
        stages += instanceStages(instance)
        if json {
            return try Output.json(WorkflowReport(build: build, instance: instance, stages: stages, totalMs: nil))
        }
        print("instance \(instance.name)  \(instance.id)  build \(build?.id ?? "-")")
        Output.table(table(stages, total: nil, cacheHit: build?.cacheHit ?? false))
    }
}

struct WorkflowReport: Encodable {
    var build: Build?
    var instance: Instance?
    var stages: [Workflow.Stage]
    var totalMs: Double?
}

extension Format {
    static func ms(_ value: Double) -> String { String(format: "%.1f", value) }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
