import SwiftletCore

extension SwiftletError {
    /// Either engine's refusal to start on a schema a newer swiftlet wrote: this version would
    /// misread what it does not know (and must never undo it).
    public static func newerSchema(database: String, unknown: [String]) -> SwiftletError {
        SwiftletError(
            .internal, "store.newer_schema",
            """
            \(database) has a schema written by a newer swiftlet (migrations \(unknown.joined(separator: ", ")) \
            are unknown to this version): run that version or a later one
            """)
    }
}
