import Synchronization

/// The controllers an agent may dial, and the one it uses now: every call goes to the current
/// one, and the agent moves on to the next when its watch stream fails (any controller of a
/// cluster serves any host).
final class ControllerEndpoints: Sendable {
    /// Base URLs without a trailing slash, in the operator's order.
    let urls: [String]
    private let current = Atomic<Int>(0)

    init(_ urls: [String]) {
        precondition(!urls.isEmpty, "an agent needs at least one controller")
        self.urls = urls.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// The controller in use now.
    var base: String { urls[current.load(ordering: .relaxed) % urls.count] }

    /// Moves to the next controller when `failed` is still the one in use (a failure seen by two
    /// loops moves once); true when it moved.
    @discardableResult
    func failOver(from failed: String) -> Bool {
        guard urls.count > 1 else { return false }
        let index = current.load(ordering: .relaxed)
        guard urls[index % urls.count] == failed else { return false }
        return current.compareExchange(expected: index, desired: (index + 1) % urls.count, ordering: .relaxed)
            .exchanged
    }
}
