import SwiftletCore

extension SwiftletClient {
    public func createPool(_ request: CreatePoolRequest) async throws -> WarmPool {
        try await send("POST", "/v1/pools", body: request)
    }

    public func pools() async throws -> [WarmPool] {
        let list: PoolList = try await send("GET", "/v1/pools")
        return list.pools
    }

    public func deletePool(_ id: String) async throws {
        try await sendNoContent("DELETE", "/v1/pools/\(segment(id))")
    }
}
