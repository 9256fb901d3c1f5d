import Foundation
import SwiftletCore

/// Builds and the content-addressed build cache (inputs digest → image, per project).
public protocol BuildStore: Sendable {
    func createBuild(_ build: Build) async throws(SwiftletError)
    func updateBuild(_ build: Build) async throws(SwiftletError)
    func build(id: String, projectId: String?) async throws(SwiftletError) -> Build?
    func builds(projectId: String?) async throws(SwiftletError) -> [Build]
    /// The image an earlier build made from the same inputs, if it still exists.
    func cachedImage(projectId: String, inputsDigest: String) async throws(SwiftletError) -> String?
    func cacheImage(projectId: String, inputsDigest: String, imageId: String) async throws(SwiftletError)
}
