import SwiftletCore

/// A compute API microversion (`2.30`), and the negotiation Nova does over the request headers.
public struct Microversion: Comparable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// `2.30` → (2, 30); anything else (`2`, `2.x`, `v2.1`) is nil.
    public init?(parsing text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]), major >= 0, minor >= 0,
            parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) })
        else { return nil }
        self.init(major, minor)
    }

    public var description: String { "\(major).\(minor)" }

    public static func < (lhs: Microversion, rhs: Microversion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }

    public static let minimum = Microversion(2, 1)
    /// The newest version whose behaviour the compute API here honours (docs/openstack.md). A
    /// newer one would promise fields and checks it does not have.
    public static let maximum = Microversion(2, 30)

    /// The version a request asks for: `OpenStack-API-Version: compute X.Y` first, then
    /// `X-OpenStack-Nova-API-Version: X.Y`, else the minimum; `latest` is the maximum. 400 for
    /// a value that is no version, 406 (as Nova) for one outside minimum…maximum.
    public static func negotiate(openStackAPIVersion: String?, novaAPIVersion: String?)
        throws(SwiftletError) -> Microversion
    {
        var requested: String?
        if let header = openStackAPIVersion {
            for entry in header.split(separator: ",") {
                let words = entry.split(separator: " ", omittingEmptySubsequences: true)
                if words.count == 2, words[0].lowercased() == "compute" { requested = String(words[1]) }
            }
        }
        if requested == nil, let legacy = novaAPIVersion?.trimmingCharacters(in: .whitespaces), !legacy.isEmpty {
            requested = legacy
        }
        guard let requested else { return minimum }
        if requested.lowercased() == "latest" { return maximum }
        guard let version = Microversion(parsing: requested) else {
            throw SwiftletError.badRequest(
                "compute.bad_version", "API version string \(requested) format is invalid. Must be 'X.Y'.")
        }
        guard version >= minimum, version <= maximum else {
            throw SwiftletError(
                .notAcceptable, "compute.version_not_supported",
                "Version \(version) is not supported by the API. Minimum is \(minimum) and maximum is \(maximum).")
        }
        return version
    }
}
