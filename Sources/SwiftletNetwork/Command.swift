import Foundation
import SwiftletCore

/// Runs `ip`/`nft` on a GCD thread so that waiting never blocks a Swift concurrency thread
/// (there are only as many as cores).
enum Command {
    struct Result: Sendable {
        var status: Int32
        var output: String
    }

    static func run(_ program: String, _ arguments: [String], input: String? = nil) async throws(SwiftletError)
        -> Result
    {
        let outcome: Result? = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: program)
                process.arguments = arguments
                let output = Pipe()
                let stdin = Pipe()
                process.standardOutput = output
                process.standardError = output
                process.standardInput = stdin
                do { try process.run() } catch {
                    continuation.resume(returning: nil)
                    return
                }
                if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
                try? stdin.fileHandleForWriting.close()
                // Read before waiting: a full pipe would otherwise stall the child forever.
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(
                    returning: Result(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self)))
            }
        }
        guard let outcome else { throw SwiftletError(.internal, "network.command_failed", "cannot run \(program)") }
        return outcome
    }

    /// Runs and throws with the command's own message unless it exits 0.
    @discardableResult
    static func check(_ program: String, _ arguments: [String], input: String? = nil) async throws(SwiftletError)
        -> String
    {
        let result = try await run(program, arguments, input: input)
        guard result.status == 0 else {
            let command = ([program] + arguments).joined(separator: " ")
            throw SwiftletError(
                .internal, "network.host_failed",
                "'\(command)' failed (\(result.status)): \(result.output.trimmingCharacters(in: .whitespacesAndNewlines))"
            )
        }
        return result.output
    }
}
