// Monotonic clock (TSC) and the one-shot LAPIC timer behind Kit.run deadlines.
//
// Calibration: at boot the kit lets the i8254 PIT (1.193182 MHz, present on
// QEMU microvm) count down for at least ~0.5 ms while reading the TSC and the
// LAPIC timer's current count at both ends of the same window; the ratios give
// the TSC and LAPIC timer frequencies. The window overlaps the rest of the
// kit's start-up. Time zero is the TSC read by the very first
// instruction of entry.S.

public enum Clock {
    static let pitHz: UInt64 = 1_193_182
    static let calibrationPITTicks: UInt64 = 597  // ~0.5 ms
    static let settlePITTicks: UInt64 = 2
    /// A PIT that never moves would hang the boot: give up after ~1 s at 4 GHz.
    static let giveUpTicks: UInt64 = 4_000_000_000

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

    /// The calibration window's first sample (see beginCalibration).
    nonisolated(unsafe) static var calibrationStart = Sample(pit: 0, tsc: 0, lapic: 0)

    /// Starts the PIT and the LAPIC timer counting and opens the calibration
    /// window; the kit does its other start-up work while the window runs
    /// and closes it with finishCalibration, so calibrating costs boot
    /// little time. The window opens after `sample` has run a few times, so
    /// both ends run already-translated code (under TCG, translating between
    /// the PIT and TSC reads skewed the result by ~3%).
    static func beginCalibration(bootTSC boot: UInt64) {
        bootTSC = boot
        LocalAPIC.write(LocalAPIC.timerDivide, 0x0B)  // divide by 1
        LocalAPIC.write(LocalAPIC.timerLVT, 1 << 16 | UInt32(Interrupts.timerVector))  // masked
        LocalAPIC.write(LocalAPIC.timerInitialCount, 0xFFFF_FFFF)
        Port.write8(0x43, 0x30)  // channel 0, lo/hi byte, mode 0, binary
        Port.write8(0x40, 0xFF)
        Port.write8(0x40, 0xFF)
        let first = sample()
        var current = first
        while UInt64(first.pit &- current.pit) < settlePITTicks && current.tsc &- first.tsc < giveUpTicks {
            current = sample()
        }
        calibrationStart = sample()
    }

    /// Closes the window once it spans at least `calibrationPITTicks` and
    /// sets the frequencies.
    static func finishCalibration() {
        let start = calibrationStart
        var end = sample()
        while UInt64(start.pit &- end.pit) < calibrationPITTicks && end.tsc &- start.tsc < giveUpTicks {
            end = sample()
        }
        // The 16-bit PIT count wraps after 55 ms; a window that may be
        // longer (at up to 5 GHz of TSC) is ambiguous: measure again, now.
        if end.tsc &- start.tsc > 200_000_000 && end.tsc &- start.tsc < giveUpTicks {
            beginCalibration(bootTSC: bootTSC)
            finishCalibration()
            return
        }
        LocalAPIC.write(LocalAPIC.timerInitialCount, 0)
        let pitTicks = UInt64(start.pit &- end.pit)
        guard pitTicks >= calibrationPITTicks else {
            Console.writeStatic("swiftlet: no PIT to calibrate the clock; assuming 1 GHz TSC and LAPIC timer\n")
            setFrequencies(tscHz: 1_000_000_000, lapicTimerHz: 1_000_000_000)
            return
        }
        setFrequencies(
            tscHz: (end.tsc &- start.tsc) * pitHz / pitTicks,
            lapicTimerHz: UInt64(start.lapic &- end.lapic) * pitHz / pitTicks)
    }

    static func setFrequencies(tscHz tsc: UInt64, lapicTimerHz lapic: UInt64) {
        tscHz = max(tsc, 1)
        lapicTimerHz = max(lapic, 1)
        microsPerTickQ32 = (1_000_000 << 32) / tscHz
    }

    struct Sample {
        var pit: UInt16
        var tsc: UInt64
        var lapic: UInt32
    }

    /// Never inlined: every call runs the same, already-translated code, so
    /// (under TCG) no translation happens between its PIT and TSC reads.
    @inline(never)
    static func sample() -> Sample {
        Port.write8(0x43, 0x00)  // latch channel 0
        let low = UInt16(Port.read8(0x40))
        let high = UInt16(Port.read8(0x40))
        return Sample(pit: high << 8 | low, tsc: kit_rdtsc(), lapic: LocalAPIC.read(LocalAPIC.timerCurrentCount))
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
        LocalAPIC.write(LocalAPIC.timerLVT, UInt32(Interrupts.timerVector))  // one-shot, unmasked
        LocalAPIC.write(LocalAPIC.timerInitialCount, UInt32(clamping: max(count, 1)))
    }
}
