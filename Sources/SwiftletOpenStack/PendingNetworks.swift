import Foundation
import SwiftletCore
import Synchronization

/// Neutron networks that have no subnet yet. A Swiftlet network is born with its CIDR, so a
/// Neutron network (which has none) lives here, in this controller's memory, until its subnet
/// comes; then it becomes a Swiftlet network with the same id. Deleting the subnet brings it back
/// here. Subnet names live here too (Swiftlet keeps one name per network). A restart forgets both:
/// an empty network is nothing to keep, and a subnet's name falls back to its network's.
final class PendingNetworks: Sendable {
    struct Entry: Sendable {
        var id: String
        var name: String
        var projectId: String
        var mtu: Int?
        var createdAt: Date
    }

    private struct State {
        var networks: [String: Entry] = [:]
        /// Subnet names by subnet id.
        var subnetNames: [String: String] = [:]
    }

    private let state = Mutex(State())
    /// Bounds memory against networks that never get a subnet.
    static let limit = 1000

    func add(_ entry: Entry) throws(SwiftletError) {
        try state.withLock { state throws(SwiftletError) in
            guard state.networks.count < Self.limit else {
                throw SwiftletError(
                    .conflict, "network.too_many_pending",
                    "\(Self.limit) networks wait for a subnet: create subnets or delete some")
            }
            guard !state.networks.values.contains(where: { $0.projectId == entry.projectId && $0.name == entry.name })
            else {
                throw SwiftletError(.conflict, "network.duplicate", "a network named '\(entry.name)' exists")
            }
            state.networks[entry.id] = entry
        }
    }

    /// The entry with this id (or name), if the principal may see it (its project's, or any for an admin).
    func entry(_ idOrName: String, by principal: Principal) -> Entry? {
        all(by: principal).first { $0.id == idOrName } ?? all(by: principal).first { $0.name == idOrName }
    }

    func all(by principal: Principal) -> [Entry] {
        state.withLock { Array($0.networks.values) }.filter {
            principal.isAdmin || $0.projectId == principal.projectId
        }.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    func hasName(_ name: String, projectId: String) -> Bool {
        state.withLock { $0.networks.values.contains { $0.projectId == projectId && $0.name == name } }
    }

    @discardableResult
    func remove(_ id: String) -> Entry? { state.withLock { $0.networks.removeValue(forKey: id) } }

    func subnetName(_ subnetId: String) -> String? { state.withLock { $0.subnetNames[subnetId] } }

    func setSubnetName(_ subnetId: String, _ name: String?) { state.withLock { $0.subnetNames[subnetId] = name } }
}
