// A small web server: `GET /` returns a page naming the instance (`name=`),
// `GET /healthz` returns `ok`, `GET /_netstats` the network counters.

@main
struct HTTPApp {
    static func main() {
        Config.load(allowed: ["name", "port"] + NetStack.configKeys)
        let name = Config.string("name", default: "swiftlet")
        let port = Config.port("port", default: 80)
        let stack = NetStack.start()
        let page = Array(
            ("<!doctype html>\n<html><head><title>\(escapeHTML(name))</title></head>\n"
                + "<body><h1>\(escapeHTML(name))</h1><p>Served by a Swiftlet unikernel.</p></body></html>\n").utf8)
        let server = HTTPServer(stack: stack, port: port) { request in
            guard request.isMethod("GET") else {
                return HTTPResponse(status: request.isPath("/") || request.isPath("/healthz") ? 405 : 404, text: "no\n")
            }
            if request.isPath("/") {
                return HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: page)
            }
            if request.isPath("/healthz") { return HTTPResponse(status: 200, text: "ok") }
            if request.isPath("/_netstats") { return HTTPResponse(status: 200, text: stack.countersText() + "\n") }
            return HTTPResponse(status: 404, text: "not found\n")
        }
        stack.installConsoleCommands()
        Kit.ready(app: "http")
        print(stack.summary)
        withExtendedLifetime(server) {
            Kit.run { now in stack.poll(now: now) }
        }
    }

    static func escapeHTML(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
