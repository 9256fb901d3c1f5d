import Foundation
import SwiftletCore

// What the CLI shows and accepts, kept here (not in the executable) so it can be unit-tested.

/// A plain-text table with aligned columns, as `ps`-style commands print.
public struct TextTable: Sendable {
    public var headers: [String]
    public var rows: [[String]] = []
    /// Columns (by index) aligned to the right, for numbers.
    public var rightAligned: Set<Int>

    public init(_ headers: [String], rightAligned: Set<Int> = []) {
        self.headers = headers
        self.rightAligned = rightAligned
    }

    public mutating func add(_ row: [String]) { rows.append(row) }

    /// Columns separated by two spaces, no trailing blanks, one line per row plus the header.
    public func render() -> String {
        let all = [headers] + rows
        let count = all.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: count)
        for row in all {
            for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
        }
        return all.map { row in
            var line = ""
            for column in 0..<count {
                let cell = column < row.count ? row[column] : ""
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                if column > 0 { line += "  " }
                line += rightAligned.contains(column) ? padding + cell : cell + padding
            }
            while line.hasSuffix(" ") { line.removeLast() }
            return line
        }.joined(separator: "\n")
    }
}

public enum Format {
    /// Nanoseconds as milliseconds with two decimals: 1_234_567 → "1.23".
    public static func milliseconds(_ nanoseconds: UInt64) -> String {
        String(format: "%.2f", Double(nanoseconds) / 1_000_000)
    }

    public static func milliseconds(_ nanoseconds: UInt64?) -> String {
        nanoseconds.map { milliseconds($0) } ?? "-"
    }

    /// Byte counts the way people read them: 812 B, 12.3 KiB, 4.0 MiB.
    public static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    public static func ports(_ ports: [PublishedPort]) -> String {
        ports.isEmpty ? "-" : ports.map { "\($0.hostPort)->\($0.guestPort)/\($0.proto)" }.joined(separator: ",")
    }

    /// A date as UTC `2026-12-02 01:17:09`.
    public static func date(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: date)
    }

    /// One instance's phases in the order they happened: time since accepted and the phase's own
    /// duration (from the phase before it in time), in ms.
    public static func timelineTable(_ timeline: Timeline) -> TextTable {
        var table = TextTable(["PHASE", "SINCE ACCEPTED (ms)", "DURATION (ms)"], rightAligned: [1, 2])
        let durations = Dictionary(uniqueKeysWithValues: timeline.phaseDurations.map { ($0.0, $0.1) })
        for (phase, time) in timeline.phasesInTimeOrder {
            let since = timeline.accepted.map { accepted in
                time >= accepted ? milliseconds(time - accepted) : "-" + milliseconds(accepted - time)
            }
            table.add([phase.label, since ?? "-", milliseconds(durations[phase])])
        }
        return table
    }
}

/// p50/p90 of each phase over many instantiations, plus the total accepted → READY.
public struct TimelineSummary: Sendable {
    public struct Row: Sendable, Equatable {
        public var label: String
        public var samples: Int
        public var p50: UInt64
        public var p90: UInt64
    }

    public var rows: [Row]

    public init(_ timelines: [Timeline]) {
        var byPhase: [Phase: [UInt64]] = [:]
        for timeline in timelines {
            for (phase, duration) in timeline.phaseDurations { byPhase[phase, default: []].append(duration) }
        }
        rows = Phase.allCases.compactMap { phase in
            guard let samples = byPhase[phase] else { return nil }
            return Self.row(phase.label, samples)
        }
        let totals = timelines.compactMap(\.total)
        if !totals.isEmpty { rows.append(Self.row("total (accepted → READY)", totals)) }
    }

    private static func row(_ label: String, _ samples: [UInt64]) -> Row {
        Row(
            label: label, samples: samples.count, p50: Percentile.of(samples, 50) ?? 0,
            p90: Percentile.of(samples, 90) ?? 0)
    }

    public var table: TextTable {
        var table = TextTable(["PHASE", "N", "P50 (ms)", "P90 (ms)"], rightAligned: [1, 2, 3])
        for row in rows {
            table.add([row.label, String(row.samples), Format.milliseconds(row.p50), Format.milliseconds(row.p90)])
        }
        return table
    }
}

/// Checks of the words the CLI passes on, so mistakes are caught before a request is sent.
public enum ArgumentCheck {
    /// A kernel command-line word, `key=value` with a non-empty key or a bare word (passed as it
    /// is): printable, no blanks anywhere.
    public static func configWord(_ text: String) throws(ClientError) -> String {
        guard !text.isEmpty, !text.hasPrefix("="),
            text.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 })
        else {
            throw ClientError(.local("argument '\(text)' must be key=value or a bare word, without spaces"))
        }
        return text
    }

    /// An image property `key=value`; the value may be empty or contain `=`.
    public static func property(_ text: String) throws(ClientError) -> (key: String, value: String) {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
            throw ClientError(.local("property '\(text)' must be key=value"))
        }
        return (String(text[..<equals]), String(text[text.index(after: equals)...]))
    }

    /// A published port `HOST:GUEST[/tcp|/udp]`, validated with the server's own parser.
    public static func publish(_ text: String) throws(ClientError) -> PublishedPort {
        do {
            return try PublishedPort.parse(text)
        } catch {
            throw ClientError(.local(error.message))
        }
    }
}
