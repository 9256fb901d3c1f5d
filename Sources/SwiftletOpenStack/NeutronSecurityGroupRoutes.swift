import Foundation
import Hummingbird
import SwiftletController
import SwiftletCore

/// Security groups and their rules as Neutron's. A Swiftlet group lets every outbound packet out
/// and lets in what comes from its members or what a rule allows; so each group shows, besides
/// its own (ingress, IPv4) rules, two fixed ones that say so: egress to anywhere, and ingress
/// from the group itself. Those two cannot be deleted, and no egress or IPv6 rule can be added.
struct NeutronSecurityGroupRoutes {
    let controller: Controller
    let identity: IdentityService

    static let egressSuffix = "-egress"
    static let membersSuffix = "-members"

    func register(on api: RouterGroup<APIContext>) {
        api.get("security-groups") { request, _ in
            let principal = try await identity.principal(request)
            let groups = try await controller.securityGroups(by: principal).map(Self.body)
            return OpenStack.json(
                .object(["security_groups": .array(try NeutronFilter.apply(request, to: groups))]))
        }
        api.get("security-groups/:id") { request, context in
            let principal = try await identity.principal(request)
            let group = try await controller.securityGroup(try context.parameters.require("id"), by: principal)
            return OpenStack.json(.object(["security_group": Self.body(group)]))
        }
        api.post("security-groups") { request, _ in
            let principal = try await identity.principal(request)
            let group = try await OpenStack.body(request).requireObject("security_group")
            let fields = try NeutronRoutes.fields(
                group, allowed: ["name", "description", "stateful", "project_id", "tenant_id"])
            if case .bool(false)? = fields["stateful"] {
                throw SwiftletError.badRequest("security_group.stateless", "stateless groups are not supported")
            }
            let created = try await controller.createSecurityGroup(
                CreateSecurityGroupRequest(
                    name: try group.requireString("name"), description: try group.optionalString("description")),
                by: principal)
            return OpenStack.json(.object(["security_group": Self.body(created)]), status: .created)
        }
        api.delete("security-groups/:id") { request, context in
            let principal = try await identity.principal(request)
            try await controller.deleteSecurityGroup(try context.parameters.require("id"), by: principal)
            return Response(status: .noContent)
        }
        api.get("security-group-rules") { request, _ in
            let principal = try await identity.principal(request)
            let rules = try await controller.securityGroups(by: principal).flatMap(Self.rules)
            return OpenStack.json(
                .object(["security_group_rules": .array(try NeutronFilter.apply(request, to: rules))]))
        }
        api.get("security-group-rules/:id") { request, context in
            let principal = try await identity.principal(request)
            let (_, rule) = try await rule(try context.parameters.require("id"), principal)
            return OpenStack.json(.object(["security_group_rule": rule]))
        }
        api.post("security-group-rules") { request, _ in
            let principal = try await identity.principal(request)
            let rule = try await OpenStack.body(request).requireObject("security_group_rule")
            let group = try await controller.securityGroup(try rule.requireString("security_group_id"), by: principal)
            let create = try Self.createRequest(rule, group: group)
            let updated = try await controller.addRule(create, to: group.id, by: principal)
            let before = Set(group.rules.map(\.id))
            guard let added = updated.rules.first(where: { !before.contains($0.id) }) else {
                throw SwiftletError(.internal, "rule.not_created", "the rule was not stored")
            }
            return OpenStack.json(.object(["security_group_rule": Self.body(added, updated)]), status: .created)
        }
        api.delete("security-group-rules/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            let (group, _) = try await rule(id, principal)
            guard group.rules.contains(where: { $0.id == id }) else {
                throw SwiftletError(
                    .conflict, "rule.fixed",
                    "this rule says what every Swiftlet group does (outbound allowed, members let in): it stays")
            }
            try await controller.deleteRule(id, from: group.id, by: principal)
            return Response(status: .noContent)
        }
    }

    /// The rule with this id among the groups the principal sees, with its group.
    func rule(_ id: String, _ principal: Principal) async throws -> (SecurityGroup, JSONValue) {
        for group in try await controller.securityGroups(by: principal) {
            if let rule = Self.rules(group).first(where: { $0["id"]?.string == id }) { return (group, rule) }
        }
        throw SwiftletError.notFound("security_group_rule", id)
    }

    static let ruleFields: Set<String> = [
        "security_group_id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max",
        "remote_ip_prefix", "remote_group_id", "description", "project_id", "tenant_id", "remote_address_group_id",
    ]

    /// A Neutron rule create as Swiftlet's: an IPv4 ingress rule from a CIDR.
    static func createRequest(_ rule: JSONValue, group: SecurityGroup) throws(SwiftletError)
        -> CreateSecurityGroupRuleRequest
    {
        let fields = try NeutronRoutes.fields(rule, allowed: ruleFields)
        if try rule.optionalString("direction") != "ingress" {
            throw SwiftletError.badRequest(
                "rule.egress_unsupported", "every outbound packet is allowed: only ingress rules can be added")
        }
        if let ethertype = try rule.optionalString("ethertype"), ethertype != "IPv4" {
            throw SwiftletError.badRequest("rule.ipv6_unsupported", "Swiftlet's networks are IPv4 only")
        }
        if let remote = try rule.optionalString("remote_group_id") {
            guard remote == group.id else {
                throw SwiftletError.badRequest(
                    "rule.remote_group_unsupported", "only the group itself can be a remote group (its members)")
            }
            throw SwiftletError(
                .conflict, "rule.exists", "members of a group always reach each other: the rule exists")
        }
        if try rule.optionalString("remote_address_group_id") != nil {
            throw SwiftletError.badRequest("rule.address_groups_unsupported", "address groups are not supported")
        }
        if let description = try rule.optionalString("description"), !description.isEmpty {
            throw SwiftletError.badRequest("rule.description_unsupported", "rule descriptions are not stored")
        }
        let proto: RuleProtocol
        switch (try rule.optionalString("protocol") ?? fields["protocol"]?.int.map(String.init))?.lowercased() {
        case nil, "any", "0": proto = .any
        case "tcp", "6": proto = .tcp
        case "udp", "17": proto = .udp
        case "icmp", "1": proto = .icmp
        case let other?:
            throw SwiftletError.badRequest("rule.bad_protocol", "protocol must be tcp, udp, icmp or none, not \(other)")
        }
        let low = try rule.optionalInt("port_range_min")
        let high = try rule.optionalInt("port_range_max")
        if proto == .icmp, low != nil || high != nil {
            throw SwiftletError.badRequest("rule.icmp_type_unsupported", "ICMP types and codes are not filtered")
        }
        return CreateSecurityGroupRuleRequest(
            proto: proto, portMin: low, portMax: high, source: try rule.optionalString("remote_ip_prefix"))
    }

    static func body(_ group: SecurityGroup) -> JSONValue {
        .object([
            "id": .string(group.id), "name": .string(group.name), "description": .string(group.description),
            "tenant_id": .string(group.projectId), "project_id": .string(group.projectId),
            "security_group_rules": .array(rules(group)), "stateful": true, "shared": false, "tags": .array([]),
            "revision_number": .int(group.rules.count), "created_at": OpenStack.date(group.createdAt),
            "updated_at": OpenStack.date(group.createdAt),
        ])
    }

    /// The group's own rules, then the two fixed ones.
    static func rules(_ group: SecurityGroup) -> [JSONValue] {
        group.rules.map { body($0, group) } + [
            ruleBody(
                id: group.id + egressSuffix, group, direction: "egress", proto: nil, low: nil, high: nil,
                prefix: nil, remoteGroup: nil),
            ruleBody(
                id: group.id + membersSuffix, group, direction: "ingress", proto: nil, low: nil, high: nil,
                prefix: nil, remoteGroup: group.id),
        ]
    }

    static func body(_ rule: SecurityGroupRule, _ group: SecurityGroup) -> JSONValue {
        ruleBody(
            id: rule.id, group, direction: "ingress", proto: rule.proto == .any ? nil : rule.proto.rawValue,
            low: rule.portMin, high: rule.portMax, prefix: rule.source, remoteGroup: nil)
    }

    static func ruleBody(
        id: String, _ group: SecurityGroup, direction: String, proto: String?, low: Int?, high: Int?, prefix: String?,
        remoteGroup: String?
    ) -> JSONValue {
        .object([
            "id": .string(id), "security_group_id": .string(group.id), "direction": .string(direction),
            "ethertype": "IPv4", "protocol": .optional(proto), "port_range_min": low.map { .int($0) } ?? .null,
            "port_range_max": high.map { .int($0) } ?? .null, "remote_ip_prefix": .optional(prefix),
            "normalized_cidr": .optional(prefix), "remote_group_id": .optional(remoteGroup),
            "remote_address_group_id": .null, "description": "", "tenant_id": .string(group.projectId),
            "project_id": .string(group.projectId), "revision_number": .int(0),
            "created_at": OpenStack.date(group.createdAt), "updated_at": OpenStack.date(group.createdAt),
        ])
    }
}
