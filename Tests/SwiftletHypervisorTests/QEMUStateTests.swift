import Foundation
import Glibc
import SwiftletCore
import SwiftletPKI
import Testing

@testable import SwiftletHypervisor

/// A VM's whole state saved to a file and a new VMM started from it, in real QEMU, with the `kv`
/// guest's counter as the state that must survive.
@Suite(.serialized, .timeLimit(.minutes(3)), QEMUDriverTests.needsKernels)
struct QEMUStateTests {
    @Test func aRestoredVMGoesOnFromItsSavedStateAndBadSnapshotsAreRefused() async throws {
        let kernel = try await Kernels.path("kv")
        let temporary = TemporaryDirectory()
        let driver = tcgDriver()
        let port = try freeTCPPort()
        let ports = [PortMapping(hostPort: port, guestPort: 80)]
        var spec = pvhSpec(kernel: kernel, directory: temporary.sub("source"), ports: ports)
        spec.memoryMiB = 16
        let (source, _) = try await driver.spawn(spec)
        let snapshot: VMSnapshot
        do {
            _ = try #require(
                await waitForReady(events: driver.consoleEvents(source), pattern: nil, timeout: .seconds(30)))
            for expected in 1...3 { #expect(try increment(port) == "\(expected)") }
            snapshot = try await driver.saveState(source, to: temporary.sub("kv.state"), resume: false)
            #expect(try await driver.state(source) == .paused)
        } catch {
            await driver.destroy(source)
            throw error
        }
        await driver.destroy(source)
        #expect(snapshot.sizeBytes > 0 && snapshot.memoryMiB == 16 && snapshot.vcpus == 1)
        #expect(snapshot.machineType == "microvm" && snapshot.pausedNanoseconds > 0)
        print("kv: state \(snapshot.sizeBytes) bytes, paused \(Double(snapshot.pausedNanoseconds) / 1e6) ms to save")

        var target = spec
        target.instanceID = "restored"
        target.runtimeDirectory = temporary.sub("target")
        let started = monotonicNanoseconds()
        let (restored, _) = try await driver.restore(target, from: snapshot)
        do {
            // The counter goes on from where it was saved: the guest's memory came back whole.
            #expect(try increment(port) == "4")
            print("kv: restore → first answer \(milliseconds(started, monotonicNanoseconds())) ms")
            #expect(try await driver.state(restored) == .running)
        } catch {
            await driver.destroy(restored)
            throw error
        }
        await driver.destroy(restored)

        // Refused before anything starts: another version, another shape, a file cut short.
        var otherVersion = snapshot
        otherVersion.hypervisorVersion = "1.0.0"
        var otherShape = target
        otherShape.memoryMiB = 32
        let truncated = temporary.sub("truncated.state")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: snapshot.path))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        var cutShort = snapshot
        cutShort.path = truncated
        for (spec, bad, reason) in [
            (target, otherVersion, "written by qemu 1.0.0"), (otherShape, snapshot, "with 16 MiB"),
            (target, cutShort, "cut short"),
        ] {
            await #expect(throws: HypervisorError.self) { _ = try await driver.restore(spec, from: bad) }
            do { _ = try await driver.restore(spec, from: bad) } catch let error as HypervisorError {
                #expect(error.code == "hypervisor.invalid_spec" && error.message.contains(reason), "\(error)")
            }
        }
        // A stream QEMU cannot read (the right size, the wrong bytes): the VMM it started is gone.
        var garbage = snapshot
        garbage.path = temporary.sub("garbage.state")
        try Data(repeating: 0x5A, count: Int(snapshot.sizeBytes)).write(to: URL(fileURLWithPath: garbage.path))
        do {
            _ = try await driver.restore(target, from: garbage)
            Issue.record("a garbage stream was restored")
        } catch let error as HypervisorError {
            #expect(error.code == "hypervisor.spawn_failed", "\(error)")
        }
        #expect(processes(mentioning: target.runtimeDirectory).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: target.runtimeDirectory))
    }
}

extension QEMUStateTests {
    /// A running kv guest moves to a second VMM over TCP while it runs, and goes on there with
    /// its counter; a target that dies mid-way leaves the source to resume (rollback).
    @Test func aRunningVMMovesLiveToAnotherVMMAndASourceResumesWhenTheTargetDies() async throws {
        let kernel = try await Kernels.path("kv")
        let temporary = TemporaryDirectory()
        let driver = tcgDriver()
        var spec = pvhSpec(
            kernel: kernel, directory: temporary.sub("source"),
            ports: [PortMapping(hostPort: try freeTCPPort(), guestPort: 80)])
        spec.memoryMiB = 16
        let (source, _) = try await driver.spawn(spec)
        do {
            try await moveLive(source, spec: spec, driver: driver, directory: temporary.path)
        } catch {
            await driver.destroy(source)
            throw error
        }
        await driver.destroy(source)
    }

    private func moveLive(_ source: VMHandle, spec: VMSpec, driver: QEMUDriver, directory: String) async throws {
        let sourcePort = try #require(spec.publishedPorts.first?.hostPort)
        let targetPort = try freeTCPPort()
        _ = try #require(
            await waitForReady(events: driver.consoleEvents(source), pattern: nil, timeout: .seconds(30)))
        for expected in 1...3 { #expect(try increment(sourcePort) == "\(expected)") }

        // The slirp NIC's forward is per VMM: the target forwards another host port.
        var target = spec
        target.instanceID = "target"
        target.runtimeDirectory = directory + "/target"
        target.publishedPorts = [PortMapping(hostPort: targetPort, guestPort: 80)]
        // The stream is encrypted with certificates a cluster CA made for this move.
        let ca = try ClusterCA.loadOrCreate(directory: directory + "/ca")
        let credentials = try ca.issueMigrationCredentials(targetName: "host-target")
        let migrationPort = try freeTCPPort()
        let incoming = try await driver.prepareIncoming(
            target, address: "127.0.0.1", port: migrationPort, tls: credentials.target)
        let result: LiveMigrationResult
        do {
            result = try await driver.migrateOut(
                source, to: "127.0.0.1", port: migrationPort, settings: LiveMigrationSettings(tls: credentials.source))
            try await driver.finishIncoming(incoming, timeout: .seconds(30))
        } catch {
            await driver.destroy(incoming)
            throw error
        }
        print(
            "kv live: downtime \(result.downtimeMilliseconds) ms (QEMU), total "
                + "\(Double(result.totalNanoseconds) / 1e6) ms, \(result.transferredBytes) bytes")
        #expect(result.transferredBytes > 0)
        #expect(try await driver.state(source) == .paused)
        #expect(try await driver.state(incoming) == .running)
        #expect(try increment(targetPort) == "4")
        await driver.destroy(incoming)

        // Rollback: the source was left paused by the move; a target that takes only another CA's
        // source refuses it, and a target killed before the next move completes fails it; the
        // source resumes with its state as it was.
        try await driver.resume(source)
        #expect(try increment(sourcePort) == "4")
        let stranger = try ClusterCA.loadOrCreate(directory: directory + "/other-ca")
            .issueMigrationCredentials(targetName: "host-target")
        var warySpec = target
        warySpec.runtimeDirectory = directory + "/wary"
        let waryPort = try freeTCPPort()
        let wary = try await driver.prepareIncoming(
            warySpec, address: "127.0.0.1", port: waryPort, tls: credentials.target)
        await #expect(throws: HypervisorError.self) {
            _ = try await driver.migrateOut(
                source, to: "127.0.0.1", port: waryPort,
                settings: LiveMigrationSettings(timeout: .seconds(20), tls: stranger.source))
        }
        await driver.destroy(wary)
        try await driver.resume(source)
        #expect(try increment(sourcePort) == "5")
        let doomedPort = try freeTCPPort()
        var doomedSpec = target
        doomedSpec.runtimeDirectory = directory + "/doomed"
        let doomed = try await driver.prepareIncoming(doomedSpec, address: "127.0.0.1", port: doomedPort, tls: nil)
        await driver.destroy(doomed)
        await #expect(throws: HypervisorError.self) {
            _ = try await driver.migrateOut(
                source, to: "127.0.0.1", port: doomedPort, settings: LiveMigrationSettings(timeout: .seconds(20)))
        }
        try await driver.resume(source)
        #expect(try await driver.state(source) == .running)
        #expect(try increment(sourcePort) == "6")
    }
}

/// POST /counter through the forwarded port: the new value.
private func increment(_ port: Int) throws -> String {
    let curl = Process()
    curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    curl.arguments = ["-sf", "--max-time", "10", "-X", "POST", "http://127.0.0.1:\(port)/counter"]
    let output = Pipe()
    curl.standardOutput = output
    try curl.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    curl.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

private func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}
