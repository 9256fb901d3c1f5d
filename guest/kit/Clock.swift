// Monotonic clock (TSC) and the one-shot LAPIC timer behind Kit.run deadlines.
//
// Calibration: at boot the kit lets the i8254 PIT (1.193182 MHz, present on
// QEMU microvm) count down for ~1 ms while reading the TSC and the LAPIC
// timer's current count at both ends of the same window; the ratios give the
// TSC and LAPIC timer frequencies. Time zero is the TSC read by the very first
// instruction of entry.S.

public enum Clock {
    static let pitHz: UInt64 = 1_193_182
    static let calibrationPITTicks: UInt64 = 1_193 // ~1 ms

    nonisolated(unsafe) static var bootTSC: UInt64 = 0
    nonisolated(unsafe) static var tscHz: UInt64 = 0
    nonisolated(unsafe) static var lapicTimerHz: UInt64 = 0
    /// Microseconds per TSC tick as a 32.32 fixed-point factor (no floating point).
    nonisolated(unsafe) static var microsPerTickQ32: UInt64 = 0

    /// Microseconds since the kernel's first instruction.
    public static func nowMicros() -> UInt64 {
        let ticks = kit_rdtsc() &- bootTSC
        let product = ticks.multipliedFullWidth(by: microsPerTickQ32)
        return (product.high << 32) | (product.low >> 32)
    }

    static func calibrate(bootTSC boot: UInt64) {
        bootTSC = boot
        LocalAPIC.write(LocalAPIC.timerDivide, 0x0B) // divide by 1
        LocalAPIC.write(LocalAPIC.timerLVT, 1 << 16 | UInt32(Interrupts.timerVector)) // masked
        LocalAPIC.write(LocalAPIC.timerInitialCount, 0xFFFF_FFFF)

        Port.write8(0x43, 0x30) // channel 0, lo/hi byte, mode 0, binary
        Port.write8(0x40, 0xFF)
        Port.write8(0x40, 0xFF)
        let startPIT = readPIT()
        let startTSC = kit_rdtsc()
        let startLAPIC = LocalAPIC.read(LocalAPIC.timerCurrentCount)
        var endPIT = startPIT
        var endTSC = startTSC
        var endLAPIC = startLAPIC
        // A PIT that never moves would hang the boot; give up after ~1 s of TSC at 4 GHz.
        while UInt64(startPIT &- endPIT) < calibrationPITTicks && endTSC &- startTSC < 4_000_000_000 {
            endPIT = readPIT()
            endTSC = kit_rdtsc()
            endLAPIC = LocalAPIC.read(LocalAPIC.timerCurrentCount)
        }
        LocalAPIC.write(LocalAPIC.timerInitialCount, 0)
        let pitTicks = UInt64(startPIT &- endPIT)
        guard pitTicks >= calibrationPITTicks else {
            Console.writeStatic("swiftlet: no PIT to calibrate the clock; assuming 1 GHz TSC and LAPIC timer\n")
            setFrequencies(tscHz: 1_000_000_000, lapicTimerHz: 1_000_000_000)
            return
        }
        setFrequencies(
            tscHz: (endTSC &- startTSC) * pitHz / pitTicks,
            lapicTimerHz: UInt64(startLAPIC &- endLAPIC) * pitHz / pitTicks)
    }

    static func setFrequencies(tscHz tsc: UInt64, lapicTimerHz lapic: UInt64) {
        tscHz = max(tsc, 1)
        lapicTimerHz = max(lapic, 1)
        microsPerTickQ32 = (1_000_000 << 32) / tscHz
    }

    static func readPIT() -> UInt16 {
        Port.write8(0x43, 0x00) // latch channel 0
        let low = UInt16(Port.read8(0x40))
        let high = UInt16(Port.read8(0x40))
        return high << 8 | low
    }

    /// Arms the one-shot LAPIC timer to fire at `deadline` (µs since boot);
    /// UInt64.max stops it. Long waits are capped: the loop simply re-arms.
    static func armTimer(deadline: UInt64) {
        guard deadline != UInt64.max else {
            LocalAPIC.write(LocalAPIC.timerInitialCount, 0)
            return
        }
        let now = nowMicros()
        let delta = deadline > now ? deadline - now : 1
        let product = delta.multipliedFullWidth(by: lapicTimerHz)
        let count: UInt64 = product.high != 0 ? UInt64.max : product.low / 1_000_000
        LocalAPIC.write(LocalAPIC.timerLVT, UInt32(Interrupts.timerVector)) // one-shot, unmasked
        LocalAPIC.write(LocalAPIC.timerInitialCount, UInt32(clamping: max(count, 1)))
    }
}
