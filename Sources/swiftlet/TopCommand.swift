import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore

#if canImport(Glibc)
    import Glibc
#endif

/// `swiftlet top`: the instances, their states, hosts and boot times, redrawn every interval, as
/// `docker stats` shows containers.
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top", abstract: "Watch instances live: states, hosts and boot times, redrawn every interval.")

    @OptionGroup var connection: Connection
    @Option(help: "Seconds between two views.") var interval: Double = 1
    @Option(help: "Stop after this many views (default: until interrupted).") var iterations: Int?

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 s") }
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be at least 1") }
    }

    func run() async throws {
        // On a terminal each view replaces the last; into a pipe, views follow one another.
        let redraw = isatty(STDOUT_FILENO) == 1
        var shown = 0
        while iterations.map({ shown < $0 }) ?? true {
            let (instances, hosts) = try await connection.withClient { client in
                (try await client.instances(), try await client.hosts())
            }
            let view = Self.render(instances: instances, hosts: hosts, at: Date())
            // Written at once, not buffered: each view shows as soon as it is read.
            let text = (redraw ? "\u{1B}[H\u{1B}[2J" : (shown > 0 ? "\n" : "")) + view + "\n"
            FileHandle.standardOutput.write(Data(text.utf8))
            shown += 1
            if iterations.map({ shown >= $0 }) ?? false { break }
            try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }

    /// One view: a summary line per states and hosts, then one row per instance (busiest states
    /// first), with the last boot's accepted → READY and its path.
    static func render(instances: [Instance], hosts: [ComputeHost], at now: Date) -> String {
        let time = ISO8601DateFormatter.string(
            from: now, timeZone: .current, formatOptions: [.withTime, .withColonSeparatorInTime])
        let states = Dictionary(grouping: instances, by: \.state).map { "\($0.value.count) \($0.key.rawValue)" }
            .sorted()
        let up = hosts.filter { $0.status != .down }.count
        var lines = [
            "swiftlet top - \(time) - \(instances.count) instances"
                + (states.isEmpty ? "" : ": " + states.joined(separator: ", "))
                + " - hosts: \(up) up, \(hosts.count - up) down"
        ]
        let hostNames = Dictionary(hosts.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        var table = TextTable(
            ["NAME", "STATE", "HOST", "VCPUS", "MEMORY", "BOOT (ms)", "PATH", "UP"], rightAligned: [3, 5, 7])
        let order: [InstanceState] = [.building, .running, .paused, .error, .unknown, .stopped, .deleted]
        let sorted = instances.sorted {
            let (left, right) = (
                order.firstIndex(of: $0.state) ?? order.count, order.firstIndex(of: $1.state) ?? order.count
            )
            return left != right ? left < right : $0.name < $1.name
        }
        for instance in sorted {
            table.add([
                instance.name, instance.state.rawValue, instance.hostId.map { hostNames[$0] ?? $0 } ?? "-",
                String(instance.vcpus), "\(instance.memoryMib) MiB", Format.milliseconds(instance.timeline.total),
                instance.timeline.bootPath ?? "-",
                instance.state == .running ? Self.age(since: instance.updatedAt, now) : "-",
            ])
        }
        lines.append(table.render())
        return lines.joined(separator: "\n")
    }

    /// 42s, 7m03s, 5h12m: how long since `date`.
    static func age(since date: Date, _ now: Date) -> String {
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return String(format: "%dm%02ds", seconds / 60, seconds % 60) }
        return String(format: "%dh%02dm", seconds / 3600, seconds % 3600 / 60)
    }
}
