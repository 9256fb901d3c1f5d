import Foundation
import SwiftletCore

/// Kinds recognised beside ELF and bzImage: multiboot a.out-kludge kernels, disk images (raw boot
/// sector, qcow2) and initrds. Pure byte checks; disks are validated further by `DiskImage`.
extension KernelFormat {
    /// Multiboot flag bit 16: the header carries its own load addresses (a.out kludge).
    static let aoutKludgeFlag: UInt32 = 1 << 16

    /// Decides the kinds that are not ELF: returns nil when none matches.
    static func detectNonELF(head: [UInt8], size: Int64) throws -> ImageKind? {
        if let header = multibootHeaderOffset(head), le32(head, header + 4) & aoutKludgeFlag != 0 {
            try validateAoutKludge(head: head, header: header, size: size)
            return .multiboot
        }
        if head.starts(with: [0x51, 0x46, 0x49, 0xFB]) { return .qcow2 }
        if isInitrd(head) { return .initrd }
        if head.count >= 512, head[510] == 0x55, head[511] == 0xAA {
            guard size % 512 == 0 else {
                throw refuse("a boot sector was found, but a raw disk must be a whole number of 512-byte sectors")
            }
            return .raw
        }
        return nil
    }

    /// The offset of a valid multiboot 1 header (magic + flags + checksum == 0) in the first 8 KiB.
    static func multibootHeaderOffset(_ head: [UInt8]) -> Int? {
        var offset = 0
        while offset + 12 <= min(head.count, headerBytes) {
            if le32(head, offset) == 0x1BAD_B002,
                le32(head, offset) &+ le32(head, offset + 4) &+ le32(head, offset + 8) == 0
            {
                return offset
            }
            offset += 4
        }
        return nil
    }

    /// The kludge addresses must describe a load image that lies inside the file and an entry
    /// inside what is loaded, as QEMU's and GRUB's multiboot loaders assume.
    private static func validateAoutKludge(head: [UInt8], header: Int, size: Int64) throws {
        guard header + 32 <= head.count else {
            throw refuse("truncated multiboot header: the a.out-kludge addresses are missing")
        }
        let headerAddr = Int64(le32(head, header + 12))
        let loadAddr = Int64(le32(head, header + 16))
        let loadEnd = Int64(le32(head, header + 20))
        let bssEnd = Int64(le32(head, header + 24))
        let entry = Int64(le32(head, header + 28))
        guard headerAddr >= loadAddr, headerAddr - loadAddr <= Int64(header) else {
            throw refuse(
                "multiboot a.out-kludge header_addr 0x\(hex(headerAddr)) is not inside the load image starting at 0x\(hex(loadAddr))"
            )
        }
        let fileOffset = Int64(header) - (headerAddr - loadAddr)
        let loadSize = loadEnd == 0 ? size - fileOffset : loadEnd - loadAddr
        guard loadSize > 0, fileOffset + loadSize <= size else {
            throw refuse("multiboot a.out-kludge load_end_addr 0x\(hex(loadEnd)) is past the end of the file")
        }
        let end = max(loadAddr + loadSize, bssEnd)
        guard bssEnd == 0 || bssEnd >= loadAddr + loadSize else {
            throw refuse("multiboot a.out-kludge bss_end_addr 0x\(hex(bssEnd)) is below load_end_addr")
        }
        guard entry >= loadAddr, entry < end else {
            throw refuse("multiboot a.out-kludge entry_addr 0x\(hex(entry)) is outside the loaded image")
        }
    }

    /// cpio newc/crc, or a compressed archive (gzip, xz, zstd, lz4): what Linux accepts as initrd.
    private static func isInitrd(_ head: [UInt8]) -> Bool {
        head.starts(with: Array("070701".utf8)) || head.starts(with: Array("070702".utf8))
            || head.starts(with: [0x1F, 0x8B]) || head.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A])
            || head.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) || head.starts(with: [0x02, 0x21, 0x4C, 0x18])
    }

    private static func hex(_ value: Int64) -> String { String(value, radix: 16) }
}

/// Disk images are opened by QEMU's block layer, so it is QEMU's `qemu-img` that validates them:
/// a header that lies (sizes, tables past the end) fails to open and the upload is refused.
public enum DiskImage {
    /// Largest virtual disk accepted: a unikernel disk is small; a huge one is a mistake or an attack.
    public static let maxVirtualSize: Int64 = 64 << 30

    public struct Info: Sendable, Equatable {
        public var format: String
        public var virtualSize: Int64
    }

    public static func validate(path: String, kind: ImageKind) throws -> Info {
        let format = kind == .qcow2 ? "qcow2" : "raw"
        guard let tool = qemuImgPath() else {
            throw SwiftletError(
                .unavailable, "image.qemu_img_missing", "qemu-img is not installed: cannot validate disk images")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = ["info", "--output=json", "-f", format, path]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch {
            throw SwiftletError(.internal, "image.qemu_img_failed", "cannot run qemu-img: \(error)")
        }
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw refuse("\(format) image does not open: \(message.replacingOccurrences(of: path, with: "<upload>"))")
        }
        guard let info = try? JSONSerialization.jsonObject(with: stdout) as? [String: Any],
            let virtualSize = (info["virtual-size"] as? NSNumber)?.int64Value
        else { throw SwiftletError(.internal, "image.qemu_img_failed", "qemu-img info gave no virtual size") }
        // A backing file or an external data file would make QEMU read other host files.
        if info["backing-filename"] != nil || info["full-backing-filename"] != nil {
            throw refuse("qcow2 images with a backing file are not accepted (it would point at a file on the host)")
        }
        if let specific = info["format-specific"] as? [String: Any], let data = specific["data"] as? [String: Any] {
            if data["data-file"] != nil { throw refuse("qcow2 images with an external data file are not accepted") }
            if (data["corrupt"] as? Bool) == true { throw refuse("the qcow2 image is marked corrupt") }
        }
        guard virtualSize > 0, virtualSize <= maxVirtualSize else {
            throw refuse("the disk's virtual size \(virtualSize) bytes is over the limit of \(maxVirtualSize) bytes")
        }
        return Info(format: format, virtualSize: virtualSize)
    }

    static func qemuImgPath() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates =
            path.split(separator: ":").map { "\($0)/qemu-img" } + ["/usr/bin/qemu-img", "/usr/local/bin/qemu-img"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    private static func refuse(_ reason: String) -> SwiftletError {
        SwiftletError(.unprocessable, "image.unsupported_format", reason)
    }
}
