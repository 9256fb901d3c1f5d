import Foundation
import SwiftletCore

/// How an image is launched, from its kind and properties. Properties are plain strings on the
/// image record, so changing them (or an instance's config) never needs a rebuild.
public struct LaunchProfile: Sendable, Equatable {
    public static let bootProtocolProperty = "boot_protocol"
    public static let machineTypeProperty = "machine_type"
    public static let minMemoryProperty = "min_memory_mib"
    public static let commandLineProperty = "cmdline_template"
    /// Glance's: the whole kernel command line. `cmdline_template`, when set too, wins.
    public static let osCommandLineProperty = "os_command_line"
    public static let initrdProperty = "initrd"
    /// QEMU exit statuses that end the instance STOPPED rather than ERROR, comma-separated.
    public static let successExitStatusesProperty = "success_exit_statuses"
    /// The kit's `exit(0)`: 0 written to isa-debug-exit, so QEMU exits with 2·0+1.
    public static let defaultSuccessExitStatuses: Set<Int32> = [1]
    /// How the guest's application state is quiesced, exported and imported, for a stateful move.
    public static let stateInterfaceProperty = "state_interface"

    /// `pvh`, `multiboot`, `linux` or `firmware` (a disk booted by the BIOS).
    public var bootProtocol: String
    /// nil: the boot kind's default machine (microvm for PVH and bzImage, pc otherwise).
    public var machineType: String?
    public var minMemoryMib: Int?
    public var commandLine: CommandLineTemplate
    /// Id of the initrd image of a bzImage.
    public var initrdImageId: String?
    /// The QEMU exit statuses that mean the guest finished its work: a run-to-completion
    /// unikernel powers off by its own convention (Solo5's `solo5_exit(0)` makes QEMU exit 83).
    public var successExitStatuses = Self.defaultSuccessExitStatuses
    /// nil: the image declares no state interface, so it moves only as a whole VM.
    public var stateInterface: StateInterface?

    public init(kind: ImageKind, properties: [String: String]) throws(SwiftletError) {
        bootProtocol = Self.bootProtocol(of: kind)
        if let machine = properties[Self.machineTypeProperty] {
            let allowed = Self.machineTypes(for: kind)
            guard allowed.contains(machine) else {
                throw .badRequest(
                    "image.bad_machine_type",
                    "machine_type '\(machine)' cannot boot a \(kind.rawValue) image; use one of \(allowed.joined(separator: ", "))"
                )
            }
            machineType = machine
        }
        if let text = properties[Self.minMemoryProperty] {
            guard let value = Int(text), (1...65536).contains(value) else {
                throw .badRequest(
                    "image.bad_min_memory", "min_memory_mib must be a whole number of MiB (1-65536), got '\(text)'")
            }
            minMemoryMib = value
        }
        if let template = properties[Self.commandLineProperty] {
            commandLine = try CommandLineTemplate(template)
        } else if let line = properties[Self.osCommandLineProperty] {
            commandLine = try CommandLineTemplate(fixed: line, property: Self.osCommandLineProperty)
        } else {
            commandLine = .kit
        }
        if let text = properties[Self.successExitStatusesProperty] {
            successExitStatuses = try Self.exitStatuses(text)
        }
        if let text = properties[Self.stateInterfaceProperty] {
            guard let parsed = StateInterface(rawValue: text) else {
                throw .badRequest(
                    "image.bad_state_interface",
                    "state_interface must be one of: \(StateInterface.allCases.map(\.rawValue).joined(separator: ", ")), "
                        + "got '\(text)'")
            }
            stateInterface = parsed
        }
        initrdImageId = properties[Self.initrdProperty]
        if initrdImageId != nil, kind != .bzImage {
            throw .badRequest(
                "image.initrd_not_linux", "only a bzImage takes an initrd, this image is \(kind.rawValue)")
        }
    }

    /// `0,83`: process exit statuses, 0-255.
    static func exitStatuses(_ text: String) throws(SwiftletError) -> Set<Int32> {
        let statuses = text.split(separator: ",", omittingEmptySubsequences: false).map {
            Int32($0.trimmingCharacters(in: .whitespaces))
        }
        guard !statuses.isEmpty, statuses.allSatisfy({ $0.map { (0...255).contains($0) } ?? false }) else {
            throw .badRequest(
                "image.bad_success_exit_statuses",
                "success_exit_statuses must be QEMU exit statuses 0-255 separated by commas (e.g. 1,83), got '\(text)'")
        }
        return Set(statuses.compactMap { $0 })
    }

    public static func bootProtocol(of kind: ImageKind) -> String {
        switch kind {
        case .pvh: "pvh"
        case .multiboot: "multiboot"
        case .bzImage: "linux"
        case .raw, .qcow2: "firmware"
        case .initrd: "none"
        }
    }

    public static func machineTypes(for kind: ImageKind) -> [String] {
        switch kind {
        case .pvh, .bzImage: ["microvm", "pc", "q35"]
        case .multiboot, .raw, .qcow2: ["pc", "q35"]
        case .initrd: []
        }
    }
}

/// Turns Swiftlet's config words (the kit's `key=value`: `name=`, `ip=a.b.c.d/prefix`, `gw=`, the
/// rest are the app's) into the command line a unikernel kind expects.
public enum CommandLineTemplate: Sendable, Equatable {
    /// The kit's words as they are.
    case kit
    /// Unikraft: `netdev.ip=ADDR/PREFIX:GW` (uklibparam), then `--` and the app's arguments.
    case unikraft
    /// Solo5 (MirageOS on virtio/hvt): plain arguments, `--ipv4=ADDR/PREFIX --ipv4-gateway=GW`.
    case solo5
    /// A command line used as it is, or a template with `{name}`, `{ip}` (ADDR/PREFIX), `{addr}`,
    /// `{prefix}`, `{gw}`, `{args}`.
    case custom(String)

    static let placeholders = ["name", "ip", "addr", "prefix", "gw", "args"]

    public init(_ text: String) throws(SwiftletError) {
        switch text {
        case "kit": self = .kit
        case "unikraft": self = .unikraft
        case "solo5": self = .solo5
        default: self = try Self(fixed: text, property: LaunchProfile.commandLineProperty)
        }
    }

    /// A command line used as it is, with Swiftlet's placeholders filled where it has any: some
    /// unikernels take a literal word (a Solo5 test expects `Hello_Solo5`), and Glance's
    /// `os_command_line` is such a line. Braces must name a placeholder; control characters are refused.
    public init(fixed text: String, property: String) throws(SwiftletError) {
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}"),
                Self.placeholders.contains(String(rest[rest.index(after: open)..<close]))
            else {
                throw .badRequest(
                    "image.bad_\(property)",
                    "\(property) may hold only the placeholders {\(Self.placeholders.joined(separator: "}, {"))} in braces: '\(text)'"
                )
            }
            rest = rest[rest.index(after: close)...]
        }
        guard text.unicodeScalars.allSatisfy({ $0.value >= 32 && $0.value != 127 }) else {
            throw .badRequest("image.bad_\(property)", "\(property) must not hold control characters")
        }
        self = .custom(text)
    }

    public func render(_ words: [String]) -> String {
        if self == .kit { return words.joined(separator: " ") }
        var values: [String: String] = [:]
        var args: [String] = []
        for word in words {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, ["name", "ip", "gw"].contains(parts[0]), values[parts[0]] == nil {
                values[parts[0]] = parts[1]
            } else {
                args.append(word)
            }
        }
        let cidr = values["ip"]
        let addr = cidr.map { String($0.split(separator: "/").first ?? "") }
        let prefix = cidr.flatMap { $0.contains("/") ? String($0.split(separator: "/").last ?? "") : nil }
        switch self {
        case .kit:
            return words.joined(separator: " ")
        case .unikraft:
            var out: [String] = []
            if let cidr { out.append("netdev.ip=\(cidr)" + (values["gw"].map { ":\($0)" } ?? "")) }
            if !args.isEmpty { out += ["--"] + args }
            return out.joined(separator: " ")
        case .solo5:
            var out: [String] = []
            if let cidr { out.append("--ipv4=\(cidr)") }
            if let gw = values["gw"] { out.append("--ipv4-gateway=\(gw)") }
            return (out + args).joined(separator: " ")
        case .custom(let template):
            var result = template
            let fills = [
                "name": values["name"] ?? "", "ip": cidr ?? "", "addr": addr ?? "", "prefix": prefix ?? "",
                "gw": values["gw"] ?? "", "args": args.joined(separator: " "),
            ]
            for (key, value) in fills { result = result.replacingOccurrences(of: "{\(key)}", with: value) }
            return result.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        }
    }
}

/// A guest's interface to its application state (docs/migration.md, "Stateful migration").
public enum StateInterface: String, Sendable, CaseIterable {
    /// The guest kit's console commands: `quiesce`, `state-export`, `state-import…`, `activate`,
    /// with the `standby=1` config word for a target that stays silent until it takes over.
    case kitConsole = "kit-console"
}
