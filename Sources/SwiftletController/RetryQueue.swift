/// What could not be handed on yet (the store was unavailable), in the order it came, for a loop
/// that hands it on once the store answers. Each item has a serial, so that the one handed on is
/// the one removed even when an attempt made meanwhile was put back in front.
struct RetryQueue<Element> {
    private(set) var items: [(serial: UInt64, element: Element)] = []
    private var nextSerial: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }
    var first: (serial: UInt64, element: Element)? { items.first }

    /// At the end, or `first` (an item tried before those queued meanwhile).
    mutating func append(_ element: Element, first: Bool = false) {
        nextSerial += 1
        items.insert((nextSerial, element), at: first ? 0 : items.count)
    }

    mutating func remove(serial: UInt64) {
        items.removeAll { $0.serial == serial }
    }
}
