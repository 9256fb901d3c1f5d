import Foundation
import SwiftletCore

/// A unikernel toolchain the build service can run. Recipes for other toolchains (Unikraft's
/// `make`, Solo5) conform where their tools are installed; the Swift kit recipe ships now.
public protocol BuildRecipe: Sendable {
    var name: String { get }
    /// Flags the recipe accepts (validated before any work).
    var allowedFlags: Set<String> { get }
    /// A digest of the toolchain and kit: part of the build cache key.
    func toolchainDigest() throws -> String
    /// The command that builds `source` into the kernel file `output`.
    func command(source: String, output: String, flags: [String]) -> (executable: String, arguments: [String])
}

/// The guest kit's `guest/build.sh`: an app directory of Embedded Swift files → a PVH ELF.
public struct SwiftKitRecipe: BuildRecipe {
    public let name = "swift-kit"
    public let allowedFlags: Set<String> = ["no-sse"]
    /// The `guest` directory (holding build.sh and kit/).
    public let guestDirectory: String

    public init(guestDirectory: String) {
        self.guestDirectory = guestDirectory
    }

    /// Finds `guest/` from `SWIFTLET_GUEST_DIR`, else upwards from `start` (the binary or cwd).
    public static func locate(from starts: [String]) -> SwiftKitRecipe? {
        if let configured = ProcessInfo.processInfo.environment["SWIFTLET_GUEST_DIR"] {
            return SwiftKitRecipe(guestDirectory: configured)
        }
        for start in starts {
            var url = URL(fileURLWithPath: start)
            for _ in 0..<8 {
                if FileManager.default.isExecutableFile(atPath: url.path + "/guest/build.sh") {
                    return SwiftKitRecipe(guestDirectory: url.path + "/guest")
                }
                url.deleteLastPathComponent()
            }
        }
        return nil
    }

    /// The kit version: sha256 over build.sh and every file of guest/kit.
    public func toolchainDigest() throws -> String {
        let kit = try SourceBundle.treeDigest(root: guestDirectory + "/kit")
        let script = ImageSignature.digestHex(try Data(contentsOf: URL(fileURLWithPath: guestDirectory + "/build.sh")))
        return ImageSignature.digestHex(Data("\(kit) \(script)".utf8))
    }

    public func command(source: String, output: String, flags: [String]) -> (executable: String, arguments: [String]) {
        (guestDirectory + "/build.sh", [source, "-o", output] + flags.map { "--" + $0 })
    }
}
