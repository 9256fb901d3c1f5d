import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore

/// Server groups (Swiftlet's, same policies), limits and quota sets (the project's quota and
/// usage), and instance actions (the create action, whose events are Swiftlet's boot phases).
struct ComputeExtrasRoutes {
    let controller: Controller
    let identity: IdentityService

    func register(on api: RouterGroup<APIContext>) {
        registerServerGroups(on: api)
        registerQuotas(on: api)
        registerInstanceActions(on: api)
    }

    // MARK: - Server groups

    func registerServerGroups(on api: RouterGroup<APIContext>) {
        api.get("os-server-groups") { request, _ in
            let principal = try await identity.principal(request)
            try OpenStack.refuseUnknownParameters(request, known: ["all_projects", "limit", "offset"])
            let groups = try await controller.serverGroups(by: principal)
            return OpenStack.json(.object(["server_groups": .array(groups.map(Self.body))]))
        }
        api.get("os-server-groups/:id") { request, context in
            let principal = try await identity.principal(request)
            let group = try await controller.serverGroup(try context.parameters.require("id"), by: principal)
            return OpenStack.json(.object(["server_group": Self.body(group)]))
        }
        api.post("os-server-groups") { request, _ in
            let principal = try await identity.principal(request)
            let group = try await OpenStack.body(request).requireObject("server_group")
            guard case .object(let fields) = group, Set(fields.keys).isSubset(of: ["name", "policies"]),
                case .array(let policies)? = fields["policies"], policies.count == 1, let policy = policies[0].string
            else {
                throw SwiftletError.badRequest(
                    "server_group.bad_body", "a server group needs 'name' and 'policies' with one policy")
            }
            let created = try await controller.createServerGroup(
                CreateServerGroupRequest(name: try group.requireString("name"), policy: policy), by: principal)
            return OpenStack.json(.object(["server_group": Self.body(created)]))
        }
        api.delete("os-server-groups/:id") { request, context in
            let principal = try await identity.principal(request)
            try await controller.deleteServerGroup(try context.parameters.require("id"), by: principal)
            return Response(status: .noContent)
        }
    }

    static func body(_ group: ServerGroup) -> JSONValue {
        .object([
            "id": .string(group.id), "name": .string(group.name), "policies": .array([.string(group.policy.rawValue)]),
            "members": .array(group.members.map(JSONValue.string)), "metadata": .object([:]),
            "project_id": .string(group.projectId), "user_id": .string(group.projectId),
        ])
    }

    // MARK: - Limits and quotas

    func registerQuotas(on api: RouterGroup<APIContext>) {
        api.get("limits") { request, _ in
            let principal = try await identity.principal(request)
            try OpenStack.refuseUnknownParameters(request, known: ["tenant_id", "reserved"])
            let project = try await controller.projectDetail(
                request.uri.queryParameters.get("tenant_id") ?? principal.projectId, by: principal)
            let quota = project.quota ?? ProjectQuota()
            let usage = project.usage ?? ProjectUsage()
            let groups = try await controller.serverGroups(by: principal).filter { $0.projectId == project.id }
            let absolute: [String: Int] = [
                "maxTotalInstances": Self.limit(quota.instances), "maxTotalCores": Self.limit(quota.vcpus),
                "maxTotalRAMSize": Self.limit(quota.memoryMib), "totalInstancesUsed": usage.instances,
                "totalCoresUsed": usage.vcpus, "totalRAMUsed": usage.memoryMib, "maxServerMeta": -1,
                "maxImageMeta": -1, "maxPersonality": 0, "maxPersonalitySize": 0, "maxTotalKeypairs": 0,
                "maxServerGroups": -1, "maxServerGroupMembers": -1, "totalServerGroupsUsed": groups.count,
                "maxSecurityGroups": -1, "maxSecurityGroupRules": -1, "totalSecurityGroupsUsed": 0,
                "maxTotalFloatingIps": 0, "totalFloatingIpsUsed": 0,
            ]
            return OpenStack.json(
                .object(["limits": .object(["rate": .array([]), "absolute": .object(absolute.mapValues { .int($0) })])])
            )
        }
        api.get("os-quota-sets/:project") { request, context in
            let project = try await project(request, context)
            return OpenStack.json(.object(["quota_set": Self.quotaSet(project, detail: false)]))
        }
        api.get("os-quota-sets/:project/detail") { request, context in
            let project = try await project(request, context)
            return OpenStack.json(.object(["quota_set": Self.quotaSet(project, detail: true)]))
        }
        api.get("os-quota-sets/:project/defaults") { request, context in
            var project = try await project(request, context)
            project.quota = nil
            return OpenStack.json(.object(["quota_set": Self.quotaSet(project, detail: false)]))
        }
        api.put("os-quota-sets/:project") { request, context in
            let principal = try await identity.principal(request)
            let project = try await project(request, context)
            let set = try await OpenStack.body(request).requireObject("quota_set")
            var quota = project.quota ?? ProjectQuota()
            guard case .object(let fields) = set else { throw SwiftletError.badRequest("quota.bad_body", "bad body") }
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                if key == "force" { continue }
                guard let limit = value.int, limit >= -1 else {
                    throw SwiftletError.badRequest("quota.bad_value", "'\(key)' must be an integer, -1 for no limit")
                }
                let kept = limit == -1 ? nil : limit
                switch key {
                case "instances": quota.instances = kept
                case "cores": quota.vcpus = kept
                case "ram": quota.memoryMib = kept
                default:
                    throw SwiftletError.badRequest(
                        "quota.unsupported", "quota '\(key)' is not supported (supported: instances, cores, ram)")
                }
            }
            _ = try await controller.updateProject(project.id, UpdateProjectRequest(quota: quota), by: principal)
            let updated = try await controller.projectDetail(project.id, by: principal)
            return OpenStack.json(.object(["quota_set": Self.quotaSet(updated, detail: false)]))
        }
    }

    /// The project of a quota route: the caller's own, or any for an admin (another is 403).
    func project(_ request: Request, _ context: APIContext) async throws -> Project {
        let principal = try await identity.principal(request)
        try OpenStack.refuseUnknownParameters(request, known: [])
        return try await controller.projectDetail(try context.parameters.require("project"), by: principal)
    }

    static func limit(_ value: Int?) -> Int { value ?? -1 }

    /// Nova's quota set (2.1–2.35 fields): instances, cores and ram from the project's quota; what
    /// Swiftlet does not limit is -1; what it does not have (key pairs, floating IPs, files) is 0.
    static func quotaSet(_ project: Project, detail: Bool) -> JSONValue {
        let quota = project.quota ?? ProjectQuota()
        let usage = project.usage ?? ProjectUsage()
        let values: [String: (Int, Int)] = [
            "instances": (limit(quota.instances), usage.instances), "cores": (limit(quota.vcpus), usage.vcpus),
            "ram": (limit(quota.memoryMib), usage.memoryMib), "metadata_items": (-1, 0), "key_pairs": (0, 0),
            "server_groups": (-1, 0), "server_group_members": (-1, 0), "injected_files": (0, 0),
            "injected_file_content_bytes": (0, 0), "injected_file_path_bytes": (0, 0), "floating_ips": (0, 0),
            "fixed_ips": (-1, 0), "security_groups": (-1, 0), "security_group_rules": (-1, 0),
        ]
        var fields = OpenStack.quotaFields(values, detail: detail, usedKey: "in_use")
        fields["id"] = .string(project.id)
        return .object(fields)
    }

    // MARK: - Instance actions

    func registerInstanceActions(on api: RouterGroup<APIContext>) {
        api.get("servers/:id/os-instance-actions") { request, context in
            let principal = try await identity.principal(request)
            let instance = try await controller.instance(try context.parameters.require("id"), by: principal)
            return OpenStack.json(.object(["instanceActions": .array([Self.createAction(instance, events: false)])]))
        }
        api.get("servers/:id/os-instance-actions/:request") { request, context in
            let principal = try await identity.principal(request)
            let instance = try await controller.instance(try context.parameters.require("id"), by: principal)
            let requestId = try context.parameters.require("request")
            guard requestId == Self.requestId(instance) else {
                throw SwiftletError(
                    .notFound, "instance_action.not_found",
                    "Action \(requestId) on instance \(instance.id) could not be found.")
            }
            return OpenStack.json(.object(["instanceAction": Self.createAction(instance, events: true)]))
        }
    }

    static func requestId(_ instance: Instance) -> String { "req-" + instance.id }

    /// Event names of Swiftlet's phases.
    static func eventName(_ phase: Phase) -> String {
        switch phase {
        case .accepted: "swiftlet_accepted"
        case .persisted: "swiftlet_persisted"
        case .scheduled: "swiftlet_scheduled"
        case .imageReady: "swiftlet_image_ready"
        case .vmmSpawned: "swiftlet_vmm_spawned"
        case .vmmUp: "swiftlet_vmm_up"
        case .ready: "swiftlet_guest_ready"
        }
    }

    /// The create action; its events are the phases of the instance's latest instantiation (a
    /// restart's, after a stop and start), each from the phase before it to its own time.
    static func createAction(_ instance: Instance, events: Bool) -> JSONValue {
        let timeline = instance.timeline
        // Phases are monotonic nanoseconds of one clock: placed on the wall clock through now.
        let now = Date()
        let nowNanos = monotonicNanos()
        func wall(_ nanos: UInt64) -> String {
            let ago = Double(Int64(bitPattern: nowNanos &- nanos)) / 1e9
            return OpenStack.keystoneDate(now.addingTimeInterval(-ago))
        }
        let start = timeline.accepted.map(wall) ?? OpenStack.keystoneDate(instance.createdAt)
        var fields: [String: JSONValue] = [
            "action": "create", "instance_uuid": .string(instance.id), "request_id": .string(requestId(instance)),
            "user_id": .string(instance.projectId), "project_id": .string(instance.projectId),
            "start_time": .string(start), "message": instance.state == .error ? "Error" : .null,
        ]
        if events {
            var list: [JSONValue] = []
            var previous = timeline.accepted
            for (phase, nanos) in timeline.phasesInTimeOrder {
                list.append(
                    .object([
                        "event": .string(eventName(phase)), "start_time": .string(wall(previous ?? nanos)),
                        "finish_time": .string(wall(nanos)), "result": "Success", "traceback": .null,
                    ]))
                previous = nanos
            }
            if instance.state == .error {
                list.append(
                    .object([
                        "event": "swiftlet_boot", "start_time": .string(previous.map(wall) ?? start),
                        "finish_time": .string(OpenStack.keystoneDate(instance.updatedAt)), "result": "Error",
                        "traceback": .optional(instance.reason),
                    ]))
            }
            fields["events"] = .array(list)
        }
        return .object(fields)
    }
}
