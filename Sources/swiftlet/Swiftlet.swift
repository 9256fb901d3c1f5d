import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
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
            ServerCommand.self, AgentCommand.self, DemoCommand.self, RunCommand.self, PsCommand.self, ShowCommand.self,
            StopCommand.self, StartCommand.self, RebootCommand.self, PauseCommand.self, ResumeCommand.self,
            RmCommand.self, LogsCommand.self, EventsCommand.self, TimelineCommand.self, ImageCommand.self,
            FlavorCommand.self, HostCommand.self, ProjectCommand.self, BuildCommand.self,
            NetworkCommand.self, SecurityGroupCommand.self, ServerGroupCommand.self, PoolCommand.self,
            BenchCommand.self, AgentWatchdogCommand.self, AdminCommand.self, TopCommand.self, UserCommand.self,
            OpenRCCommand.self, TokenCommand.self, AuditCommand.self, MigrateCommand.self, MigrationsCommand.self,
            SnapshotCommand.self, SnapshotsCommand.self,
        ]
    )

    /// Parse errors and help go through ArgumentParser; failures while running print
    /// `error: <one line>` and exit 1, never a stack trace.
    static func main() async {
        if CommandLine.arguments.dropFirst().first == ServerCommand.configuration.commandName {
            runTasksOnEventLoops()
        }
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

    /// The server's tasks (every request handler) run on NIO's event loops instead of a second
    /// pool of threads, so a request no longer hops to another thread and back. With 1,000
    /// instances, `GET /v1/instances` under wrk -c64 went from p99 7.5–18.2 ms (median 8.5) to
    /// 6.4–9.6 ms (median 7.6) and from ~27k to ~29k req/s (10 alternated runs each). Must run
    /// before any task is enqueued, hence before parsing.
    private static func runTasksOnEventLoops() {
        if !NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() {
            FileHandle.standardError.write(Data("warning: tasks stay on the default executor\n".utf8))
        }
    }
}
