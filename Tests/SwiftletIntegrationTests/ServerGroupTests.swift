import Foundation
import SwiftletAgent
import SwiftletCore
import SwiftletHypervisor
import SwiftletStore
import Testing

@testable import SwiftletController

extension FakeHost {
    /// Another host in the cluster: its own agent and fake driver in this process, UP (an hour's
    /// lease, renewed now: a slow test run must not see it expire), with `memoryMib` to give.
    @discardableResult
    func addHost(_ name: String, memoryMib: Int = 4096) async throws -> FakeHypervisorDriver {
        let hostId = "host-fake-\(name)"
        try await store.upsertHost(
            ComputeHost(
                id: hostId, name: "fake-\(name)", cpus: 2, memoryMib: memoryMib, hypervisors: ["fake"],
                hypervisorVersion: "0", machineTypes: ["microvm", "pc", "q35"], accelerators: ["fake"],
                chosenAccelerator: "fake", calibrationMs: [:], instances: 0, updatedAt: Date()))
        let driver = FakeHypervisorDriver()
        let agent = HostAgent(
            hostId: hostId, images: BlobStoreSource(blobs: blobs), driver: driver, runRoot: directory + "/run-\(name)",
            logger: logger)
        controller.agents.register(LocalAgentLink(agent: agent))
        controller.leases.duration = .seconds(3600)
        controller.leases.renew(hostId: hostId)
        await agent.sync(try controller.instanceSync.hostSync(hostId: hostId), reports: controller.instanceSync)
        return driver
    }

    func createGroup(_ name: String, _ policy: GroupPolicy) async throws -> ServerGroup {
        try await controller.createServerGroup(
            CreateServerGroupRequest(name: name, policy: policy.rawValue), by: .admin)
    }

    func create(_ name: String, count: Int = 1, memoryMib: Int = 64, group: String?) async throws(SwiftletError)
        -> [Instance]
    {
        var request = ServerGroupTests.request(name, count: count, memoryMib: memoryMib, group: group)
        request.wait = true
        return try await controller.createInstances(request, by: .admin, accepted: monotonicNanos())
    }
}

/// Expects `body` to fail with `code` (and the status of `kind`), returning the message.
@discardableResult
func expectError(
    _ kind: SwiftletError.Kind, _ code: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async -> String {
    do {
        try await body()
        Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
    } catch {
        let failure = error as? SwiftletError
        #expect(failure?.kind == kind && failure?.code == code, "\(error)", sourceLocation: sourceLocation)
        return failure?.message ?? ""
    }
    return ""
}

@Suite struct ServerGroupTests {
    @Test func antiAffinitySpreadsTheMembersAndRefusesWhenNoHostIsLeft() async throws {
        let cluster = try await FakeHost()
        try await cluster.addHost("b")
        try await cluster.addHost("c")
        let group = try await cluster.createGroup("web", .antiAffinity)
        let created = try await cluster.create("web", count: 3, group: "web")
        #expect(created.allSatisfy { $0.state == .running && $0.serverGroupId == group.id })
        #expect(Set(created.compactMap(\.hostId)).count == 3)
        #expect(Set(try await cluster.controller.serverGroup("web", by: .admin).members) == Set(created.map(\.id)))

        let message = await expectError(.conflict, "scheduler.no_host") {
            _ = try await cluster.create("web-4", group: group.id)
        }
        #expect(message.contains("3 broke the group policy") && message.contains("anti-affinity"), "\(message)")
        // A batch that cannot all be spread is refused whole.
        try await cluster.addHost("d")
        await expectError(.conflict, "scheduler.no_host") {
            _ = try await cluster.create("more", count: 2, group: "web")
        }
        #expect(try await cluster.controller.serverGroup("web", by: .admin).members.count == 3)
        #expect(try await cluster.create("fourth", group: "web").first?.hostId == "host-fake-d")
    }

    @Test func affinityPutsEveryMemberOnTheFirstMembersHost() async throws {
        let cluster = try await FakeHost()
        try await cluster.addHost("b")
        try await cluster.addHost("c")
        _ = try await cluster.createGroup("db", .affinity)
        let first = try #require(try await cluster.create("db-0", group: "db").first)
        // Without the group, the scheduler would spread these over the emptier hosts.
        let rest = try await cluster.create("db", count: 3, group: "db")
        #expect(rest.allSatisfy { $0.hostId == first.hostId && $0.state == .running })
        let other = try #require(try await cluster.create("loner", group: nil).first)
        #expect(other.hostId != first.hostId)
        // The members' host is full: affinity does not spill over to another host.
        let message = await expectError(.conflict, "scheduler.no_host") {
            _ = try await cluster.create("big", memoryMib: 4000, group: "db")
        }
        #expect(message.contains("affinity"), "\(message)")
    }

    @Test func groupsAreProjectResourcesWithCheckedInput() async throws {
        let cluster = try await FakeHost()
        let controller = cluster.controller
        let group = try await cluster.createGroup("web", .antiAffinity)
        #expect(group.policy == .antiAffinity && group.members.isEmpty && group.projectId == Project.adminProjectId)
        await expectError(.badRequest, "server_group.bad_policy") {
            _ = try await controller.createServerGroup(
                CreateServerGroupRequest(name: "x", policy: "spread"), by: .admin)
        }
        await expectError(.badRequest, "name.invalid") {
            _ = try await controller.createServerGroup(
                CreateServerGroupRequest(name: "", policy: "affinity"), by: .admin)
        }
        await expectError(.conflict, "server_group.duplicate_name") {
            _ = try await cluster.createGroup("web", .affinity)
        }
        await expectError(.notFound, "server_group.not_found") {
            _ = try await controller.serverGroup("nope", by: .admin)
        }
        await expectError(.notFound, "server_group.not_found") {
            try await controller.deleteServerGroup("nope", by: .admin)
        }
        await expectError(.notFound, "server_group.not_found") { _ = try await cluster.create("a", group: "nope") }

        // Another project neither sees the group nor can use it.
        let other = Project(id: "prj-other", name: "other", requireSignedImages: false, createdAt: Date())
        try await cluster.store.createProject(other)
        #expect(try await controller.serverGroups(by: .project(other.id)).isEmpty)
        await expectError(.notFound, "server_group.not_found") {
            _ = try await controller.serverGroup(group.id, by: .project(other.id))
        }
        #expect(try await controller.serverGroups(by: .admin).map(\.name) == ["web"])

        let member = try #require(try await cluster.create("member", group: "web").first)
        await expectError(.conflict, "server_group.in_use") {
            try await controller.deleteServerGroup("web", by: .admin)
        }
        _ = try await controller.act(.delete, on: member.id, by: .admin, stopTimeout: .seconds(1))
        #expect(try await controller.serverGroup("web", by: .admin).members.isEmpty)
        try await controller.deleteServerGroup(group.id, by: .admin)
        #expect(try await controller.serverGroups(by: .admin).isEmpty)
    }

    /// Many creates at once against a host with room for exactly four: the claim in the insert's
    /// transaction lets exactly four in, whatever the placements read before.
    @Test func concurrentCreatesTakeExactlyTheRoomThereIs() async throws {
        let cluster = try await FakeHost()
        let outcomes = await Self.race(12, on: cluster.controller) { Self.request("race-\($0)", memoryMib: 1024) }
        #expect(outcomes.created == 4, "\(outcomes)")
        #expect(outcomes.refused == 8, "\(outcomes)")
        #expect(try await cluster.store.hostUsage()[FakeHost.hostId]?.memoryMib == 4096)
        #expect(try await cluster.store.instances(projectId: nil, state: nil, name: nil, imageId: nil).count == 4)

        // Batches (one insert of several) claim the same way: two batches of two fit.
        let batches = try await FakeHost()
        let batched = await Self.race(6, on: batches.controller) {
            Self.request("batch-\($0)", count: 2, memoryMib: 1024)
        }
        #expect(batched.created == 4 && batched.refused == 4, "\(batched)")
        #expect(try await batches.store.hostUsage()[FakeHost.hostId]?.memoryMib == 4096)
    }

    /// Concurrent members of an anti-affinity group over two roomy hosts: exactly one per host.
    @Test func concurrentMembersKeepTheAntiAffinityPolicy() async throws {
        let cluster = try await FakeHost()
        try await cluster.addHost("b")
        _ = try await cluster.createGroup("spread", .antiAffinity)
        let outcomes = await Self.race(8, on: cluster.controller) {
            Self.request("member-\($0)", memoryMib: 64, group: "spread")
        }
        #expect(outcomes.created == 2 && outcomes.refused == 6, "\(outcomes)")
        let hosts = try await cluster.store.instances(projectId: nil, state: nil, name: nil, imageId: nil).map(\.hostId)
        #expect(Set(hosts).count == 2 && hosts.count == 2)
    }

    /// Runs `count` creates at once: how many instances were created, and how many creates were
    /// refused with 409 `scheduler.no_host` (any other error is an issue).
    static func race(
        _ count: Int, on controller: Controller, _ request: @escaping @Sendable (Int) -> CreateInstanceRequest
    ) async -> (created: Int, refused: Int) {
        await withTaskGroup(of: (Int, Int).self) { group in
            for index in 0..<count {
                group.addTask {
                    do {
                        let instances = try await controller.createInstances(
                            request(index), by: .admin, accepted: monotonicNanos())
                        return (instances.count, 0)
                    } catch {
                        if (error as? SwiftletError)?.code != "scheduler.no_host" {
                            Issue.record("unexpected \(error)")
                        }
                        return (0, 1)
                    }
                }
            }
            var total = (created: 0, refused: 0)
            for await (created, refused) in group { total = (total.created + created, total.refused + refused) }
            return total
        }
    }

    static func request(_ name: String, count: Int = 1, memoryMib: Int, group: String? = nil)
        -> CreateInstanceRequest
    {
        var request = CreateInstanceRequest(name: name, image: "fake", memoryMib: memoryMib, count: count)
        request.serverGroup = group
        return request
    }
}
