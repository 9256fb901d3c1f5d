import Foundation
import HTTPTypes
import Hummingbird
import SwiftletController
import SwiftletCore

/// Identity v3 (a Keystone subset) under `/identity`: version discovery, password and token
/// authentication, token validation and revocation, and users (admin).
enum IdentityRoutes {
    static let subjectToken = HTTPField.Name("X-Subject-Token")!
    /// Users live in one domain, Keystone's default.
    static let domain: JSONValue = .object(["id": .string("default"), "name": .string("Default")])

    static func register(on router: Router<APIContext>, identity: IdentityService) {
        let group = router.group("identity").add(middleware: OpenStackErrorMiddleware(service: .identity))
        group.get { request, _ in
            OpenStack.json(
                .object(["versions": .object(["values": .array([version(request)])])]), status: .multipleChoices)
        }
        group.get("v3") { request, _ in OpenStack.json(.object(["version": version(request)])) }

        group.post("v3/auth/tokens") { request, _ in
            let body = try await OpenStack.body(request)
            let (secret, token) = try await authenticate(body, identity: identity, request: request)
            let answer = try await tokenBody(token, identity: identity, request: request, catalog: true)
            return OpenStack.json(answer, status: .created, headers: [subjectToken: secret])
        }
        group.get("v3/auth/tokens") { request, _ in
            let (secret, token) = try await subject(request, identity: identity)
            let catalog = request.uri.queryParameters.get("nocatalog") == nil
            let answer = try await tokenBody(token, identity: identity, request: request, catalog: catalog)
            return OpenStack.json(answer, headers: [subjectToken: secret])
        }
        group.head("v3/auth/tokens") { request, _ in
            _ = try await subject(request, identity: identity)
            return Response(status: .ok)
        }
        group.delete("v3/auth/tokens") { request, _ in
            let (secret, _) = try await subject(request, identity: identity)
            _ = try await identity.revoke(secret: secret)
            return Response(status: .noContent)
        }

        group.post("v3/users") { request, _ in
            let principal = try await identity.principal(request)
            let user = try await OpenStack.body(request).requireObject("user")
            guard let project = try user.optionalString("default_project_id") else {
                throw SwiftletError.badRequest(
                    "user.project_required", "'default_project_id' is required: every user belongs to one project")
            }
            if let domain = try user.optionalString("domain_id"), domain != "default" {
                throw SwiftletError.badRequest("user.bad_domain", "only the domain 'default' exists")
            }
            let created = try await identity.createUser(
                name: try user.requireString("name"), project: project, password: try user.requireString("password"),
                by: principal)
            return OpenStack.json(.object(["user": userBody(created, request)]), status: .created)
        }
        group.get("v3/users") { request, _ in
            let principal = try await identity.principal(request)
            let users = try await identity.store.users(projectId: principal.isAdmin ? nil : principal.projectId)
            return OpenStack.json(.object(["users": .array(users.map { userBody($0, request) })]))
        }
        // Projects, read only (clients resolve a project named on their command line): a member
        // sees its own, an admin every one.
        group.get("v3/projects") { request, _ in
            let principal = try await identity.principal(request)
            try OpenStack.refuseUnknownParameters(request, known: ["name", "domain_id"])
            var projects = try await identity.controller.store.projects().filter {
                principal.isAdmin || $0.id == principal.projectId
            }
            if let name = request.uri.queryParameters.get("name") { projects = projects.filter { $0.name == name } }
            if let domain = request.uri.queryParameters.get("domain_id"), domain != "default" { projects = [] }
            return OpenStack.json(.object(["projects": .array(projects.map { projectBody($0, request) })]))
        }
        group.get("v3/projects/:id") { request, context in
            let principal = try await identity.principal(request)
            let id = try context.parameters.require("id")
            guard let project = try await identity.controller.store.project(id: id),
                principal.isAdmin || project.id == principal.projectId
            else { throw SwiftletError(.notFound, "project.not_found", "Could not find project: \(id).") }
            return OpenStack.json(.object(["project": projectBody(project, request)]))
        }
        OpenStack.refuseUnsupportedPaths(on: group, api: "Identity", identity: identity)
    }

    static func projectBody(_ project: Project, _ request: Request) -> JSONValue {
        .object([
            "id": .string(project.id), "name": .string(project.name), "domain_id": "default", "enabled": true,
            "parent_id": "default", "is_domain": false, "description": "", "tags": .array([]),
            "links": .object(["self": .string(OpenStack.baseURL(request) + "/identity/v3/projects/" + project.id)]),
        ])
    }

    static func version(_ request: Request) -> JSONValue {
        .object([
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": .array([OpenStack.link("self", OpenStack.baseURL(request) + "/identity/v3/")]),
            "media-types": .array([
                .object(["base": "application/json", "type": "application/vnd.openstack.identity-v3+json"])
            ]),
        ])
    }

    /// Password (user name in the default domain, or user id) or token authentication. A token
    /// is scoped to the user's one project: a scope naming another project is refused.
    static func authenticate(_ body: JSONValue, identity: IdentityService, request: Request)
        async throws(SwiftletError) -> (String, IdentityToken)
    {
        let auth = try body.requireObject("auth")
        let identityPart = try auth.requireObject("identity")
        guard case .array(let methodValues)? = identityPart["methods"], let method = methodValues.first?.string,
            methodValues.count == 1
        else {
            throw SwiftletError.badRequest(
                "auth.bad_methods", "'identity.methods' must be [\"password\"] or [\"token\"]")
        }
        let scopedProject = try await scope(auth, identity: identity)
        switch method {
        case "password":
            let user = try identityPart.requireObject("password").requireObject("user")
            let password = try user.requireString("password")
            let name: String
            if let given = try user.optionalString("name") {
                let domain = user["domain"]
                let domainName = try domain?.optionalString("name")
                let domainId = try domain?.optionalString("id")
                guard domainName == nil || domainName == "Default", domainId == nil || domainId == "default",
                    domainName != nil || domainId != nil
                else {
                    throw SwiftletError(
                        .unauthorized, "auth.bad_domain", "users are in the domain 'Default' (id 'default') only")
                }
                name = given
            } else {
                let id = try user.requireString("id")
                guard let found = try await identity.store.user(id: id) else {
                    throw SwiftletError(
                        .unauthorized, "auth.bad_credentials", "The request you have made requires authentication.")
                }
                name = found.name
            }
            let found = try await identity.verifyPassword(name: name, password: password)
            AuditNote.authenticated(tokenId: nil, userId: found.id, projectId: found.projectId)
            if let scopedProject, scopedProject.id != found.projectId {
                throw SwiftletError(
                    .unauthorized, "auth.no_role", "user '\(found.name)' has no role on project '\(scopedProject.name)'"
                )
            }
            return try await identity.issue(
                userId: found.id, projectId: found.projectId, admin: found.isAdmin, methods: ["password"])
        case "token":
            let secret = try identityPart.requireObject("token").requireString("id")
            let principal: Principal
            var userId: String?
            // The new token lasts no longer than the one it is exchanged for.
            var notAfter: Date?
            if let token = try await identity.token(secret: secret) {
                (principal, userId, notAfter) = (token.principal, token.userId, token.expiresAt)
                AuditNote.authenticated(tokenId: token.id, userId: token.userId, projectId: token.projectId)
            } else {
                do {
                    let found = try await identity.controller.authenticateToken(authorization: "Bearer " + secret)
                    (principal, notAfter) = (found.principal, found.token.expiresAt)
                } catch { throw IdentityService.refusal(error) }
            }
            if let scopedProject, scopedProject.id != principal.projectId {
                throw SwiftletError(
                    .unauthorized, "auth.no_role", "the token has no role on project '\(scopedProject.name)'")
            }
            return try await identity.issue(
                userId: userId, projectId: principal.projectId, admin: principal.isAdmin, methods: ["token"],
                notAfter: notAfter)
        default:
            throw SwiftletError(
                .unauthorized, "auth.unsupported_method", "authentication method '\(method)' is not supported")
        }
    }

    /// The project a request scopes to (by id, or by name in the default domain), if any.
    static func scope(_ auth: JSONValue, identity: IdentityService) async throws(SwiftletError) -> Project? {
        guard let scope = auth["scope"], !scope.isNull else { return nil }
        guard let project = scope["project"] else {
            throw SwiftletError.badRequest("auth.bad_scope", "only project scope is supported")
        }
        let id = try project.optionalString("id")
        let projectName = try project.optionalString("name")
        guard let name = id ?? projectName else {
            throw SwiftletError.badRequest("auth.bad_scope", "'scope.project' needs an id or a name")
        }
        do { return try await identity.project(name) } catch {
            throw SwiftletError(.unauthorized, "auth.unknown_project", "project '\(name)' is not known")
        }
    }

    /// `X-Subject-Token` of a request made with a valid `X-Auth-Token`: 404 (as Keystone) when
    /// the subject is not a live token.
    static func subject(_ request: Request, identity: IdentityService)
        async throws(SwiftletError) -> (String, IdentityToken)
    {
        _ = try await identity.principal(request)
        guard let secret = request.headers[subjectToken], let token = try await identity.token(secret: secret) else {
            throw SwiftletError(.notFound, "auth.token_not_found", "Could not find token.")
        }
        return (secret, token)
    }

    static func tokenBody(_ token: IdentityToken, identity: IdentityService, request: Request, catalog: Bool)
        async throws(SwiftletError) -> JSONValue
    {
        let project = try await identity.project(token.projectId)
        var user: JSONValue = .object([
            "id": .string(token.userId ?? "swiftlet-api-token"), "name": .string("swiftlet-api-token"),
            "domain": domain, "password_expires_at": .null,
        ])
        if let userId = token.userId, let found = try await identity.store.user(id: userId) {
            user = .object([
                "id": .string(found.id), "name": .string(found.name), "domain": domain, "password_expires_at": .null,
            ])
        }
        let role: JSONValue =
            token.admin
            ? .object(["id": "admin", "name": "admin"]) : .object(["id": "member", "name": "member"])
        var fields: [String: JSONValue] = [
            "methods": .array(token.methods.map(JSONValue.string)), "user": user,
            "audit_ids": .array([.string(token.id)]), "issued_at": .string(OpenStack.keystoneDate(token.issuedAt)),
            "expires_at": .string(OpenStack.keystoneDate(token.expiresAt)),
            "project": .object(["id": .string(project.id), "name": .string(project.name), "domain": domain]),
            "is_domain": false, "roles": .array([role]),
        ]
        if catalog { fields["catalog"] = serviceCatalog(OpenStack.baseURL(request)) }
        return .object(["token": .object(fields)])
    }

    /// Identity, compute, image and network, each at the address the client reached.
    static func serviceCatalog(_ base: String) -> JSONValue {
        let services = [
            ("identity", "keystone", base + "/identity"), ("compute", "nova", base + "/compute/v2.1"),
            ("image", "glance", base + "/image"), ("network", "neutron", base + "/network"),
        ]
        return .array(
            services.map { type, name, url in
                .object([
                    "id": .string(type), "type": .string(type), "name": .string(name),
                    "endpoints": .array(
                        ["public", "internal", "admin"].map { interface in
                            .object([
                                "id": .string("\(type)-\(interface)"), "interface": .string(interface),
                                "region": "RegionOne", "region_id": "RegionOne", "url": .string(url),
                            ])
                        }),
                ])
            })
    }

    static func userBody(_ user: IdentityUser, _ request: Request) -> JSONValue {
        .object([
            "id": .string(user.id), "name": .string(user.name), "domain_id": "default",
            "default_project_id": .string(user.projectId), "enabled": true, "password_expires_at": .null,
            "links": .object(["self": .string(OpenStack.baseURL(request) + "/identity/v3/users/" + user.id)]),
        ])
    }
}
