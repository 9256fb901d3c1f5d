// Interrupt and exception handling: LAPIC, IOAPIC routing, the Swift side of
// the trap stubs in entry.S.
//
// Vectors: 0-31 CPU exceptions, 32 LAPIC timer, 33 virtio-mmio devices
// (level-triggered, through Interrupts.deviceHandler), 34 COM1 receive,
// 47 LAPIC spurious.
//
// microvm wiring (QEMU hw/i386/microvm.c): COM1 is GSI 4. Virtio-mmio slot n
// (0xfeb00000 + 512 n) is pin n of the second IOAPIC (GSI 24 + n, 24 slots)
// when microvm has one (the default with ACPI); otherwise GSI 16 + n with
// ACPI, GSI 5 + n without (8 slots). Only slots holding a device are routed,
// so no unrelated level-triggered line can storm the device vector.

public enum Interrupts {
    static let timerVector = 32
    static let deviceVector = 33
    static let serialVector = 34
    static let spuriousVector = 47

    /// Set by the network stack: called in interrupt context for every
    /// virtio-mmio interrupt. It must acknowledge the device (the line is
    /// level-triggered), must not allocate, and should only note work for
    /// the next poll. The kit sends the EOI after it returns.
    public nonisolated(unsafe) static var deviceHandler: (@convention(c) () -> Void)? = nil

    static let firstIOAPIC: UInt = 0xFEC0_0000
    static let secondIOAPIC: UInt = 0xFEC1_0000

    static let virtioBase: UInt = 0xFEB0_0000
    static let virtioSlotSize: UInt = 512

    /// `hasACPI`: the loader passed an RSDP (microvm's acpi=on).
    static func initialize(hasACPI: Bool) {
        // The legacy 8259s would deliver their own vectors: mask them all.
        Port.write8(0x21, 0xFF)
        Port.write8(0xA1, 0xFF)
        LocalAPIC.enable()
        let destination = LocalAPIC.id
        // IOAPIC pins come out of reset masked; only the kit's pins are unmasked.
        IOAPIC.route(firstIOAPIC, pin: 4, vector: serialVector, levelTriggered: false, destination: destination)
        let secondPresent = IOAPIC.isPresent(secondIOAPIC)
        let slots = secondPresent ? IOAPIC.pinCount(secondIOAPIC) : 8
        for slot in 0..<slots where hasVirtioDevice(slot: slot) {
            if secondPresent {
                IOAPIC.route(
                    secondIOAPIC, pin: slot, vector: deviceVector, levelTriggered: true, destination: destination)
            } else {
                IOAPIC.route(
                    firstIOAPIC, pin: (hasACPI ? 16 : 5) + slot, vector: deviceVector,
                    levelTriggered: true, destination: destination)
            }
        }
        kit_interrupts_enable()
    }

    /// A transport with magic "virt" and a non-zero device ID.
    static func hasVirtioDevice(slot: Int) -> Bool {
        let base = virtioBase + UInt(slot) * virtioSlotSize
        return MMIO.read32(address: base) == 0x7472_6976 && MMIO.read32(address: base + 8) != 0
    }
}

// Trap frame offsets (in 8-byte words) as pushed by kit_trap_common.
private enum Frame {
    static let names: StaticString = "raxrbxrcxrdxrsirdirbpr8 r9 r10r11r12r13r14r15"
    static let vector = 15, error = 16, rip = 17, cs = 18, rflags = 19, rsp = 20
}

@_cdecl("kit_trap")
func kitTrap(_ frame: UnsafeMutablePointer<UInt64>) {
    let vector = Int(frame[Frame.vector])
    switch vector {
    case Interrupts.timerVector:
        LocalAPIC.endOfInterrupt()
    case Interrupts.deviceVector:
        Interrupts.deviceHandler?()
        LocalAPIC.endOfInterrupt()
    case Interrupts.serialVector:
        Console.handleInterrupt()
        LocalAPIC.endOfInterrupt()
    case Interrupts.spuriousVector:
        break  // no EOI for spurious interrupts
    case 6 where isSwiftTrap(rip: frame[Frame.rip]):
        // ud2: what Swift emits for fatalError, overflow, bounds and nil checks.
        Console.writeStatic("\nswiftlet: panic: Swift runtime trap (fatalError, overflow, bounds or nil check) at rip=")
        Console.writeHex(frame[Frame.rip])
        Console.writeStatic("\n")
        Kit.exit(status: .panic)
    case 0..<32:
        reportException(frame, vector: vector)
        Kit.exit(status: .cpuException)
    default:
        Console.writeStatic("swiftlet: unexpected interrupt vector ")
        Console.writeDecimal(UInt64(vector))
        Console.writeStatic("\n")
        LocalAPIC.endOfInterrupt()
    }
}

private func isSwiftTrap(rip: UInt64) -> Bool {
    guard rip >= 0x10_0000, rip < 0x1_0000_0000 else { return false }
    let code = UnsafePointer<UInt8>(bitPattern: UInt(rip)).unsafelyUnwrapped
    return code[0] == 0x0F && code[1] == 0x0B
}

private func reportException(_ frame: UnsafeMutablePointer<UInt64>, vector: Int) {
    let guardPage = UInt64(kit_stack_bottom()) - 4096
    if vector == 14 && kit_read_cr2() >= guardPage && kit_read_cr2() < guardPage + 4096 {
        Console.writeStatic("\nswiftlet: stack overflow (hit the guard page under the 64 KiB stack)")
    }
    Console.writeStatic("\nswiftlet: CPU exception vector=")
    Console.writeDecimal(UInt64(vector))
    Console.writeStatic(" error=")
    Console.writeHex(frame[Frame.error])
    Console.writeStatic(" rip=")
    Console.writeHex(frame[Frame.rip])
    Console.writeStatic(" rsp=")
    Console.writeHex(frame[Frame.rsp])
    Console.writeStatic(" cr2=")
    Console.writeHex(kit_read_cr2())
    Console.writeStatic(" rflags=")
    Console.writeHex(frame[Frame.rflags])
    Frame.names.withUTF8Buffer { names in
        for register in 0..<15 {
            Console.writeStatic(register % 4 == 0 ? "\n " : " ")
            for index in register * 3..<register * 3 + 3 where names[index] != 0x20 {
                Console.write(byte: names[index])
            }
            Console.writeStatic("=")
            Console.writeHex(frame[register])
        }
    }
    Console.writeStatic("\n")
}

/// The local APIC (xAPIC, memory-mapped at its architectural address).
enum LocalAPIC {
    static let base: UInt = 0xFEE0_0000
    static let idRegister = 0x20, eoi = 0xB0, spurious = 0xF0, taskPriority = 0x80, lint0LVT = 0x350
    static let timerLVT = 0x320, timerInitialCount = 0x380, timerCurrentCount = 0x390, timerDivide = 0x3E0

    static func read(_ register: Int) -> UInt32 { MMIO.read32(address: base + UInt(register)) }
    static func write(_ register: Int, _ value: UInt32) { MMIO.write32(address: base + UInt(register), value) }

    static func enable() {
        let apicBaseMSR: UInt32 = 0x1B
        kit_wrmsr(apicBaseMSR, kit_rdmsr(apicBaseMSR) | 1 << 11)
        write(taskPriority, 0)
        write(spurious, 1 << 8 | UInt32(Interrupts.spuriousVector))
        // QEMU starts the boot CPU's LINT0 as ExtINT (the 8259s' virtual
        // wire): a stray PIC interrupt would arrive at a vector the BIOS chose
        // (-M pc runs SeaBIOS first: IRQ0 at 8, the double-fault vector).
        write(lint0LVT, 1 << 16)
    }

    static var id: UInt8 { UInt8(truncatingIfNeeded: read(idRegister) >> 24) }

    static func endOfInterrupt() { write(eoi, 0) }
}

/// I/O APICs: redirection entries at register 0x10 + 2 * pin.
enum IOAPIC {
    static func read(_ base: UInt, _ register: UInt32) -> UInt32 {
        MMIO.write32(address: base, register)
        return MMIO.read32(address: base + 0x10)
    }
    static func write(_ base: UInt, _ register: UInt32, _ value: UInt32) {
        MMIO.write32(address: base, register)
        MMIO.write32(address: base + 0x10, value)
    }
    static func isPresent(_ base: UInt) -> Bool {
        let version = read(base, 1)
        return version != 0xFFFF_FFFF && version != 0
    }
    static func pinCount(_ base: UInt) -> Int { Int((read(base, 1) >> 16) & 0xFF) + 1 }

    /// Fixed delivery, physical destination, active high.
    static func route(_ base: UInt, pin: Int, vector: Int, levelTriggered: Bool, destination: UInt8) {
        write(base, 0x11 + 2 * UInt32(pin), UInt32(destination) << 24)
        write(base, 0x10 + 2 * UInt32(pin), UInt32(vector) | (levelTriggered ? 1 << 15 : 0))
    }
}
