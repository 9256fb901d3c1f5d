import SwiftletCore
import SwiftletImages

/// Turns an instance's config into the kernel command line (the kit's `key=value` words).
public enum CommandLineRenderer {
    /// The instance name goes first as `name=` unless the user set one; with published ports
    /// (QEMU user-mode networking) the guest gets user-mode's fixed address unless set.
    /// `template` turns the kit's words into what the image's unikernel kind expects.
    public static func render(_ instance: Instance, template: CommandLineTemplate = .kit) -> String {
        var words: [String] = []
        let keys = Set(instance.args.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
        if !keys.contains("name") { words.append("name=\(instance.name)") }
        if !instance.publishedPorts.isEmpty {
            if !keys.contains("ip") { words.append("ip=10.0.2.15/24") }
            if !keys.contains("gw") { words.append("gw=10.0.2.2") }
        }
        // The address of the first network port, so that a new address needs no rebuild.
        if let port = instance.ports?.first {
            if !keys.contains("ip") { words.append("ip=\(port.address)/\(port.prefixLength)") }
            if !keys.contains("gw") { words.append("gw=\(port.gateway)") }
        }
        return template.render(words + instance.args)
    }
}
