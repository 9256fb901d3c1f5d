// The smallest app on the kit: check config, say READY (first: it is what
// boot time is measured by), greet, then idle in HLT
// (Kit.run with no deadline) until `poweroff` arrives on the console.

@main
struct Hello {
    static func main() {
        Config.load(allowed: ["name"])
        Kit.ready(app: "hello")
        print("hello from \(Config.string("name", default: "swiftlet"))")
        Kit.run { _ in UInt64.max }
    }
}
