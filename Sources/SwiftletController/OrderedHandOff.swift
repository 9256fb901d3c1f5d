import Synchronization

/// Items handed on (to the store) in the order they came. One that cannot be handed on now (the
/// store is unavailable) is kept, and every later one waits behind it, until `handOnKept` gets
/// them all through.
final class OrderedHandOff<Element: Sendable>: Sendable {
    /// Each kept item has a serial, so that the one handed on is the one removed even when an
    /// attempt made meanwhile was put back in front.
    private struct Kept {
        var items: [(serial: UInt64, element: Element)] = []
        var nextSerial: UInt64 = 0

        mutating func append(_ element: Element, first: Bool = false) {
            nextSerial += 1
            items.insert((nextSerial, element), at: first ? 0 : items.count)
        }
    }

    private let kept = Mutex(Kept())

    /// Hands `element` on at once unless earlier ones are kept, and keeps it when that fails.
    /// True when it is kept.
    func offer(_ element: Element, handOn: (Element) async -> Bool) async -> Bool {
        let behind = kept.withLock { kept in
            guard !kept.items.isEmpty else { return false }
            kept.append(element)
            return true
        }
        if behind { return true }
        if await handOn(element) { return false }
        // Tried before anything kept meanwhile: it goes first.
        kept.withLock { $0.append(element, first: true) }
        return true
    }

    /// Hands on the kept items in order; false at the first that fails (it stays first).
    func handOnKept(_ handOn: (Element) async -> Bool) async -> Bool {
        while let next = kept.withLock({ $0.items.first }) {
            guard await handOn(next.element) else { return false }
            kept.withLock { kept in kept.items.removeAll { $0.serial == next.serial } }
        }
        return true
    }
}
