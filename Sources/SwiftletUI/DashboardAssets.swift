import HTTPTypes

/// What each path under `/ui` answers: the stylesheet, the script, or the page shell (the script
/// draws the page the path names), with headers that keep the browser from running anything else.
public enum DashboardAssets {
    public static let root = "/ui"
    static let stylesheetPath = "/ui/assets/dashboard.css"
    static let scriptPath = "/ui/assets/dashboard.js"
    static let iconPath = "/ui/assets/icon.svg"

    public struct Asset: Sendable {
        public var status: HTTPResponse.Status
        public var headers: HTTPFields
        public var body: String
    }

    /// Only the server's own script and stylesheet run or apply: no inline script, no other origin.
    public static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// The script, assembled once from its parts (each page's code in its own file).
    static let script = DashboardScript.parts.joined(separator: "\n")

    /// The tab's icon: a small blue square with a white "S"-like stroke.
    static let icon = """
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#2f6fed"/>\
        <path d="M22 10h-8a3 3 0 0 0 0 6h4a3 3 0 0 1 0 6h-8" fill="none" stroke="#fff" stroke-width="3" \
        stroke-linecap="round"/></svg>

        """

    public static func asset(for path: String) -> Asset {
        switch path {
        case stylesheetPath: return asset(.ok, "text/css; charset=utf-8", DashboardStyles.css)
        case scriptPath: return asset(.ok, "text/javascript; charset=utf-8", script)
        case iconPath: return asset(.ok, "image/svg+xml", icon)
        case _ where path.hasPrefix(root + "/assets/"):
            return asset(.notFound, "text/plain; charset=utf-8", "not found\n")
        default: return asset(.ok, "text/html; charset=utf-8", DashboardShell.html)
        }
    }

    private static func asset(_ status: HTTPResponse.Status, _ type: String, _ body: String) -> Asset {
        var headers: HTTPFields = [
            .contentType: type, .contentSecurityPolicy: contentSecurityPolicy, .xContentTypeOptions: "nosniff",
            .cacheControl: "no-store",
        ]
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        return Asset(status: status, headers: headers, body: body)
    }
}
