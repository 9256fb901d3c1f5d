import Foundation
import SwiftletCore
import Testing

/// Records for the tests.
enum Fixtures {
    static func image(_ name: String, project: String = Project.adminProjectId, sha: String = "ab") -> Image {
        Image(
            id: ResourceID.make("img"), projectId: project, name: name, kind: .pvh, sha256: sha, sizeBytes: 10,
            properties: ["ready_pattern": "up"], createdAt: wholeSeconds())
    }

    static func instance(
        _ name: String, image: String, host: String? = nil, memoryMib: Int = 16, vcpus: Int = 1,
        state: InstanceState = .building, createdAt: Date = wholeSeconds()
    ) -> Instance {
        Instance(
            id: ResourceID.make("i"), projectId: Project.adminProjectId, name: name, imageId: image, flavor: "tiny",
            vcpus: vcpus, memoryMib: memoryMib, args: ["a=b"], restartPolicy: .no, publishedPorts: [], state: state,
            hostId: host, timeline: .starting(at: 1), createdAt: createdAt, updatedAt: createdAt)
    }

    static func network(_ name: String, _ cidr: String, gateway: String) -> Network {
        Network(
            id: ResourceID.make("net"), projectId: Project.adminProjectId, name: name, cidr: cidr, gateway: gateway,
            mtu: 1500, mode: .isolated, bridge: "t-" + UUID().uuidString.prefix(8), createdAt: wholeSeconds())
    }

    /// Dates that survive every column type unchanged (JSON bodies keep whole seconds).
    static func wholeSeconds(_ offset: TimeInterval = 0) -> Date {
        Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + offset).rounded(.down))
    }
}

/// The error a store call threw, to compare codes.
func storeError(_ body: () async throws -> Void) async -> SwiftletError? {
    do {
        try await body()
        return nil
    } catch let error as SwiftletError {
        return error
    } catch {
        Issue.record("not a SwiftletError: \(error)")
        return nil
    }
}

/// How many of `outcomes` are each code ("ok" for success).
func tally(_ outcomes: [String]) -> [String: Int] {
    outcomes.reduce(into: [:]) { $0[$1, default: 0] += 1 }
}
