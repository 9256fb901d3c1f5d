import HTTPTypes
import Testing

@testable import SwiftletUI

@Suite("Dashboard assets")
struct DashboardAssetsTests {
    @Test("every page path answers the shell, which holds no data and no inline script")
    func shell() {
        for path in ["/ui", "/ui/", "/ui/instances", "/ui/instances/i-123", "/ui/hosts"] {
            let asset = DashboardAssets.asset(for: path)
            #expect(asset.status == .ok)
            #expect(asset.headers[.contentType] == "text/html; charset=utf-8")
            #expect(asset.body.contains("id=\"sign-in-form\""))
            #expect(asset.body.contains("<script src=\"/ui/assets/dashboard.js\" defer></script>"))
            // The only script tag is the one that loads the file: nothing runs inline.
            #expect(asset.body.components(separatedBy: "<script").count == 2)
        }
    }

    @Test("the script and stylesheet have their types; an unknown asset is 404")
    func assets() {
        #expect(
            DashboardAssets.asset(for: "/ui/assets/dashboard.js").headers[.contentType]?.hasPrefix("text/javascript")
                == true)
        #expect(
            DashboardAssets.asset(for: "/ui/assets/dashboard.css").headers[.contentType]?.hasPrefix("text/css") == true)
        #expect(DashboardAssets.asset(for: "/ui/assets/other.js").status == .notFound)
    }

    @Test("every answer forbids inline and foreign scripts and framing")
    func headers() {
        for path in ["/ui", "/ui/assets/dashboard.js", "/ui/assets/nope"] {
            let headers = DashboardAssets.asset(for: path).headers
            let policy = headers[.contentSecurityPolicy] ?? ""
            #expect(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"))
            #expect(policy.contains("frame-ancestors 'none'"))
            #expect(headers[.xContentTypeOptions] == "nosniff")
        }
    }

    @Test("the script never turns text into markup")
    func scriptWritesTextOnly() {
        let script = DashboardAssets.script
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            #expect(!script.contains(sink), "the dashboard's script uses \(sink)")
        }
        // Text reaches the page as text nodes.
        #expect(script.contains("document.createTextNode(String(child))"))
    }

    @Test("each part of the script is present once, the start last")
    func scriptParts() {
        let script = DashboardAssets.script
        for name in ["const session", "const router", "function waterfall", "function hostCard", "function createForm"]
        {
            #expect(script.components(separatedBy: name).count == 2, "\(name)")
        }
        #expect(
            script.hasSuffix("document.addEventListener(\"DOMContentLoaded\", start);\n") || script.hasSuffix("start);")
        )
    }
}
