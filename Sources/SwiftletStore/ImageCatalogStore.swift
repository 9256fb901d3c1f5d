import Foundation
import SwiftletCore

/// Image metadata beside the bytes: visibility, tags, signatures, the keys a project trusts,
/// and the build cache (inputs digest → image).
public protocol ImageCatalogStore: Sendable {
    func addSigningKey(_ key: SigningKey) throws(SwiftletError)
    func signingKeys(projectId: String) throws(SwiftletError) -> [SigningKey]
    /// Returns whether a key was removed.
    func deleteSigningKey(idOrName: String, projectId: String) throws(SwiftletError) -> Bool
    func setRequireSignedImages(projectId: String, _ required: Bool) throws(SwiftletError)
    /// Writes visibility, tags, signature and properties of an existing image record.
    func updateImageCatalog(_ image: Image) throws(SwiftletError)
}
