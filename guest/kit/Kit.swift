// Kit start-up, the run loop, readiness and exits.
//
// entry.S calls kit_main (hardware and runtime set-up), then the app's
// `@main` type's `main()`, then kit_app_returned (power off).

/// A value V written to isa-debug-exit (port 0x501); QEMU then exits with 2V+1.
public struct ExitStatus: ExpressibleByIntegerLiteral, Sendable {
    public let value: UInt8
    public init(integerLiteral value: UInt8) { self.value = value }

    public static let poweredOff: ExitStatus = 0  // QEMU exit 1
    public static let badConfig: ExitStatus = 2  // QEMU exit 5
    public static let panic: ExitStatus = 3  // QEMU exit 7
    public static let cpuException: ExitStatus = 4  // QEMU exit 9
}

public enum Kit {
    /// Prints `SWIFTLET-READY <app> <µs since entry>` on its own line.
    /// Written byte by byte, not through String interpolation: under TCG
    /// the first run of any code costs its translation, and READY is the
    /// figure boot time is measured by.
    public static func ready(app: String) {
        let now = Clock.nowMicros()
        Console.writeStatic("SWIFTLET-READY ")
        var name = app
        name.withUTF8 { Console.write(UnsafeRawBufferPointer($0)) }
        Console.writeStatic(" ")
        Console.writeDecimal(now)
        Console.writeStatic("\n")
    }

    /// Runs the app forever. `poll(now)` must drain all pending work and
    /// return the time (µs since boot) it next wants to run, or UInt64.max;
    /// in between the CPU sleeps in HLT until an interrupt or that deadline.
    public static func run(_ poll: (UInt64) -> UInt64) -> Never {
        while true {
            let seen = kit_irq_count()
            Console.processInput()
            let deadline = poll(Clock.nowMicros())
            if deadline > Clock.nowMicros() {
                Clock.armTimer(deadline: deadline)
                kit_wait_for_interrupt(seen)
            }
        }
    }

    /// Clean shutdown (QEMU exit status 1).
    public static func powerOff() -> Never {
        exit(status: .poweredOff)
    }

    public static func exit(status: ExitStatus) -> Never {
        Port.write8(0x501, status.value)
        // Without an isa-debug-exit device there is nothing more to do.
        while true { kit_halt() }
    }

    /// Stops the guest with the panic status after printing `message`.
    public static func panic(_ message: String) -> Never {
        print("swiftlet: panic: \(message)")
        exit(status: .panic)
    }

    /// panic for contexts that must not allocate (heap, trap handlers).
    static func panic(staticMessage: StaticString) -> Never {
        Console.writeStatic("swiftlet: panic: ")
        Console.writeStatic(staticMessage)
        Console.writeStatic("\n")
        exit(status: .panic)
    }
}

/// The PVH `hvm_start_info` the loader hands to the entry point.
private enum StartInfo {
    static let magic: UInt32 = 0x336E_C578
    static let ramType: UInt32 = 1

    static func u32(_ address: UInt) -> UInt32 { UnsafePointer<UInt32>(bitPattern: address).unsafelyUnwrapped.pointee }
    static func u64(_ address: UInt) -> UInt64 { UnsafePointer<UInt64>(bitPattern: address).unsafelyUnwrapped.pointee }
}

@_cdecl("kit_main")
func kitMain(startInfo: UInt, bootTSC: UInt64) {
    Console.initialize()
    guard StartInfo.u32(startInfo) == StartInfo.magic else {
        Kit.panic(staticMessage: "no PVH start info (boot with QEMU -kernel)")
    }
    let version = StartInfo.u32(startInfo + 4)
    let commandLineAddress = UInt(StartInfo.u64(startInfo + 24))
    let commandLineLength =
        commandLineAddress == 0 ? 0 : strlen(UnsafePointer<CChar>(bitPattern: commandLineAddress).unsafelyUnwrapped)
    let memoryMap = version >= 1 ? UInt(StartInfo.u64(startInfo + 40)) : 0
    let memoryMapEntries = version >= 1 ? UInt(StartInfo.u32(startInfo + 48)) : 0
    let hasACPI = StartInfo.u64(startInfo + 32) != 0  // the loader passed an RSDP

    // The heap gets the RAM region holding the kernel, above everything the
    // loader left there that is still needed (start info, command line, map).
    let kernelEnd = kit_kernel_end()
    var heapStart = kernelEnd
    var heapEnd: UInt = 0
    for index in 0..<memoryMapEntries {
        let entry = memoryMap + index * 24
        let base = UInt(StartInfo.u64(entry))
        let length = UInt(StartInfo.u64(entry + 8))
        if StartInfo.u32(entry + 16) == StartInfo.ramType && base <= kernelEnd && kernelEnd < base + length {
            heapEnd = base + length
        }
    }
    guard heapEnd != 0 else { Kit.panic(staticMessage: "no RAM above the kernel in the PVH memory map") }
    func keep(_ start: UInt, _ length: UInt) {  // no arrays: there is no heap yet
        if start >= kernelEnd && start < heapEnd { heapStart = max(heapStart, start + length) }
    }
    keep(startInfo, 56)
    keep(commandLineAddress, UInt(commandLineLength + 1))
    keep(memoryMap, memoryMapEntries * 24)
    Heap.initialize(start: heapStart, end: min(heapEnd, 0x1_0000_0000))

    // Under -M pc the boot information lies partly in page 0 (the PVH option
    // ROM's memory map at 0x5a8): copy what is still needed, then unmap it.
    let commandLine = Array(
        UnsafeBufferPointer(start: UnsafePointer<UInt8>(bitPattern: commandLineAddress), count: commandLineLength))
    kit_unmap_page_zero()

    Interrupts.initialize(hasACPI: hasACPI)
    Clock.beginCalibration(bootTSC: bootTSC)
    Console.enableInput()
    commandLine.withUnsafeBufferPointer { Config.parse(commandLine: $0) }
    Clock.finishCalibration()
    Pool.waitForConfigIfPooled()
}

@_cdecl("kit_app_returned")
func kitAppReturned() {
    Kit.powerOff()
}
