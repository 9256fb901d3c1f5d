// Kit behaviour seen from outside, on real QEMU: READY, config errors, exit
// statuses, idle cost, timers, heap reuse, reproducible and --no-sse builds.

import Foundation
import Testing

@Suite(.serialized)
struct BootTests {
    /// Every example boots (with a NIC on QEMU user networking), prints a
    /// well-formed READY line and powers off cleanly on `poweroff`.
    @Test(arguments: GuestPaths.exampleNames())
    func exampleBootsToReadyAndPowersOff(example: String) throws {
        let kernel = try KernelBuilds.shared.kernel(GuestPaths.example(example))
        let guest = try QEMUGuest(
            kernel: kernel, append: "name=test-\(example)" + GuestPaths.requiredWords(example), network: true)
        defer { guest.stop() }
        let ready = try #require(guest.waitForReady(), "no READY line; console:\n\(guest.console)")
        #expect(ready.app == example)
        #expect(ready.micros > 0 && ready.micros < 5_000_000)
        guest.send("poweroff")
        #expect(guest.waitForExit(timeout: 20) == 1, "console:\n\(guest.console)")
    }

    /// Virtio-mmio interrupts reach the network stack on each microvm
    /// wiring: second IOAPIC (default), GSI 16+ (ioapic2=off), GSI 5+
    /// (acpi=off, where QEMU also appends virtio_mmio.device= words).
    @Test(arguments: ["", "ioapic2=off", "acpi=off"])
    func deviceInterruptsArriveOnEveryMicrovmWiring(machineOptions: String) throws {
        try #require(GuestPaths.exampleNames().contains("http"), "needs guest/examples/http")
        let port = try freeLocalPort()
        let guest = try QEMUGuest(
            kernel: try KernelBuilds.shared.kernel(GuestPaths.example("http")), append: "name=irq",
            network: true, machineOptions: machineOptions, forwardTCPPort: port)
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        let response = tcpExchange(port: port, request: "GET / HTTP/1.0\r\nHost: irq\r\n\r\n", timeout: 20)
        #expect(response?.hasPrefix("HTTP/1.") == true, "response: \(response ?? "none"); console:\n\(guest.console)")
    }

    /// The same PVH ELF boots on `-M pc` — SeaBIOS then QEMU's PVH option
    /// ROM, which leaves the memory map in page 0 — as libvirt (which cannot
    /// describe microvm) boots it: READY, then a clean poweroff (status 1).
    @Test(arguments: ["qemu64", "max"])
    func helloBootsOnThePCMachine(cpu: String) throws {
        let guest = try PCGuest(kernel: try KernelBuilds.shared.kernel(GuestPaths.example("hello")), cpu: cpu)
        defer { guest.stop() }
        #expect(guest.waitFor("SWIFTLET-READY hello ", timeout: 60), "console:\n\(guest.console)")
        guest.send("poweroff")
        #expect(guest.waitForExit(timeout: 20) == 1, "console:\n\(guest.console)")
        #expect(guest.console.contains("swiftlet: poweroff\n"))
    }

    /// On pc too, page 0 is unmapped once the kit has copied the boot
    /// information out of it: a null read is a page fault (status 9).
    @Test func nullPointerReadFaultsOnThePCMachine() throws {
        let guest = try PCGuest(kernel: try KernelBuilds.shared.kernel(GuestPaths.fixture("kitcheck")), cpu: "qemu64")
        defer { guest.stop() }
        #expect(guest.waitFor("SWIFTLET-READY kitcheck ", timeout: 60), "console:\n\(guest.console)")
        guest.send("null")
        #expect(guest.waitForExit(timeout: 20) == 9, "console:\n\(guest.console)")
        #expect(guest.console.contains("cr2=0x0000000000000000"), "console:\n\(guest.console)")
    }

    @Test func floorKernelPrintsItsLineAndExits() throws {
        let guest = try QEMUGuest(kernel: try KernelBuilds.shared.kernel(nil))
        defer { guest.stop() }
        #expect(guest.waitForExit(timeout: 20) == 1)
        #expect(guest.console.contains("SWIFTLET-FLOOR\n"))
    }

    static let badConfigs: [(app: String, append: String, message: String)] = [
        ("hello", "name=x color=blue", "swiftlet: bad config: color: unknown key"),
        ("hello", "name", "swiftlet: bad config: name: expected key=value"),
        ("hello", "name=a name=b", "swiftlet: bad config: name: given twice"),
        ("kitcheck", "ip=10.1.2.300/24", "swiftlet: bad config: ip: expected a.b.c.d/prefix"),
        ("kitcheck", "ip=10.1.2.3", "swiftlet: bad config: ip: expected a.b.c.d/prefix"),
        ("kitcheck", "gw=10.1.2", "swiftlet: bad config: gw: expected a.b.c.d"),
        ("kitcheck", "port=70000", "swiftlet: bad config: port: not a port"),
        ("kitcheck", "port=", "swiftlet: bad config: port: empty value"),
        ("kitcheck", "count=101", "swiftlet: bad config: count: not an integer in 1...100"),
    ]

    /// Bad config prints one clear line and exits with status 5 at once.
    @Test(arguments: badConfigs.indices)
    func badConfigExitsWithStatusFive(index: Int) throws {
        let (app, append, message) = Self.badConfigs[index]
        let source = app == "hello" ? GuestPaths.example("hello") : GuestPaths.fixture(app)
        let guest = try QEMUGuest(kernel: try KernelBuilds.shared.kernel(source), append: append)
        defer { guest.stop() }
        let started = Date()
        #expect(guest.waitForExit(timeout: 20) == 5, "console:\n\(guest.console)")
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(guest.console.split(separator: "\n").contains { $0.hasPrefix(message) }, "console:\n\(guest.console)")
        #expect(!guest.console.contains("SWIFTLET-READY"))
    }

    @Test func validConfigIsParsed() throws {
        let kernel = try KernelBuilds.shared.kernel(GuestPaths.fixture("kitcheck"))
        let guest = try QEMUGuest(kernel: kernel, append: "ip=10.1.2.3/24 gw=10.1.2.1 port=8080 count=42")
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        guest.send("config")
        // 10.1.2.3 = 0x0a010203, 10.1.2.1 = 0x0a010201
        #expect(
            guest.waitFor("kitcheck: ip=167838211/24 gw=167838209 port=8080 count=42\n", timeout: 20),
            "console:\n\(guest.console)")
    }

    @Test func poweroffOnTheConsoleExitsWithStatusOne() throws {
        let guest = try QEMUGuest(
            kernel: try KernelBuilds.shared.kernel(GuestPaths.example("hello")), append: "name=stop")
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        guest.send("poweroff")
        #expect(guest.waitForExit(timeout: 20) == 1)
        #expect(guest.console.contains("swiftlet: poweroff"))
    }

    /// An idle guest sleeps in HLT: QEMU uses < 0.1 % of a core over 10 s.
    @Test func idleHelloUsesAlmostNoCPU() throws {
        let guest = try QEMUGuest(
            kernel: try KernelBuilds.shared.kernel(GuestPaths.example("hello")), append: "name=idle")
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        Thread.sleep(forTimeInterval: 0.5)  // let QEMU finish its own start-up work
        let before = try guest.cpuTicks()
        let started = Date()
        Thread.sleep(forTimeInterval: 10)
        let ticks = try guest.cpuTicks() - before
        let seconds = Date().timeIntervalSince(started)
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        let share = Double(ticks) / ticksPerSecond / seconds
        print(
            "idle hello: \(ticks) ticks of CPU in \(String(format: "%.1f", seconds)) s = \(String(format: "%.3f", share * 100)) % of a core"
        )
        #expect(share < 0.001)
        #expect(guest.process.isRunning)
    }

    @Test func fatalErrorExitsWithPanicStatus() throws {
        try expectCrash(command: "fatal", status: 7, message: "swiftlet: panic: Swift runtime trap")
    }

    @Test func integerOverflowExitsWithPanicStatus() throws {
        try expectCrash(command: "overflow", status: 7, message: "swiftlet: panic: Swift runtime trap")
    }

    @Test func pageFaultPrintsRegistersAndExitsWithStatusNine() throws {
        let console = try expectCrash(command: "fault", status: 9, message: "swiftlet: CPU exception vector=14")
        #expect(console.contains("cr2=0x0000001000000000"))
        for register in ["rip=", "rsp=", "rax=", "r15="] { #expect(console.contains(register)) }
    }

    @Test func nullPointerReadIsAPageFault() throws {
        let console = try expectCrash(command: "null", status: 9, message: "swiftlet: CPU exception vector=14")
        #expect(console.contains("cr2=0x0000000000000000"))
    }

    /// The page under the stack is unmapped: overflow faults instead of
    /// silently overwriting the kit's globals.
    @Test func stackOverflowHitsTheGuardPage() throws {
        let console = try expectCrash(command: "recurse", status: 9, message: "swiftlet: CPU exception vector=14")
        #expect(console.contains("swiftlet: stack overflow"))
    }

    @discardableResult
    private func expectCrash(command: String, status: Int32, message: String) throws -> String {
        let guest = try QEMUGuest(kernel: try KernelBuilds.shared.kernel(GuestPaths.fixture("kitcheck")))
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        guest.send(command)
        #expect(guest.waitForExit(timeout: 20) == status, "console:\n\(guest.console)")
        #expect(guest.console.contains(message), "console:\n\(guest.console)")
        return guest.console
    }

    /// The one-shot timer wakes the run loop at the deadline the app returned.
    @Test func timerDeadlineWakesTheRunLoop() throws {
        let guest = try QEMUGuest(kernel: try KernelBuilds.shared.kernel(GuestPaths.fixture("kitcheck")))
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        let sent = Date()
        guest.send("sleep 300000")
        let line = try #require(guest.waitForLines(startingWith: "kitcheck: slept ", timeout: 20)?.first)
        let wall = Date().timeIntervalSince(sent)
        let slept = UInt64(line.split(separator: " ").dropFirst(2).first ?? "") ?? 0
        #expect(slept >= 300_000 && slept < 400_000, "guest slept \(slept) µs")
        #expect(wall >= 0.28 && wall < 5, "host saw \(wall) s")
    }

    /// Freed memory is reused: repeated churn leaves the heap where it was.
    @Test func heapReturnsToItsBaselineAfterChurn() throws {
        let guest = try QEMUGuest(kernel: try KernelBuilds.shared.kernel(GuestPaths.fixture("kitcheck")))
        defer { guest.stop() }
        _ = try #require(guest.waitForReady(), "console:\n\(guest.console)")
        var lines: [String] = []
        for round in 1...3 {
            guest.send("churn")
            lines = try #require(
                guest.waitForLines(startingWith: "kitcheck: churn ", count: round, timeout: 60),
                "console:\n\(guest.console)")
        }
        let results = lines.map { line in
            var values: [String: Int] = [:]
            for field in line.split(separator: " ").dropFirst(2) {
                let pair = field.split(separator: "=")
                if pair.count == 2 { values[String(pair[0])] = Int(pair[1]) }
            }
            return (
                before: values["before"] ?? -1, after: values["after"] ?? -1,
                largest: values["largest-free"] ?? -1, total: values["total"] ?? -1
            )
        }
        try #require(results.count == 3)
        #expect(results[0].after == results[2].after, "\(results)")
        #expect(results[2].after <= results[0].before + 1024, "\(results)")
        // No fragmentation left behind: nearly all of the heap is one free block again.
        #expect(results[2].largest >= results[2].total - results[2].after - 4096, "\(results)")
    }

    /// Same inputs, same bytes — also from a copy of the tree at another
    /// path (a fresh CI clone); every example fits in 256 KiB.
    @Test func buildsAreReproducibleAndSmall() throws {
        let first = try KernelBuilds.shared.freshBuild(GuestPaths.example("hello"))
        let second = try KernelBuilds.shared.freshBuild(GuestPaths.example("hello"))
        let firstBytes = try Data(contentsOf: first)
        #expect(firstBytes == (try Data(contentsOf: second)))

        let copy = KernelBuilds.shared.directory.appendingPathComponent("elsewhere/src/guest")
        try FileManager.default.createDirectory(
            at: copy.appendingPathComponent("examples"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent().deletingLastPathComponent()) }
        for item in ["build.sh", "kit", "examples/hello"] {
            try FileManager.default.copyItem(
                at: GuestPaths.guest.appendingPathComponent(item), to: copy.appendingPathComponent(item))
        }
        let copied = copy.appendingPathComponent("hello.elf")
        let build = try runCommand(
            copy.appendingPathComponent("build.sh").path,
            [copy.appendingPathComponent("examples/hello").path, "-o", copied.path])
        try #require(build.status == 0, "\(build.output)")
        #expect(firstBytes == (try Data(contentsOf: copied)), "a build from another path differs")
        for example in GuestPaths.exampleNames() {
            let size = try Data(contentsOf: try KernelBuilds.shared.kernel(GuestPaths.example(example))).count
            print("kernel size \(example): \(size) bytes")
            #expect(size <= 256 * 1024, "\(example) is \(size) bytes")
        }
    }

    /// Where /dev/kvm is usable, the --no-sse build boots and powers off
    /// under KVM too (on an emulating nested KVM the SSE build cannot).
    @Test(.enabled(if: FileManager.default.isWritableFile(atPath: "/dev/kvm"), "needs /dev/kvm"))
    func noSSEBuildRunsUnderKVM() throws {
        let kernel = try KernelBuilds.shared.kernel(GuestPaths.example("hello"), noSSE: true)
        let guest = try QEMUGuest(kernel: kernel, append: "name=kvm", accelerator: "kvm")
        defer { guest.stop() }
        #expect(guest.waitForReady()?.app == "hello", "console:\n\(guest.console)")
        guest.send("poweroff")
        #expect(guest.waitForExit(timeout: 30) == 1, "console:\n\(guest.console)")
    }

    /// Every example's --no-sse build has no SSE/MMX/x87 instruction, boots
    /// under TCG and powers off.
    @Test(arguments: GuestPaths.exampleNames())
    func noSSEBuildBoots(example: String) throws {
        let kernel = try KernelBuilds.shared.kernel(GuestPaths.example(example), noSSE: true)
        let disassembly = try runCommand("/opt/swift/usr/bin/llvm-objdump", ["-d", kernel.path]).output
        let vectorLines = disassembly.split(separator: "\n").filter { line in
            ["%xmm", "%ymm", "%mm", "fxsave", "fxrstor", "fninit"].contains { line.contains($0) }
        }
        #expect(vectorLines.isEmpty, "\(vectorLines.prefix(5))")
        let guest = try QEMUGuest(
            kernel: kernel, append: "name=nosse" + GuestPaths.requiredWords(example), network: true)
        defer { guest.stop() }
        #expect(guest.waitForReady()?.app == example, "console:\n\(guest.console)")
        guest.send("poweroff")
        #expect(guest.waitForExit(timeout: 20) == 1, "console:\n\(guest.console)")
    }
}

/// QEMU `-M pc` (the harness's QEMUGuest runs microvm only) with the serial
/// console in a temporary file; stop() ends QEMU and removes the file.
private final class PCGuest {
    let process = Process()
    private let input = Pipe()
    private let consoleFile: URL

    init(kernel: URL, cpu: String) throws {
        consoleFile = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-pc-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: consoleFile.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: QEMUGuest.qemu)
        process.arguments = [
            "-M", "pc", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", "-cpu", cpu,
            "-m", "16M", "-kernel", kernel.path, "-append", "name=pc", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0x501", "-no-reboot",
        ]
        process.standardInput = input
        process.standardOutput = try FileHandle(forWritingTo: consoleFile)
        process.standardError = process.standardOutput
        do { try process.run() } catch {
            try? FileManager.default.removeItem(at: consoleFile)
            throw error
        }
    }

    var console: String { (try? String(contentsOf: consoleFile, encoding: .utf8)) ?? "" }

    func waitFor(_ text: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if console.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return console.contains(text)
    }

    func send(_ line: String) {
        try? input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    /// QEMU's exit status, or nil if it is still running after `timeout`.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        guard !process.isRunning else { return nil }
        process.waitUntilExit()
        return process.terminationReason == .exit ? process.terminationStatus : nil
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(2)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? input.fileHandleForWriting.close()
        try? FileManager.default.removeItem(at: consoleFile)
    }
}
