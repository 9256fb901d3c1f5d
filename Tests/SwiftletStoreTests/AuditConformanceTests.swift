import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Tokens' expiry and revocation, and the audit log, the same on every engine.
@Suite struct AuditConformanceTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test(arguments: StoreEngine.allCases)
    func tokensKeepTheirExpiryAndARevocationIsKeptOnceAndSeenByEveryStore(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            try await stores[0].createProject(Project(id: "prj-web", name: "web", createdAt: Self.now))
            let expiring = TokenInfo(
                id: "tok-1", projectId: "prj-web", admin: false, token: nil, createdAt: Self.now,
                expiresAt: Self.now.addingTimeInterval(3600))
            let forever = TokenInfo(id: "tok-2", projectId: "prj-web", admin: false, token: nil, createdAt: Self.now)
            try await stores[0].createToken(expiring, secretHash: "hash-1")
            try await stores[0].createToken(forever, secretHash: "hash-2")
            #expect(try await stores[1].token(forSecretHash: "hash-1") == expiring)
            #expect(try await stores[1].token(forSecretHash: "hash-2") == forever)
            #expect(try await stores[1].token(forSecretHash: "hash-3") == nil)
            #expect(try await stores[1].tokens(projectId: "prj-web").map(\.id) == ["tok-1", "tok-2"])
            #expect(try await stores[1].tokens(projectId: "prj-other").isEmpty)

            let revokedAt = Self.now.addingTimeInterval(10)
            let revoked = try #require(try await stores[0].revokeToken(id: "tok-1", now: revokedAt))
            #expect(revoked.revokedAt == revokedAt)
            #expect(try await stores[1].token(forSecretHash: "hash-1")?.revokedAt == revokedAt)
            // Revoking again keeps the first time; an unknown id is nil.
            let again = try await stores[1].revokeToken(id: "tok-1", now: revokedAt.addingTimeInterval(60))
            #expect(again?.revokedAt == revokedAt)
            #expect(try await stores[1].revokeToken(id: "tok-none", now: revokedAt) == nil)
            #expect(try await stores[0].token(forSecretHash: "hash-2")?.revokedAt == nil)
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func auditEntriesAreKeptWhole_newestFirst_fromATime_andLimited(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            func entry(_ second: Double, _ method: String, status: Int, code: String? = nil) -> AuditEntry {
                AuditEntry(
                    time: Self.now.addingTimeInterval(second), tokenId: status == 401 ? nil : "tok-1",
                    userId: second == 2 ? "usr-ann" : nil, projectId: status == 401 ? nil : "prj-web", method: method,
                    route: "/v1/instances/{id}", resourceId: status == 401 ? nil : "ins-\(Int(second))",
                    status: status, code: code)
            }
            let written = [
                entry(1, "POST", status: 201), entry(2, "DELETE", status: 204),
                entry(3, "POST", status: 401, code: "auth.invalid_token"),
            ]
            try await stores[0].appendAudit(Array(written.prefix(2)))
            try await stores[0].appendAudit([written[2]])
            try await stores[0].appendAudit([])

            let all = try await stores[1].auditEntries(since: nil, limit: 100)
            #expect(all.count == 3)
            // Ids are assigned, growing; everything else is kept as written.
            let ids = all.compactMap(\.id)
            #expect(ids.count == 3 && ids == ids.sorted(by: >))
            #expect(
                all.map {
                    var copy = $0; copy.id = nil; return copy
                } == written.reversed())

            let recent = try await stores[1].auditEntries(since: Self.now.addingTimeInterval(2), limit: 100)
            #expect(recent.map(\.method) == ["POST", "DELETE"])
            #expect(recent.first?.code == "auth.invalid_token")
            #expect(try await stores[1].auditEntries(since: nil, limit: 1).map(\.status) == [401])
            #expect(try await stores[1].auditEntries(since: Self.now.addingTimeInterval(4), limit: 10).isEmpty)
        }
    }
}
