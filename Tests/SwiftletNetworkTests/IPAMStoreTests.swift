import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// IPAM against a real SQLite file, with two stores (two connection pools, as two server
/// processes would have) allocating at once.
@Suite struct IPAMStoreTests {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-ipam-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func network(_ name: String, _ cidr: String, gateway: String) -> Network {
        Network(
            id: ResourceID.make("net"), projectId: Project.adminProjectId, name: name, cidr: cidr, gateway: gateway,
            mtu: 1500, mode: .isolated, bridge: "t-" + UUID().uuidString.prefix(8), createdAt: Date())
    }

    func instances(_ count: Int, prefix: String, image: String) -> [Instance] {
        (1...count).map { index in
            Instance(
                id: ResourceID.make("i"), projectId: Project.adminProjectId, name: "\(prefix)\(index)", imageId: image,
                flavor: nil, vcpus: 1, memoryMib: 16, args: [], restartPolicy: .no, publishedPorts: [],
                state: .building, timeline: .starting(at: 1), createdAt: Date(), updatedAt: Date())
        }
    }

    @Test func concurrentAllocationsFromTwoStoresNeverShareAnAddress() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SQLiteStore(path: directory + "/db.sqlite")
        let second = try SQLiteStore(path: directory + "/db.sqlite")
        let image = Image(
            id: ResourceID.make("img"), projectId: Project.adminProjectId, name: "k", kind: .pvh, sha256: "ab",
            sizeBytes: 1, properties: [:], createdAt: Date())
        try first.createImage(image)
        let net = network("n", "10.9.0.0/24", gateway: "10.9.0.1")
        try first.createNetwork(net)
        let a = instances(130, prefix: "a", image: image.id)
        let b = instances(130, prefix: "b", image: image.id)
        try first.createInstances(a + b)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (store, batch) in [(first, a), (second, b)] {
                group.addTask {
                    for instance in batch {
                        do {
                            _ = try store.attach(
                                ports: [
                                    PortRequest(instanceId: instance.id, network: net, address: nil, tapPrefix: "t")
                                ],
                                groupIds: [], toInstances: [instance.id])
                        } catch let error as SwiftletError where error.code == "network.full" {
                            continue
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let ports = try first.ports(networkId: net.id, instanceId: nil)
        // A /24 has 254 host addresses, one of them the gateway: 253 ports, then `network.full`.
        #expect(ports.count == 253)
        #expect(Set(ports.map(\.address)).count == ports.count)
        #expect(!ports.map(\.address).contains("10.9.0.1"))
        #expect(try first.instance(idOrName: a[0].id, projectId: nil)?.ports?.first?.address != nil)

        // A taken address is 409 and leaves nothing; deleting the instance frees its address.
        let extra = instances(1, prefix: "x", image: image.id)
        try first.createInstances(extra)
        let taken = try #require(ports.first)
        #expect(
            throws: SwiftletError(
                .conflict, "port.address_in_use", "address \(taken.address) is already in use on network 'n'")
        ) {
            _ = try second.attach(
                ports: [
                    PortRequest(
                        instanceId: extra[0].id, network: net, address: IPv4.parse(taken.address), tapPrefix: "t")
                ],
                groupIds: [], toInstances: [extra[0].id])
        }
        #expect(try first.ports(networkId: nil, instanceId: extra[0].id).isEmpty)
        try first.deleteInstance(id: taken.instanceId)
        let reused = try second.attach(
            ports: [
                PortRequest(instanceId: extra[0].id, network: net, address: IPv4.parse(taken.address), tapPrefix: "t")
            ],
            groupIds: [], toInstances: [extra[0].id])
        #expect(reused.first?.address == taken.address)

        // Overlap is checked in the insert's transaction; a network with ports can't go.
        #expect(throws: SwiftletError.self) {
            try second.createNetwork(network("m", "10.9.0.128/25", gateway: "10.9.0.129"))
        }
        #expect(throws: SwiftletError.self) { try second.deleteNetwork(id: net.id) }
    }
}
