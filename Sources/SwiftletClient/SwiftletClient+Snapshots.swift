import SwiftletCore

extension SwiftletClient {
    public func snapshot(instance: String, name: String? = nil) async throws -> Snapshot {
        try await send(
            "POST", "/v1/instances/\(segment(instance))/snapshot", body: CreateSnapshotRequest(name: name))
    }

    public func snapshots() async throws -> [Snapshot] {
        let list: SnapshotList = try await send("GET", "/v1/snapshots")
        return list.snapshots
    }

    public func snapshot(_ idOrName: String) async throws -> Snapshot {
        try await send("GET", "/v1/snapshots/\(segment(idOrName))")
    }

    public func deleteSnapshot(_ idOrName: String) async throws {
        try await sendNoContent("DELETE", "/v1/snapshots/\(segment(idOrName))")
    }
}
