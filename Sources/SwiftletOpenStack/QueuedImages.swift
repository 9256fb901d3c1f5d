import Foundation
import SwiftletCore
import Synchronization

/// Images created through the Image API and not yet uploaded (Glance's `queued`): Swiftlet
/// registers an image with its bytes, so until the upload its record lives here, in this
/// controller's memory (a restart forgets it, as an image with no data is nothing to keep).
final class QueuedImages: Sendable {
    struct Entry: Sendable {
        var id: String
        var name: String
        var projectId: String
        var visibility: ImageVisibility
        var tags: [String]
        var properties: [String: String]
        var createdAt: Date
        /// An upload is streaming into it: a second one is refused.
        var uploading = false
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Bounds memory against creates that are never uploaded.
    static let limit = 1000

    func add(_ entry: Entry) throws(SwiftletError) {
        try entries.withLock { entries throws(SwiftletError) in
            guard entries.count < Self.limit else {
                throw SwiftletError(
                    .conflict, "image.too_many_queued",
                    "\(Self.limit) images wait for their data: upload or delete some")
            }
            entries[entry.id] = entry
        }
    }

    /// The entry, if the principal may see it (its project's, or any for an admin).
    func entry(_ id: String, by principal: Principal) -> Entry? {
        entries.withLock { $0[id] }.flatMap { principal.isAdmin || $0.projectId == principal.projectId ? $0 : nil }
    }

    func all(by principal: Principal) -> [Entry] {
        entries.withLock { Array($0.values) }.filter { principal.isAdmin || $0.projectId == principal.projectId }
            .sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    /// Marks the entry as receiving its data; 409 when an upload is already under way.
    func beginUpload(_ id: String) throws(SwiftletError) {
        try entries.withLock { entries throws(SwiftletError) in
            guard entries[id]?.uploading == false else {
                throw SwiftletError(.conflict, "image.upload_in_progress", "image \(id) is already receiving its data")
            }
            entries[id]?.uploading = true
        }
    }

    /// After an upload: the image is registered (gone from here), or stays queued for another try.
    func endUpload(_ id: String, registered: Bool) {
        entries.withLock { entries in
            if registered { entries[id] = nil } else { entries[id]?.uploading = false }
        }
    }

    /// Replaces an entry that is not receiving its data.
    func update(_ entry: Entry) throws(SwiftletError) {
        try entries.withLock { entries throws(SwiftletError) in
            guard entries[entry.id]?.uploading == false else {
                throw SwiftletError(.conflict, "image.upload_in_progress", "image \(entry.id) is receiving its data")
            }
            entries[entry.id] = entry
        }
    }

    @discardableResult
    func remove(_ id: String) -> Bool { entries.withLock { $0.removeValue(forKey: id) != nil } }
}
