import Foundation
import SwiftletCore
import SwiftletStore
import Testing

/// Each host's desired-state feed, on both engines.
@Suite struct HostFeedConformanceTests {
    @Test(arguments: StoreEngine.allCases) func appendsAreNumberedPerHostAndReadInOrder(engine: StoreEngine)
        async throws
    {
        try await engine.withStore { store in
            let identity = try await store.feedIdentity()
            #expect(identity.count >= 16)
            #expect(try await store.feedIdentity() == identity)

            let empty = try await store.hostChanges(hostId: "host-a", after: 0, limit: 10)
            #expect(empty.entries.isEmpty && empty.latest == 0 && empty.oldest == 1)
            #expect(empty.canResume(after: 0))
            #expect(!empty.canResume(after: 1))

            for index in 1...5 {
                #expect(try await store.appendHostChange(hostId: "host-a", body: Data([UInt8(index)])) == UInt64(index))
            }
            #expect(try await store.appendHostChange(hostId: "host-b", body: Data([9])) == 1)

            let page = try await store.hostChanges(hostId: "host-a", after: 2, limit: 2)
            #expect(
                page.entries == [
                    HostFeedEntry(revision: 3, body: Data([3])), HostFeedEntry(revision: 4, body: Data([4])),
                ])
            #expect(page.latest == 5 && page.oldest == 1)
            #expect(page.canResume(after: 5) && !page.canResume(after: 6))
            let other = try await store.hostChanges(hostId: "host-b", after: 0, limit: 10)
            #expect(other.entries.map(\.body) == [Data([9])])
        }
    }

    /// Changes appended with new instances commit with them or not at all; a batch numbers each
    /// host's changes in the order given.
    @Test(arguments: StoreEngine.allCases) func changesAppendedWithRecordsCommitWithThem(engine: StoreEngine)
        async throws
    {
        try await engine.withStore { store in
            let image = Fixtures.image("img")
            try await store.createImage(image)
            _ = try await store.appendHostChange(hostId: "h1", body: Data([0]))
            let first = Fixtures.instance("first", image: image.id, host: "h1")
            let revisions = try await store.createInstances(
                [first], claim: nil,
                feed: [
                    HostChange(hostId: "h1", body: Data([1])), HostChange(hostId: "h2", body: Data([2])),
                    HostChange(hostId: "h1", body: Data([3])),
                ])
            #expect(revisions == [2, 1, 3])
            // A duplicate name fails the insert: its changes are not in the feed either.
            var duplicate = Fixtures.instance("first", image: image.id, host: "h1")
            duplicate.id = "i-other"
            let error = await storeError {
                try await store.createInstances(
                    [duplicate], claim: nil, feed: [HostChange(hostId: "h1", body: Data([4]))])
            }
            #expect(error?.code == "store.duplicate")
            let h1 = try await store.hostChanges(hostId: "h1", after: 0, limit: 10)
            #expect(h1.entries.map(\.body) == [Data([0]), Data([1]), Data([3])] && h1.latest == 3)
            #expect(try await store.hostChanges(hostId: "h2", after: 0, limit: 10).entries.map(\.body) == [Data([2])])
            #expect(try await store.appendHostChanges([HostChange(hostId: "h2", body: Data([5]))]) == [2])
        }
    }

    /// Two controllers appending to one host at once: every revision is used once, and a reader
    /// never sees a later revision committed before an earlier one is.
    @Test(arguments: StoreEngine.allCases) func concurrentAppendsFromTwoWritersStayInOrder(engine: StoreEngine)
        async throws
    {
        try await engine.withStores(count: 2) { stores in
            let perWriter = 40
            let reader = stores[1]
            // Each writer returns its revisions; the reader, following the feed as they go, the
            // number of times it saw a revision out of sequence.
            let results = try await withThrowingTaskGroup(of: (revisions: [UInt64], gaps: Int).self) { group in
                for (index, store) in stores.enumerated() {
                    group.addTask {
                        var revisions: [UInt64] = []
                        for item in 0..<perWriter {
                            revisions.append(
                                try await store.appendHostChange(hostId: "host-x", body: Data("\(index)-\(item)".utf8)))
                        }
                        return (revisions, 0)
                    }
                }
                group.addTask {
                    var (after, gaps): (UInt64, Int) = (0, 0)
                    while after < UInt64(2 * perWriter) {
                        for entry in try await reader.hostChanges(hostId: "host-x", after: after, limit: 1000).entries {
                            if entry.revision != after + 1 { gaps += 1 }
                            after = entry.revision
                        }
                    }
                    return ([], gaps)
                }
                return try await group.reduce(into: [(revisions: [UInt64], gaps: Int)]()) { $0.append($1) }
            }
            #expect(results.flatMap(\.revisions).sorted() == Array(1...UInt64(2 * perWriter)))
            #expect(results.map(\.gaps).reduce(0, +) == 0)
        }
    }

    @Test(arguments: StoreEngine.allCases) func oldEntriesAreTrimmedAndAReaderBehindThemMustResync(engine: StoreEngine)
        async throws
    {
        try await engine.withStore { store in
            let total = HostFeed.capacity + HostFeed.trimEvery
            for _ in 0..<total { _ = try await store.appendHostChange(hostId: "host-t", body: Data([1])) }
            let page = try await store.hostChanges(hostId: "host-t", after: total - 1, limit: 10)
            #expect(page.latest == total)
            #expect(page.oldest == total - HostFeed.capacity + 1)
            #expect(page.canResume(after: total - HostFeed.capacity))
            #expect(!page.canResume(after: 1))
        }
    }
}
