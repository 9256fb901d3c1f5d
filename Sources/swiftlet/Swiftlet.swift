import ArgumentParser
import Foundation
import SwiftletClient

@main
struct Swiftlet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftlet",
        abstract: "Run and manage unikernels on QEMU.",
        discussion: """
            Client commands talk to a Swiftlet server (--url, or SWIFTLET_URL; default \
            \(Connection.defaultURL)) with a bearer token (--token, SWIFTLET_TOKEN, or the admin \
            token file of the local server).

            Shell completions: swiftlet --generate-completion-script bash|zsh|fish
            """,
        subcommands: [
            ServerCommand.self, DemoCommand.self, RunCommand.self, PsCommand.self, ShowCommand.self,
            StopCommand.self, StartCommand.self, RebootCommand.self, PauseCommand.self, ResumeCommand.self,
            RmCommand.self, LogsCommand.self, EventsCommand.self, TimelineCommand.self, ImageCommand.self,
            FlavorCommand.self, HostCommand.self, ProjectCommand.self, BuildCommand.self,
            NetworkCommand.self, SecurityGroupCommand.self, PoolCommand.self, BenchCommand.self,
        ]
    )

    /// Parse errors and help go through ArgumentParser; failures while running print
    /// `error: <one line>` and exit 1, never a stack trace.
    static func main() async {
        var command: ParsableCommand
        do {
            command = try await asyncParseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // Help, exit codes and validation errors are ArgumentParser's to print.
            if String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") { exit(withError: error) }
            Output.fail(error)
            Foundation.exit(1)
        }
    }
}
