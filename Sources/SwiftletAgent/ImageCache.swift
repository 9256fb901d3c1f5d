import Foundation
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletImages
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where a host gets image bytes from, by digest.
public protocol ImageSource: Sendable {
    /// The bytes' path on this machine when the source is local (then a hard link costs nothing).
    func localPath(sha256: String) -> String?
    /// Writes the bytes to `path`, a new file; the cache verifies the digest before using them.
    func download(sha256: String, to path: String) async throws(SwiftletError)
    /// Whether the bytes could be fetched again if the cache dropped its copy.
    func canFetchAgain(sha256: String) -> Bool
}

/// The controller's own blob store, for the agent in the same process (or on the same disk).
public struct BlobStoreSource: ImageSource {
    public let blobs: BlobStore

    public init(blobs: BlobStore) { self.blobs = blobs }

    public func localPath(sha256: String) -> String? { blobs.path(sha256: sha256) }

    public func download(sha256: String, to path: String) async throws(SwiftletError) {
        do { try FileManager.default.copyItem(atPath: blobs.path(sha256: sha256), toPath: path) } catch {
            throw SwiftletError(
                .internal, "image.cache_failed", "cannot copy image \(sha256) into the host cache: \(error)")
        }
    }

    public func canFetchAgain(sha256: String) -> Bool { blobs.contains(sha256: sha256) }
}

/// The host's copy of image bytes, by digest: `<root>/<sha256>`. Filled once per digest from the
/// image source (a hard link when the source's file is on the same filesystem, else a copy or a
/// download whose sha256 is checked before it becomes the cached truth); concurrent boots of one
/// digest share one fetch. A boot with the bytes cached never touches the source.
final class ImageCache: Sendable {
    let root: String
    let source: any ImageSource
    /// Bytes the cache's copies may hold; nil for no limit. Only copies count: an entry that is a
    /// hard link to its source's file costs no space of its own. Past the limit, a fetch evicts
    /// the least recently used copies that the source can give back.
    let limitBytes: Int64?
    /// Fetches in progress, by digest.
    private let fetches = Mutex<[String: Task<Void, any Error>]>([:])

    init(root: String, source: any ImageSource, limitBytes: Int64? = nil) {
        self.root = root
        self.source = source
        self.limitBytes = limitBytes
    }

    /// What a boot needs from its image: the local paths, and whether they were already cached.
    struct Prepared: Sendable {
        var kernelPath: String
        var initrdPath: String?
        var profile: LaunchProfile
        var cacheHit: Bool
        /// Digests evicted to keep the cache within its limit after this boot's fetch.
        var evicted: [String] = []
    }

    func path(sha256: String) -> String { root + "/" + sha256 }

    /// The local path of `image`'s bytes, fetching them from the source on a miss.
    nonisolated(nonsending) func fetch(_ image: Image) async throws(SwiftletError) -> (path: String, hit: Bool) {
        try await fetch(sha256: image.sha256)
    }

    /// The local path of the bytes of `sha256` (an image's or a snapshot's), fetched on a miss.
    nonisolated(nonsending) func fetch(sha256: String) async throws(SwiftletError) -> (path: String, hit: Bool) {
        let target = path(sha256: sha256)
        if access(target, R_OK) == 0 {
            // Its modification time is the entry's last use, for the eviction order.
            if limitBytes != nil { utimensat(AT_FDCWD, target, nil, 0) }
            return (target, true)
        }
        let fetch = fetches.withLock { fetches in
            if let running = fetches[sha256] { return running }
            let started = Task { try await self.fill(sha256: sha256) }
            fetches[sha256] = started
            return started
        }
        defer { fetches.withLock { if $0[sha256] == fetch { $0[sha256] = nil } } }
        do { try await fetch.value } catch {
            throw error as? SwiftletError
                ?? SwiftletError(.internal, "image.cache_failed", "cannot fetch image \(sha256): \(error)")
        }
        return (target, false)
    }

    /// Puts the digest's bytes at their cache path.
    private func fill(sha256: String) async throws(SwiftletError) {
        let target = path(sha256: sha256)
        if access(target, R_OK) == 0 { return }
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let temp = root + "/.tmp-" + ResourceID.make("fetch")
        defer { unlink(temp) }
        let local = source.localPath(sha256: sha256)
        if let local, access(local, R_OK) != 0 {
            throw SwiftletError(
                .internal, "image.blob_missing", "image blob \(sha256) is missing from the blob store")
        }
        if local.map({ link($0, temp) }) != 0 {
            try await source.download(sha256: sha256, to: temp)
            // A copy crossed a filesystem or a network: check it before it becomes the cached truth.
            let digest = try? ImageSignature.sha256(path: temp)
            guard digest == sha256 else {
                throw SwiftletError(
                    .unprocessable, "image.digest_mismatch",
                    "the bytes fetched for image \(sha256) hash to \(digest ?? "nothing"): refused")
            }
        }
        guard rename(temp, target) == 0 else {
            throw SwiftletError(
                .internal, "image.cache_failed", "cannot place image \(sha256) in the host cache: errno \(errno)")
        }
    }

    /// Drops a digest's cached bytes. An entry is usually a hard link to the blob, so the bytes
    /// stay on disk until both are gone. A VM that runs from them keeps its open file.
    func evict(sha256: String) {
        unlink(path(sha256: sha256))
    }

    /// Evicts the least recently used copies until the copies fit in `limitBytes`, never one of
    /// `protected` (the boot in progress needs them) nor one whose blob is gone (it could not be
    /// fetched again). Returns the evicted digests.
    func enforceLimit(protecting protected: Set<String>) -> [String] {
        guard let limitBytes, let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        var copies: [(digest: String, size: Int64, lastUse: Int)] = []
        var total: Int64 = 0
        for name in names where !name.hasPrefix(".") {
            var entry = stat()
            guard stat(path(sha256: name), &entry) == 0 else { continue }
            var blob = stat()
            if let local = source.localPath(sha256: name), stat(local, &blob) == 0, blob.st_dev == entry.st_dev,
                blob.st_ino == entry.st_ino
            {
                continue
            }
            total += Int64(entry.st_size)
            if source.canFetchAgain(sha256: name) && !protected.contains(name) {
                copies.append(
                    (name, Int64(entry.st_size), entry.st_mtim.tv_sec * 1_000_000_000 + entry.st_mtim.tv_nsec))
            }
        }
        var evicted: [String] = []
        for copy in copies.sorted(by: { $0.lastUse < $1.lastUse }) where total > limitBytes {
            guard unlink(path(sha256: copy.digest)) == 0 else { continue }
            total -= copy.size
            evicted.append(copy.digest)
        }
        return evicted
    }

    /// Drops every entry whose digest no image record names any more (its image was deleted
    /// while this host was down, or before eviction existed), and the temp files of fetches a
    /// crash cut short. The blob store is not consulted: a host keeps booting the images it has
    /// cached when their blobs are gone.
    func prune(keeping digests: Set<String>) -> [String] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        // Temp files of fetches in progress are this process's; those of a crashed one are not.
        let inProgress = Set(fetches.withLock { Array($0.keys) })
        let dropped = entries.filter {
            !digests.contains($0) && !($0.hasPrefix(".tmp-") && !inProgress.isEmpty)
        }
        for entry in dropped { unlink(root + "/" + entry) }
        return dropped
    }

    /// Everything a boot needs, checked: the image's launch profile, its initrd, and for a project
    /// that requires signed images, the cached bytes re-hashed and the signature re-verified.
    nonisolated(nonsending) func prepare(_ boot: BootImage) async throws(SwiftletError) -> Prepared {
        let image = boot.image
        guard image.kind != .initrd else {
            throw .badRequest(
                "image.not_bootable", "image '\(image.name)' is an initrd: boot a bzImage that references it")
        }
        let profile = try LaunchProfile(kind: image.kind, properties: image.properties)
        let kernel = try await fetch(image)
        var initrdPath: String?
        var hit = kernel.hit
        var digests: Set = [image.sha256]
        if let initrdId = profile.initrdImageId {
            guard let initrd = boot.initrd, initrd.id == initrdId, initrd.kind == .initrd else {
                throw .notFound("image", initrdId)
            }
            let fetched = try await fetch(initrd)
            initrdPath = fetched.path
            digests.insert(initrd.sha256)
            hit = hit && fetched.hit
        }
        if let check = boot.signature {
            let digest: String
            do { digest = try ImageSignature.sha256(path: kernel.path) } catch {
                throw SwiftletError(.internal, "image.read_failed", "cannot re-hash image \(image.sha256): \(error)")
            }
            guard digest == image.sha256 else {
                throw SwiftletError(
                    .unprocessable, "image.tampered",
                    "image bytes on this host hash to \(digest), not the registered \(image.sha256): refusing to boot")
            }
            try ImageSignature.verify(image.signature, sha256: digest, keys: check.keys, projectName: check.projectName)
        }
        var prepared = Prepared(kernelPath: kernel.path, initrdPath: initrdPath, profile: profile, cacheHit: hit)
        if !hit { prepared.evicted = enforceLimit(protecting: digests) }
        return prepared
    }
}
