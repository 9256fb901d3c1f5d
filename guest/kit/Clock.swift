// Monotonic clock (TSC) and the one-shot LAPIC timer behind Kit.run deadlines.
//
// Calibration: at boot the kit lets the i8254 PIT (1.193182 MHz, present on
// QEMU microvm) count down for ~0.5 ms while reading the TSC and the LAPIC
// timer's current count at both ends of the same window; the ratios give the
// TSC and LAPIC timer frequencies. Time zero is the TSC read by the very first
// instruction of entry.S.

public enum Clock {
    static let pitHz: UInt64 = 1_193_182
    static let calibrationPITTicks: UInt64 = 597  // ~0.5 ms
    static let settlePITTicks: UInt64 = 120  // ~0.1 ms

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
        LocalAPIC.write(LocalAPIC.timerDivide, 0x0B)  // divide by 1
        LocalAPIC.write(LocalAPIC.timerLVT, 1 << 16 | UInt32(Interrupts.timerVector))  // masked
        LocalAPIC.write(LocalAPIC.timerInitialCount, 0xFFFF_FFFF)

        Port.write8(0x43, 0x30)  // channel 0, lo/hi byte, mode 0, binary
        Port.write8(0x40, 0xFF)
        Port.write8(0x40, 0xFF)
        // Start and end are taken by the same loop body, each right after the
        // PIT count changes, and the window opens only ~0.1 ms after the PIT
        // was loaded: under TCG the first run of any code pays for its
        // translation, and windows starting at once read the TSC ~3% slow.
        var last = sample()
        let first = last
        var start: Sample? = nil
        var end = last
        let giveUp = last.tsc &+ 4_000_000_000  // no PIT: stop after ~1 s at 4 GHz
        while end.tsc < giveUp {
            let current = sample()
            if current.pit != last.pit {
                if let start {
                    if UInt64(start.pit &- current.pit) >= calibrationPITTicks {
                        end = current
                        break
                    }
                } else if UInt64(first.pit &- current.pit) >= settlePITTicks {
                    start = current
                }
            }
            last = current
            end = current
        }
        LocalAPIC.write(LocalAPIC.timerInitialCount, 0)
        guard let start, UInt64(start.pit &- end.pit) >= calibrationPITTicks else {
            Console.writeStatic("swiftlet: no PIT to calibrate the clock; assuming 1 GHz TSC and LAPIC timer\n")
            setFrequencies(tscHz: 1_000_000_000, lapicTimerHz: 1_000_000_000)
            return
        }
        let pitTicks = UInt64(start.pit &- end.pit)
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
