import SwiftletCore
import SwiftletImages

/// Turns an instance's config into the kernel command line (the kit's `key=value` words, and any
/// bare words given).
public enum CommandLineRenderer {
    /// The instance name goes first as `name=` unless the user set one; with published ports
    /// (QEMU user-mode networking) the guest gets user-mode's fixed address unless set.
    /// `template` turns the kit's words into what the image's unikernel kind expects.
    public static func render(_ instance: Instance, template: CommandLineTemplate = .kit) -> String {
        var words: [String] = []
        // A bare word (no `=`) is passed as it is and sets no key.
        let keys = Set(
            instance.args.compactMap { word in word.firstIndex(of: "=").map { String(word[..<$0]) } })
        if !keys.contains("name") { words.append("name=\(instance.name)") }
        if !instance.publishedPorts.isEmpty {
            if !keys.contains("ip") { words.append("ip=10.0.2.15/24") }
            if !keys.contains("gw") { words.append("gw=10.0.2.2") }
        }
        // The addresses of the network ports, so that a new address needs no rebuild. With several
        // NICs each address is tied to its NIC's MAC (the guest may find the devices in any order).
        let ports = instance.ports ?? []
        if let port = ports.first {
            if !keys.contains("ip") { words.append("ip=\(port.address)/\(port.prefixLength)") }
            if !keys.contains("gw") { words.append("gw=\(port.gateway)") }
            if ports.count > 1 && !keys.contains("mac") { words.append("mac=\(port.mac)") }
        }
        for (index, port) in ports.enumerated().dropFirst() {
            if !keys.contains("ip\(index)") { words.append("ip\(index)=\(port.address)/\(port.prefixLength)") }
            if !keys.contains("mac\(index)") { words.append("mac\(index)=\(port.mac)") }
        }
        return template.render(words + instance.args)
    }
}
