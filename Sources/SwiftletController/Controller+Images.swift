import Foundation
import SwiftletCore
import SwiftletImages
import SwiftletStore

/// The image service beyond upload: launch properties, signatures, visibility, tags, trusted keys.
extension Controller {
    var catalog: any ImageCatalogStore {
        get throws(SwiftletError) {
            guard let catalog = store as? any ImageCatalogStore else {
                throw SwiftletError(.unavailable, "image.catalog_unavailable", "this store keeps no image catalog")
            }
            return catalog
        }
    }

    /// Checks the launch properties against the detected kind, resolves `initrd` (a name or id of
    /// an initrd image the caller can see) to an id, and records the boot protocol.
    func normalizeImageProperties(_ properties: [String: String], kind: ImageKind, by principal: Principal)
        async throws(SwiftletError)
        -> [String: String]
    {
        var properties = properties
        if let reference = properties[LaunchProfile.initrdProperty] {
            let initrd = try await image(reference, by: principal)
            guard initrd.kind == .initrd else {
                throw .badRequest(
                    "image.bad_initrd", "initrd '\(reference)' is a \(initrd.kind.rawValue) image, not an initrd")
            }
            properties[LaunchProfile.initrdProperty] = initrd.id
        }
        _ = try LaunchProfile(kind: kind, properties: properties)
        properties[LaunchProfile.bootProtocolProperty] = LaunchProfile.bootProtocol(of: kind)
        return properties
    }

    /// At upload: a given signature must verify with a key the project trusts; a project that
    /// requires signed images refuses an upload without one. Returns the verifying key's id.
    func verifyUploadSignature(_ signature: String?, sha256: String, by principal: Principal)
        async throws(SwiftletError)
        -> String?
    {
        guard let project = try await store.project(id: principal.projectId) else {
            throw .notFound("project", principal.projectId)
        }
        guard signature != nil || project.requireSignedImages else { return nil }
        return try await ImageSignature.verify(
            signature, sha256: sha256, keys: try catalog.signingKeys(projectId: project.id), projectName: project.name)
    }

    /// Instance creation: the image must be bootable and get at least its minimum memory.
    /// Refuses a launch the image cannot boot: an initrd, too little memory, no NIC for a guest
    /// that needs one (`hasNIC`: a network, a published port or a configured address).
    func checkLaunch(of image: Image, memoryMib: Int, hasNIC: Bool) throws(SwiftletError) {
        guard image.kind != .initrd else {
            throw .badRequest(
                "image.not_bootable", "image '\(image.name)' is an initrd: boot a bzImage that references it")
        }
        let profile = try LaunchProfile(kind: image.kind, properties: image.properties)
        if let minimum = profile.minMemoryMib, memoryMib < minimum {
            throw .badRequest(
                "instance.below_min_memory",
                "image '\(image.name)' needs at least \(minimum) MiB of memory, got \(memoryMib) MiB")
        }
        if profile.needsNetwork && !hasNIC {
            throw .badRequest(
                "instance.needs_network",
                "image '\(image.name)' needs a NIC (its guest stops at boot without one): attach it to a network "
                    + "(--network NET) or publish a port (--publish HOST:GUEST)")
        }
    }

    /// Tags are short words, kept sorted and unique.
    static func normalizeTags(_ tags: [String]) throws(SwiftletError) -> [String] {
        for tag in tags {
            guard !tag.isEmpty, tag.count <= 64, tag.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) })
            else {
                throw .badRequest("image.bad_tag", "tag '\(tag)' must be 1-64 letters, digits, '-', '_', '.' or ':'")
            }
        }
        return Array(Set(tags)).sorted()
    }

    /// Only the owning project (or an admin) changes or deletes an image, public or not.
    func requireOwner(_ image: Image, _ principal: Principal) throws(SwiftletError) {
        guard principal.isAdmin || image.projectId == principal.projectId else {
            throw SwiftletError(.forbidden, "image.not_owner", "image '\(image.name)' belongs to another project")
        }
    }

    public func updateImage(_ idOrName: String, _ request: UpdateImageRequest, by principal: Principal)
        async throws(SwiftletError) -> Image
    {
        var image = try await image(idOrName, by: principal)
        try requireOwner(image, principal)
        if let visibility = request.visibility { image.visibility = visibility }
        if let tags = request.tags { image.tags = try Self.normalizeTags(tags) }
        if let changes = request.properties {
            var properties = image.properties
            for (key, value) in changes { properties[key] = value.isEmpty ? nil : value }
            if let pattern = properties[Image.readyPatternProperty] {
                do { _ = try Regex(pattern) } catch {
                    throw SwiftletError.badRequest(
                        "image.bad_ready_pattern", "ready_pattern is not a valid regex: \(pattern)")
                }
            }
            image.properties = try await normalizeImageProperties(properties, kind: image.kind, by: principal)
        }
        try await catalog.updateImageCatalog(image)
        return image
    }

    /// Adds `tag` to the image (a build that answered with it from the cache).
    func tagImage(_ imageId: String, with tag: String, by principal: Principal) async throws(SwiftletError) {
        var image = try await image(imageId, by: principal)
        image.tags = try Self.normalizeTags((image.tags ?? []) + [tag])
        try await catalog.updateImageCatalog(image)
    }

    // MARK: - Trusted signing keys

    /// The project a key request acts on: a project token acts on its own project only.
    /// Cached as a value, so that "no quota" is cached too.
    private struct CachedQuota: Sendable {
        var quota: ProjectQuota?
    }

    private func keyProject(_ projectId: String, _ principal: Principal) async throws(SwiftletError) -> Project {
        guard principal.isAdmin || principal.projectId == projectId else {
            throw SwiftletError(.forbidden, "project.other", "a project token manages only its own project")
        }
        let byName = try await store.projects().first { $0.name == projectId }
        guard let project = try await store.project(id: projectId) ?? byName else {
            throw .notFound("project", projectId)
        }
        return project
    }

    public func addSigningKey(projectId: String, _ request: AddSigningKeyRequest, by principal: Principal)
        async throws(SwiftletError)
        -> SigningKey
    {
        let project = try await keyProject(projectId, principal)
        try ResourceID.validateName(request.name)
        _ = try ImageSignature.publicKey(base64: request.publicKey)
        let key = SigningKey(
            id: ResourceID.make("key"), projectId: project.id, name: request.name, publicKey: request.publicKey,
            createdAt: Date())
        do { try await catalog.addSigningKey(key) } catch  where error.kind == .conflict {
            throw SwiftletError(
                .conflict, "signing_key.duplicate", "the project already trusts a key with that name or value")
        }
        return key
    }

    public func signingKeys(projectId: String, by principal: Principal) async throws(SwiftletError) -> [SigningKey] {
        try await catalog.signingKeys(projectId: try keyProject(projectId, principal).id)
    }

    public func deleteSigningKey(projectId: String, key: String, by principal: Principal) async throws(SwiftletError) {
        guard try await catalog.deleteSigningKey(idOrName: key, projectId: try keyProject(projectId, principal).id)
        else {
            throw .notFound("signing_key", key)
        }
    }

    public func updateProject(_ projectId: String, _ request: UpdateProjectRequest, by principal: Principal)
        async throws(SwiftletError)
        -> Project
    {
        try requireAdmin(principal)
        let project = try await keyProject(projectId, principal)
        try request.quota?.validate()
        if let required = request.requireSignedImages {
            try await catalog.setRequireSignedImages(projectId: project.id, required)
        }
        if let quota = request.quota {
            // A quota with no limit at all is no quota.
            try await store.setProjectQuota(projectId: project.id, quota == ProjectQuota() ? nil : quota)
        }
        return try await store.project(id: project.id) ?? project
    }

    /// A project with what it holds now (admins: any; a project token: its own).
    public func projectDetail(_ projectId: String, by principal: Principal) async throws(SwiftletError) -> Project {
        var project = try await keyProject(projectId, principal)
        project.usage = try await store.projectUsage(projectId: project.id)
        return project
    }

    /// The project's quota, read through the launch catalog (nil: none).
    func quota(of projectId: String) async throws(SwiftletError) -> ProjectQuota? {
        try await launchCatalog.value("quota|\(projectId)", generation: store.catalogGeneration) {
            () async throws(SwiftletError) in CachedQuota(quota: try await store.project(id: projectId)?.quota)
        }.quota
    }
}
