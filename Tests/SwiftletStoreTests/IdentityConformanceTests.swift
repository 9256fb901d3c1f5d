import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Users and Identity tokens, the same on every engine.
@Suite struct IdentityConformanceTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func project(_ name: String) -> Project {
        Project(id: "prj-\(name)", name: name, createdAt: now)
    }

    @Test(arguments: StoreEngine.allCases)
    func usersAreFoundByNameAndIdWithTheirPasswordRecordAndNamesAreUnique(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            try await stores[0].createProject(Self.project("web"))
            let ann = IdentityUser(id: "usr-ann", name: "ann", projectId: "prj-web", createdAt: Self.now)
            try await stores[0].createUser(ann, passwordHash: "pbkdf2-sha256$1$c2FsdA==$a2V5")
            let found = try #require(try await stores[1].user(name: "ann"))
            #expect(found.user == ann)
            #expect(found.passwordHash == "pbkdf2-sha256$1$c2FsdA==$a2V5")
            #expect(try await stores[1].user(id: "usr-ann") == ann)
            #expect(try await stores[1].user(name: "bob") == nil)

            let again = IdentityUser(
                id: "usr-ann2", name: "ann", projectId: Project.adminProjectId, createdAt: Self.now)
            await #expect(throws: SwiftletError(.conflict, "user.duplicate_name", "a user named 'ann' already exists"))
            {
                try await stores[1].createUser(again, passwordHash: "x")
            }
            let root = IdentityUser(
                id: "usr-root", name: "root", projectId: Project.adminProjectId, createdAt: Self.now)
            try await stores[1].createUser(root, passwordHash: "y")
            #expect(try await stores[0].users(projectId: nil).map(\.name).sorted() == ["ann", "root"])
            #expect(try await stores[0].users(projectId: "prj-web") == [ann])
            // A user belongs to a project that exists.
            let orphan = IdentityUser(id: "usr-o", name: "orphan", projectId: "prj-none", createdAt: Self.now)
            await #expect(throws: SwiftletError.self) { try await stores[0].createUser(orphan, passwordHash: "z") }
        }
    }

    @Test(arguments: StoreEngine.allCases)
    func tokensAreFoundByTheirSecretsHashUntilRevoked(engine: StoreEngine) async throws {
        try await engine.withStores(count: 2) { stores in
            try await stores[0].createProject(Self.project("web"))
            let ann = IdentityUser(id: "usr-ann", name: "ann", projectId: "prj-web", createdAt: Self.now)
            try await stores[0].createUser(ann, passwordHash: "x")
            let token = IdentityToken(
                id: "tok-1", userId: "usr-ann", projectId: "prj-web", admin: false, methods: ["password"],
                issuedAt: Self.now, expiresAt: Self.now.addingTimeInterval(3600))
            let exchanged = IdentityToken(
                id: "tok-2", userId: nil, projectId: Project.adminProjectId, admin: true, methods: ["token"],
                issuedAt: Self.now, expiresAt: Self.now.addingTimeInterval(60))
            try await stores[0].createIdentityToken(token, secretHash: "hash-1")
            try await stores[0].createIdentityToken(exchanged, secretHash: "hash-2")
            #expect(try await stores[1].identityToken(secretHash: "hash-1") == token)
            #expect(try await stores[1].identityToken(secretHash: "hash-2") == exchanged)
            #expect(try await stores[1].identityToken(secretHash: "hash-3") == nil)

            #expect(try await stores[1].revokeIdentityToken(secretHash: "hash-1"))
            #expect(try await stores[0].identityToken(secretHash: "hash-1") == nil)
            #expect(try await !stores[0].revokeIdentityToken(secretHash: "hash-1"))
            #expect(try await stores[0].identityToken(secretHash: "hash-2") == exchanged)

            // A token issued after another's expiry removes it.
            let later = IdentityToken(
                id: "tok-3", userId: "usr-ann", projectId: "prj-web", admin: false, methods: ["password"],
                issuedAt: Self.now.addingTimeInterval(120), expiresAt: Self.now.addingTimeInterval(3720))
            try await stores[1].createIdentityToken(later, secretHash: "hash-3")
            #expect(try await stores[0].identityToken(secretHash: "hash-2") == nil)
            #expect(try await stores[0].identityToken(secretHash: "hash-3") == later)
        }
    }
}
