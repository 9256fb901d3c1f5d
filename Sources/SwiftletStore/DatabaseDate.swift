import Foundation

/// Dates as SQLite text in GRDB's own storage format ("yyyy-MM-dd HH:mm:ss.SSS", UTC), so GRDB
/// reads them back as `Date`, but written without `DateFormatter`: its ICU formatting was a sixth
/// of the CPU an instance create took.
enum DatabaseDate {
    static func text(_ date: Date) -> String {
        // Whole milliseconds first, as ICU does (floor of the interval × 1000): splitting seconds
        // and fraction instead loses a millisecond to binary rounding (.123 → .122).
        let totalMilliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        let (quotient, remainder) = totalMilliseconds.quotientAndRemainder(dividingBy: 1000)
        var seconds = time_t(remainder < 0 ? quotient - 1 : quotient)
        let milliseconds = Int(remainder < 0 ? remainder + 1000 : remainder)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var text = ""
        text.reserveCapacity(23)
        append(Int(parts.tm_year) + 1900, width: 4, to: &text)
        text.append("-")
        append(Int(parts.tm_mon) + 1, width: 2, to: &text)
        text.append("-")
        append(Int(parts.tm_mday), width: 2, to: &text)
        text.append(" ")
        append(Int(parts.tm_hour), width: 2, to: &text)
        text.append(":")
        append(Int(parts.tm_min), width: 2, to: &text)
        text.append(":")
        append(Int(parts.tm_sec), width: 2, to: &text)
        text.append(".")
        append(milliseconds, width: 3, to: &text)
        return text
    }

    private static func append(_ value: Int, width: Int, to text: inout String) {
        let digits = String(value)
        if digits.count < width { text.append(String(repeating: "0", count: width - digits.count)) }
        text.append(digits)
    }
}
