import Crypto
import Foundation
import SwiftletCore

#if canImport(Glibc)
    import Glibc
#endif

/// Content-addressed image bytes: `<root>/sha256/<hex>`. Uploads stream into `<root>/tmp`
/// while being hashed and are renamed into place only when complete and valid, so an
/// interrupted upload leaves no visible blob.
public struct BlobStore: Sendable {
    public let root: String

    public init(root: String) throws(SwiftletError) {
        self.root = root
        do {
            for dir in ["sha256", "tmp"] {
                try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
            }
            // Leftovers of uploads cut short by a crash.
            for name in try FileManager.default.contentsOfDirectory(atPath: root + "/tmp") {
                try? FileManager.default.removeItem(atPath: root + "/tmp/" + name)
            }
        } catch {
            throw SwiftletError(.internal, "blob.init_failed", "cannot prepare blob store at \(root): \(error)")
        }
    }

    public func path(sha256: String) -> String { root + "/sha256/" + sha256 }

    public func contains(sha256: String) -> Bool { FileManager.default.fileExists(atPath: path(sha256: sha256)) }

    public func remove(sha256: String) { try? FileManager.default.removeItem(atPath: path(sha256: sha256)) }

    public func beginUpload(limit: Int64) throws(SwiftletError) -> BlobUpload {
        try BlobUpload(directory: root, limit: limit)
    }
}

/// One upload in progress. Not shared between tasks: it is owned by the request handling it.
public final class BlobUpload {
    private let directory: String
    private let tempPath: String
    private let limit: Int64
    private var descriptor: Int32
    private var hasher = SHA256()
    public private(set) var size: Int64 = 0
    /// The sha256 (hex) of the bytes appended so far: what a signature covers, known before commit.
    public var sha256: String { hasher.finalize().hexString }

    init(directory: String, limit: Int64) throws(SwiftletError) {
        self.directory = directory
        self.limit = limit
        tempPath = directory + "/tmp/" + ResourceID.make("upload")
        descriptor = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw SwiftletError(.internal, "blob.write_failed", "cannot create upload file: errno \(errno)")
        }
    }

    deinit { abort() }

    public func append(_ bytes: UnsafeRawBufferPointer) throws(SwiftletError) {
        size += Int64(bytes.count)
        guard size <= limit else {
            abort()
            throw SwiftletError(.payloadTooLarge, "image.too_large", "image is larger than the limit of \(limit) bytes")
        }
        hasher.update(bufferPointer: bytes)
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            guard written > 0 else {
                abort()
                throw SwiftletError(.internal, "blob.write_failed", "cannot write upload: errno \(errno)")
            }
            offset += written
        }
    }

    /// Validates the complete upload with `inspect` (given the temp file path) and moves it into
    /// the store. Returns the digest. Any error removes the temporary file.
    public func commit<T>(inspect: (String) async throws -> T) async throws -> (sha256: String, result: T) {
        defer { abort() }
        guard descriptor >= 0 else { throw SwiftletError(.badRequest, "image.upload_aborted", "upload was aborted") }
        guard fsync(descriptor) == 0 else {
            throw SwiftletError(.internal, "blob.write_failed", "cannot sync upload: errno \(errno)")
        }
        let result = try await inspect(tempPath)
        let digest = hasher.finalize().hexString
        let target = directory + "/sha256/" + digest
        if FileManager.default.fileExists(atPath: target) {
            unlink(tempPath)  // Same bytes already stored once.
        } else {
            guard rename(tempPath, target) == 0 else {
                throw SwiftletError(.internal, "blob.write_failed", "cannot store blob: errno \(errno)")
            }
        }
        return (digest, result)
    }

    /// Drops the upload and its temporary file. Idempotent.
    public func abort() {
        if descriptor >= 0 {
            close(descriptor)
            descriptor = -1
        }
        unlink(tempPath)
    }
}

extension KernelFormat {
    /// Detects the kind of the kernel file at `path`.
    public static func detect(path: String) throws -> ImageKind {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw SwiftletError(.internal, "image.read_failed", "cannot read \(path)")
        }
        defer { try? handle.close() }
        let size = Int64(try handle.seekToEnd())
        let kind = try detect(size: size) { offset, count in
            try handle.seek(toOffset: UInt64(offset))
            return [UInt8](try handle.read(upToCount: count) ?? Data())
        }
        if kind == .raw || kind == .qcow2 { _ = try DiskImage.validate(path: path, kind: kind) }
        return kind
    }
}
