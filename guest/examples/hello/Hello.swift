// The smallest app on the kit: check config, say READY, then idle in HLT
// (Kit.run with no deadline) until `poweroff` arrives on the console.

@main
struct Hello {
    static func main() {
        Config.load(allowed: ["name"])
        print("hello from \(Config.string("name", default: "swiftlet"))")
        Kit.ready(app: "hello")
        Kit.run { _ in UInt64.max }
    }
}
