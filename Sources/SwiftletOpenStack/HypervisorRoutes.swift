import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore
import SwiftletStore

/// `os-hypervisors` and `os-services` (admin, read only): each Swiftlet compute host is one
/// hypervisor and one `nova-compute` service; a cordoned host is a disabled service.
struct HypervisorRoutes {
    let controller: Controller
    let identity: IdentityService

    func register(on api: RouterGroup<APIContext>) {
        api.get("os-hypervisors") { request, _ in
            let hosts = try await hosts(request)
            return OpenStack.json(
                .object([
                    "hypervisors": .array(
                        hosts.map { host in
                            .object([
                                "id": .string(host.id), "hypervisor_hostname": .string(host.name),
                                "state": .string(Self.state(host)), "status": .string(Self.status(host)),
                            ])
                        })
                ]))
        }
        api.get("os-hypervisors/detail") { request, _ in
            let hosts = try await hosts(request)
            let usage = try await controller.store.hostUsage()
            let version = try ComputeRoutes.microversion(request)
            return OpenStack.json(
                .object(["hypervisors": .array(hosts.map { detail($0, usage[$0.id], version: version) })]))
        }
        api.get("os-hypervisors/:id") { request, context in
            let id = try context.parameters.require("id")
            guard let host = try await hosts(request).first(where: { $0.id == id || $0.name == id }) else {
                throw SwiftletError(.notFound, "hypervisor.not_found", "Hypervisor with ID \(id) could not be found.")
            }
            let usage = try await controller.store.hostUsage()
            let version = try ComputeRoutes.microversion(request)
            return OpenStack.json(.object(["hypervisor": detail(host, usage[host.id], version: version)]))
        }
        api.get("os-services") { request, _ in
            var hosts = try await hosts(request)
            let query = request.uri.queryParameters
            try OpenStack.refuseUnknownParameters(request, known: ["host", "binary"])
            if let name = query.get("host") { hosts = hosts.filter { $0.name == name } }
            if let binary = query.get("binary"), binary != "nova-compute" { hosts = [] }
            let version = try ComputeRoutes.microversion(request)
            return OpenStack.json(.object(["services": .array(hosts.map { service($0, version: version) })]))
        }
    }

    /// Admin only, as in Nova.
    private func hosts(_ request: Request) async throws -> [ComputeHost] {
        try controller.requireAdmin(try await identity.principal(request))
        return try await controller.hosts()
    }

    static func state(_ host: ComputeHost) -> String { host.status == .down ? "down" : "up" }
    static func status(_ host: ComputeHost) -> String { host.cordoned == true ? "disabled" : "enabled" }

    func detail(_ host: ComputeHost, _ usage: HostUsage?, version: Microversion) -> JSONValue {
        let memoryUsed = usage?.memoryMib ?? 0
        // cpu_info became an object in 2.28.
        let cpuInfo: JSONValue = version >= Microversion(2, 28) ? .object([:]) : "{}"
        return .object([
            "id": .string(host.id), "hypervisor_hostname": .string(host.name), "state": .string(Self.state(host)),
            "status": .string(Self.status(host)), "hypervisor_type": "QEMU",
            "hypervisor_version": .string(host.hypervisorVersion), "host_ip": .optional(host.fabricAddress),
            "vcpus": .int(host.cpus), "vcpus_used": .int(usage?.vcpus ?? 0), "memory_mb": .int(host.memoryMib),
            "memory_mb_used": .int(memoryUsed), "free_ram_mb": .int(host.memoryMib - memoryUsed),
            "local_gb": .int(0), "local_gb_used": .int(0), "free_disk_gb": .int(0), "disk_available_least": .int(0),
            "running_vms": .int(usage?.instances ?? host.instances), "current_workload": .int(0),
            "cpu_info": cpuInfo,
            "service": .object([
                "id": .string(host.id), "host": .string(host.name),
                "disabled_reason": host.cordoned == true ? "cordoned" : .null,
            ]),
        ])
    }

    func service(_ host: ComputeHost, version: Microversion) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(host.id), "binary": "nova-compute", "host": .string(host.name), "zone": "nova",
            "status": .string(Self.status(host)), "state": .string(Self.state(host)),
            "updated_at": OpenStack.date(host.lastSeenAt ?? host.updatedAt),
            "disabled_reason": host.cordoned == true ? "cordoned" : .null,
        ]
        if version >= Microversion(2, 11) { fields["forced_down"] = false }
        return .object(fields)
    }
}
