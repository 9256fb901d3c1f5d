import Foundation

/// Tiny kernels and disks of every image kind, assembled at test time with the toolchain's clang
/// and ld.lld. Each prints a `SWIFTLET-READY <kind> ...` line on COM1 and halts, so the kit's READY
/// detection sees it; the multiboot ones also print the command line they were given.
enum TestImages {
    static let toolchain = "/opt/swift/usr/bin"

    private static let directory: String = {
        let path = NSTemporaryDirectory() + "swiftlet-testimages-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        // Removed when the test process ends, whatever the outcome.
        atexit {
            try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "swiftlet-testimages-\(getpid())")
        }
        return path
    }()
    private static let lock = NSLock()

    /// Prints the NUL-terminated string at %esi to COM1 (no stack: multiboot gives none).
    private static func puts32(_ label: String) -> String {
        """
        \(label):
          lodsb
          test %al, %al
          jz \(label)_done
          mov $0x3f8, %dx
          out %al, %dx
          jmp \(label)
        \(label)_done:
        """
    }

    /// The protected-mode body shared by both multiboot forms: READY, the kind, `cmdline=` and the
    /// command line from the multiboot info (flag bit 2, pointer at offset 16). With `exitValue`,
    /// it then writes that value to isa-debug-exit (QEMU exits with 2V+1), as Solo5's
    /// `solo5_exit(0)` writes 41; else it halts.
    private static func multibootBody(_ kind: String, exitValue: UInt8? = nil) -> String {
        """
          mov %ebx, %edi
          mov $msg, %esi
        \(puts32("p1"))
          testl $4, (%edi)
          jz nocmd
          mov 16(%edi), %esi
        \(puts32("p2"))
        nocmd:
          mov $0x3f8, %dx
          mov $10, %al
          out %al, %dx
        \(exitValue.map { "  mov $0x501, %dx\n  mov $\($0), %al\n  out %al, %dx" } ?? "")
          cli
        halt:
          hlt
          jmp halt
        msg: .asciz "SWIFTLET-READY \(kind) cmdline="
        """
    }

    /// A 32-bit ELF with a plain multiboot header (flags 0); with `exitValue`, a run-to-completion
    /// guest that exits through isa-debug-exit after READY.
    static func multibootELF(exitValue: UInt8? = nil) throws -> String {
        let stem = exitValue.map { "multiboot-exit\($0)" } ?? "multiboot"
        return try build(stem + ".elf") { dir in
            let source = """
                .code32
                .section .text
                .globl _start
                .align 4
                .long 0x1BADB002
                .long 0x00000000
                .long -(0x1BADB002)
                _start:
                \(multibootBody("multiboot", exitValue: exitValue))
                """
            let script = """
                ENTRY(_start)
                PHDRS { text PT_LOAD FILEHDR PHDRS; }
                SECTIONS { . = 0x100000 + SIZEOF_HEADERS; .text : { *(.text) *(.data) *(.rodata*) } :text }
                """
            try assemble(source, dir: dir, name: stem)
            try write(script, to: dir + "/\(stem).ld")
            try run(
                "ld.lld",
                [
                    "-m", "elf_i386", "-static", "-nostdlib", "-T", dir + "/\(stem).ld", dir + "/\(stem).o", "-o",
                    dir + "/\(stem).elf",
                ])
            return dir + "/\(stem).elf"
        }
    }

    /// A flat binary with an a.out-kludge multiboot header (flag bit 16 and load addresses).
    static func multibootAout() throws -> String {
        try build("aout.bin") { dir in
            let source = """
                .code32
                .section .text
                .globl _start
                _start:
                  jmp real
                .align 4
                header:
                .long 0x1BADB002
                .long 0x00010000
                .long -(0x1BADB002 + 0x00010000)
                .long header
                .long _start
                .long _edata
                .long _end
                .long real
                real:
                \(multibootBody("aout"))
                .section .bss
                .space 64
                """
            let script = """
                ENTRY(_start)
                SECTIONS { . = 0x100000; .text : { *(.text) *(.data) *(.rodata*) } _edata = .; .bss : { *(.bss) } _end = .; }
                """
            try assemble(source, dir: dir, name: "aout")
            try write(script, to: dir + "/aout.ld")
            try run(
                "ld.lld",
                [
                    "-m", "elf_i386", "-static", "-nostdlib", "-T", dir + "/aout.ld", dir + "/aout.o", "-o",
                    dir + "/aout.elf",
                ])
            try run("llvm-objcopy", ["-O", "binary", dir + "/aout.elf", dir + "/aout.bin"])
            return dir + "/aout.bin"
        }
    }

    /// A bzImage (boot protocol 2.12) whose real-mode setup code prints READY and whether the
    /// loader gave it an initrd (ramdisk_size in the setup header is non-zero).
    static func bzImage() throws -> String {
        try build("bz.img") { dir in
            let source = """
                .code16
                .section .text
                .globl _start
                _start:
                .org 0x1f1
                .byte 1
                .word 0
                .long 0x20
                .word 0
                .word 0
                .word 0
                .word 0xAA55
                .org 0x200
                  jmp setup
                .ascii "HdrS"
                .word 0x020c
                .org 0x211
                .byte 0x01
                .org 0x22c
                .long 0x37ffffff
                .org 0x280
                setup:
                  mov %cs, %ax
                  mov %ax, %ds
                  mov $(msg - 0x200), %si
                  cmpl $0, 0x1c
                  je 1f
                  mov $(msgInitrd - 0x200), %si
                1: lodsb
                  test %al, %al
                  jz 2f
                  mov $0x3f8, %dx
                  out %al, %dx
                  jmp 1b
                2: cli
                3: hlt
                  jmp 3b
                msg: .asciz "SWIFTLET-READY bzimage initrd=no\\n"
                msgInitrd: .asciz "SWIFTLET-READY bzimage initrd=yes\\n"
                .org 0x400
                .fill 512, 1, 0x90
                """
            try assemble(source, dir: dir, name: "bz", target: "i386-unknown-none-elf")
            try run("llvm-objcopy", ["-O", "binary", "-j", ".text", dir + "/bz.o", dir + "/bz.img"])
            return dir + "/bz.img"
        }
    }

    /// A 1 MiB raw disk whose boot sector prints READY.
    static func rawDisk() throws -> String {
        try build("disk.raw") { dir in
            let source = """
                .code16
                .section .text
                .globl _start
                _start:
                  ljmp $0, $(0x7c00 + (start - _start))
                start:
                  xor %ax, %ax
                  mov %ax, %ds
                  mov $(0x7c00 + (msg - _start)), %si
                1: lodsb
                  test %al, %al
                  jz 2f
                  mov $0x3f8, %dx
                  out %al, %dx
                  jmp 1b
                2: cli
                3: hlt
                  jmp 3b
                msg: .asciz "SWIFTLET-READY disk\\n"
                .org 510
                .word 0xAA55
                .fill 1024*1024-512, 1, 0
                """
            try assemble(source, dir: dir, name: "disk")
            try run("llvm-objcopy", ["-O", "binary", "-j", ".text", dir + "/disk.o", dir + "/disk.raw"])
            return dir + "/disk.raw"
        }
    }

    /// The raw disk converted with `qemu-img convert -O qcow2`.
    static func qcow2Disk() throws -> String {
        let raw = try rawDisk()
        return try build("disk.qcow2") { dir in
            try run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, dir + "/disk.qcow2"])
            return dir + "/disk.qcow2"
        }
    }

    /// An empty qcow2 made with `qemu-img create`.
    static func createdQcow2() throws -> String {
        try build("created.qcow2") { dir in
            try run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", dir + "/created.qcow2", "16M"])
            return dir + "/created.qcow2"
        }
    }

    /// A qcow2 whose header claims 1 PiB, far more than its L1 table maps.
    static func lyingQcow2() throws -> String {
        let good = try qcow2Disk()
        return try build("lying.qcow2") { dir in
            var bytes = try Data(contentsOf: URL(fileURLWithPath: good))
            let size = UInt64(1) << 50
            for index in 0..<8 { bytes[24 + index] = UInt8(truncatingIfNeeded: size >> (8 * (7 - index))) }
            try bytes.write(to: URL(fileURLWithPath: dir + "/lying.qcow2"))
            return dir + "/lying.qcow2"
        }
    }

    /// A cpio (newc) initrd holding one empty file.
    static func initrd() throws -> String {
        try build("initrd.cpio") { dir in
            func entry(_ name: String, mode: Int) -> [UInt8] {
                let fields = [1, mode, 0, 0, 1, 0, 0, 0, 0, 0, 0, name.utf8.count + 1, 0]
                var bytes = Array("070701".utf8) + fields.flatMap { Array(String(format: "%08X", $0).utf8) }
                bytes += Array(name.utf8) + [0]
                while bytes.count % 4 != 0 { bytes.append(0) }
                return bytes
            }
            let archive = entry("hello", mode: 0o100644) + entry("TRAILER!!!", mode: 0)
            try Data(archive).write(to: URL(fileURLWithPath: dir + "/initrd.cpio"))
            return dir + "/initrd.cpio"
        }
    }

    /// Writes `bytes` to a fresh temp file.
    static func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = directory + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    // MARK: - Plumbing

    private static func build(_ name: String, _ make: (String) throws -> String) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if FileManager.default.fileExists(atPath: directory + "/" + name) { return directory + "/" + name }
        return try make(directory)
    }

    private static func assemble(_ source: String, dir: String, name: String, target: String = "i386-unknown-none-elf")
        throws
    {
        try write(source, to: dir + "/\(name).S")
        try run("clang", ["--target=\(target)", "-c", dir + "/\(name).S", "-o", dir + "/\(name).o"])
    }

    private static func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        let program = tool.hasPrefix("/") ? tool : toolchain + "/" + tool
        let result = try Shell.run(program, arguments)
        guard result.status == 0 else {
            throw TestFailure("\(tool) \(arguments.joined(separator: " ")) failed: \(result.output)")
        }
    }
}
