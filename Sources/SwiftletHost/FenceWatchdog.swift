import Foundation
import Logging
import SwiftletHypervisor

#if canImport(Glibc)
    import Glibc
#endif

/// What the fence watchdog acts on, written by the agent to `<data>/fence.json`.
struct FenceRecord: Codable, Equatable {
    struct VMM: Codable, Equatable {
        var instanceId: String
        var pid: Int32
        var startTime: UInt64
    }

    /// The agent that writes the record; the watchdog acts only once it is gone.
    var agentPid: Int32
    var agentStartTime: UInt64
    /// CLOCK_BOOTTIME nanoseconds after which the controller may move the VMMs' instances.
    var deadline: UInt64
    var vmms: [VMM]
}

/// A small process that outlives its agent (its own session) and kills the VMMs of instances the
/// controller may move once the host's lease ran out, if the agent is no longer there to do it:
/// a `kill -9`'d agent cannot fence, and its moved instances would run twice until it came back.
/// While the agent runs, the agent fences itself; the watchdog only watches.
enum FenceWatchdog {
    static func recordPath(_ directory: String) -> String { directory + "/fence.json" }
    static func pidPath(_ directory: String) -> String { directory + "/fence.pid" }

    static func bootNanos() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// Replaces the record atomically (a reader never sees half of it).
    static func write(_ record: FenceRecord, directory: String) {
        guard let data = try? JSONEncoder().encode(record) else { return }
        let temporary = recordPath(directory) + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else { return }
        _ = rename(temporary, recordPath(directory))
    }

    /// Starts this data directory's watchdog, ending one an earlier agent left.
    static func start(directory: String, logger: Logger) {
        stop(directory: directory)
        // Gone before the new one starts: it must never read the old one's pid and take itself for
        // replaced.
        try? FileManager.default.removeItem(atPath: pidPath(directory))
        do {
            let pid = try spawnDetached(
                executable: CommandLine.arguments[0], arguments: ["agent-watchdog", "--data", directory],
                stderrPath: directory + "/fence.log")
            try? "\(pid)".write(toFile: pidPath(directory), atomically: true, encoding: .utf8)
        } catch {
            logger.error("cannot start the fence watchdog", metadata: ["error": "\(error)"])
        }
    }

    /// Ends the directory's watchdog, if its pid file names one that still runs as a watchdog.
    static func stop(directory: String) {
        guard let text = try? String(contentsOfFile: pidPath(directory), encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
            command.contains("agent-watchdog"), command.contains(directory)
        else { return }
        kill(pid, SIGTERM)
    }

    /// The watchdog's loop: once the deadline passed, if the agent is gone, kill the recorded VMMs
    /// that still run (each once). It wakes every 250 ms at most (100 ms near the deadline). Ends
    /// when the record goes or another watchdog took the directory over.
    static func run(directory: String, logger: Logger) async {
        let me = getpid()
        while true {
            guard let data = FileManager.default.contents(atPath: recordPath(directory)),
                var record = try? JSONDecoder().decode(FenceRecord.self, from: data)
            else { return }
            if let owner = try? String(contentsOfFile: pidPath(directory), encoding: .utf8),
                Int32(owner.trimmingCharacters(in: .whitespacesAndNewlines)) != me
            {
                return
            }
            let agentGone = !isProcessAlive(pid: record.agentPid, startTime: record.agentStartTime)
            if agentGone, bootNanos() >= record.deadline, !record.vmms.isEmpty {
                for vmm in record.vmms where isProcessAlive(pid: vmm.pid, startTime: vmm.startTime) {
                    logger.warning(
                        "agent gone and host lease expired: killing the VMM of a movable instance",
                        metadata: ["instance.id": "\(vmm.instanceId)", "vm.pid": "\(vmm.pid)"])
                    kill(vmm.pid, SIGKILL)
                }
                record.vmms = []
                write(record, directory: directory)
            }
            // A deadline may also come earlier (a new grant shortens the lease): never sleep long.
            let untilDeadline = record.deadline > bootNanos() ? record.deadline - bootNanos() : 0
            try? await Task.sleep(for: .nanoseconds(min(max(untilDeadline, 100_000_000), 250_000_000)))
        }
    }
}
