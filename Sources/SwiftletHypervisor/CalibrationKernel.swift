/// The calibration guest, generated at run time so calibration needs no toolchain: a 32-bit ELF
/// (EM_386) of ~150 bytes carrying a PVH note, so QEMU's `-kernel` loads it on microvm.
///
/// Layout: ELF header (52 bytes) · PT_LOAD + PT_NOTE program headers (2 × 32) · the note
/// (name "Xen", type 18 = XEN_ELFNOTE_PHYS32_ENTRY, desc = entry address) · code. Everything is
/// loaded at 1 MiB. The code, entered in 32-bit protected mode, is:
///
///     mov eax, cr0          ; 0F 20 C0
///     and al, 0xFB          ; 24 FB       clear CR0.EM
///     or al, 2              ; 0C 02       set CR0.MP
///     mov cr0, eax          ; 0F 22 C0
///     mov eax, cr4          ; 0F 20 E0
///     or ax, 0x600          ; 66 0D 00 06 CR4.OSFXSR | OSXMMEXCPT
///     mov cr4, eax          ; 0F 22 E0
///     xorps xmm0, xmm0      ; 0F 57 C0
///     addps xmm0, xmm0      ; 0F 58 C0
///     mov ecx, loops        ; B9 imm32
///  1: dec ecx               ; 49
///     jnz 1b                ; 75 FD
///     mov al, 0             ; B0 00
///     mov dx, 0x501         ; 66 BA 01 05
///     out dx, al            ; EE          isa-debug-exit: QEMU exits with status 2·0+1 = 1
///  2: cli; hlt; jmp 2b      ; FA F4 EB FD
///
/// The spin loop makes the guest execute some instructions, so an accelerator that traps or
/// emulates them (a nested KVM without hardware help) measures slow, as it would for real guests.
/// The SSE instructions are there because the kit's default code uses SSE: an accelerator that
/// cannot run them (this nested KVM stops with "emulation failure") must fail calibration, not win
/// it on a loaded host and then hang every guest.
enum CalibrationKernel {
    static let loadAddress: UInt32 = 0x10_0000

    static func image(loops: UInt32 = 50_000) -> [UInt8] {
        var code: [UInt8] = [
            0x0F, 0x20, 0xC0, 0x24, 0xFB, 0x0C, 0x02, 0x0F, 0x22, 0xC0,
            0x0F, 0x20, 0xE0, 0x66, 0x0D, 0x00, 0x06, 0x0F, 0x22, 0xE0,
            0x0F, 0x57, 0xC0, 0x0F, 0x58, 0xC0,
            0xB9,
        ]
        code += littleEndian(loops)
        code += [0x49, 0x75, 0xFD, 0xB0, 0x00, 0x66, 0xBA, 0x01, 0x05, 0xEE, 0xFA, 0xF4, 0xEB, 0xFD]

        let headerSize: UInt32 = 52
        let programHeaderSize: UInt32 = 32
        let noteOffset = headerSize + 2 * programHeaderSize
        let noteSize: UInt32 = 12 + 4 + 4
        let codeOffset = noteOffset + noteSize
        let entry = loadAddress + codeOffset
        let fileSize = codeOffset + UInt32(code.count)

        var image: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 1, 1, 1] + [UInt8](repeating: 0, count: 9)
        image += littleEndian(UInt16(2))  // e_type ET_EXEC
        image += littleEndian(UInt16(3))  // e_machine EM_386
        image += littleEndian(UInt32(1))  // e_version
        image += littleEndian(entry)
        image += littleEndian(headerSize)  // e_phoff
        image += littleEndian(UInt32(0))  // e_shoff
        image += littleEndian(UInt32(0))  // e_flags
        image += littleEndian(UInt16(headerSize))
        image += littleEndian(UInt16(programHeaderSize))
        image += littleEndian(UInt16(2))  // e_phnum
        image += littleEndian(UInt16(40))  // e_shentsize
        image += littleEndian(UInt16(0))  // e_shnum
        image += littleEndian(UInt16(0))  // e_shstrndx
        // PT_LOAD: the whole file at 1 MiB, R+X.
        for field in [1, 0, loadAddress, loadAddress, fileSize, fileSize, 5, 0x1000] as [UInt32] {
            image += littleEndian(field)
        }
        // PT_NOTE: the PVH entry note.
        for field in [
            4, noteOffset, loadAddress + noteOffset, loadAddress + noteOffset, noteSize, noteSize, 4, 4,
        ] as [UInt32] {
            image += littleEndian(field)
        }
        image += littleEndian(UInt32(4)) + littleEndian(UInt32(4)) + littleEndian(UInt32(18))
        image += Array("Xen".utf8) + [0]
        image += littleEndian(entry)
        image += code
        return image
    }

    private static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}
