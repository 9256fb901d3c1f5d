import Foundation
import SwiftletClient
import SwiftletCore

enum Output {
    static func json<T: Encodable>(_ value: T) throws {
        let encoder = SwiftletJSON.encoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func table(_ table: TextTable) {
        print(table.render())
    }

    /// `key: value` lines with the values aligned.
    static func fields(_ pairs: [(String, String)]) {
        let width = (pairs.map(\.0.count).max() ?? 0) + 1
        for (key, value) in pairs {
            print((key + ":").padding(toLength: width + 1, withPad: " ", startingAt: 0) + value)
        }
    }

    static func error(_ line: String) {
        FileHandle.standardError.write(Data("error: \(line)\n".utf8))
    }

    static func note(_ line: String) {
        FileHandle.standardError.write(Data("\(line)\n".utf8))
    }

    /// Prints any error as one line.
    static func fail(_ error: Error) {
        switch error {
        case is CancellationError: Output.error("interrupted")
        default:
            let text = String(describing: error)
            Output.error(text.split(separator: "\n").first.map(String.init) ?? text)
        }
    }

    /// Writes console text as it arrives, without waiting for a newline.
    static func raw(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
