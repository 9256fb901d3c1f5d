// Warm pool: a unikernel booted ahead of demand with `swiftlet.pool=1` on its command line
// stops after the kit's set-up, prints `SWIFTLET-POOLED`, and sleeps in HLT until the control
// plane types its instance config on the console: `swiftlet.config <key=value words>`.
// The app then starts exactly as if it had been booted with those words, so one pre-booted
// guest serves any instance of its image (name, address and app keys arrive late).

enum Pool {
    static let flag = "swiftlet.pool"
    static let configCommand: [UInt8] = Array("swiftlet.config".utf8)

    /// Called by the kit before the app: returns at once unless booted into the pool.
    static func waitForConfigIfPooled() {
        guard Config.words.contains(where: { Config.same($0.key, flag) }) else { return }
        Config.words.removeAll()
        Console.writeStatic("SWIFTLET-POOLED\n")
        var received: [UInt8]? = nil
        Console.lineHandler = { text in
            var bytes = Array(text.utf8)
            guard bytes.starts(with: configCommand) else {
                print("swiftlet: pooled: waiting for swiftlet.config, ignored: \(text)")
                return
            }
            bytes.removeFirst(configCommand.count)
            received = bytes
        }
        while received == nil {
            let seen = kit_irq_count()
            Console.processInput()
            if received == nil { kit_wait_for_interrupt(seen) }
        }
        Console.lineHandler = nil
        received.unsafelyUnwrapped.withUnsafeBufferPointer { Config.parse(commandLine: $0) }
    }
}
