import Foundation
import Hummingbird
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletStore

extension Controller {
    private var poolStore: any PoolStore {
        get throws(SwiftletError) {
            guard let pools = store as? any PoolStore else {
                throw SwiftletError(.internal, "pool.unsupported", "this store has no warm pools")
            }
            return pools
        }
    }

    /// Creates a warm pool for an image and shape; each host's agent fills it in the background.
    public func createPool(_ request: CreatePoolRequest, by principal: Principal) async throws(SwiftletError)
        -> WarmPool
    {
        let image = try await image(request.image, by: principal)
        var memoryMib = request.memoryMib
        var vcpus = request.vcpus
        if let flavorName = request.flavor ?? (memoryMib == nil && vcpus == nil ? "tiny" : nil) {
            guard let flavor = try await store.flavors().first(where: { $0.name == flavorName }) else {
                throw .notFound("flavor", flavorName)
            }
            memoryMib = memoryMib ?? flavor.memoryMib
            vcpus = vcpus ?? flavor.vcpus
        }
        try validateResources(memoryMib: memoryMib ?? 16, vcpus: vcpus ?? 1)
        guard (1...WarmPool.maxSize).contains(request.size) else {
            throw .badRequest("pool.bad_size", "size must be between 1 and \(WarmPool.maxSize), got \(request.size)")
        }
        let pool = WarmPool(
            id: ResourceID.make("pool"), projectId: principal.projectId, imageId: image.id, memoryMib: memoryMib ?? 16,
            vcpus: vcpus ?? 1, size: request.size, createdAt: Date())
        do { try await poolStore.createPool(pool) } catch  where error.kind == .conflict {
            throw SwiftletError(.conflict, "pool.duplicate", "a pool for that image and shape already exists")
        }
        let boot = try await instanceSync.bootImage(imageId: image.id, projectId: pool.projectId, known: image)
        for link in agents.all {
            await link.apply(.applyPool(PoolAssignment(pool: pool, boot: boot)), pendingCommit: nil)
        }
        return pool
    }

    public func pools(by principal: Principal) async throws(SwiftletError) -> [WarmPool] {
        var ready: [String: Int] = [:]
        for link in agents.all { ready.merge(await link.poolReadyCounts(), uniquingKeysWith: +) }
        return try await poolStore.pools(projectId: scope(principal)).map { pool in
            var pool = pool
            pool.ready = ready[pool.id] ?? 0
            return pool
        }
    }

    public func deletePool(_ id: String, by principal: Principal) async throws(SwiftletError) {
        guard try await poolStore.pools(projectId: scope(principal)).contains(where: { $0.id == id }) else {
            throw .notFound("pool", id)
        }
        try await poolStore.deletePool(id: id)
        for link in agents.all { await link.apply(.removePool(id: id), pendingCommit: nil) }
    }
}

/// `/v1/pools`: warm pools of pre-booted unikernels.
enum PoolRoutes {
    static func register(on v1: RouterGroup<APIContext>, controller: Controller) {
        v1.post("pools") { request, context in
            let body = try await APIRouter.decode(CreatePoolRequest.self, request, context)
            return APIRouter.json(
                try await controller.createPool(body, by: try context.requirePrincipal()), status: .created)
        }
        v1.get("pools") { _, context in
            APIRouter.json(PoolList(try await controller.pools(by: try context.requirePrincipal())))
        }
        v1.delete("pools/:id") { _, context in
            try await controller.deletePool(try context.parameters.require("id"), by: try context.requirePrincipal())
            return Response(status: .noContent)
        }
    }
}
