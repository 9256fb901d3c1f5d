import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Upload and manage unikernel images.",
        subcommands: [
            Create.self, List.self, Show.self, Remove.self, Update.self, Keygen.self, Sign.self, Trust.self, Keys.self,
            Untrust.self,
        ])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Upload an image (PVH ELF, multiboot, bzImage, initrd, raw or qcow2 disk)."
        )
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "The image file.") var file: String
        @Option(help: "Image name (default: the file name without extension).") var name: String?
        @Option(
            help: "An image property key=value (repeatable), e.g. ready_pattern=<regex>.",
            transform: checked { try ArgumentCheck.property($0) })
        var property: [(key: String, value: String)] = []
        @OptionGroup var upload: UploadOptions

        func run() async throws {
            let signature = try upload.signature(for: file)
            let imageName = name ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            let properties = Dictionary(property.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
            let image = try await connection.withClient {
                try await $0.uploadImage(
                    path: file, name: imageName, properties: properties, signature: signature,
                    visibility: upload.public ? .public : nil, tags: upload.tag)
            }
            if output.json { return try Output.json(image) }
            print("\(image.name)  \(image.id)  \(image.kind.rawValue)  \(Format.bytes(image.sizeBytes))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List images.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let images = try await connection.withClient { try await $0.images() }
            if output.json { return try Output.json(ImageList(images)) }
            var table = TextTable(["ID", "NAME", "KIND", "SIZE", "SHA256", "CREATED (UTC)"], rightAligned: [3])
            for image in images {
                table.add([
                    image.id, image.name, image.kind.rawValue, Format.bytes(image.sizeBytes),
                    String(image.sha256.prefix(12)), Format.date(image.createdAt),
                ])
            }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show an image.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Image id or name.") var image: String

        func run() async throws {
            let found = try await connection.withClient { try await $0.image(image) }
            if output.json { return try Output.json(found) }
            var fields = [
                ("id", found.id), ("name", found.name), ("project", found.projectId), ("kind", found.kind.rawValue),
                ("size", "\(Format.bytes(found.sizeBytes)) (\(found.sizeBytes) bytes)"), ("sha256", found.sha256),
                ("created", Format.date(found.createdAt)),
                ("visibility", (found.visibility ?? .private).rawValue),
                ("tags", (found.tags ?? []).joined(separator: ", ")),
                ("signed", found.signingKeyId.map { "yes (key \($0))" } ?? "no"),
            ]
            for key in found.properties.keys.sorted() { fields.append(("property \(key)", found.properties[key]!)) }
            Output.fields(fields)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete images.")
        @OptionGroup var connection: Connection
        @Argument(help: "Image ids or names.") var images: [String]

        func validate() throws {
            guard !images.isEmpty else { throw ValidationError("name at least one image") }
        }

        func run() async throws {
            try await connection.withClient { client in
                for image in images {
                    try await client.deleteImage(image)
                    print("\(image)  deleted")
                }
            }
        }
    }
}

struct FlavorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flavor", abstract: "Instance sizes.", subcommands: [List.self, Create.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List flavors.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let flavors = try await connection.withClient { try await $0.flavors() }
            if output.json { return try Output.json(FlavorList(flavors)) }
            var table = TextTable(["NAME", "VCPUS", "MEMORY (MiB)"], rightAligned: [1, 2])
            for flavor in flavors { table.add([flavor.name, String(flavor.vcpus), String(flavor.memoryMib)]) }
            Output.table(table)
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a flavor (admin).")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Flavor name.") var name: String
        @Option(help: "Virtual CPUs.") var vcpus: Int
        @Option(help: "Memory in MiB.") var memory: Int

        func validate() throws {
            guard vcpus >= 1, memory >= 1 else { throw ValidationError("--vcpus and --memory must be positive") }
        }

        func run() async throws {
            let flavor = try await connection.withClient {
                try await $0.createFlavor(Flavor(name: name, vcpus: vcpus, memoryMib: memory))
            }
            if output.json { return try Output.json(flavor) }
            print("\(flavor.name)  \(flavor.vcpus) vCPU  \(flavor.memoryMib) MiB")
        }
    }
}

struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host", abstract: "Compute hosts: what they measured, joining and removing them.",
        subcommands: [
            List.self, Show.self, JoinTokenCommand.self, Cordon.self, Uncordon.self, Drain.self, Revoke.self,
        ])

    struct Cordon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cordon", abstract: "Stop new placements on a host (what runs there stays).")
        @OptionGroup var connection: Connection
        @Argument(help: "Host id or name.") var host: String

        func run() async throws { try await HostCommand.setCordoned(host, true, connection) }
    }

    struct Uncordon: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "uncordon", abstract: "Resume new placements on a host.")
        @OptionGroup var connection: Connection
        @Argument(help: "Host id or name.") var host: String

        func run() async throws { try await HostCommand.setCordoned(host, false, connection) }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drain",
            abstract: "Cordon a host and move its running instances live to other hosts (admin).")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Host id or name.") var host: String
        @Flag(help: "Wait until every move ended; fail if one did not complete.") var wait = false

        func run() async throws {
            let (report, ended) = try await connection.withClient { client in
                let report = try await client.drain(host: host)
                var ended: [InstanceMigration] = []
                if wait {
                    for migration in report.migrations {
                        ended.append(
                            try await MigrateCommand.waitForEnd(
                                of: migration.id, client: client, timeout: .seconds(600)))
                    }
                }
                return (report, ended)
            }
            if output.json {
                return try Output.json(
                    wait ? DrainReport(hostId: report.hostId, migrations: ended, skipped: report.skipped) : report)
            }
            var table = TextTable(["INSTANCE", "TO", "STATUS", "NOTE"])
            for migration in wait ? ended : report.migrations {
                table.add([
                    migration.instanceName, migration.targetHostId, migration.status.rawValue, migration.reason ?? "",
                ])
            }
            for skipped in report.skipped { table.add([skipped.name, "-", "stays", skipped.reason]) }
            Output.table(table)
            if wait, ended.contains(where: { $0.status != .completed }) {
                throw ClientError(.local("not every instance left \(report.hostId)"))
            }
        }
    }

    static func setCordoned(_ host: String, _ cordoned: Bool, _ connection: Connection) async throws {
        try await connection.withClient { try await $0.cordonHost(host, cordoned) }
        print("\(cordoned ? "cordoned" : "uncordoned") \(host)")
    }

    struct JoinTokenCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "join-token", abstract: "Tokens that let a host's agent join (admin).",
            subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "create",
                abstract: "Print a single-use join token for `swiftlet agent --join-token`.",
                discussion: """
                    The token also pins the controller's CA certificate (its sha256), so the joining agent \
                    can tell the real controller before it sends the token.
                    """)
            @OptionGroup var connection: Connection
            @OptionGroup var output: JSONOption
            @Option(help: "How long the token stays valid: 90s, 10m, 2h (default: 10m).") var ttl: String?

            func run() async throws {
                let seconds = try ttl.map(Self.seconds)
                let info = try await connection.withClient { try await $0.createJoinToken(ttlSeconds: seconds) }
                if output.json { return try Output.json(info) }
                print(info.token ?? "")
            }

            static func seconds(_ text: String) throws -> Int {
                let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
                guard let unit = text.last.flatMap({ units[$0] }), let value = Int(text.dropLast()), value > 0 else {
                    throw ValidationError("--ttl must be a positive number with s, m, h or d, e.g. 10m; got '\(text)'")
                }
                return value * unit
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "End a host's access: its agent's certificate is refused from now on.")
        @OptionGroup var connection: Connection
        @Argument(help: "Host id.") var host: String

        func run() async throws {
            try await connection.withClient { try await $0.revokeHost(host) }
            print("revoked \(host)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List hosts.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let hosts = try await connection.withClient { try await $0.hosts() }
            if output.json { return try Output.json(HostList(hosts)) }
            var table = TextTable(
                ["ID", "NAME", "STATUS", "LAST SEEN", "CPUS", "MEMORY (MiB)", "HYPERVISOR", "ACCEL", "INSTANCES"],
                rightAligned: [4, 5, 8])
            for host in hosts {
                table.add([
                    host.id, host.name, (host.status?.rawValue ?? "-") + (host.cordoned == true ? ",CORDONED" : ""),
                    host.lastSeenAt.map(Format.date) ?? "-",
                    String(host.cpus), String(host.memoryMib),
                    (host.hypervisors.joined(separator: ",") + " " + host.hypervisorVersion)
                        .trimmingCharacters(in: .whitespaces),
                    host.chosenAccelerator, String(host.instances),
                ])
            }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a host.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Host id.") var host: String

        func run() async throws {
            let found = try await connection.withClient { try await $0.host(host) }
            if output.json { return try Output.json(found) }
            let calibration = found.calibrationMs.keys.sorted()
                .map { "\($0) \(String(format: "%.2f", found.calibrationMs[$0]!)) ms" }
            Output.fields([
                ("id", found.id), ("name", found.name), ("cpus", String(found.cpus)),
                ("memory", "\(found.memoryMib) MiB"),
                ("hypervisors", "\(found.hypervisors.joined(separator: ", ")) \(found.hypervisorVersion)"),
                ("machine types", found.machineTypes.joined(separator: ", ")),
                ("accelerators", found.accelerators.joined(separator: ", ")),
                ("chosen", found.chosenAccelerator),
                ("calibration", calibration.isEmpty ? "-" : calibration.joined(separator: ", ")),
                ("instances", String(found.instances)), ("status", found.status?.rawValue ?? "-"),
                ("last seen", found.lastSeenAt.map(Format.date) ?? "-"), ("updated", Format.date(found.updatedAt)),
            ])
        }
    }
}

struct ProjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project", abstract: "Projects, their tokens and quotas (admin).",
        subcommands: [Create.self, List.self, Show.self, Quota.self, Token.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a project.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Project name.") var name: String
        @Flag(help: "Accept only signed images in this project.") var requireSignedImages = false

        func run() async throws {
            let request = CreateProjectRequest(name: name, requireSignedImages: requireSignedImages ? true : nil)
            let project = try await connection.withClient { try await $0.createProject(request) }
            if output.json { return try Output.json(project) }
            print("\(project.name)  \(project.id)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List projects.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption

        func run() async throws {
            let projects = try await connection.withClient { try await $0.projects() }
            if output.json { return try Output.json(ProjectList(projects)) }
            var table = TextTable(["ID", "NAME", "SIGNED IMAGES ONLY", "CREATED (UTC)"])
            for project in projects {
                table.add([
                    project.id, project.name, project.requireSignedImages ? "yes" : "no",
                    Format.date(project.createdAt),
                ])
            }
            Output.table(table)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Show a project: its quota and what it holds.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Project id or name.") var project: String

        func run() async throws {
            let found = try await connection.withClient { try await $0.project(project) }
            if output.json { return try Output.json(found) }
            Output.fields([
                ("id", found.id), ("name", found.name),
                ("signed images only", found.requireSignedImages ? "yes" : "no"),
                ("created (UTC)", Format.date(found.createdAt)),
            ])
            let usage = found.usage ?? ProjectUsage()
            let quota = found.quota ?? ProjectQuota()
            func limit(_ value: Int64?) -> String { value.map(String.init) ?? "unlimited" }
            var table = TextTable(["RESOURCE", "IN USE", "QUOTA"], rightAligned: [1, 2])
            table.add(["instances", "\(usage.instances)", limit(quota.instances.map(Int64.init))])
            table.add(["vcpus", "\(usage.vcpus)", limit(quota.vcpus.map(Int64.init))])
            table.add(["memory MiB", "\(usage.memoryMib)", limit(quota.memoryMib.map(Int64.init))])
            table.add(["image bytes", "\(usage.imageBytes)", limit(quota.imageBytes)])
            table.add(["networks", "\(usage.networks)", limit(quota.networks.map(Int64.init))])
            print("")
            Output.table(table)
        }
    }

    struct Quota: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "quota",
            abstract: "Set a project's quota (admin); a limit left out is unlimited.",
            discussion: "Example: swiftlet project quota team-a --instances 20 --vcpus 40 --memory-mib 8192")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Project id or name.") var project: String
        @Option(help: "Instances at most.") var instances: Int?
        @Option(help: "vCPUs at most, over all its instances.") var vcpus: Int?
        @Option(help: "Memory at most, MiB, over all its instances.") var memoryMib: Int?
        @Option(help: "Bytes of images at most.") var imageBytes: Int64?
        @Option(help: "Networks at most.") var networks: Int?

        func run() async throws {
            let quota = ProjectQuota(
                instances: instances, vcpus: vcpus, memoryMib: memoryMib, imageBytes: imageBytes, networks: networks)
            let updated = try await connection.withClient {
                try await $0.updateProject(project, UpdateProjectRequest(quota: quota))
            }
            if output.json { return try Output.json(updated) }
            print("\(updated.name)  \(updated.id)  quota \(updated.quota.map(Self.describe) ?? "unlimited")")
        }

        static func describe(_ quota: ProjectQuota) -> String {
            [
                quota.instances.map { "instances=\($0)" }, quota.vcpus.map { "vcpus=\($0)" },
                quota.memoryMib.map { "memoryMib=\($0)" }, quota.imageBytes.map { "imageBytes=\($0)" },
                quota.networks.map { "networks=\($0)" },
            ].compactMap { $0 }.joined(separator: " ")
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token",
            abstract: "Issue a token for a project; prints only the secret (it is shown once).",
            discussion: "Example: export SWIFTLET_TOKEN=$(swiftlet project token team-a)")
        @OptionGroup var options: TokenCommand.IssueOptions

        func run() async throws { try await options.issue() }
    }
}
