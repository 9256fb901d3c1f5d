import Foundation
import Glibc
import Testing

@testable import SwiftletHypervisor

/// Confined VMMs in real QEMU: their own user, seccomp, a chroot into the runtime directory, and
/// a cgroup with limits. Needs root (cgroups, the chroot) and the `swiftlet-vmm` user that
/// scripts/setup.sh makes.
@Suite(
    .serialized, .timeLimit(.minutes(3)), QEMUDriverTests.needsKernels,
    .enabled(if: getuid() == 0, "confinement needs root"))
struct QEMUConfinementTests {
    func confinedDriver(_ confinement: VMMConfinement = VMMConfinement()) -> QEMUDriver {
        QEMUDriver(
            qemuBinary: "qemu-system-x86_64", accelerator: "tcg", calibration: nil, confinement: confinement,
            logger: testLogger(), runtime: DriverRuntime(monitor: ExitMonitor()))
    }

    @Test func aConfinedVMMRunsAsItsUserInItsDirectoryAndCgroupAndCannotForkOrReachOut() async throws {
        let kernel = try await Kernels.path("hello")
        let temporary = TemporaryDirectory()
        let driver = confinedDriver()
        let user = try #require(getpwnam("swiftlet-vmm"), "scripts/setup.sh makes the swiftlet-vmm user").pointee
        let spec = pvhSpec(kernel: kernel, directory: temporary.sub("vm"))
        let (handle, _) = try await driver.spawn(spec)
        do {
            _ = try #require(
                await waitForReady(events: driver.consoleEvents(handle), pattern: nil, timeout: .seconds(30)))
            let status = try String(contentsOfFile: "/proc/\(handle.pid)/status", encoding: .utf8)
            func field(_ name: String) -> String {
                status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map {
                    $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
                } ?? ""
            }
            #expect(field("Uid").split(whereSeparator: \.isWhitespace) == Array(repeating: "\(user.pw_uid)", count: 4))
            #expect(field("Seccomp") == "2" && field("NoNewPrivs") == "1" && field("CapEff") == "0000000000000000")
            #expect(
                try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(handle.pid)/root")
                    == spec.runtimeDirectory)
            let name = QEMUDriver.controlGroup(handle.pid)
            let cgroups = try String(contentsOfFile: "/proc/\(handle.pid)/cgroup", encoding: .utf8)
            #expect(cgroups.contains("/swiftlet/\(name)"), "\(cgroups)")
            #expect(ControlGroups.memoryLimit(name) == (spec.memoryMiB + VMMConfinement().memoryOverheadMiB) << 20)
            print("confined hello: RSS \(field("VmRSS")), limit \(ControlGroups.memoryLimit(name) ?? 0) bytes")

            // A file outside its directory is out of reach (its root is the runtime directory).
            // QEMU serves one QMP client at a time: each session ends before the next call.
            let outside = "/tmp/swiftlet-outside-\(UUID().uuidString.prefix(8))"
            #expect(throws: HypervisorError.self) {
                try QMPWithDescriptors(path: handle.qmpSocketPath, timeout: .seconds(10)).execute(
                    "dump-guest-memory", arguments: ["paging": false, "protocol": "file:" + outside])
            }
            #expect(!FileManager.default.fileExists(atPath: outside))

            // Its state is saved through a descriptor the driver hands it, so saving works confined.
            let snapshot = try await driver.saveState(handle, to: temporary.sub("hello.state"), resume: true)
            #expect(snapshot.sizeBytes > 0)
            #expect(try await driver.state(handle) == .running)

            // It cannot fork: asked to run a program, seccomp ends it.
            _ = try? QMPWithDescriptors(path: handle.qmpSocketPath, timeout: .seconds(10)).execute(
                "migrate", arguments: ["uri": "exec:true"])
            let exit = await driver.waitForExit(handle)
            #expect(exit.reason.contains("signal 31"), "\(exit.reason)")
        } catch {
            await driver.destroy(handle)
            throw error
        }
        await driver.destroy(handle)
        #expect(
            !FileManager.default.fileExists(
                atPath: "/sys/fs/cgroup/memory/swiftlet/\(QEMUDriver.controlGroup(handle.pid))"))
    }

    /// A VMM that needs more memory than its limit is ended by the limit (the kernel's OOM killer
    /// within its cgroup), and nothing outside it is touched.
    @Test func aVMMOverItsMemoryLimitIsStoppedByIt() async throws {
        let kernel = try await Kernels.path("hello")
        let temporary = TemporaryDirectory()
        // No room for QEMU's own memory beside the guest's.
        let driver = confinedDriver(VMMConfinement(memoryOverheadMiB: 0))
        var spec = pvhSpec(kernel: kernel, directory: temporary.sub("vm"))
        spec.memoryMiB = 8
        do {
            let (handle, _) = try await driver.spawn(spec)
            // Bounded: a VMM the limit does not stop would otherwise be waited for forever.
            let exit = await withTaskGroup(of: VMExit?.self) { group in
                group.addTask { await driver.waitForExit(handle) }
                group.addTask {
                    try? await Task.sleep(for: .seconds(30))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            await driver.destroy(handle)
            #expect(
                exit?.reason.contains("signal 9") == true,
                "the VMM outlived its limit: \(exit?.reason ?? "still running")")
        } catch let error as HypervisorError {
            // Killed before QMP answered: the spawn fails, saying how QEMU ended.
            #expect(error.message.contains("signal 9"), "\(error)")
        }
        #expect(processes(mentioning: spec.runtimeDirectory).isEmpty)
    }
}
