import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The address this host reaches the controller from: the default fabric address for its networks'
/// VXLAN tunnels. A connected UDP socket asks the kernel's routing, no packet is sent.
enum FabricAddress {
    static func towards(url: String) -> String? {
        guard let components = URLComponents(string: url), let host = components.host else { return nil }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(components.port ?? 443), &hints, &found) == 0, let first = found else {
            return nil
        }
        defer { freeaddrinfo(found) }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let destination = first.pointee.ai_addr, connect(fd, destination, first.pointee.ai_addrlen) == 0 else {
            return nil
        }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &local.sin_addr, &text, socklen_t(text.count)) != nil else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
