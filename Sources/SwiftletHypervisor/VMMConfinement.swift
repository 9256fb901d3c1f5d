import Foundation
import Glibc

/// How each VMM is confined, after Firecracker's jailer: its own unprivileged user, QEMU's seccomp
/// sandbox, a chroot into its runtime directory, and a cgroup of its own with memory, CPU and pids
/// limits (docs/qemu-driver.md, "Confinement").
public struct VMMConfinement: Codable, Sendable, Equatable {
    /// The user QEMU drops to once its devices and files are open.
    public var user: String
    /// Added to the guest's memory for the VMM's memory limit: QEMU's own code, TCG's translation
    /// cache and device state.
    public var memoryOverheadMiB: Int
    /// Threads the VMM may have (vCPUs, I/O, RCU, and a margin).
    public var pidsLimit: Int

    public init(user: String = "swiftlet-vmm", memoryOverheadMiB: Int = 128, pidsLimit: Int = 64) {
        self.user = user
        self.memoryOverheadMiB = memoryOverheadMiB
        self.pidsLimit = pidsLimit
    }

    /// QEMU's own part: seccomp (no fork or exec, no obsolete calls, no changes to its scheduling
    /// or resources), the drop to `user`, and the chroot. `elevateprivileges=deny` is left out: in
    /// QEMU 7.2 the filter is installed before `-runas` drops privileges, and it kills that very
    /// setuid; once dropped, QEMU runs with no capabilities and `no_new_privs`.
    func arguments(runtimeDirectory: String) -> [String] {
        [
            "-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
            "-runas", user, "-chroot", runtimeDirectory,
        ]
    }

    /// Why a VMM cannot be confined on this host, or nil.
    func problem() -> String? {
        guard getpwnam(user) != nil else {
            return "the VMM user '\(user)' does not exist (scripts/setup.sh makes it)"
        }
        return ControlGroups.problem()
    }
}

/// A VMM's cgroup: under `swiftlet/` in each controller's v1 hierarchy, or in the v2 hierarchy
/// when the host mounts its controllers there.
enum ControlGroups {
    static let root = "/sys/fs/cgroup"
    static let parent = "swiftlet"
    static let controllers = ["memory", "cpu", "pids"]

    /// The v2 hierarchy when it has the three controllers, else nil (v1); read once.
    static let unified: String? = findUnified()

    private static func findUnified() -> String? {
        for candidate in [root, root + "/unified"] {
            let available = (try? String(contentsOfFile: candidate + "/cgroup.controllers", encoding: .utf8)) ?? ""
            let names = Set(available.split(whereSeparator: \.isWhitespace).map(String.init))
            if controllers.allSatisfy(names.contains) { return candidate }
        }
        return nil
    }

    static func problem() -> String? {
        if unified != nil { return nil }
        let missing = controllers.filter { access(root + "/" + $0, W_OK) != 0 }
        guard missing.isEmpty else {
            return
                "no usable cgroup controller for \(missing.joined(separator: ", ")) (neither v2 nor v1 under \(root))"
        }
        return nil
    }

    /// The cgroup directories of VMM `name`, one per v1 controller or one in v2.
    static func directories(_ name: String) -> [(controller: String?, path: String)] {
        if let unified { return [(nil, "\(unified)/\(parent)/\(name)")] }
        return controllers.map { ($0, "\(root)/\($0)/\(parent)/\(name)") }
    }

    /// Puts process `pid` in cgroup `name` with these limits.
    static func confine(pid: Int32, name: String, memoryBytes: Int, cpus: Int, pids: Int) throws {
        if let unified {
            // Controllers reach a child only when its parent hands them down.
            try? write("+memory +cpu +pids", to: "\(unified)/cgroup.subtree_control")
            try makeDirectory("\(unified)/\(parent)")
            try write("+memory +cpu +pids", to: "\(unified)/\(parent)/cgroup.subtree_control")
        } else {
            for controller in controllers { try makeDirectory("\(root)/\(controller)/\(parent)") }
        }
        for (controller, path) in directories(name) {
            try makeDirectory(path)
            switch controller {
            case nil:
                try write("\(memoryBytes)", to: path + "/memory.max")
                try write("0", to: path + "/memory.swap.max")
                try write("\(cpus * 100_000) 100000", to: path + "/cpu.max")
                try write("\(pids)", to: path + "/pids.max")
            case "memory":
                try write("\(memoryBytes)", to: path + "/memory.limit_in_bytes")
            case "cpu":
                try write("100000", to: path + "/cpu.cfs_period_us")
                try write("\(cpus * 100_000)", to: path + "/cpu.cfs_quota_us")
            default:
                try write("\(pids)", to: path + "/pids.max")
            }
            try write("\(pid)", to: path + "/cgroup.procs")
        }
    }

    /// Removes cgroup `name` once its process is gone (an empty cgroup is removed with rmdir).
    static func remove(_ name: String) {
        for (_, path) in directories(name) { rmdir(path) }
    }

    /// The memory limit of cgroup `name`, as the kernel holds it.
    static func memoryLimit(_ name: String) -> Int? {
        let (controller, path) = directories(name)[0]
        let file = path + (controller == nil ? "/memory.max" : "/memory.limit_in_bytes")
        return (try? String(contentsOfFile: file, encoding: .utf8)).flatMap {
            Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    private static func makeDirectory(_ path: String) throws {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw HypervisorError.spawnFailed("cannot make cgroup \(path): \(errnoMessage())")
        }
    }

    private static func write(_ value: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HypervisorError.spawnFailed("cannot open \(path): \(errnoMessage())") }
        defer { close(fd) }
        let written = value.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written >= 0 else {
            throw HypervisorError.spawnFailed("cannot write '\(value)' to \(path): \(errnoMessage())")
        }
    }
}
