import Crypto
import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore

/// Servers are Swiftlet instances: create, list, show, delete and the actions start, stop,
/// pause, unpause, reboot and console output go through the Controller as `/v1` does, with the
/// same project isolation (another project's server is 404).
struct ServerRoutes {
    let controller: Controller
    let identity: IdentityService
    /// Neutron networks without a subnet (not Swiftlet networks yet).
    let pending: PendingNetworks

    /// The server fields a create reads; any other is refused, as Nova's schema does.
    static let createFields: Set<String> = [
        "name", "imageRef", "flavorRef", "min_count", "max_count", "networks", "metadata", "user_data",
        "security_groups", "availability_zone", "OS-DCF:diskConfig", "config_drive", "description",
        "block_device_mapping_v2",
    ]
    static let listFilters: Set<String> = ["name", "status", "image", "flavor", "limit", "marker", "deleted"]

    func register(on api: RouterGroup<APIContext>) {
        api.post("servers") { request, _ in
            let principal = try await identity.principal(request)
            let create = try Self.createRequest(try await OpenStack.body(request))
            let created: [Instance]
            do {
                created = try await controller.createInstances(create, by: principal, accepted: monotonicNanos())
            } catch let error as SwiftletError where error.kind == .notFound {
                for attachment in create.networks ?? [] where pending.entry(attachment.network, by: principal) != nil {
                    throw SwiftletError.badRequest(
                        "server.network_without_subnet",
                        "network \(attachment.network) has no subnet yet: create its subnet first")
                }
                // As Nova: a create naming a missing image, flavor, network or group is a bad request.
                throw SwiftletError.badRequest(error.code, error.message)
            }
            guard let first = created.first else {
                throw SwiftletError(.internal, "server.not_created", "no server was created")
            }
            return OpenStack.json(
                .object([
                    "server": .object([
                        "id": .string(first.id), "links": links(first, request), "OS-DCF:diskConfig": "MANUAL",
                        "security_groups": .array(
                            (first.securityGroups ?? []).map { .object(["name": .string($0)]) }),
                    ])
                ]), status: .accepted)
        }
        api.get("servers") { request, _ in
            let servers = try await list(request, by: try await identity.principal(request))
            return OpenStack.json(
                .object([
                    "servers": .array(
                        servers.map {
                            .object(["id": .string($0.id), "name": .string($0.name), "links": links($0, request)])
                        })
                ]))
        }
        api.get("servers/detail") { request, _ in
            let principal = try await identity.principal(request)
            let servers = try await list(request, by: principal)
            let version = try ComputeRoutes.microversion(request)
            return OpenStack.json(
                .object(["servers": .array(servers.map { detail($0, request, version: version, principal: principal) })]
                ))
        }
        api.get("servers/:id") { request, context in
            let principal = try await identity.principal(request)
            let instance = controller.present(
                try await controller.instance(try context.parameters.require("id"), by: principal))
            let version = try ComputeRoutes.microversion(request)
            return OpenStack.json(
                .object(["server": detail(instance, request, version: version, principal: principal)]))
        }
        api.delete("servers/:id") { request, context in
            let principal = try await identity.principal(request)
            _ = try await controller.act(
                .delete, on: try context.parameters.require("id"), by: principal, stopTimeout: .zero)
            return Response(status: .noContent)
        }
        api.post("servers/:id/action") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            guard case .object(let fields) = try await OpenStack.body(request), fields.count == 1,
                let (name, argument) = fields.first
            else {
                throw SwiftletError.badRequest("server.bad_action", "the body must name exactly one action")
            }
            if name == "os-getConsoleOutput" {
                return OpenStack.json(.object(["output": .string(try await consoleOutput(id, argument, principal))]))
            }
            if name == "os-migrateLive" {
                // Nova's default policy: admins only. `block_migration`, `disk_over_commit` and
                // `force` have no meaning here (no disks to copy, the scheduler always checks).
                try controller.requireAdmin(principal)
                _ = try await controller.migrate(
                    id, MigrateInstanceRequest(host: try argument.optionalString("host")), by: principal)
                return Response(status: .accepted)
            }
            let command = try Self.command(name, argument)
            _ = try await controller.act(command, on: id, by: principal, stopTimeout: .seconds(5))
            return Response(status: .accepted)
        }
    }

    /// The Swiftlet command of a Nova action. Both reboot types reset the VM: a unikernel has no
    /// guest OS to ask for a clean restart.
    static func command(_ name: String, _ argument: JSONValue) throws(SwiftletError) -> InstanceCommand {
        switch name {
        case "os-start": return .start
        case "os-stop": return .stop
        case "pause": return .pause
        case "unpause": return .resume
        case "reboot":
            guard let type = try argument.optionalString("type"), ["SOFT", "HARD"].contains(type.uppercased()) else {
                throw SwiftletError.badRequest("server.bad_reboot", "reboot needs 'type': SOFT or HARD")
            }
            return .reboot
        default:
            throw SwiftletError(
                .notImplemented, "server.action_unsupported",
                "action '\(name)' is not supported; supported: os-start, os-stop, pause, unpause, reboot, "
                    + "os-getConsoleOutput, os-migrateLive")
        }
    }

    /// The last `length` lines of the console log (all of it without a length).
    func consoleOutput(_ id: String, _ argument: JSONValue, _ principal: Principal) async throws -> String {
        let length = try argument.optionalInt("length")
        if let length, length < -1 {
            throw SwiftletError.badRequest("server.bad_length", "'length' must be -1 or more")
        }
        let instance = try await controller.instance(id, by: principal)
        let chunk = try await controller.link(for: instance).readConsole(instanceId: instance.id, from: 0)
        let text = String(decoding: chunk.data, as: UTF8.self)
        guard let length, length >= 0 else { return text }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        return lines.suffix(length).map { $0 + "\n" }.joined()
    }

    /// A Nova server create as Swiftlet's: metadata and user_data lines become the boot config
    /// (`key=value` words on the kernel command line).
    static func createRequest(_ body: JSONValue) throws(SwiftletError) -> CreateInstanceRequest {
        guard case .object(let top) = body else {
            throw SwiftletError.badRequest("request.malformed_json", "the body must be an object")
        }
        var group: String?
        for (key, value) in top where key != "server" {
            guard key == "os:scheduler_hints" || key == "OS-SCH-HNT:scheduler_hints" else {
                throw SwiftletError.badRequest(
                    "server.unexpected_field", "Additional properties are not allowed ('\(key)' was unexpected)")
            }
            guard case .object(let hints) = value, hints.keys.allSatisfy({ $0 == "group" }) else {
                throw SwiftletError.badRequest("server.bad_hints", "only the scheduler hint 'group' is supported")
            }
            group = try value.optionalString("group")
        }
        let server = try body.requireObject("server")
        guard case .object(let fields) = server else { throw SwiftletError.badRequest("server.bad_body", "bad server") }
        for key in fields.keys where !createFields.contains(key) {
            throw SwiftletError.badRequest(
                "server.unexpected_field", "Additional properties are not allowed ('\(key)' was unexpected)")
        }
        if let diskConfig = try server.optionalString("OS-DCF:diskConfig"), diskConfig != "MANUAL" {
            throw SwiftletError.badRequest("server.disk_config", "there is no disk to partition: only MANUAL")
        }
        if let zone = try server.optionalString("availability_zone"), zone != "nova" {
            throw SwiftletError.badRequest("server.bad_zone", "the only availability zone is 'nova'")
        }
        if case .bool(true)? = server["config_drive"] {
            throw SwiftletError.badRequest("server.config_drive", "config drives are not supported: use metadata")
        }
        if try server.optionalString("description") != nil {
            throw SwiftletError.badRequest("server.description", "server descriptions are not stored")
        }
        try Self.checkBlockDevices(server)
        var request = CreateInstanceRequest(
            name: try server.requireString("name"), image: lastSegment(try server.requireString("imageRef")),
            flavor: lastSegment(try server.requireString("flavorRef")))
        let maxCount = try server.optionalInt("max_count")
        let minCount = try server.optionalInt("min_count")
        let count = maxCount ?? minCount ?? 1
        if count != 1 { request.count = count }
        request.args = try configWords(server)
        request.networks = try networks(server["networks"])
        if case .array(let groups)? = server["security_groups"] {
            request.securityGroups = try groups.map { group throws(SwiftletError) in try group.requireString("name") }
        }
        request.serverGroup = group
        return request
    }

    /// The one block device mapping that says no more than `imageRef` (the image booted as the
    /// local root, which the CLI sends with every image boot) passes; volumes, snapshots, swap and
    /// ephemeral disks are refused: a unikernel boots from its image alone.
    static func checkBlockDevices(_ server: JSONValue) throws(SwiftletError) {
        guard let value = server["block_device_mapping_v2"], !value.isNull else { return }
        let imageRef = try server.requireString("imageRef")
        guard case .array(let mappings) = value else {
            throw SwiftletError.badRequest("server.bad_block_devices", "'block_device_mapping_v2' must be a list")
        }
        for mapping in mappings {
            let source = try mapping.optionalString("source_type")
            let destination = try mapping.optionalString("destination_type")
            let uuid = try mapping.optionalString("uuid")
            guard source == "image", destination == "local", uuid == imageRef, mapping["boot_index"]?.int == 0 else {
                throw SwiftletError.badRequest(
                    "server.block_devices_unsupported",
                    "block devices are not supported: a unikernel boots from its image (imageRef) alone")
            }
        }
    }

    /// `metadata` pairs, then each non-empty, non-comment line of the base64 `user_data`.
    static func configWords(_ server: JSONValue) throws(SwiftletError) -> [String]? {
        var words: [String] = []
        if let metadata = server["metadata"], !metadata.isNull {
            guard case .object(let pairs) = metadata else {
                throw SwiftletError.badRequest("server.bad_metadata", "'metadata' must be an object of strings")
            }
            for (key, value) in pairs.sorted(by: { $0.key < $1.key }) {
                guard let text = value.string else {
                    throw SwiftletError.badRequest("server.bad_metadata", "metadata '\(key)' must be a string")
                }
                words.append("\(key)=\(text)")
            }
        }
        if let encoded = try server.optionalString("user_data") {
            guard let data = Data(base64Encoded: encoded), let text = String(data: data, encoding: .utf8) else {
                throw SwiftletError.badRequest("server.bad_user_data", "'user_data' must be base64 of UTF-8 text")
            }
            for line in text.split(whereSeparator: \.isNewline) {
                let word = line.trimmingCharacters(in: .whitespaces)
                if !word.isEmpty && !word.hasPrefix("#") { words.append(word) }
            }
        }
        return words.isEmpty ? nil : words
    }

    /// `[{"uuid": id, "fixed_ip": ip}]` or `"none"`; ports and automatic allocation are refused.
    static func networks(_ value: JSONValue?) throws(SwiftletError) -> [NetworkAttachment]? {
        guard let value, !value.isNull else { return nil }
        if value.string == "none" { return nil }
        guard case .array(let entries) = value else {
            throw SwiftletError.badRequest(
                "server.bad_networks", "'networks' must be \"none\" or a list of {\"uuid\": network id}")
        }
        return try entries.map { entry throws(SwiftletError) in
            if try entry.optionalString("port") != nil {
                throw SwiftletError.badRequest("server.ports_unsupported", "attaching ports is not supported")
            }
            return NetworkAttachment(network: try entry.requireString("uuid"), ip: try entry.optionalString("fixed_ip"))
        }
    }

    /// A reference given as a URL (`…/flavors/small`) names its last segment.
    static func lastSegment(_ reference: String) -> String {
        reference.split(separator: "/").last.map(String.init) ?? reference
    }

    func list(_ request: Request, by principal: Principal) async throws -> [Instance] {
        try OpenStack.refuseUnknownParameters(request, known: Self.listFilters)
        let query = request.uri.queryParameters
        // The CLI asks for live servers (`deleted=False`); deleted ones are not kept.
        if let deleted = query.get("deleted"), deleted.lowercased() != "false" {
            throw SwiftletError.badRequest("server.deleted_unsupported", "deleted servers are not kept")
        }
        var states: [InstanceState]?
        if let status = query.get("status") {
            guard let matching = NovaStatus.states(forStatus: status) else {
                throw SwiftletError.badRequest("server.bad_status", "unknown status '\(status)'")
            }
            states = matching
        }
        var nameRegex: Regex<AnyRegexOutput>?
        if let name = query.get("name") {
            do { nameRegex = try Regex(name) } catch {
                throw SwiftletError.badRequest("server.bad_name_filter", "'name' is not a valid regular expression")
            }
        }
        var limit: Int?
        if let text = query.get("limit") {
            guard let value = Int(text), value >= 0 else {
                throw SwiftletError.badRequest("server.bad_limit", "limit must be a non-negative integer")
            }
            limit = value
        }
        var servers = try await controller.instances(by: principal, state: nil, name: nil, image: nil).instances
        // As Nova: the name filter is a regular expression matched anywhere in the name.
        if let nameRegex { servers = servers.filter { (try? nameRegex.firstMatch(in: $0.name)) != nil } }
        if let states { servers = servers.filter { states.contains($0.state) } }
        if let image = query.get("image") { servers = servers.filter { $0.imageId == Self.lastSegment(image) } }
        if let flavor = query.get("flavor") { servers = servers.filter { $0.flavor == Self.lastSegment(flavor) } }
        // Nova lists newest first.
        servers.reverse()
        if let marker = query.get("marker") {
            guard let index = servers.firstIndex(where: { $0.id == marker }) else {
                throw SwiftletError.badRequest("server.bad_marker", "marker \(marker) not found")
            }
            servers.removeFirst(index + 1)
        }
        if let limit { servers = Array(servers.prefix(limit)) }
        return servers
    }

    func links(_ instance: Instance, _ request: Request) -> JSONValue {
        let base = OpenStack.baseURL(request) + "/compute"
        return .array([
            OpenStack.link("self", base + "/v2.1/servers/" + instance.id),
            OpenStack.link("bookmark", base + "/servers/" + instance.id),
        ])
    }

    func detail(_ instance: Instance, _ request: Request, version: Microversion, principal: Principal) -> JSONValue {
        var status = NovaStatus(instance.state)
        if instance.task?.kind == .migrating { status = .migrating }
        let base = OpenStack.baseURL(request)
        var addressLists: [String: [JSONValue]] = [:]
        for port in instance.ports ?? [] {
            let address: JSONValue = .object([
                "version": .int(4), "addr": .string(port.address), "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": .string(port.mac),
            ])
            addressLists[port.networkName, default: []].append(address)
        }
        let addresses = addressLists.mapValues { JSONValue.array($0) }
        var metadata: [String: JSONValue] = [:]
        for word in instance.args {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { metadata[String(parts[0])] = .string(String(parts[1])) }
        }
        let hostId = instance.hostId.map { host in
            SHA256.hash(data: Data((instance.projectId + host).utf8)).hexString
        }
        var fields: [String: JSONValue] = [
            "id": .string(instance.id), "name": .string(instance.name), "status": .string(status.status),
            "tenant_id": .string(instance.projectId), "user_id": .string(instance.projectId),
            "metadata": .object(metadata), "hostId": .string(hostId ?? ""),
            "image": .object([
                "id": .string(instance.imageId),
                "links": .array([OpenStack.link("bookmark", base + "/compute/images/" + instance.imageId)]),
            ]),
            "flavor": .object([
                "id": .optional(instance.flavor),
                "links": .array([OpenStack.link("bookmark", base + "/compute/flavors/" + (instance.flavor ?? ""))]),
            ]),
            "created": OpenStack.date(instance.createdAt), "updated": OpenStack.date(instance.updatedAt),
            "addresses": .object(addresses), "accessIPv4": "", "accessIPv6": "", "links": links(instance, request),
            "OS-DCF:diskConfig": "MANUAL", "progress": .int(0), "OS-EXT-AZ:availability_zone": "nova",
            "config_drive": "", "key_name": .null, "OS-SRV-USG:launched_at": OpenStack.date(instance.createdAt),
            "OS-SRV-USG:terminated_at": .null, "OS-EXT-STS:task_state": .optional(status.taskState),
            "OS-EXT-STS:vm_state": .string(status.vmState), "OS-EXT-STS:power_state": .int(status.powerState),
            "os-extended-volumes:volumes_attached": .array([]),
            "security_groups": .array((instance.securityGroups ?? []).map { .object(["name": .string($0)]) }),
        ]
        if instance.state == .error {
            fields["fault"] = .object([
                "code": .int(500), "message": .string(instance.reason ?? "the instance failed"),
                "created": OpenStack.date(instance.updatedAt),
            ])
        }
        if principal.isAdmin {
            fields["OS-EXT-SRV-ATTR:host"] = .optional(instance.hostId)
            fields["OS-EXT-SRV-ATTR:hypervisor_hostname"] = .optional(instance.hostId)
            fields["OS-EXT-SRV-ATTR:instance_name"] = .string(instance.id)
        }
        if version >= Microversion(2, 9) { fields["locked"] = false }
        if version >= Microversion(2, 19) { fields["description"] = .null }
        if version >= Microversion(2, 26) { fields["tags"] = .array([]) }
        return .object(fields)
    }
}
