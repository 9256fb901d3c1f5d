import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `swiftlet bench`: runs the benchmark suite (bench/run.py) against this very binary.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run the benchmarks side by side (writes bench/results/latest.json, prints a table).",
        discussion: "Needs the repository checkout (bench/ next to guest/) and root for libvirt. See bench/README.md.")

    @Flag(help: "A run under 2 minutes (fewer samples, smaller counts).") var quick = false
    @Option(help: "Comma-separated subset: cold,warm,rate,api,density.") var only: String?
    @Flag(help: "Skip the libvirt baseline.") var noLibvirt = false
    @Option(help: "The repository's guest/ directory (default: found from here).") var guestDir: String?

    func run() async throws {
        let guest = try guestDir ?? DemoEnvironment.findGuestDirectory()
        let script = URL(fileURLWithPath: guest).deletingLastPathComponent().appendingPathComponent("bench/run.py").path
        guard FileManager.default.fileExists(atPath: script) else {
            throw ValidationError("no bench/run.py next to \(guest)")
        }
        var arguments = ["/usr/bin/python3", script]
        if quick { arguments.append("--quick") }
        if let only { arguments += ["--only", only] }
        if noLibvirt { arguments.append("--no-libvirt") }
        setenv("SWIFTLET_BIN", try DemoEnvironment.executablePath(), 1)
        // Replace this process: the script's output and exit status are the command's.
        let argv = arguments.map { strdup($0) } + [nil]
        execv(arguments[0], argv)
        throw ValidationError("cannot run \(arguments[0]): errno \(errno)")
    }
}
