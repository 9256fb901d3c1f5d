import SwiftletCore

/// Detects how a kernel image boots from its bytes alone: a PVH ELF note, a multiboot header,
/// or a Linux bzImage setup header. Anything else is refused with the reason.
public enum KernelFormat {
    /// Bytes needed from the start of the file to decide (multiboot headers live in the first 8 KiB;
    /// ELF program headers are read through `readAt`).
    public static let headerBytes = 8192

    /// - Parameters:
    ///   - size: the file's full size, to check offsets against.
    ///   - readAt: reads up to `count` bytes at `offset` (fewer at end of file).
    public static func detect(size: Int64, readAt: (Int64, Int) throws -> [UInt8]) throws -> ImageKind {
        let head = try readAt(0, headerBytes)
        if head.starts(with: [0x7F, 0x45, 0x4C, 0x46]) {
            return try detectELF(head: head, size: size, readAt: readAt)
        }
        if isBzImage(head) { return .bzImage }
        if let kind = try detectNonELF(head: head, size: size) { return kind }
        throw refuse(describeUnknown(head))
    }

    private static func detectELF(head: [UInt8], size: Int64, readAt: (Int64, Int) throws -> [UInt8]) throws
        -> ImageKind
    {
        guard head.count >= 52 else { throw refuse("truncated ELF: the header is incomplete") }
        let is64: Bool
        switch head[4] {
        case 1: is64 = false
        case 2: is64 = true
        default: throw refuse("ELF header has an invalid class \(head[4])")
        }
        guard head[5] == 1 else { throw refuse("big-endian ELF files are not x86 kernels") }
        guard !is64 || head.count >= 64 else { throw refuse("truncated ELF: the header is incomplete") }
        let machine = le16(head, 18)
        guard machine == 3 || machine == 62 else { throw refuse("ELF machine \(machine) is not x86 or x86-64") }
        let entry = is64 ? le64(head, 24) : UInt64(le32(head, 24))
        // Read unsigned; an offset past Int64 is past the end of any file (and must not trap).
        let phoff = is64 ? Int64(exactly: le64(head, 32)) ?? -1 : Int64(le32(head, 28))
        let phentsize = Int(le16(head, is64 ? 54 : 42))
        let phnum = Int(le16(head, is64 ? 56 : 44))
        guard phnum > 0, phentsize >= (is64 ? 56 : 32) else {
            throw refuse("ELF has no program headers: nothing to load")
        }
        guard phoff > 0, phoff <= size - Int64(phnum * phentsize) else {
            throw refuse("truncated ELF: program headers end past the end of the file")
        }
        let table = try readAt(phoff, phnum * phentsize)
        guard table.count == phnum * phentsize else { throw refuse("truncated ELF: program headers are cut short") }
        var loadable = false
        for index in 0..<phnum {
            let base = index * phentsize
            let type = le32(table, base)
            let offset = is64 ? le64(table, base + 8) : UInt64(le32(table, base + 4))
            let fileSize = is64 ? le64(table, base + 32) : UInt64(le32(table, base + 16))
            // A segment with no file bytes (a TLS `.tbss`, a `.bss`) occupies nothing in the file,
            // whatever its offset says: linkers leave such offsets past the end.
            if fileSize > 0 {
                let (end, overflow) = offset.addingReportingOverflow(fileSize)
                guard !overflow, end <= UInt64(size) else {
                    throw refuse("truncated ELF: segment \(index) ends past the end of the file")
                }
            }
            if type == 1 { loadable = true }
            if type == 4, fileSize > 0, fileSize < 1 << 20,
                try hasPVHNote(try readAt(Int64(offset), Int(fileSize)))
            {
                return .pvh
            }
        }
        guard loadable else { throw refuse("ELF has no loadable segment") }
        if let header = multibootHeaderOffset(head), le32(head, header + 4) & aoutKludgeFlag == 0 {
            guard entry != 0 else { throw refuse("multiboot ELF has no entry point (e_entry is 0)") }
            guard !is64 else {
                throw refuse("a 64-bit multiboot ELF needs a.out-kludge addresses (flag bit 16)")
            }
        }
        if hasMultibootHeader(head) { return .multiboot }
        guard entry != 0 else { throw refuse("ELF has no entry point and no PVH note") }
        throw refuse("ELF has neither a PVH note (Xen ELF note 18) nor a multiboot header: no way to boot it directly")
    }

    /// Xen ELF note type 18 (XEN_ELFNOTE_PHYS32_ENTRY), name "Xen".
    private static func hasPVHNote(_ notes: [UInt8]) throws -> Bool {
        var cursor = 0
        while cursor + 12 <= notes.count {
            let nameSize = Int(le32(notes, cursor))
            let descSize = Int(le32(notes, cursor + 4))
            let type = le32(notes, cursor + 8)
            let nameStart = cursor + 12
            let descStart = nameStart + align4(nameSize)
            guard nameSize < 1 << 16, descSize < 1 << 16, descStart + descSize <= notes.count else { return false }
            if type == 18, nameSize >= 3, notes[nameStart..<nameStart + 3].elementsEqual("Xen".utf8) { return true }
            cursor = descStart + align4(descSize)
        }
        return false
    }

    /// Multiboot 1: magic 0x1BADB002, 4-byte aligned in the first 8 KiB, magic + flags + checksum == 0.
    public static func hasMultibootHeader(_ head: [UInt8]) -> Bool {
        var offset = 0
        while offset + 12 <= min(head.count, headerBytes) {
            if le32(head, offset) == 0x1BAD_B002 {
                let sum = le32(head, offset) &+ le32(head, offset + 4) &+ le32(head, offset + 8)
                if sum == 0 { return true }
            }
            offset += 4
        }
        return false
    }

    private static func isBzImage(_ head: [UInt8]) -> Bool {
        head.count >= 0x210 && head[0x1FE] == 0x55 && head[0x1FF] == 0xAA
            && head[0x202..<0x206].elementsEqual("HdrS".utf8)
    }

    private static func describeUnknown(_ head: [UInt8]) -> String {
        if head.isEmpty { return "the file is empty" }
        if hasMultibootHeader(head) {
            return "a multiboot header was found, but the file is not an ELF and the header has no a.out-kludge "
                + "load addresses (flag bit 16)"
        }
        let printable = head.prefix(512).allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || (32..<127).contains($0) }
        if printable { return "the file looks like text, not a kernel (no ELF magic, no bzImage header)" }
        let magic = head.prefix(4).map { String($0, radix: 16) }.joined(separator: " ")
        return "unknown format (first bytes: \(magic)): expected a PVH ELF, a multiboot kernel, a Linux bzImage, "
            + "an initrd or a raw/qcow2 disk"
    }

    static func refuse(_ reason: String) -> SwiftletError {
        SwiftletError(.unprocessable, "image.unsupported_format", reason)
    }

    private static func align4(_ value: Int) -> Int { (value + 3) & ~3 }

    static func le16(_ bytes: [UInt8], _ at: Int) -> UInt16 {
        guard at + 2 <= bytes.count else { return 0 }
        return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
    }

    static func le32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        guard at + 4 <= bytes.count else { return 0 }
        return (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
    }

    static func le64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
        guard at + 8 <= bytes.count else { return 0 }
        return (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) }
    }
}
