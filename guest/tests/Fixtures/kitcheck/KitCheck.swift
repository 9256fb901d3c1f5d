// Test fixture for BootTests: exercises the kit's failure paths, heap and
// timers on command from the console. Not an example app.

@main
struct KitCheck {
    nonisolated(unsafe) static var sleepUntil: UInt64 = UInt64.max
    nonisolated(unsafe) static var sleepStart: UInt64 = 0
    nonisolated(unsafe) static var deepestFrame: UInt = 0
    nonisolated(unsafe) static var count = 0

    static func main() {
        Config.load(allowed: ["name", "ip", "gw", "port", "count"])
        count = Config.integer("count", default: 1, range: 1...100)  // app keys are checked when read
        Console.lineHandler = handle
        Kit.ready(app: "kitcheck")
        Kit.run { now in
            if now >= sleepUntil {
                print("kitcheck: slept \(now - sleepStart) us")
                sleepUntil = UInt64.max
            }
            return sleepUntil
        }
    }

    static func handle(_ line: String) {
        let words = line.split(separator: " ")
        switch words.first.map(String.init) ?? "" {
        case "fatal":
            fatalError("kitcheck asked for it")
        case "overflow":
            var value = Int.max - Int(words.count)
            value += 2
            print("unreachable \(value)")
        case "fault":
            // Above the 4 GiB identity map: a page fault.
            UnsafeMutablePointer<UInt64>(bitPattern: 0x10_0000_0000)!.pointee = 1
        case "null":
            let pointer = UnsafePointer<UInt64>(bitPattern: UInt(words.count - 1))
            print("unreachable \(pointer.unsafelyUnwrapped.pointee)")
        case "recurse":
            print("unreachable \(recurse(UInt64(words.count)))")
        case "churn":
            churn()
        case "sleep":
            let micros = words.count > 1 ? UInt64(Config.parseDecimal(words[1].utf8) ?? 0) : 0
            sleepStart = Clock.nowMicros()
            sleepUntil = sleepStart + micros
        case "config":
            let ip = Config.ipv4("ip")
            print(
                "kitcheck: ip=\(ip?.address ?? 0)/\(ip?.prefixLength ?? 0) gw=\(Config.ipv4Address("gw") ?? 0) port=\(Config.port(default: 80)) count=\(count)"
            )
        default:
            print("kitcheck: unknown \(line)")
        }
    }

    /// Never returns: overflows the stack into its guard page.
    @inline(never)
    static func recurse(_ depth: UInt64) -> UInt64 {
        var frame: (UInt64, UInt64, UInt64, UInt64) = (depth, depth, depth, depth)
        return withUnsafeMutableBytes(of: &frame) { bytes in
            // The frame's address escapes and the result is divided (not an
            // associative accumulator), so the optimiser cannot make a loop.
            deepestFrame = UInt(bitPattern: bytes.baseAddress)
            return recurse(depth &+ 1) / (depth | 1) &+ bytes.load(as: UInt64.self)
        }
    }

    /// Allocates and frees mixed sizes (arrays, strings, aligned pages) many
    /// times; the heap must end where it started.
    static func churn() {
        let before = HeapStatistics.usedBytes
        var keep: [[UInt8]] = []
        for round in 0..<2000 {
            var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 1 + (round * 37) % 3000)
            bytes.append(1)
            keep.append(bytes)
            if keep.count > 50 { keep.removeFirst(25) }
            let page = UnsafeMutableRawPointer.allocate(byteCount: 4096 + round % 5000, alignment: 4096)
            if UInt(bitPattern: page) % 4096 != 0 { fatalError("unaligned page") }
            page.deallocate()
            let text = "round \(round) of churn"
            if text.isEmpty { print(text) }
        }
        keep.removeAll()
        print(
            "kitcheck: churn before=\(before) after=\(HeapStatistics.usedBytes) peak=\(HeapStatistics.peakUsedBytes) largest-free=\(HeapStatistics.largestFreeBlock) total=\(HeapStatistics.totalBytes)"
        )
    }
}
