// UDP echo: every datagram to `port` (default 7) goes back to its sender.
// Console: `netstats` prints the network counters, `poweroff` stops.

@main
struct Echo {
    static func main() {
        Config.load(allowed: ["name", "port"] + NetStack.configKeys)
        let port = Config.port("port", default: 7)
        let stack = NetStack.start()
        stack.bindUDP(port: port) { stack, datagram in
            stack.sendUDP(
                from: datagram.destinationPort, to: datagram.source, port: datagram.sourcePort,
                payload: datagram.payload)
        }
        stack.installConsoleCommands()
        Kit.ready(app: "echo")
        print(stack.summary)
        Kit.run { now in stack.poll(now: now) }
    }
}
