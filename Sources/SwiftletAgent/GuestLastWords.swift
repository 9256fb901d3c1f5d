import Foundation

/// What a guest last said on its console before it exited, for the instance's reason: an ERROR
/// that says only "exited with status 5" hides the guest's own account (`swiftlet: bad config: …`).
enum GuestLastWords {
    /// How much of the console's end is read: a guest's last words are its last lines.
    static let tailBytes = 4096
    /// The longest line quoted in a reason.
    static let maxLength = 200

    /// The last meaningful line of the console log at `path`, nil when there is none.
    static func read(consoleLogAt path: String) -> String? {
        guard let file = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? file.close() }
        guard let end = try? file.seekToEnd() else { return nil }
        try? file.seek(toOffset: end > UInt64(tailBytes) ? end - UInt64(tailBytes) : 0)
        guard let data = try? file.readToEnd() else { return nil }
        return lastMeaningfulLine(in: String(decoding: data, as: UTF8.self))
    }

    /// The last line the kit wrote about itself (`swiftlet: …`), else the last non-empty line that
    /// is not one of the kit's markers (`SWIFTLET-READY`, `SWIFTLET-POOLED`); control characters
    /// dropped, cut to `maxLength`.
    static func lastMeaningfulLine(in text: String) -> String? {
        let lines = text.split(whereSeparator: \.isNewline).map { line in
            String(String.UnicodeScalarView(line.unicodeScalars.filter { $0.value >= 32 && $0.value != 127 }))
                .trimmingCharacters(in: .whitespaces)
        }
        let chosen =
            lines.last { $0.hasPrefix("swiftlet:") }
            ?? lines.last { !$0.isEmpty && !$0.hasPrefix("SWIFTLET-") }
        guard let chosen else { return nil }
        return chosen.count > maxLength ? String(chosen.prefix(maxLength)) + "…" : chosen
    }
}
