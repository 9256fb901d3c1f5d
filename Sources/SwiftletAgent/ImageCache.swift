import Foundation
import SwiftletCore
import SwiftletImages
import SwiftletStore

#if canImport(Glibc)
    import Glibc
#endif

/// The host's copy of image bytes, by digest: `<root>/<sha256>`. Filled once from the blob store
/// (hard link when on the same filesystem, else a verified copy); a boot with the bytes cached
/// never touches the blob store.
struct ImageCache: Sendable {
    let root: String
    let blobs: BlobStore
    /// Bytes the cache's copies may hold; nil for no limit. Only copies count: an entry that is a
    /// hard link to its blob costs no space of its own. Past the limit, a fetch evicts the least
    /// recently used copies that the blob store can give back.
    let limitBytes: Int64?

    init(root: String, blobs: BlobStore, limitBytes: Int64? = nil) {
        self.root = root
        self.blobs = blobs
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

    /// The local path of `image`'s bytes, fetching them from the blob store on a miss.
    func fetch(_ image: Image) throws(SwiftletError) -> (path: String, hit: Bool) {
        let target = path(sha256: image.sha256)
        if access(target, R_OK) == 0 {
            // Its modification time is the entry's last use, for the eviction order.
            if limitBytes != nil { utimensat(AT_FDCWD, target, nil, 0) }
            return (target, true)
        }
        let source = blobs.path(sha256: image.sha256)
        guard access(source, R_OK) == 0 else {
            throw SwiftletError(
                .internal, "image.blob_missing", "image blob \(image.sha256) is missing from the blob store")
        }
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let temp = root + "/.tmp-" + ResourceID.make("fetch")
        defer { unlink(temp) }
        if link(source, temp) != 0 {
            do { try FileManager.default.copyItem(atPath: source, toPath: temp) } catch {
                throw SwiftletError(
                    .internal, "image.cache_failed", "cannot copy image \(image.sha256) into the host cache: \(error)")
            }
            // A copy crossed a filesystem: check it before it becomes the cached truth.
            guard (try? ImageSignature.sha256(path: temp)) == image.sha256 else {
                throw SwiftletError(
                    .internal, "image.cache_failed", "copy of image \(image.sha256) does not match its digest")
            }
        }
        guard rename(temp, target) == 0 else {
            throw SwiftletError(
                .internal, "image.cache_failed", "cannot place image \(image.sha256) in the host cache: errno \(errno)")
        }
        return (target, false)
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
            let blobExists = stat(blobs.path(sha256: name), &blob) == 0
            if blobExists && blob.st_dev == entry.st_dev && blob.st_ino == entry.st_ino { continue }
            total += Int64(entry.st_size)
            if blobExists && !protected.contains(name) {
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
        let dropped = entries.filter { !digests.contains($0) }
        for entry in dropped { unlink(root + "/" + entry) }
        return dropped
    }

    /// Everything a boot needs, checked: the image's launch profile, its initrd, and for a project
    /// that requires signed images, the cached bytes re-hashed and the signature re-verified.
    func prepare(_ image: Image, instance: Instance, store: any SwiftletStore) throws(SwiftletError) -> Prepared {
        guard image.kind != .initrd else {
            throw .badRequest(
                "image.not_bootable", "image '\(image.name)' is an initrd: boot a bzImage that references it")
        }
        let profile = try LaunchProfile(kind: image.kind, properties: image.properties)
        let kernel = try fetch(image)
        var initrdPath: String?
        var hit = kernel.hit
        var digests: Set = [image.sha256]
        if let initrdId = profile.initrdImageId {
            guard let initrd = try store.image(idOrName: initrdId, projectId: nil), initrd.kind == .initrd else {
                throw .notFound("image", initrdId)
            }
            let fetched = try fetch(initrd)
            initrdPath = fetched.path
            digests.insert(initrd.sha256)
            hit = hit && fetched.hit
        }
        if let catalog = store as? any ImageCatalogStore,
            let project = try store.project(id: instance.projectId), project.requireSignedImages
        {
            let keys = try catalog.signingKeys(projectId: project.id)
            let digest: String
            do { digest = try ImageSignature.sha256(path: kernel.path) } catch {
                throw SwiftletError(.internal, "image.read_failed", "cannot re-hash image \(image.sha256): \(error)")
            }
            guard digest == image.sha256 else {
                throw SwiftletError(
                    .unprocessable, "image.tampered",
                    "image bytes on this host hash to \(digest), not the registered \(image.sha256): refusing to boot")
            }
            try ImageSignature.verify(image.signature, sha256: digest, keys: keys, projectName: project.name)
        }
        var prepared = Prepared(kernelPath: kernel.path, initrdPath: initrdPath, profile: profile, cacheHit: hit)
        if !hit { prepared.evicted = enforceLimit(protecting: digests) }
        return prepared
    }
}
