// COM1 (16550 UART): output for print(), and line input by RX interrupt.
//
// The interrupt handler only moves received bytes into a fixed ring (it must
// not allocate); Kit.run assembles lines from the ring between polls and
// handles them there: `poweroff`, `heap`, the state transfer (State.swift),
// the network stack's commands, or the app's own handler.

public enum Console {
    static let base: UInt16 = 0x3F8
    static let ringCapacity = 1024
    static let maximumLineLength = 512

    nonisolated(unsafe) static var ring: UnsafeMutablePointer<UInt8>? = nil
    nonisolated(unsafe) static var ringHead = 0  // written by the interrupt handler
    nonisolated(unsafe) static var ringTail = 0  // read by the run loop
    nonisolated(unsafe) static var line: [UInt8] = []

    /// Lines typed on the console that the kit does not handle itself.
    public nonisolated(unsafe) static var lineHandler: ((String) -> Void)? = nil
    /// Kit subsystems' commands (the state transfer, the network stack's
    /// migration commands), tried before `lineHandler` so they work whatever
    /// handler the app sets; each returns true when it took the line.
    nonisolated(unsafe) static var subsystemHandlers: [(String) -> Bool] = []

    /// 115200 8N1. The FIFO control register is left alone: enabling the
    /// FIFO would clear it and lose input typed before boot. OUT2 gates the
    /// UART's IRQ line to the interrupt controller.
    static func initialize() {
        Port.write8(base + 1, 0x00)
        Port.write8(base + 3, 0x80)
        Port.write8(base + 0, 0x01)
        Port.write8(base + 1, 0x00)
        Port.write8(base + 3, 0x03)
        Port.write8(base + 4, 0x0B)
    }

    /// Called once the heap works: allocates the RX ring and enables the RX IRQ.
    static func enableInput() {
        ring = UnsafeMutablePointer<UInt8>.allocate(capacity: ringCapacity)
        line.reserveCapacity(maximumLineLength)
        Port.write8(base + 1, 0x01)
        withInterruptsDisabled { handleInterrupt() }  // input that came before the IRQ was on
    }

    @inline(__always)
    public static func write(byte: UInt8) {
        while Port.read8(base + 5) & 0x20 == 0 {}
        Port.write8(base, byte)
    }

    /// Writes a string without allocating (safe in trap handlers).
    public static func writeStatic(_ text: StaticString) {
        text.withUTF8Buffer { bytes in
            for byte in bytes { write(byte: byte) }
        }
    }

    public static func write(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes { write(byte: byte) }
    }

    /// Writes `value` as 0x-prefixed hexadecimal without allocating.
    public static func writeHex(_ value: UInt64, digits: Int = 16) {
        writeStatic("0x")
        var shift = (digits - 1) * 4
        while shift >= 0 {
            let nibble = UInt8((value >> UInt64(shift)) & 0xF)
            write(byte: nibble < 10 ? 0x30 + nibble : 0x57 + nibble)
            shift -= 4
        }
    }

    /// Writes `value` in decimal without allocating.
    public static func writeDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)  // 40 bytes >= 20 digits
        var count = 0
        var remaining = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[count] = UInt8(remaining % 10) + 0x30
                remaining /= 10
                count += 1
            } while remaining != 0
            while count > 0 {
                count -= 1
                write(byte: buffer[count])
            }
        }
    }

    /// RX interrupt: drain the UART into the ring; drop bytes when it is full.
    static func handleInterrupt() {
        guard let ring else {
            while Port.read8(base + 5) & 0x01 != 0 { _ = Port.read8(base) }
            return
        }
        while Port.read8(base + 5) & 0x01 != 0 {
            let byte = Port.read8(base)
            let nextHead = (ringHead + 1) % ringCapacity
            if nextHead != ringTail {
                ring[ringHead] = byte
                ringHead = nextHead
            }
        }
    }

    /// Run-loop side: turns ring bytes into lines and dispatches each line.
    static func processInput() {
        guard let ring else { return }
        while true {
            let byte: UInt8? = withInterruptsDisabled {
                if ringTail == ringHead { return nil }
                let value = ring[ringTail]
                ringTail = (ringTail + 1) % ringCapacity
                return value
            }
            guard let byte else { return }
            if byte == 0x0A || byte == 0x0D {
                if !line.isEmpty {
                    let text = String(decoding: line, as: UTF8.self)
                    line.removeAll(keepingCapacity: true)
                    handle(line: text)
                }
            } else if line.count < maximumLineLength {
                line.append(byte)
            }
        }
    }

    static func handle(line text: String) {
        if Config.same(text, "poweroff") {
            print("swiftlet: poweroff")
            Kit.powerOff()
        } else if Config.same(text, "heap") {
            print(
                "swiftlet: heap used=\(HeapStatistics.usedBytes) peak=\(HeapStatistics.peakUsedBytes) live=\(HeapStatistics.liveAllocations) largest-free=\(HeapStatistics.largestFreeBlock) total=\(HeapStatistics.totalBytes)"
            )
        } else if subsystemHandlers.contains(where: { $0(text) }) {
            return
        } else if text.utf8.starts(with: "state-".utf8) {
            // The state transfer registers itself with the app's interface;
            // without one it is not linked in, and this is the whole answer.
            print("swiftlet: state-error no state interface")
        } else if let lineHandler {
            lineHandler(text)
        } else {
            print("swiftlet: unknown command: \(text)")
        }
    }
}
