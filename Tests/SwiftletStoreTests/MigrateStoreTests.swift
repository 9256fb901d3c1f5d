import Foundation
import GRDB
import PostgresNIO
import SwiftletCore
import Testing

@testable import SwiftletPostgres
@testable import SwiftletStore

/// A SQLite file in a temporary directory, removed afterwards.
private func withSQLiteFile(_ body: (String) async throws -> Void) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-migrate-\(UUID())").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try await body(directory + "/swiftlet.sqlite")
}

/// A migration identifier no version has shipped: what a newer swiftlet would leave behind.
private let futureMigration = "v99-from-the-future"

@Suite struct NewerSchemaTests {
    @Test func sqliteRefusesAFileANewerVersionMigrated() async throws {
        try await withSQLiteFile { path in
            _ = try SQLiteStore(path: path)
            let queue = try DatabaseQueue(path: path)
            try await queue.write { db in
                try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)", arguments: [futureMigration])
            }
            try queue.close()
            let error = await storeError { _ = try SQLiteStore(path: path) }
            #expect(error?.code == "store.newer_schema")
            #expect(error?.message.contains("newer swiftlet") == true)
            #expect(error?.message.contains(futureMigration) == true)
            // Nor will it be moved elsewhere.
            #expect(await storeError { _ = try SQLiteExport(path: path) }?.code == "store.newer_schema")
        }
    }

    @Test(.enabled(if: PostgresTestDatabase.enabled)) func postgresRefusesADatabaseANewerVersionMigrated()
        async throws
    {
        try await PostgresTestDatabase.with { store in
            try await store.client.query("INSERT INTO schema_migration (version) VALUES (\(futureMigration))")
            let error = await storeError { try await store.migrate() }
            #expect(error?.code == "store.newer_schema")
            #expect(error?.message.contains("newer swiftlet") == true)
            #expect(error?.message.contains(futureMigration) == true)
        }
    }
}

/// `PostgresStore.importSQLite`: every table of a filled SQLite store arrives, reads back alike
/// through the store protocols, and takes new writes; refusals leave the target untouched.
@Suite(.enabled(if: PostgresTestDatabase.enabled)) struct MigrateStoreTests {
    @Test func everyTableArrivesAndReadsBackAlike() async throws {
        try await withSQLiteFile { path in
            // Filled, then closed (as the stopped server's store is) before the move reads it.
            let fixture = try await Self.fill(try SQLiteStore(path: path))
            let tables = try SQLiteExport(path: path).tables().filter { !PostgresStore.notMoved.contains($0.key) }
            try await PostgresTestDatabase.with(stores: 1, migrate: false) { stores in
                let target = stores[0]
                let imported = try await target.importSQLite(path: path)
                // Every table of either engine, each with all of its source rows (and the fixture
                // puts at least one row in each, so a new table must be added to it).
                #expect(Set(imported.map(\.table)) == Set(tables.keys))
                for entry in imported {
                    let count =
                        try await target.client.query(
                            PostgresQuery(unsafeSQL: "SELECT COUNT(*)::bigint FROM \"\(entry.table)\"")
                        ).collect().first?.decode(Int64.self) ?? -1
                    #expect(Int(count) == entry.rows, "\(entry.table)")
                    #expect(entry.rows > 0, "the fixture leaves \(entry.table) empty")
                }
                try await Self.expectSameReads(try SQLiteStore(path: path), target, fixture)

                // New writes continue after the copied ones.
                let before = try await target.events(instanceId: fixture.instance).map(\.id).max() ?? 0
                try await target.addEvent(instanceId: fixture.instance, type: "note", message: "after the move")
                #expect(try await target.events(instanceId: fixture.instance).map(\.id).max() ?? 0 > before)
                try await target.createNetwork(Fixtures.network("later", "10.77.0.0/24", gateway: "10.77.0.1"))

                // A second move into the same database is refused and changes nothing.
                let again = await storeError { _ = try await target.importSQLite(path: path) }
                #expect(again?.code == "store.target_not_empty")
                #expect(again?.message.contains("already holds data") == true)
                #expect(try await target.instances(projectId: nil, state: nil, name: nil, imageId: nil).count == 1)
            }
        }
    }

    @Test func aValueTheTargetCannotTakeLeavesItEmpty() async throws {
        try await withSQLiteFile { path in
            let fixture = try await Self.fill(try SQLiteStore(path: path))
            let queue = try DatabaseQueue(path: path)
            try await queue.write { db in
                try db.execute(
                    sql: "INSERT INTO event (instance_id, time, type, message) VALUES (?, 'not a time', 'x', 'y')",
                    arguments: [fixture.instance])
            }
            try queue.close()
            try await PostgresTestDatabase.with(stores: 1, migrate: false) { stores async throws in
                let target = stores[0]
                #expect(await storeError { _ = try await target.importSQLite(path: path) }?.code == "store.bad_value")
                #expect(try await target.instances(projectId: nil, state: nil, name: nil, imageId: nil).isEmpty)
                #expect(try await target.images(projectId: nil).isEmpty)
                #expect(try await target.projects().map(\.id) == [Project.adminProjectId])
                #expect(try await target.flavors().map(\.name) == Flavor.defaults.map(\.name))
            }
        }
    }

    @Test func aSourceWithAnOlderSchemaIsRefused() async throws {
        try await withSQLiteFile { path in
            let queue = try DatabaseQueue(path: path)
            try SQLiteStore.migrator.migrate(queue, upTo: "v1")
            try queue.close()
            #expect(await storeError { _ = try SQLiteExport(path: path) }?.code == "store.old_schema")
            #expect(await storeError { _ = try SQLiteExport(path: path + ".missing") }?.code == "store.not_found")
        }
    }

    struct Filled {
        var instance: String
        var tokenHash: String
        var host: String
    }

    /// One or more rows in every table, through the store protocols as the controller writes them.
    static func fill(_ store: SQLiteStore) async throws -> Filled {
        let now = Fixtures.wholeSeconds()
        let project = Project(id: "prj-m", name: "moved", createdAt: now)
        try await store.createProject(project)
        let tokenHash = String(repeating: "c", count: 64)
        try await store.createToken(
            TokenInfo(
                id: "tok-m", projectId: project.id, admin: false, token: nil, createdAt: now,
                expiresAt: now.addingTimeInterval(3600)),
            secretHash: tokenHash)
        _ = try await store.revokeToken(id: "tok-m", now: now.addingTimeInterval(60))
        try await store.appendAudit([
            AuditEntry(
                time: now, tokenId: "tok-m", userId: "usr-m", projectId: project.id, method: "DELETE",
                route: "/v1/tokens/{id}", resourceId: "tok-m", status: 200, code: nil)
        ])
        try await store.createFlavor(Flavor(name: "moved-flavor", vcpus: 3, memoryMib: 96))
        try await store.createUser(
            IdentityUser(id: "usr-m", name: "mover", projectId: project.id, createdAt: now), passwordHash: "pw-m")
        try await store.createIdentityToken(
            IdentityToken(
                id: "tok-i", userId: "usr-m", projectId: project.id, admin: false, methods: ["password"], issuedAt: now,
                expiresAt: now.addingTimeInterval(3600)), secretHash: tokenHash)
        var image = Fixtures.image("img-m")
        try await store.createImage(image)
        let key = SigningKey(
            id: "key-m", projectId: Project.adminProjectId, name: "k", publicKey: String(repeating: "A", count: 44),
            createdAt: now)
        try await store.addSigningKey(key)
        image.visibility = .public
        image.tags = ["a", "b"]
        image.signature = "sig"
        image.signingKeyId = key.id
        try await store.updateImageCatalog(image)
        try await store.setRequireSignedImages(projectId: project.id, true)
        let group = ServerGroup(
            id: "sg-m", projectId: Project.adminProjectId, name: "g", policy: .antiAffinity, members: [],
            createdAt: now)
        try await store.createServerGroup(group)
        var instance = Fixtures.instance("vm-m", image: image.id, host: "host-m", state: .building)
        instance.serverGroupId = group.id
        try await store.createInstances([instance])
        try await store.updateInstance(
            id: instance.id, events: [(type: "ready", message: "up")], handle: Data([1, 2, 3, 0, 255]), claim: nil
        ) { $0.state = .running }
        var host = ComputeHost(
            id: "host-m", name: "m", cpus: 4, memoryMib: 4096, hypervisors: ["qemu"], hypervisorVersion: "8",
            machineTypes: ["microvm"], accelerators: ["tcg"], chosenAccelerator: "tcg", calibrationMs: ["tcg": 1.5],
            instances: 1, updatedAt: now)
        host.fabricAddress = "10.0.0.1"
        try await store.upsertHost(host)
        try await store.setCordoned(hostId: host.id, true)
        try await store.createJoinToken(id: "jt-m", secretHash: tokenHash, expiresAt: now.addingTimeInterval(3600))
        try await store.joinHost(
            tokenId: "jt-m", secretHash: tokenHash, now: now,
            credential: HostCredential(hostId: "host-j", name: "joined", certificateSerial: "0a", joinedAt: now))
        let network = Fixtures.network("net-m", "10.66.0.0/24", gateway: "10.66.0.1")
        try await store.createNetwork(network)
        let securityGroup = SecurityGroup(
            id: "secg-m", projectId: Project.adminProjectId, name: "web", description: "d", rules: [], createdAt: now)
        try await store.createSecurityGroup(securityGroup)
        try await store.addRule(
            SecurityGroupRule(id: "rule-m", proto: .tcp, portMin: 80, portMax: 81, source: "0.0.0.0/0"),
            groupId: securityGroup.id)
        _ = try await store.attach(
            ports: [PortRequest(instanceId: instance.id, network: network, address: nil, tapPrefix: "tm")],
            groupIds: [securityGroup.id], toInstances: [instance.id])
        let build = Build(id: "bld-m", projectId: project.id, name: "b", recipe: "r", flags: ["-x"], createdAt: now)
        try await store.createBuild(build)
        try await store.cacheImage(
            projectId: project.id, inputsDigest: String(repeating: "d", count: 64), imageId: image.id)
        try await store.createPool(
            WarmPool(
                id: "pool-m", projectId: project.id, imageId: image.id, memoryMib: 16, vcpus: 1, size: 2, createdAt: now
            ))
        try await store.createMigration(
            InstanceMigration(
                id: "mig-m", instanceId: instance.id, instanceName: instance.name, projectId: project.id, mode: .live,
                sourceHostId: host.id, targetHostId: "host-other", status: .preparing, createdAt: now))
        try await store.updateMigration(id: "mig-m") {
            $0.status = .completed
            $0.downtimeMs = 2
        }
        try await store.createSnapshot(
            Snapshot(
                id: "snap-m", projectId: project.id, name: "at-1", instanceId: instance.id, imageId: image.id,
                sha256: String(repeating: "e", count: 64), sizeBytes: 4096, memoryMib: 16, vcpus: 1,
                machineType: "microvm", hypervisor: "qemu", hypervisorVersion: "7.2.0", args: ["a=b"],
                publishedPorts: [], hostId: host.id, pausedMs: 1.5, createdAt: now))
        return Filled(instance: instance.id, tokenHash: tokenHash, host: host.id)
    }

    /// What the controller reads, the same from both stores.
    static func expectSameReads(_ source: SQLiteStore, _ target: PostgresStore, _ fixture: Filled) async throws {
        #expect(try await target.projects() == source.projects())
        #expect(try await target.principal(forSecretHash: fixture.tokenHash) == .project("prj-m"))
        let apiToken = try await target.token(forSecretHash: fixture.tokenHash)
        let sourceAPIToken = try await source.token(forSecretHash: fixture.tokenHash)
        #expect(apiToken != nil && apiToken == sourceAPIToken)
        #expect(apiToken?.revokedAt != nil && apiToken?.expiresAt != nil)
        #expect(
            try await target.auditEntries(since: nil, limit: 10) == source.auditEntries(since: nil, limit: 10))
        #expect(try await target.flavors() == source.flavors())
        #expect(try await target.users(projectId: nil) == source.users(projectId: nil))
        #expect(try await target.user(name: "mover")?.passwordHash == "pw-m")
        let token = try await target.identityToken(secretHash: fixture.tokenHash)
        let sourceToken = try await source.identityToken(secretHash: fixture.tokenHash)
        #expect(token != nil && token == sourceToken)
        #expect(try await target.images(projectId: nil) == source.images(projectId: nil))
        #expect(
            try await target.signingKeys(projectId: Project.adminProjectId)
                == source.signingKeys(projectId: Project.adminProjectId))
        #expect(try await target.serverGroups(projectId: nil) == source.serverGroups(projectId: nil))
        #expect(
            try await target.instances(projectId: nil, state: nil, name: nil, imageId: nil)
                == source.instances(projectId: nil, state: nil, name: nil, imageId: nil))
        #expect(try await target.events(instanceId: fixture.instance) == source.events(instanceId: fixture.instance))
        #expect(try await target.handle(instanceId: fixture.instance) == Data([1, 2, 3, 0, 255]))
        #expect(try await target.hostUsage() == source.hostUsage())
        #expect(try await target.hosts() == source.hosts())
        #expect(try await target.hostCredential(hostId: "host-j") == source.hostCredential(hostId: "host-j"))
        #expect(try await target.networks(projectId: nil) == source.networks(projectId: nil))
        #expect(
            try await target.ports(networkId: nil, instanceId: nil) == source.ports(networkId: nil, instanceId: nil))
        #expect(try await target.securityGroups(projectId: nil) == source.securityGroups(projectId: nil))
        #expect(
            try await target.securityGroupMembership().mapValues { $0.sorted() }
                == source.securityGroupMembership().mapValues { $0.sorted() })
        #expect(try await target.builds(projectId: nil) == source.builds(projectId: nil))
        #expect(
            try await target.migrations(projectId: nil, instanceId: nil)
                == source.migrations(projectId: nil, instanceId: nil))
        #expect(
            try await target.cachedImage(projectId: "prj-m", inputsDigest: String(repeating: "d", count: 64))
                == source.cachedImage(projectId: "prj-m", inputsDigest: String(repeating: "d", count: 64)))
        #expect(try await target.pools(projectId: nil) == source.pools(projectId: nil))
        #expect(try await target.snapshots(projectId: nil) == source.snapshots(projectId: nil))
    }
}
