import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore

/// Network v2.0 (a Neutron subset) under `/network`: Swiftlet's networks as Neutron networks,
/// each with at most one IPv4 subnet (the Swiftlet network's CIDR and gateway), its instances'
/// ports, and its security groups with their rules (docs/openstack.md).
struct NeutronRoutes {
    let controller: Controller
    let identity: IdentityService
    let pending: PendingNetworks

    static func register(
        on router: Router<APIContext>, controller: Controller, identity: IdentityService, pending: PendingNetworks
    ) {
        let group = router.group("network").add(middleware: OpenStackErrorMiddleware(service: .network))
        group.get { request, _ in
            OpenStack.json(.object(["versions": .array([version(request)])]))
        }
        let api = group.group("v2.0")
        api.get { request, _ in
            OpenStack.json(.object(["resources": .array([]), "version": version(request)]))
        }
        let routes = NeutronRoutes(controller: controller, identity: identity, pending: pending)
        routes.registerNetworks(on: api)
        routes.registerPorts(on: api)
        NeutronSecurityGroupRoutes(controller: controller, identity: identity).register(on: api)
        routes.registerQuotas(on: api)
        api.get("extensions") { request, _ in
            _ = try await identity.principal(request)
            return OpenStack.json(.object(["extensions": .array([])]))
        }
        // Swiftlet has no floating IPs nor routers: the lists are empty (clients look for them).
        for resource in ["floatingips", "routers"] {
            api.get(RouterPath(stringLiteral: resource)) { request, _ in
                _ = try await identity.principal(request)
                return OpenStack.json(.object([resource: .array([])]))
            }
        }
        OpenStack.refuseUnsupportedPaths(on: api, api: "Network", identity: identity)
    }

    static func version(_ request: Request) -> JSONValue {
        .object([
            "id": "v2.0", "status": "CURRENT",
            "links": .array([OpenStack.link("self", OpenStack.baseURL(request) + "/network/v2.0/")]),
        ])
    }

    // MARK: - Networks and subnets

    /// A subnet's id: its network's, marked (one subnet per network).
    static func subnetId(_ networkId: String) -> String { networkId + "-subnet" }

    static func networkId(ofSubnet subnetId: String) -> String? {
        subnetId.hasSuffix("-subnet") ? String(subnetId.dropLast("-subnet".count)) : nil
    }

    func registerNetworks(on api: RouterGroup<APIContext>) {
        api.get("networks") { request, _ in
            let principal = try await identity.principal(request)
            let bodies = try await networkBodies(principal, request)
            return OpenStack.json(.object(["networks": .array(try NeutronFilter.apply(request, to: bodies))]))
        }
        api.get("networks/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            return OpenStack.json(.object(["network": try await networkBody(id, principal, request)]))
        }
        api.post("networks") { request, _ in
            let principal = try await identity.principal(request)
            let entry = try await pendingEntry(try await OpenStack.body(request), principal)
            try pending.add(entry)
            return OpenStack.json(.object(["network": body(entry, request, principal)]), status: .created)
        }
        api.delete("networks/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            if let entry = pending.entry(id, by: principal), entry.id == id {
                pending.remove(id)
            } else {
                try await controller.deleteNetwork(try await network(id, principal).id, by: principal)
                pending.setSubnetName(Self.subnetId(id), nil)
            }
            return Response(status: .noContent)
        }
        api.get("subnets") { request, _ in
            let principal = try await identity.principal(request)
            let subnets = try await controller.networks(by: principal).map { subnetBody($0, request) }
            return OpenStack.json(.object(["subnets": .array(try NeutronFilter.apply(request, to: subnets))]))
        }
        api.get("subnets/:id") { request, context in
            let principal = try await identity.principal(request)
            return OpenStack.json(
                .object(["subnet": subnetBody(try await subnetNetwork(context, principal), request)]))
        }
        api.post("subnets") { request, _ in
            let principal = try await identity.principal(request)
            let subnet = try await OpenStack.body(request).requireObject("subnet")
            let (entry, create, name) = try await subnetCreate(subnet, principal)
            let network = try await controller.createNetwork(create, id: entry.id, by: principal)
            pending.remove(entry.id)
            pending.setSubnetName(Self.subnetId(network.id), name)
            return OpenStack.json(.object(["subnet": subnetBody(network, request)]), status: .created)
        }
        api.delete("subnets/:id") { request, context in
            let principal = try await identity.principal(request)
            let network = try await subnetNetwork(context, principal)
            // The network stays, without a subnet again (as in Neutron).
            let entry = PendingNetworks.Entry(
                id: network.id, name: network.name, projectId: network.projectId, mtu: network.mtu,
                createdAt: network.createdAt)
            do { try await controller.deleteNetwork(network.id, by: principal) } catch let error as SwiftletError
                where error.code == "network.in_use"
            {
                throw SwiftletError(.conflict, "subnet.in_use", error.message)
            }
            pending.setSubnetName(Self.subnetId(network.id), nil)
            try? pending.add(entry)
            return Response(status: .noContent)
        }
    }

    static let networkCreateFields: Set<String> = [
        "name", "admin_state_up", "shared", "port_security_enabled", "mtu", "router:external", "description",
        "project_id", "tenant_id", "availability_zone_hints", "is_default",
    ]

    /// A network create: what Swiftlet cannot honour is refused; the network waits for its subnet.
    func pendingEntry(_ body: JSONValue, _ principal: Principal) async throws -> PendingNetworks.Entry {
        let fields = try Self.fields(body.requireObject("network"), allowed: Self.networkCreateFields)
        let network = JSONValue.object(fields)
        let name = try network.optionalString("name") ?? ""
        try ResourceID.validateName(name)
        for (field, wanted) in [
            ("admin_state_up", true), ("shared", false), ("port_security_enabled", true), ("router:external", false),
            ("is_default", false),
        ] {
            if let value = fields[field], value != .bool(wanted) {
                throw SwiftletError.badRequest(
                    "network.unsupported_attribute", "'\(field)' can only be \(wanted) on Swiftlet's networks")
            }
        }
        if let description = try network.optionalString("description"), !description.isEmpty {
            throw SwiftletError.badRequest("network.description_unsupported", "network descriptions are not stored")
        }
        for field in ["project_id", "tenant_id"] {
            if let project = try network.optionalString(field), project != principal.projectId {
                throw SwiftletError(
                    .forbidden, "network.other_project", "networks are made in the token's own project only")
            }
        }
        if case .array(let hints)? = fields["availability_zone_hints"], hints.contains(where: { $0 != "nova" }) {
            throw SwiftletError.badRequest("network.bad_zone", "the only availability zone is 'nova'")
        }
        if (try? await controller.network(name, by: principal)) != nil {
            throw SwiftletError(.conflict, "network.duplicate", "a network named '\(name)' exists")
        }
        return PendingNetworks.Entry(
            id: ResourceID.make("net"), name: name, projectId: principal.projectId,
            mtu: try network.optionalInt("mtu"), createdAt: Date())
    }

    static let subnetCreateFields: Set<String> = [
        "name", "network_id", "cidr", "ip_version", "gateway_ip", "enable_dhcp", "allocation_pools",
        "dns_nameservers", "host_routes", "description", "project_id", "tenant_id", "service_types",
    ]

    /// A subnet create as the Swiftlet network its (pending) network becomes.
    func subnetCreate(_ subnet: JSONValue, _ principal: Principal) async throws -> (
        PendingNetworks.Entry, CreateNetworkRequest, String
    ) {
        let fields = try Self.fields(subnet, allowed: Self.subnetCreateFields)
        let networkId = try subnet.requireString("network_id")
        guard let entry = pending.entry(networkId, by: principal), entry.id == networkId else {
            if (try? await network(networkId, principal)) != nil {
                throw SwiftletError(
                    .conflict, "subnet.exists", "network \(networkId) has its subnet: a Swiftlet network has one")
            }
            throw SwiftletError.notFound("network", networkId)
        }
        guard entry.projectId == principal.projectId else {
            throw SwiftletError(.forbidden, "subnet.other_project", "subnets are made by the network's own project")
        }
        if let version = try subnet.optionalInt("ip_version"), version != 4 {
            throw SwiftletError.badRequest("subnet.ipv6_unsupported", "only IPv4 subnets (ip_version 4) are supported")
        }
        if case .bool(false)? = fields["enable_dhcp"] {
            throw SwiftletError.badRequest(
                "subnet.dhcp", "addresses are always assigned (on the kernel command line): enable_dhcp is true")
        }
        for field in ["dns_nameservers", "host_routes", "service_types"] {
            if case .array(let values)? = fields[field], !values.isEmpty {
                throw SwiftletError.badRequest("subnet.unsupported_attribute", "'\(field)' is not supported")
            }
        }
        if let description = try subnet.optionalString("description"), !description.isEmpty {
            throw SwiftletError.badRequest("subnet.description_unsupported", "subnet descriptions are not stored")
        }
        var gateway: String?
        if let value = fields["gateway_ip"] {
            guard let text = value.string else {
                throw SwiftletError.badRequest(
                    "subnet.gateway_required", "a Swiftlet network always has a gateway (the host's bridge address)")
            }
            gateway = text
        }
        let cidr = try subnet.requireString("cidr")
        let create = CreateNetworkRequest(name: entry.name, cidr: cidr, gateway: gateway, mtu: entry.mtu)
        if case .array(let pools)? = fields["allocation_pools"], !pools.isEmpty {
            guard let block = CIDRBlock.parse(cidr) else {
                throw SwiftletError.badRequest(
                    "network.bad_cidr", "cidr '\(cidr)' must be a.b.c.d/prefix, host bits zero")
            }
            let gatewayAddress = gateway.flatMap(IPv4.parse) ?? block.network + 1
            guard JSONValue.array(pools) == Self.pools(block, gateway: gatewayAddress) else {
                throw SwiftletError.badRequest(
                    "subnet.pools_unsupported", "allocation pools other than the whole subnet are not supported")
            }
        }
        let name = try subnet.optionalString("name") ?? ""
        return (entry, create, name)
    }

    /// The fields of a request object, refusing any not in `allowed` (Neutron's "Unrecognized attribute").
    static func fields(_ value: JSONValue, allowed: Set<String>) throws(SwiftletError) -> [String: JSONValue] {
        guard case .object(let fields) = value else {
            throw SwiftletError.badRequest("request.malformed_json", "the body must be an object")
        }
        for key in fields.keys.sorted() where !allowed.contains(key) {
            throw SwiftletError.badRequest(
                "request.unexpected_field", "Unrecognized attribute(s) '\(key)' (not supported by Swiftlet)")
        }
        return fields
    }

    func network(_ id: String, _ principal: Principal) async throws -> Network {
        try await controller.network(id, by: principal)
    }

    func subnetNetwork(_ context: APIContext, _ principal: Principal) async throws -> Network {
        let id = try context.parameters.require("id")
        guard let networkId = Self.networkId(ofSubnet: id), let network = try? await network(networkId, principal),
            network.id == networkId
        else { throw SwiftletError.notFound("subnet", id) }
        return network
    }

    func networkBodies(_ principal: Principal, _ request: Request) async throws -> [JSONValue] {
        let networks = try await controller.networks(by: principal).map { body($0, request, principal) }
        return networks + pending.all(by: principal).map { body($0, request, principal) }
    }

    func networkBody(_ id: String, _ principal: Principal, _ request: Request) async throws -> JSONValue {
        if let entry = pending.entry(id, by: principal) { return body(entry, request, principal) }
        return body(try await network(id, principal), request, principal)
    }

    func body(_ entry: PendingNetworks.Entry, _ request: Request, _ principal: Principal) -> JSONValue {
        networkBody(
            id: entry.id, name: entry.name, projectId: entry.projectId, mtu: entry.mtu ?? 1500, subnets: [],
            created: entry.createdAt, segment: nil, principal)
    }

    func body(_ network: Network, _ request: Request, _ principal: Principal) -> JSONValue {
        networkBody(
            id: network.id, name: network.name, projectId: network.projectId, mtu: network.mtu,
            subnets: [Self.subnetId(network.id)], created: network.createdAt, segment: network.vni, principal)
    }

    func networkBody(
        id: String, name: String, projectId: String, mtu: Int, subnets: [String], created: Date, segment: Int?,
        _ principal: Principal
    ) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(id), "name": .string(name), "tenant_id": .string(projectId),
            "project_id": .string(projectId), "status": "ACTIVE", "admin_state_up": true, "shared": false,
            "subnets": .array(subnets.map(JSONValue.string)), "mtu": .int(mtu), "router:external": false,
            "port_security_enabled": true, "description": "", "availability_zones": .array(["nova"]),
            "availability_zone_hints": .array([]), "ipv4_address_scope": .null, "ipv6_address_scope": .null,
            "is_default": false, "l2_adjacency": true, "tags": .array([]), "revision_number": .int(1),
            "created_at": OpenStack.date(created), "updated_at": OpenStack.date(created),
        ]
        if principal.isAdmin {
            fields["provider:network_type"] = "vxlan"
            fields["provider:physical_network"] = .null
            fields["provider:segmentation_id"] = segment.map { .int($0) } ?? .null
        }
        return .object(fields)
    }

    func subnetBody(_ network: Network, _ request: Request) -> JSONValue {
        let block = CIDRBlock.parse(network.cidr) ?? CIDRBlock(network: 0, prefixLength: 32)
        let gateway = IPv4.parse(network.gateway) ?? block.network + 1
        let id = Self.subnetId(network.id)
        return .object([
            "id": .string(id), "name": .string(pending.subnetName(id) ?? network.name),
            "network_id": .string(network.id), "tenant_id": .string(network.projectId),
            "project_id": .string(network.projectId), "ip_version": .int(4), "cidr": .string(network.cidr),
            "gateway_ip": .string(network.gateway), "allocation_pools": Self.pools(block, gateway: gateway),
            "enable_dhcp": true, "dns_nameservers": .array([]), "host_routes": .array([]), "ipv6_ra_mode": .null,
            "ipv6_address_mode": .null, "subnetpool_id": .null, "description": "", "service_types": .array([]),
            "segment_id": .null, "tags": .array([]), "revision_number": .int(0),
            "created_at": OpenStack.date(network.createdAt), "updated_at": OpenStack.date(network.createdAt),
        ])
    }

    /// The host addresses of the block, less the gateway: one or two ranges.
    static func pools(_ block: CIDRBlock, gateway: UInt32) -> JSONValue {
        let first = block.network + 1
        let last = block.broadcast - 1
        var ranges: [(UInt32, UInt32)] = []
        if gateway > first { ranges.append((first, gateway - 1)) }
        if gateway < last { ranges.append((gateway + 1, last)) }
        return .array(
            ranges.map { .object(["start": .string(IPv4.format($0.0)), "end": .string(IPv4.format($0.1))]) })
    }

    // MARK: - Quotas

    func registerQuotas(on api: RouterGroup<APIContext>) {
        for (path, detail, defaults) in [
            ("quotas/:project", false, false), ("quotas/:project/details.json", true, false),
            ("quotas/:project/default", false, true),
        ] {
            api.get(RouterPath(stringLiteral: path)) { request, context in
                let principal = try await identity.principal(request)
                var project = try await controller.projectDetail(
                    try context.parameters.require("project"), by: principal)
                if defaults { project.quota = nil }
                return OpenStack.json(.object(["quota": Self.quota(project, detail: detail)]))
            }
        }
    }

    /// Networks (and so subnets, one each) as the project's quota limits them; ports and groups
    /// are not limited (-1); routers and floating IPs do not exist (0).
    static func quota(_ project: Project, detail: Bool) -> JSONValue {
        let networks = project.quota?.networks ?? -1
        let used = project.usage?.networks ?? 0
        let values: [String: (Int, Int)] = [
            "network": (networks, used), "subnet": (networks, used), "port": (-1, 0), "security_group": (-1, 0),
            "security_group_rule": (-1, 0), "router": (0, 0), "floatingip": (0, 0), "rbac_policy": (-1, 0),
            "subnetpool": (0, 0),
        ]
        return .object(OpenStack.quotaFields(values, detail: detail, usedKey: "used"))
    }

    // MARK: - Ports

    func registerPorts(on api: RouterGroup<APIContext>) {
        api.get("ports") { request, _ in
            let principal = try await identity.principal(request)
            let ports = try await portBodies(principal)
            return OpenStack.json(.object(["ports": .array(try NeutronFilter.apply(request, to: ports))]))
        }
        api.get("ports/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            guard let port = try await portBodies(principal).first(where: { $0["id"]?.string == id }) else {
                throw SwiftletError.notFound("port", id)
            }
            return OpenStack.json(.object(["port": port]))
        }
        api.post("ports") { request, _ -> Response in
            _ = try await identity.principal(request)
            throw SwiftletError(
                .notImplemented, "port.create_unsupported",
                "ports are made with their server: create the server with --network (--nic net-id=)")
        }
        api.delete("ports/:id") { request, _ -> Response in
            _ = try await identity.principal(request)
            throw SwiftletError(
                .conflict, "port.in_use", "a port goes with its server: delete the server to free its address")
        }
    }

    /// Every port of the networks the principal sees, with its server's state and groups.
    func portBodies(_ principal: Principal) async throws -> [JSONValue] {
        let networks = try await controller.networks(by: principal)
        let instances = try await controller.instances(by: principal, state: nil, name: nil, image: nil).instances
        let byId = Dictionary(instances.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let groups = try await controller.securityGroups(by: principal)
        var bodies: [JSONValue] = []
        for network in networks {
            for port in try await controller.networkPorts(network.id, by: principal) {
                let instance = byId[port.instanceId]
                let groupIds = (instance?.securityGroups ?? []).compactMap { name in
                    groups.first { $0.name == name && $0.projectId == network.projectId }?.id
                }
                let up = instance.map { [.running, .paused].contains($0.state) } ?? false
                var fields: [String: JSONValue] = [
                    "id": .string(port.id), "name": "", "network_id": .string(port.networkId),
                    "tenant_id": .string(instance?.projectId ?? network.projectId),
                    "project_id": .string(instance?.projectId ?? network.projectId),
                    "mac_address": .string(port.mac), "admin_state_up": true, "status": up ? "ACTIVE" : "DOWN",
                    "device_id": .string(port.instanceId), "device_owner": "compute:nova",
                    "fixed_ips": .array([
                        .object([
                            "subnet_id": .string(Self.subnetId(port.networkId)), "ip_address": .string(port.address),
                        ])
                    ]),
                    "security_groups": .array(groupIds.map(JSONValue.string)), "allowed_address_pairs": .array([]),
                    "extra_dhcp_opts": .array([]), "binding:vnic_type": "normal", "port_security_enabled": true,
                    "description": "", "tags": .array([]), "revision_number": .int(0), "dns_name": "",
                    "dns_assignment": .array([]),
                ]
                if let instance {
                    fields["created_at"] = OpenStack.date(instance.createdAt)
                    fields["updated_at"] = OpenStack.date(instance.updatedAt)
                }
                if principal.isAdmin {
                    fields["binding:host_id"] = .string(instance?.hostId ?? "")
                    fields["binding:vif_type"] = "tap"
                }
                bodies.append(.object(fields))
            }
        }
        return bodies
    }
}

/// Neutron's list filters: `?field=value` for any scalar field of the resource (repeated: any of
/// the values); `fields` narrows nothing (every field is answered); other parameters are a 400.
enum NeutronFilter {
    static let ignored: Set<String> = ["fields"]

    static func apply(_ request: Request, to items: [JSONValue]) throws(SwiftletError) -> [JSONValue] {
        var wanted: [String: [String]] = [:]
        for (name, value) in request.uri.queryParameters where !ignored.contains(String(name)) {
            wanted[String(name), default: []].append(String(value))
        }
        var result = items
        for (name, values) in wanted.sorted(by: { $0.key < $1.key }) {
            var kept: [JSONValue] = []
            for item in result {
                guard let field = item[name] else {
                    // A field only admins see (or none of these items has): nothing matches.
                    if items.contains(where: { $0[name] != nil }) || knownHidden.contains(name) { continue }
                    throw SwiftletError.badRequest(
                        "request.unknown_filter", "'\(name)' is not a filter this API supports")
                }
                guard let text = scalarText(field) else {
                    throw SwiftletError.badRequest(
                        "request.unsupported_filter", "filtering on '\(name)' is not supported")
                }
                if values.contains(where: { $0.lowercased() == text.lowercased() }) { kept.append(item) }
            }
            result = kept
        }
        return result
    }

    /// Filters clients send that an empty list or a member's view may not show.
    static let knownHidden: Set<String> = [
        "id", "name", "network_id", "device_id", "device_owner", "project_id", "tenant_id", "router:external",
        "security_group_id", "shared", "status", "mac_address", "direction", "ethertype", "protocol",
        "provider:network_type", "provider:segmentation_id", "provider:physical_network", "ip_version",
        "cidr", "is_default", "admin_state_up",
    ]

    static func scalarText(_ value: JSONValue) -> String? {
        switch value {
        case .string(let text): text
        case .bool(let flag): flag ? "true" : "false"
        case .number: value.int.map(String.init)
        case .null: ""
        default: nil
        }
    }
}
