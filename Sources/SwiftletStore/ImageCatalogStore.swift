import Foundation
import SwiftletCore

/// Image metadata beside the bytes: visibility, tags, signatures, the keys a project trusts,
/// and the build cache (inputs digest → image).
public protocol ImageCatalogStore: Sendable {
    func addSigningKey(_ key: SigningKey) async throws(SwiftletError)
    func signingKeys(projectId: String) async throws(SwiftletError) -> [SigningKey]
    /// Returns whether a key was removed.
    func deleteSigningKey(idOrName: String, projectId: String) async throws(SwiftletError) -> Bool
    func setRequireSignedImages(projectId: String, _ required: Bool) async throws(SwiftletError)
    /// Writes visibility, tags, signature and properties of an existing image record.
    func updateImageCatalog(_ image: Image) async throws(SwiftletError)
}
