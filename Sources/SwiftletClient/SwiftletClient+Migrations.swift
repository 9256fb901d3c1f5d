import SwiftletCore

extension SwiftletClient {
    public func migrate(_ instance: String, _ request: MigrateInstanceRequest) async throws -> InstanceMigration {
        try await send("POST", "/v1/instances/\(segment(instance))/migrate", body: request)
    }

    public func migrations(instance: String? = nil) async throws -> [InstanceMigration] {
        let query = instance.map { "?instance=\(segment($0))" } ?? ""
        let list: MigrationList = try await send("GET", "/v1/migrations" + query)
        return list.migrations
    }

    public func migration(_ id: String) async throws -> InstanceMigration {
        try await send("GET", "/v1/migrations/\(segment(id))")
    }

    public func cancelMigration(_ id: String) async throws -> InstanceMigration {
        try await send("POST", "/v1/migrations/\(segment(id))/cancel")
    }

    public func drain(host: String) async throws -> DrainReport {
        try await send("POST", "/v1/hosts/\(segment(host))/drain")
    }
}
