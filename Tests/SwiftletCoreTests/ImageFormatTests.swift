import Foundation
import Testing

@testable import SwiftletCore
@testable import SwiftletImages

/// Detection from bytes built here. The kit's real PVH kernels are checked end to end in the
/// integration tests.
@Suite struct ImageFormatTests {
    /// A minimal ELF64 with one PT_LOAD and, optionally, a PT_NOTE holding the Xen PVH note.
    static func elf(pvh: Bool, entry: UInt64 = 0x100000, multiboot: Bool = false) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 0x400)
        bytes.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
        bytes[4] = 2  // 64-bit
        bytes[5] = 1  // little endian
        bytes[6] = 1
        put16(&bytes, 16, 2)  // ET_EXEC
        put16(&bytes, 18, 62)  // x86-64
        put64(&bytes, 24, entry)
        put64(&bytes, 32, 64)  // phoff
        put16(&bytes, 54, 56)  // phentsize
        put16(&bytes, 56, pvh ? 2 : 1)  // phnum
        // PT_LOAD at 0x200, 0x100 bytes
        put32(&bytes, 64, 1)
        put64(&bytes, 64 + 8, 0x200)
        put64(&bytes, 64 + 32, 0x100)
        if pvh {
            let note = 64 + 56
            put32(&bytes, note, 4)
            put64(&bytes, note + 8, 0x300)
            put64(&bytes, note + 32, 20)
            put32(&bytes, 0x300, 4)  // namesz "Xen\0"
            put32(&bytes, 0x304, 4)  // descsz
            put32(&bytes, 0x308, 18)  // XEN_ELFNOTE_PHYS32_ENTRY
            bytes.replaceSubrange(0x30C..<0x310, with: Array("Xen\0".utf8))
        }
        if multiboot {
            put32(&bytes, 0x200, 0x1BAD_B002)
            put32(&bytes, 0x204, 0x0001_0000)
            put32(&bytes, 0x208, 0 &- (0x1BAD_B002 &+ 0x0001_0000))
        }
        return bytes
    }

    static func put16(_ b: inout [UInt8], _ at: Int, _ v: UInt16) {
        for i in 0..<2 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
    }
    static func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
    }
    static func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) {
        for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
    }

    static func detect(_ bytes: [UInt8]) throws -> ImageKind {
        try KernelFormat.detect(size: Int64(bytes.count)) { offset, count in
            guard offset < bytes.count else { return [] }
            return Array(bytes[Int(offset)..<min(bytes.count, Int(offset) + count)])
        }
    }

    static func reason(_ bytes: [UInt8]) -> String? {
        do {
            _ = try detect(bytes)
            return nil
        } catch let error as SwiftletError {
            #expect(error.kind == .unprocessable)
            return error.message
        } catch { return "\(error)" }
    }

    /// A Unikraft 0.16 multiboot ELF was refused: its PT_TLS `.tbss` segment has no file bytes
    /// and an offset past the end of the file. Such a segment occupies nothing in the file.
    @Test func aSegmentWithNoFileBytesMayLieBeyondTheFile() throws {
        var bytes = Self.elf(pvh: false, multiboot: true)
        let tls = 64 + 56  // the second program header, after the PT_LOAD
        Self.put16(&bytes, 56, 2)  // phnum
        Self.put32(&bytes, tls, 7)  // PT_TLS
        Self.put64(&bytes, tls + 8, 0x1_2000)  // p_offset: far past the end of the 1 KiB file
        Self.put64(&bytes, tls + 32, 0)  // p_filesz
        Self.put64(&bytes, tls + 40, 0x20)  // p_memsz
        #expect(try Self.detect(bytes) == .multiboot)

        // With file bytes, the same offset is past the end of the file.
        Self.put64(&bytes, tls + 32, 0x10)
        #expect(Self.reason(bytes) == "truncated ELF: segment 1 ends past the end of the file")
        // Offsets that do not fit in a signed 64-bit number are refused, never a trap.
        Self.put64(&bytes, tls + 8, UInt64.max - 4)
        #expect(Self.reason(bytes) == "truncated ELF: segment 1 ends past the end of the file")
        Self.put64(&bytes, 32, UInt64.max)
        #expect(Self.reason(bytes) == "truncated ELF: program headers end past the end of the file")
    }

    @Test func kinds() throws {
        #expect(try Self.detect(Self.elf(pvh: true)) == .pvh)
        #expect(try Self.detect(Self.elf(pvh: false, multiboot: true)) == .multiboot)
        var bz = [UInt8](repeating: 0, count: 0x1000)
        bz[0x1FE] = 0x55
        bz[0x1FF] = 0xAA
        bz.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        #expect(try Self.detect(bz) == .bzImage)
    }

    @Test func refusals() {
        #expect(Self.reason(Array("#!/bin/sh\necho hello\n".utf8))?.contains("text") == true)
        #expect(Self.reason([])?.contains("empty") == true)
        #expect(Self.reason(Array(Self.elf(pvh: true).prefix(100)))?.contains("truncated") == true)
        #expect(Self.reason(Self.elf(pvh: false, entry: 0))?.contains("no entry point") == true)
        #expect(Self.reason(Self.elf(pvh: false))?.contains("neither a PVH note") == true)
        #expect(Self.reason([0x00, 0x01, 0x02, 0x03, 0xFF])?.contains("unknown format") == true)
    }

    @Test func blobStoreDeduplicatesAndAborts() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-blobs-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try BlobStore(root: root)
        let bytes = Self.elf(pvh: true)
        var digests: [String] = []
        for _ in 0..<2 {
            let upload = try store.beginUpload(limit: 1 << 20)
            try bytes.withUnsafeBytes { try upload.append($0) }
            digests.append(try await upload.commit { try KernelFormat.detect(path: $0) }.sha256)
        }
        #expect(digests[0] == digests[1])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/sha256") == [digests[0]])
        // Over the limit: refused, nothing left behind.
        let big = try store.beginUpload(limit: 10)
        #expect(throws: SwiftletError.self) { try bytes.withUnsafeBytes { try big.append($0) } }
        // A text file: refused at commit, nothing stored.
        let text = try store.beginUpload(limit: 1 << 20)
        try Array("hello".utf8).withUnsafeBytes { try text.append($0) }
        await #expect(throws: SwiftletError.self) { _ = try await text.commit { try KernelFormat.detect(path: $0) } }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/tmp").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/sha256").count == 1)
    }
}
