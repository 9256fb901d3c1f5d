// The instructions Swift cannot express, implemented in entry.S, plus typed
// helpers for port I/O and memory-mapped registers.

import _Volatile

@_extern(c, "kit_outb") func kit_outb(_ port: UInt16, _ value: UInt8)
@_extern(c, "kit_inb") func kit_inb(_ port: UInt16) -> UInt8
@_extern(c, "kit_rdtsc") func kit_rdtsc() -> UInt64
@_extern(c, "kit_rdmsr") func kit_rdmsr(_ msr: UInt32) -> UInt64
@_extern(c, "kit_wrmsr") func kit_wrmsr(_ msr: UInt32, _ value: UInt64)
@_extern(c, "kit_read_cr2") func kit_read_cr2() -> UInt64
@_extern(c, "kit_irq_count") func kit_irq_count() -> UInt32
@_extern(c, "kit_wait_for_interrupt") func kit_wait_for_interrupt(_ seen: UInt32)
@_extern(c, "kit_interrupts_disable") func kit_interrupts_disable() -> UInt64
@_extern(c, "kit_interrupts_restore") func kit_interrupts_restore(_ flags: UInt64)
@_extern(c, "kit_interrupts_enable") func kit_interrupts_enable()
@_extern(c, "kit_halt_forever") func kit_halt()  // never returns

/// x86 I/O ports.
public enum Port {
    @inline(__always) public static func write8(_ port: UInt16, _ value: UInt8) { kit_outb(port, value) }
    @inline(__always) public static func read8(_ port: UInt16) -> UInt8 { kit_inb(port) }
}

/// Memory-mapped device registers (identity-mapped, uncached above 3 GiB).
public enum MMIO {
    @inline(__always) public static func read32(address: UInt) -> UInt32 {
        VolatileMappedRegister<UInt32>(unsafeBitPattern: address).load()
    }
    @inline(__always) public static func write32(address: UInt, _ value: UInt32) {
        VolatileMappedRegister<UInt32>(unsafeBitPattern: address).store(value)
    }
}

/// Runs `body` with interrupts disabled, restoring the previous state after.
@inline(__always)
func withInterruptsDisabled<T>(_ body: () -> T) -> T {
    let flags = kit_interrupts_disable()
    defer { kit_interrupts_restore(flags) }
    return body()
}

@_extern(c, "kit_kernel_end") func kit_kernel_end() -> UInt
@_extern(c, "kit_stack_bottom") func kit_stack_bottom() -> UInt
@_extern(c, "kit_unmap_page_zero") func kit_unmap_page_zero()
