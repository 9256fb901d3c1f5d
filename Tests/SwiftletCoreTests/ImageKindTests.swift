import Foundation
import Testing

@testable import SwiftletCore
@testable import SwiftletImages

/// Pure checks of the image service: a.out-kludge headers, disk and initrd magic, command-line
/// templates, launch properties and bundle paths. Real bytes and real QEMU are in the integration tests.
@Suite struct ImageKindTests {
    /// A flat binary with an a.out-kludge multiboot header at offset 4 (as `jmp; .align 4` puts it).
    static func kludge(loadEnd: UInt32 = 0x100040, entry: UInt32 = 0x100024, size: Int = 0x40) -> [UInt8] {
        var bytes = [UInt8](repeating: 0x90, count: size)
        let words: [UInt32] = [
            0x1BAD_B002, 0x0001_0000, 0 &- (0x1BAD_B002 &+ 0x0001_0000), 0x100004, 0x100000, loadEnd, loadEnd + 64,
            entry,
        ]
        for (index, word) in words.enumerated() { ImageFormatTests.put32(&bytes, 4 + index * 4, word) }
        return bytes
    }

    static func reason(_ bytes: [UInt8]) -> String? { ImageFormatTests.reason(bytes) }

    @Test func aoutKludgeIsCheckedAgainstTheFile() throws {
        #expect(try ImageFormatTests.detect(Self.kludge()) == .multiboot)
        #expect(Self.reason(Self.kludge(loadEnd: 0x200000))?.contains("load_end_addr") == true)
        #expect(Self.reason(Self.kludge(entry: 0x300000))?.contains("entry_addr") == true)
        var noKludge = Self.kludge()
        ImageFormatTests.put32(&noKludge, 8, 0)
        ImageFormatTests.put32(&noKludge, 12, 0 &- 0x1BAD_B002)
        #expect(Self.reason(noKludge)?.contains("flag bit 16") == true)
    }

    @Test func multibootELFNeedsAnEntry() {
        var elf = ImageFormatTests.elf(pvh: false, entry: 0)
        ImageFormatTests.put32(&elf, 0x200, 0x1BAD_B002)
        ImageFormatTests.put32(&elf, 0x204, 0)
        ImageFormatTests.put32(&elf, 0x208, 0 &- 0x1BAD_B002)
        #expect(Self.reason(elf)?.contains("no entry point") == true)
    }

    @Test func disksAndInitrdsByMagic() throws {
        var mbr = [UInt8](repeating: 0, count: 1024)
        mbr[510] = 0x55
        mbr[511] = 0xAA
        #expect(try ImageFormatTests.detect(mbr) == .raw)
        #expect(Self.reason(Array(mbr.prefix(700)))?.contains("512-byte sectors") == true)
        #expect(try ImageFormatTests.detect([0x51, 0x46, 0x49, 0xFB] + [UInt8](repeating: 0, count: 100)) == .qcow2)
        #expect(try ImageFormatTests.detect(Array("070701".utf8) + [UInt8](repeating: 0x30, count: 100)) == .initrd)
        #expect(try ImageFormatTests.detect([0x1F, 0x8B, 8, 0] + [UInt8](repeating: 0, count: 20)) == .initrd)
    }

    @Test func commandLineTemplates() throws {
        let words = ["name=web", "ip=10.0.0.2/24", "gw=10.0.0.1", "port=80"]
        #expect(try CommandLineTemplate("kit").render(words) == "name=web ip=10.0.0.2/24 gw=10.0.0.1 port=80")
        #expect(try CommandLineTemplate("unikraft").render(words) == "netdev.ip=10.0.0.2/24:10.0.0.1 -- port=80")
        #expect(try CommandLineTemplate("solo5").render(words) == "--ipv4=10.0.0.2/24 --ipv4-gateway=10.0.0.1 port=80")
        #expect(
            try CommandLineTemplate("{name} {addr}/{prefix} via {gw}: {args}").render(words)
                == "web 10.0.0.2/24 via 10.0.0.1: port=80")
        #expect(try CommandLineTemplate("unikraft").render(["name=a"]) == "")
        #expect(throws: SwiftletError.self) { try CommandLineTemplate("{bogus}") }
        #expect(throws: SwiftletError.self) { try CommandLineTemplate("tab\there") }
    }

    /// Some unikernels take a literal word (a Solo5 test expects `Hello_Solo5`): a template
    /// without placeholders is the command line as it is, whatever the config words.
    @Test func aFixedCommandLineIsUsedAsItIs() throws {
        let words = ["name=web", "ip=10.0.0.2/24", "port=80", "Bare_Word"]
        #expect(try CommandLineTemplate("Hello_Solo5").render(words) == "Hello_Solo5")
        #expect(try CommandLineTemplate("--solo5:quiet  Hello_Solo5").render(words) == "--solo5:quiet Hello_Solo5")
        // A bare config word is one of the app's words.
        #expect(try CommandLineTemplate("solo5").render(words) == "--ipv4=10.0.0.2/24 port=80 Bare_Word")
        #expect(try CommandLineTemplate("app {args}").render(words) == "app port=80 Bare_Word")
    }

    /// Glance's `os_command_line` is the command line, unless Swiftlet's own template is set too.
    @Test func glanceOSCommandLineIsHonoured() throws {
        let glance = try LaunchProfile(kind: .multiboot, properties: ["os_command_line": "Hello_Solo5"])
        #expect(glance.commandLine.render(["name=web"]) == "Hello_Solo5")
        let filled = try LaunchProfile(kind: .multiboot, properties: ["os_command_line": "kit {addr}"])
        #expect(filled.commandLine.render(["name=web", "ip=10.0.0.2/24"]) == "kit 10.0.0.2")
        let both = try LaunchProfile(
            kind: .multiboot, properties: ["os_command_line": "Hello_Solo5", "cmdline_template": "solo5"])
        #expect(both.commandLine == .solo5)
        do {
            _ = try LaunchProfile(kind: .pvh, properties: ["os_command_line": "a {bogus}"])
            Issue.record("an os_command_line with an unknown placeholder was accepted")
        } catch {
            #expect(error.code == "image.bad_os_command_line")
        }
    }

    @Test func launchProperties() throws {
        #expect(try LaunchProfile(kind: .qcow2, properties: ["machine_type": "q35"]).machineType == "q35")
        #expect(throws: SwiftletError.self) {
            try LaunchProfile(kind: .multiboot, properties: ["machine_type": "microvm"])
        }
        #expect(throws: SwiftletError.self) { try LaunchProfile(kind: .pvh, properties: ["min_memory_mib": "lots"]) }
        #expect(throws: SwiftletError.self) { try LaunchProfile(kind: .pvh, properties: ["initrd": "img-1"]) }
        #expect(try LaunchProfile(kind: .pvh, properties: ["min_memory_mib": "64"]).minMemoryMib == 64)
    }

    @Test func successExitStatuses() throws {
        #expect(try LaunchProfile(kind: .pvh, properties: [:]).successExitStatuses == [1])
        let batch = try LaunchProfile(kind: .multiboot, properties: ["success_exit_statuses": "0, 83"])
        #expect(batch.successExitStatuses == [0, 83])
        for bad in ["", "83,", "256", "-1", "ok", "1;83"] {
            #expect(throws: SwiftletError.self, "\(bad)") {
                try LaunchProfile(kind: .pvh, properties: ["success_exit_statuses": bad])
            }
        }
    }

    @Test func bundlePathsStayInside() throws {
        #expect(try SourceBundle.safeRelativePath("./a//b/./c.swift") == "a/b/c.swift")
        #expect(throws: SwiftletError.self) { try SourceBundle.safeRelativePath("/etc/passwd") }
        #expect(throws: SwiftletError.self) { try SourceBundle.safeRelativePath("a/../../b") }
        #expect(SourceBundle.staysInside(link: "a/b", target: "../c"))
        #expect(!SourceBundle.staysInside(link: "a/b", target: "../../c"))
        #expect(!SourceBundle.staysInside(link: "x", target: "y/../../z"))
    }

    @Test func signaturesCoverTheDigest() throws {
        let pair = ImageSignature.generateKeyPair()
        let key = SigningKey(id: "key-1", projectId: "p", name: "k", publicKey: pair.publicKey, createdAt: Date())
        let file = NSTemporaryDirectory() + "swiftlet-sign-\(UUID().uuidString.prefix(8))"
        try Data("kernel bytes".utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let (digest, signature) = try ImageSignature.sign(fileAt: file, privateKey: pair.privateKey)
        #expect(digest == ImageSignature.sha256(text: "kernel bytes"))
        #expect(try ImageSignature.verify(signature, sha256: digest, keys: [key], projectName: "p") == "key-1")
        let other = String(repeating: "cd", count: 32)
        #expect(throws: SwiftletError.self) {
            try ImageSignature.verify(signature, sha256: other, keys: [key], projectName: "p")
        }
        #expect(throws: SwiftletError.self) {
            try ImageSignature.verify(nil, sha256: digest, keys: [key], projectName: "p")
        }
    }
}
