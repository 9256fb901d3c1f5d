import Foundation
import HTTPTypes
import Hummingbird
import SwiftletController
import SwiftletCore

/// Compute v2.1 (a Nova subset) under `/compute`: version documents, microversions, servers,
/// server actions and flavors, each mapped onto the Controller's instance and flavor services.
enum ComputeRoutes {
    static let openStackVersionHeader = HTTPField.Name("OpenStack-API-Version")!
    static let novaVersionHeader = HTTPField.Name("X-OpenStack-Nova-API-Version")!

    static func register(
        on router: Router<APIContext>, controller: Controller, identity: IdentityService, pending: PendingNetworks
    ) {
        let compute = router.group("compute").add(middleware: OpenStackErrorMiddleware(service: .compute))
        compute.get { request, _ in
            OpenStack.json(.object(["versions": .array([version(request)])]))
        }
        let api = compute.group("v2.1").add(middleware: MicroversionMiddleware())
        api.get { request, _ in OpenStack.json(.object(["version": version(request)])) }
        ServerRoutes(controller: controller, identity: identity, pending: pending).register(on: api)
        FlavorRoutes(controller: controller, identity: identity).register(on: api)
        HypervisorRoutes(controller: controller, identity: identity).register(on: api)
        ComputeExtrasRoutes(controller: controller, identity: identity).register(on: api)
        OpenStack.refuseUnsupportedPaths(on: api, api: "Compute", identity: identity)
    }

    static func version(_ request: Request) -> JSONValue {
        .object([
            "id": "v2.1", "status": "CURRENT", "version": .string("\(Microversion.maximum)"),
            "min_version": .string("\(Microversion.minimum)"), "updated": "2013-07-23T11:33:21Z",
            "links": .array([OpenStack.link("self", OpenStack.baseURL(request) + "/compute/v2.1/")]),
            "media-types": .array([
                .object(["base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"])
            ]),
        ])
    }

    static func microversion(_ request: Request) throws(SwiftletError) -> Microversion {
        try Microversion.negotiate(
            openStackAPIVersion: request.headers[openStackVersionHeader],
            novaAPIVersion: request.headers[novaVersionHeader])
    }
}

/// Refuses a microversion outside the supported range before any route runs, and names the
/// version used on every answer, as Nova does.
struct MicroversionMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        let version = try ComputeRoutes.microversion(request)
        var response = try await next(request, context)
        response.headers[ComputeRoutes.openStackVersionHeader] = "compute \(version)"
        response.headers[ComputeRoutes.novaVersionHeader] = "\(version)"
        response.headers[.vary] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return response
    }
}

/// Flavors: a flavor's id is its name (Swiftlet keys flavors by name); RAM and vCPUs map onto
/// the instance's memory and vCPUs. Unikernels boot from their image alone: no disk, swap or
/// ephemeral space, so flavors that ask for them are refused.
struct FlavorRoutes {
    let controller: Controller
    let identity: IdentityService

    func register(on api: RouterGroup<APIContext>) {
        api.get("flavors") { request, _ in
            _ = try await identity.principal(request)
            let flavors = try await controller.store.flavors()
            return OpenStack.json(.object(["flavors": .array(flavors.map { summary($0, request) })]))
        }
        api.get("flavors/detail") { request, _ in
            _ = try await identity.principal(request)
            let flavors = try await controller.store.flavors()
            return OpenStack.json(.object(["flavors": .array(flavors.map { detail($0, request) })]))
        }
        api.get("flavors/:id") { request, context in
            _ = try await identity.principal(request)
            return OpenStack.json(.object(["flavor": detail(try await flavor(context), request)]))
        }
        api.get("flavors/:id/os-extra_specs") { request, context in
            _ = try await identity.principal(request)
            _ = try await flavor(context)
            return OpenStack.json(.object(["extra_specs": .object([:])]))
        }
        api.delete("flavors/:id") { request, _ -> Response in
            _ = try await identity.principal(request)
            throw SwiftletError(.notImplemented, "flavor.delete_unsupported", "Swiftlet does not delete flavors")
        }
        api.post("flavors") { request, _ in
            let principal = try await identity.principal(request)
            let flavor = try Self.flavor(from: try await OpenStack.body(request))
            let created = try await controller.createFlavor(flavor, by: principal)
            return OpenStack.json(.object(["flavor": detail(created, request)]))
        }
    }

    static let createFields: Set<String> = [
        "name", "ram", "vcpus", "disk", "id", "OS-FLV-EXT-DATA:ephemeral", "swap", "rxtx_factor",
        "os-flavor-access:is_public", "description",
    ]

    /// A Nova flavor create as Swiftlet's flavor: what Swiftlet cannot keep or honour is refused.
    static func flavor(from body: JSONValue) throws(SwiftletError) -> Flavor {
        let flavor = try body.requireObject("flavor")
        guard case .object(let fields) = flavor else { throw .badRequest("flavor.bad_body", "bad flavor") }
        for key in fields.keys where !createFields.contains(key) {
            throw .badRequest(
                "flavor.unexpected_field", "Additional properties are not allowed ('\(key)' was unexpected)")
        }
        let name = try flavor.requireString("name")
        if let id = fields["id"], !id.isNull, id.string != name, id.string != "auto" {
            throw .badRequest("flavor.bad_id", "a flavor's id is its name: leave 'id' out")
        }
        for field in ["disk", "OS-FLV-EXT-DATA:ephemeral", "swap"] {
            // Nova shows no swap as "", and clients send it back so.
            if fields[field] == .string("") { continue }
            if let size = try flavor.optionalInt(field), size != 0 {
                throw .badRequest(
                    "flavor.no_disk", "'\(field)' must be 0: unikernels boot from their image, with no disk")
            }
        }
        if case .bool(false)? = fields["os-flavor-access:is_public"] {
            throw .badRequest("flavor.private_unsupported", "every flavor is public here")
        }
        if let factor = fields["rxtx_factor"], !factor.isNull, factor != .number(1) {
            throw .badRequest("flavor.rxtx_unsupported", "'rxtx_factor' must be 1.0: bandwidth is not shaped")
        }
        if try flavor.optionalString("description") != nil {
            throw .badRequest("flavor.description_unsupported", "flavor descriptions are not stored")
        }
        guard let ram = try flavor.optionalInt("ram"), let vcpus = try flavor.optionalInt("vcpus") else {
            throw .badRequest("flavor.missing_field", "'ram' and 'vcpus' are required")
        }
        return Flavor(name: name, vcpus: vcpus, memoryMib: ram)
    }

    private func flavor(_ context: APIContext) async throws -> Flavor {
        let id = try context.parameters.require("id")
        guard let found = try await controller.store.flavors().first(where: { $0.name == id }) else {
            throw SwiftletError(.notFound, "flavor.not_found", "Flavor \(id) could not be found.")
        }
        return found
    }

    func summary(_ flavor: Flavor, _ request: Request) -> JSONValue {
        .object(["id": .string(flavor.name), "name": .string(flavor.name), "links": links(flavor, request)])
    }

    func detail(_ flavor: Flavor, _ request: Request) -> JSONValue {
        .object([
            "id": .string(flavor.name), "name": .string(flavor.name), "ram": .int(flavor.memoryMib),
            "vcpus": .int(flavor.vcpus), "disk": .int(0), "OS-FLV-EXT-DATA:ephemeral": .int(0), "swap": "",
            "rxtx_factor": .number(1), "os-flavor-access:is_public": true, "OS-FLV-DISABLED:disabled": false,
            "links": links(flavor, request),
        ])
    }

    func links(_ flavor: Flavor, _ request: Request) -> JSONValue {
        let base = OpenStack.baseURL(request) + "/compute"
        return .array([
            OpenStack.link("self", base + "/v2.1/flavors/" + flavor.name),
            OpenStack.link("bookmark", base + "/flavors/" + flavor.name),
        ])
    }
}
