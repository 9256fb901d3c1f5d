import Foundation
import SwiftletCore
import Testing

@testable import SwiftletOpenStack

@Suite struct MicroversionTests {
    @Test func withoutHeadersTheMinimumIsUsed() throws {
        #expect(try Microversion.negotiate(openStackAPIVersion: nil, novaAPIVersion: nil) == Microversion(2, 1))
    }

    @Test func theNewHeaderWinsOverTheLegacyOne() throws {
        let version = try Microversion.negotiate(
            openStackAPIVersion: "image 2.5, compute 2.19", novaAPIVersion: "2.3")
        #expect(version == Microversion(2, 19))
        #expect(try Microversion.negotiate(openStackAPIVersion: nil, novaAPIVersion: "2.9") == Microversion(2, 9))
        // A header about other services only leaves the legacy one (or the minimum).
        #expect(try Microversion.negotiate(openStackAPIVersion: "image 2.5", novaAPIVersion: nil) == .minimum)
    }

    @Test func latestIsTheMaximum() throws {
        #expect(try Microversion.negotiate(openStackAPIVersion: "compute latest", novaAPIVersion: nil) == .maximum)
        #expect(try Microversion.negotiate(openStackAPIVersion: nil, novaAPIVersion: "latest") == .maximum)
    }

    @Test func versionsOutsideTheRangeAre406() {
        for text in ["2.31", "2.99", "3.0", "2.0", "1.1"] {
            #expect(throws: SwiftletError.self) {
                try Microversion.negotiate(openStackAPIVersion: "compute \(text)", novaAPIVersion: nil)
            }
            do {
                _ = try Microversion.negotiate(openStackAPIVersion: "compute \(text)", novaAPIVersion: nil)
            } catch {
                #expect(error.kind == .notAcceptable, "\(text)")
                #expect(error.kind.httpStatus == 406)
            }
        }
    }

    @Test func malformedVersionsAre400() {
        for text in ["2", "2.x", "v2.1", "2.1.1", "", "2.-1"] {
            do {
                _ = try Microversion.negotiate(openStackAPIVersion: nil, novaAPIVersion: text.isEmpty ? "." : text)
                Issue.record("'\(text)' was accepted")
            } catch {
                #expect(error.kind == .badRequest, "\(text)")
            }
        }
    }

    @Test func versionsCompareNumerically() {
        #expect(Microversion(2, 9) < Microversion(2, 10))
        #expect(Microversion(parsing: "2.30") == Microversion(2, 30))
        #expect(Microversion(parsing: "２.1") == nil)
    }
}

@Suite struct NovaStatusTests {
    @Test func eachStateMapsToNovasStatus() {
        let expected: [InstanceState: (String, String, Int)] = [
            .building: ("BUILD", "building", 0), .running: ("ACTIVE", "active", 1), .paused: ("PAUSED", "paused", 3),
            .stopped: ("SHUTOFF", "stopped", 4), .error: ("ERROR", "error", 0), .deleted: ("DELETED", "deleted", 0),
            .unknown: ("UNKNOWN", "active", 0),
        ]
        for state in InstanceState.allCases {
            let status = NovaStatus(state)
            let want = expected[state]!
            #expect(status.status == want.0, "\(state)")
            #expect(status.vmState == want.1, "\(state)")
            #expect(status.powerState == want.2, "\(state)")
        }
        #expect(NovaStatus(.building).taskState == "spawning")
    }

    @Test func statusFiltersSelectStates() {
        #expect(NovaStatus.states(forStatus: "SHUTOFF") == [.stopped])
        #expect(NovaStatus.states(forStatus: "active") == [.running])
        #expect(NovaStatus.states(forStatus: "RESIZE") == nil)
    }
}

@Suite struct PasswordHashTests {
    // The library's floor, to keep the test quick; the service uses `PasswordHash.rounds`.
    static let rounds = 210_000

    @Test func theRightPasswordMatchesAndOthersDoNot() throws {
        let record = try PasswordHash.make(password: "correct horse", rounds: Self.rounds)
        #expect(record.hasPrefix("pbkdf2-sha256$210000$"))
        #expect(!record.contains("correct horse"))
        #expect(PasswordHash.verify(password: "correct horse", record: record))
        #expect(!PasswordHash.verify(password: "correct hors", record: record))
        #expect(!PasswordHash.verify(password: "", record: record))
    }

    @Test func eachRecordHasItsOwnSalt() throws {
        let first = try PasswordHash.make(password: "same password", rounds: Self.rounds)
        let second = try PasswordHash.make(password: "same password", rounds: Self.rounds)
        #expect(first != second)
        #expect(PasswordHash.verify(password: "same password", record: second))
    }

    @Test func malformedRecordsMatchNothing() {
        for record in ["", "plain", "md5$1$x$y", "pbkdf2-sha256$210000$!!$!!", "pbkdf2-sha256$abc$AAAA$AAAA"] {
            #expect(!PasswordHash.verify(password: "plain", record: record))
        }
    }
}

@Suite struct ServerCreateMappingTests {
    @Test func metadataAndUserDataBecomeBootConfig() throws {
        let userData = "# comment\nmode=fast\n\nlevel=3\n"
        let body: JSONValue = .object([
            "server": .object([
                "name": "web", "imageRef": "img-1", "flavorRef": "http://h/compute/v2.1/flavors/small",
                "metadata": .object(["b": "2", "a": "1"]),
                "user_data": .string(Data(userData.utf8).base64EncodedString()),
            ])
        ])
        let request = try ServerRoutes.createRequest(body)
        #expect(request.name == "web")
        #expect(request.image == "img-1")
        #expect(request.flavor == "small")
        #expect(request.args == ["a=1", "b=2", "mode=fast", "level=3"])
        #expect(request.networks == nil)
    }

    @Test func unsupportedFieldsAreRefused() {
        let volume: JSONValue = .object([
            "uuid": "vol-1", "boot_index": .int(0), "source_type": "volume", "destination_type": "volume",
        ])
        for (key, value) in [("key_name", JSONValue.string("k")), ("block_device_mapping_v2", .array([volume]))] {
            let body: JSONValue = .object([
                "server": .object(["name": "a", "imageRef": "i", "flavorRef": "f", key: value])
            ])
            #expect(throws: SwiftletError.self) { try ServerRoutes.createRequest(body) }
        }
    }

    @Test func theImageAsLocalRootIsTheOnlyBlockDeviceAccepted() throws {
        let root: JSONValue = .object([
            "uuid": "img-1", "boot_index": .int(0), "source_type": "image", "destination_type": "local",
            "delete_on_termination": true,
        ])
        let body: JSONValue = .object([
            "server": .object([
                "name": "a", "imageRef": "img-1", "flavorRef": "f", "block_device_mapping_v2": .array([root]),
            ])
        ])
        #expect(try ServerRoutes.createRequest(body).image == "img-1")
        let otherImage: JSONValue = .object([
            "server": .object([
                "name": "a", "imageRef": "img-2", "flavorRef": "f", "block_device_mapping_v2": .array([root]),
            ])
        ])
        #expect(throws: SwiftletError.self) { try ServerRoutes.createRequest(otherImage) }
    }

    @Test func actionsMapToCommands() throws {
        #expect(try ServerRoutes.command("os-stop", .null) == .stop)
        #expect(try ServerRoutes.command("unpause", .null) == .resume)
        #expect(try ServerRoutes.command("reboot", .object(["type": "SOFT"])) == .reboot)
        #expect(throws: SwiftletError.self) { try ServerRoutes.command("reboot", .object([:])) }
        do {
            _ = try ServerRoutes.command("resize", .object([:]))
            Issue.record("resize was accepted")
        } catch {
            #expect(error.kind.httpStatus == 501)
        }
    }
}

@Suite struct ImageCreateMappingTests {
    static let member = Principal.project("prj-web")

    @Test func formatsAndExtraFieldsBecomeProperties() throws {
        let body: JSONValue = .object([
            "name": "hello", "disk_format": "aki", "container_format": "bare", "visibility": "public",
            "tags": .array(["a"]), "ready_pattern": "^up$",
        ])
        let entry = try GlanceRoutes.queuedEntry(body, principal: Self.member)
        #expect(entry.name == "hello")
        #expect(entry.projectId == "prj-web")
        #expect(entry.visibility == .public)
        #expect(entry.tags == ["a"])
        #expect(entry.properties == ["disk_format": "aki", "container_format": "bare", "ready_pattern": "^up$"])
        #expect(GlanceRoutes.body(entry)["status"] == "queued")
    }

    @Test func whatSwiftletCannotKeepIsRefused() {
        let refused: [JSONValue] = [
            .object(["name": "a", "disk_format": "vmdk"]), .object(["name": "a", "container_format": "docker"]),
            .object(["name": "a", "id": "b7a1"]), .object(["name": "a", "protected": true]),
            .object(["name": "a", "min_ram": .int(64)]), .object(["name": "a", "visibility": "shared"]),
            .object(["name": "a", "owner_flag": .int(1)]), .object(["disk_format": "aki"]),
        ]
        for body in refused {
            #expect(throws: SwiftletError.self, "\(body)") {
                try GlanceRoutes.queuedEntry(body, principal: Self.member)
            }
        }
    }

    @Test func aQueuedImageIsSeenByItsProjectAndUploadedOnceAtATime() throws {
        let images = QueuedImages()
        let entry = try GlanceRoutes.queuedEntry(.object(["name": "a"]), principal: Self.member)
        try images.add(entry)
        #expect(images.entry(entry.id, by: Self.member)?.name == "a")
        #expect(images.entry(entry.id, by: .admin) != nil)
        #expect(images.entry(entry.id, by: .project("prj-other")) == nil)
        try images.beginUpload(entry.id)
        #expect(throws: SwiftletError.self) { try images.beginUpload(entry.id) }
        images.endUpload(entry.id, registered: false)
        try images.beginUpload(entry.id)
        images.endUpload(entry.id, registered: true)
        #expect(images.entry(entry.id, by: Self.member) == nil)
    }
}

@Suite struct FlavorCreateMappingTests {
    static func flavor(_ fields: [String: JSONValue]) throws(SwiftletError) -> Flavor {
        try FlavorRoutes.flavor(from: .object(["flavor": .object(fields)]))
    }

    @Test func whatTheCLISendsMapsOntoMemoryAndVCPUs() throws {
        let flavor = try Self.flavor([
            "name": "os.small", "ram": .int(32), "vcpus": .int(2), "disk": .int(0), "id": .null,
            "OS-FLV-EXT-DATA:ephemeral": .int(0), "swap": .int(0), "rxtx_factor": .number(1),
            "os-flavor-access:is_public": true,
        ])
        #expect(flavor == Flavor(name: "os.small", vcpus: 2, memoryMib: 32))
        #expect(try Self.flavor(["name": "a", "ram": .int(8), "vcpus": .int(1), "swap": ""]).memoryMib == 8)
    }

    @Test func disksPrivateFlavorsAndOtherIdsAreRefused() {
        let base: [String: JSONValue] = ["name": "a", "ram": .int(8), "vcpus": .int(1)]
        let refused: [[String: JSONValue]] = [
            ["disk": .int(1)], ["swap": .int(512)], ["OS-FLV-EXT-DATA:ephemeral": .int(1)],
            ["os-flavor-access:is_public": false], ["id": "b"], ["id": .int(5)], ["rxtx_factor": .number(2)],
            ["extra": "x"], ["description": "d"],
        ]
        for extra in refused {
            #expect(throws: SwiftletError.self, "\(extra)") {
                try Self.flavor(base.merging(extra) { $1 })
            }
        }
        #expect(throws: SwiftletError.self) { try Self.flavor(["name": "a", "vcpus": .int(1)]) }
    }
}

@Suite struct HypervisorMappingTests {
    @Test func aCordonedHostIsADisabledServiceAndALostLeaseIsDown() {
        var host = ComputeHost(
            id: "host-a", name: "a", cpus: 2, memoryMib: 1024, hypervisors: ["qemu"], hypervisorVersion: "8",
            machineTypes: [], accelerators: ["tcg"], chosenAccelerator: "tcg", calibrationMs: [:], instances: 0,
            updatedAt: Date())
        host.status = .up
        #expect((HypervisorRoutes.state(host), HypervisorRoutes.status(host)) == ("up", "enabled"))
        host.cordoned = true
        host.status = .down
        #expect((HypervisorRoutes.state(host), HypervisorRoutes.status(host)) == ("down", "disabled"))
    }
}
