// A key-value service over HTTP:
//   GET/PUT/DELETE /kv/<key>   one value (PUT body is the value)
//   POST /counter              increments the counter, returns the new value
//   GET /_state                the whole state as one blob (see KVStore)
//   PUT /_state                replaces the whole state with such a blob
//   GET /_netstats             network counters
// The same state blob moves over the console for stateful migration
// (Kit.stateInterface; guest/README.md).

@main
struct KVApp {
    static func main() {
        Config.load(allowed: ["name", "port"] + NetStack.configKeys)
        let port = Config.port("port", default: 80)
        let stack = NetStack.start()
        var store = KVStore()
        let server = HTTPServer(stack: stack, port: port, maxBodyBytes: 1024 * 1024) { request in
            handle(request, store: &store, stack: stack)
        }
        // The console's state-export / state-import carry the same blob as /_state.
        Kit.stateInterface = StateInterface(
            export: { store.exported() },
            import: { blob in
                guard let imported = KVStore(imported: blob) else { return false }
                store = imported
                return true
            })
        stack.installConsoleCommands()
        Kit.ready(app: "kv")
        print(stack.summary)
        withExtendedLifetime(server) {
            Kit.run { now in stack.poll(now: now) }
        }
    }

    static func handle(_ request: HTTPRequest, store: inout KVStore, stack: NetStack) -> HTTPResponse {
        if let key = request.pathAfter("/kv/") {
            guard !key.isEmpty, key.count <= KVStore.maxKeyBytes else {
                return HTTPResponse(status: 400, text: "key must be 1-\(KVStore.maxKeyBytes) bytes\n")
            }
            if request.isMethod("GET") {
                guard let value = store.value(for: key) else { return HTTPResponse(status: 404, text: "no such key\n") }
                return HTTPResponse(status: 200, contentType: "application/octet-stream", body: value)
            }
            if request.isMethod("PUT") {
                guard request.body.count <= KVStore.maxValueBytes else {
                    return HTTPResponse(status: 413, text: "value over \(KVStore.maxValueBytes) bytes\n")
                }
                store.set(request.body, for: key)
                return HTTPResponse(status: 204, body: [])
            }
            if request.isMethod("DELETE") {
                return store.remove(key)
                    ? HTTPResponse(status: 204, body: []) : HTTPResponse(status: 404, text: "no such key\n")
            }
            return HTTPResponse(status: 405, text: "GET, PUT or DELETE\n")
        }
        if request.isPath("/counter") {
            guard request.isMethod("POST") else { return HTTPResponse(status: 405, text: "POST\n") }
            return HTTPResponse(status: 200, text: "\(store.incrementCounter())")
        }
        if request.isPath("/_state") {
            if request.isMethod("GET") {
                return HTTPResponse(status: 200, contentType: "application/octet-stream", body: store.exported())
            }
            if request.isMethod("PUT") {
                guard let imported = KVStore(imported: request.body) else {
                    return HTTPResponse(status: 400, text: "malformed state blob\n")
                }
                store = imported
                return HTTPResponse(status: 204, body: [])
            }
            return HTTPResponse(status: 405, text: "GET or PUT\n")
        }
        if request.isPath("/_netstats") && request.isMethod("GET") {
            return HTTPResponse(status: 200, text: stack.countersText() + "\n")
        }
        return HTTPResponse(status: 404, text: "not found\n")
    }
}
