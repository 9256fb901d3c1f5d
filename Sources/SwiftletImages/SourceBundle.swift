import Crypto
import Foundation
import SwiftletCore

#if canImport(Glibc)
    import Glibc
#endif

/// A build's sources: a tar unpacked by this reader (never by `tar`), so every path is checked
/// before anything is written. Absolute paths, `..`, links that lead out of the bundle, devices
/// and writes through symlinks are refused with 400; the caller removes the directory on error.
public enum SourceBundle {
    public static let maxFiles = 10_000

    /// Unpacks the tar at `tarPath` into the empty directory `root`.
    /// Whether an app's sources start the guest kit's network stack (such an app stops at boot
    /// without a NIC). Read from the sources, so a mention in a comment counts too: the cost of a
    /// false yes is only that a run must name a network.
    public static func startsNetworkStack(sourceDirectory: String) -> Bool {
        guard let files = FileManager.default.enumerator(atPath: sourceDirectory) else { return false }
        for case let file as String in files where file.hasSuffix(".swift") {
            let text = (try? String(contentsOfFile: sourceDirectory + "/" + file, encoding: .utf8)) ?? ""
            if text.contains("NetStack.start(") { return true }
        }
        return false
    }

    public static func unpack(tarPath: String, into root: String) throws(SwiftletError) {
        guard let handle = FileHandle(forReadingAtPath: tarPath) else {
            throw SwiftletError(.internal, "build.read_failed", "cannot read the uploaded bundle")
        }
        defer { try? handle.close() }
        func read(_ count: Int) throws(SwiftletError) -> Data {
            do { return try handle.read(upToCount: count) ?? Data() } catch {
                throw SwiftletError(.internal, "build.read_failed", "cannot read the uploaded bundle: \(error)")
            }
        }
        var longName: String?
        var paxPath: String?
        var files = 0
        while true {
            let header = try read(512)
            guard header.count == 512 else { throw refuse("truncated tar: a header is cut short") }
            if header.allSatisfy({ $0 == 0 }) { return }
            let bytes = [UInt8](header)
            guard checksumMatches(bytes) else { throw refuse("not a tar file (header checksum mismatch)") }
            let size = try octal(bytes[124..<136], "size")
            let type = bytes[156]
            let padded = Int((size + 511) / 512 * 512)
            var name = string(bytes[0..<100])
            let prefix = string(bytes[345..<500])
            if bytes[257..<262].elementsEqual("ustar".utf8), !prefix.isEmpty { name = prefix + "/" + name }
            if let long = paxPath ?? longName { name = long }
            switch type {
            case UInt8(ascii: "L"), UInt8(ascii: "x"):
                guard size < 1 << 16 else { throw refuse("tar extended header is too large") }
                let body = try read(padded).prefix(Int(size))
                if type == UInt8(ascii: "L") {
                    longName = String(decoding: body.prefix { $0 != 0 }, as: UTF8.self)
                } else {
                    paxPath = paxValue(String(decoding: body, as: UTF8.self), key: "path")
                }
                continue
            case UInt8(ascii: "g"):
                _ = try read(padded)
                continue
            default:
                break
            }
            longName = nil
            paxPath = nil
            if type == UInt8(ascii: "5"), (try? safeRelativePath(name)) == nil, !name.hasPrefix("/"),
                !name.contains("..")
            {
                _ = try read(padded)  // The bundle's own root ("./").
                continue
            }
            let relative = try safeRelativePath(name)
            files += 1
            guard files <= maxFiles else { throw refuse("the bundle has more than \(maxFiles) entries") }
            switch type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
                try checkParents(root: root, relative)
                let data = try read(padded).prefix(Int(size))
                guard data.count == Int(size) else { throw refuse("truncated tar: '\(relative)' is cut short") }
                let path = root + "/" + relative
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                guard fd >= 0 else { throw refuse("cannot create '\(relative)' (duplicate entry?)") }
                defer { close(fd) }
                let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                guard written == data.count else {
                    throw SwiftletError(.internal, "build.write_failed", "cannot write '\(relative)': errno \(errno)")
                }
            case UInt8(ascii: "5"):
                try checkParents(root: root, relative)
                guard mkdir(root + "/" + relative, 0o755) == 0 || errno == EEXIST else {
                    throw refuse("cannot create directory '\(relative)'")
                }
                _ = try read(padded)
            case UInt8(ascii: "2"):
                let target = string(bytes[157..<257])
                guard !target.hasPrefix("/"), staysInside(link: relative, target: target) else {
                    throw refuse("symlink '\(relative)' -> '\(target)' points out of the bundle")
                }
                try checkParents(root: root, relative)
                guard symlink(target, root + "/" + relative) == 0 else {
                    throw refuse("cannot create symlink '\(relative)'")
                }
                _ = try read(padded)
            case UInt8(ascii: "1"):
                throw refuse("hard link '\(relative)' is not accepted in a source bundle")
            default:
                throw refuse(
                    "entry '\(relative)' has type '\(Character(UnicodeScalar(type)))': only files, directories and symlinks are accepted"
                )
            }
        }
    }

    /// A normalized relative path: no leading `/`, no `..`, no empty result.
    static func safeRelativePath(_ name: String) throws(SwiftletError) -> String {
        guard !name.hasPrefix("/") else { throw refuse("absolute path '\(name)' in the bundle") }
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            guard part != ".." else { throw refuse("path '\(name)' leaves the bundle (..)") }
            parts.append(part)
        }
        guard !parts.isEmpty else { throw refuse("empty path in the bundle") }
        return parts.joined(separator: "/")
    }

    /// Whether `target`, taken relative to the directory of `link`, stays inside the bundle.
    static func staysInside(link: String, target: String) -> Bool {
        var depth = link.split(separator: "/").count - 1
        for part in target.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            depth += part == ".." ? -1 : 1
            if depth < 0 { return false }
        }
        return true
    }

    /// Every parent of `relative` must be a real directory (never a symlink) inside `root`.
    private static func checkParents(root: String, _ relative: String) throws(SwiftletError) {
        var path = root
        for part in relative.split(separator: "/").dropLast() {
            path += "/" + part
            var info = stat()
            if lstat(path, &info) != 0 {
                guard mkdir(path, 0o755) == 0 else { throw refuse("cannot create directory for '\(relative)'") }
            } else if info.st_mode & S_IFMT != S_IFDIR {
                throw refuse("'\(relative)' would be written through a symlink or file")
            }
        }
    }

    private static func checksumMatches(_ header: [UInt8]) -> Bool {
        guard let stored = try? octal(header[148..<156], "checksum") else { return false }
        var sum: Int64 = 0
        for (index, byte) in header.enumerated() { sum += (148..<156).contains(index) ? 32 : Int64(byte) }
        return sum == stored
    }

    private static func octal(_ field: ArraySlice<UInt8>, _ what: String) throws(SwiftletError) -> Int64 {
        let text = String(decoding: field.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        guard let value = Int64(text.isEmpty ? "0" : text, radix: 8), value >= 0 else {
            throw refuse("tar header has a bad \(what) field")
        }
        return value
    }

    private static func string(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    private static func paxValue(_ records: String, key: String) -> String? {
        for line in records.split(separator: "\n") {
            guard let space = line.firstIndex(of: " ") else { continue }
            let record = line[line.index(after: space)...]
            if record.hasPrefix(key + "=") { return String(record.dropFirst(key.count + 1)) }
        }
        return nil
    }

    private static func refuse(_ reason: String) -> SwiftletError {
        .badRequest("build.bad_bundle", reason)
    }

    /// sha256 over every regular file under `root` (sorted relative path and contents) and every
    /// symlink (path and target): equal trees give equal digests whatever their mtimes.
    public static func treeDigest(root: String) throws -> String {
        var hasher = SHA256()
        let entries = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).sorted()
        for relative in entries {
            let path = root + "/" + relative
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFREG:
                hasher.update(data: Data("F \(relative)\n".utf8))
                hasher.update(
                    data: Data(ImageSignature.digestHex(try Data(contentsOf: URL(fileURLWithPath: path))).utf8))
            case S_IFLNK:
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? ""
                hasher.update(data: Data("L \(relative) \(target)\n".utf8))
            default:
                continue
            }
        }
        return hasher.finalize().hexString
    }
}

extension ImageSignature {
    static func digestHex(_ data: Data) -> String {
        SHA256.hash(data: data).hexString
    }
}
