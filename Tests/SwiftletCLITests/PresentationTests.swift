import SwiftletClient
import SwiftletCore
import Testing

@Suite struct ArgumentCheckTests {
    @Test func publishAcceptsDockerSyntax() throws {
        #expect(try ArgumentCheck.publish("8080:80") == PublishedPort(hostPort: 8080, guestPort: 80, proto: "tcp"))
        #expect(try ArgumentCheck.publish("5353:53/udp") == PublishedPort(hostPort: 5353, guestPort: 53, proto: "udp"))
        #expect(try ArgumentCheck.publish("1:65535/tcp").description == "1:65535/tcp")
    }

    @Test(arguments: ["80", "0:80", "8080:0", "65536:80", "a:b", "8080:80/sctp", "8080:80:90", ":80", "8080:"])
    func publishRejects(_ text: String) {
        #expect(throws: ClientError.self) { try ArgumentCheck.publish(text) }
        do {
            _ = try ArgumentCheck.publish(text)
        } catch {
            #expect(error.description == "published port '\(text)' must be HOST:GUEST[/tcp|/udp] with ports 1-65535")
        }
    }

    @Test func configWordsAreKeyValueWithoutBlanks() throws {
        #expect(try ArgumentCheck.configWord("name=web-1") == "name=web-1")
        #expect(try ArgumentCheck.configWord("ip=10.0.2.15/24") == "ip=10.0.2.15/24")
        #expect(try ArgumentCheck.configWord("empty=") == "empty=")
        // A bare word is passed as it is (a Solo5 test expects `Hello_Solo5`).
        #expect(try ArgumentCheck.configWord("Hello_Solo5") == "Hello_Solo5")
        for bad in ["=web", "name=web 1", "a b=c", "", "bare\tword", "bare\u{7F}"] {
            #expect(throws: ClientError.self) { try ArgumentCheck.configWord(bad) }
        }
    }

    @Test func propertiesSplitAtTheFirstEquals() throws {
        let pattern = try ArgumentCheck.property("ready_pattern=^ready=1$")
        #expect(pattern.key == "ready_pattern" && pattern.value == "^ready=1$")
        let empty = try ArgumentCheck.property("k=")
        #expect(empty.key == "k" && empty.value == "")
        #expect(throws: ClientError.self) { try ArgumentCheck.property("=v") }
        #expect(throws: ClientError.self) { try ArgumentCheck.property("novalue") }
    }
}

@Suite struct TableTests {
    @Test func columnsAlignAndNumbersAlignRight() {
        var table = TextTable(["ID", "NAME", "READY (ms)"], rightAligned: [2])
        table.add(["i-1", "web-1", "12.50"])
        table.add(["i-22", "a-much-longer-name", "3.00"])
        table.add(["i-3", "x", "-"])
        #expect(
            table.render() == """
                ID    NAME                READY (ms)
                i-1   web-1                    12.50
                i-22  a-much-longer-name        3.00
                i-3   x                            -
                """)
    }

    @Test func noTrailingBlanksAndShortRowsArePadded() {
        var table = TextTable(["A", "LONG HEADER"])
        table.add(["value"])
        let lines = table.render().split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines == ["A      LONG HEADER", "value"])
    }

    @Test func headerOnlyTable() {
        #expect(TextTable(["ID", "NAME"]).render() == "ID  NAME")
    }
}

@Suite struct FormatTests {
    @Test func millisecondsHaveTwoDecimals() {
        #expect(Format.milliseconds(UInt64(1_234_567)) == "1.23")
        #expect(Format.milliseconds(UInt64(0)) == "0.00")
        #expect(Format.milliseconds(UInt64(152_305_000)) == "152.31")
        #expect(Format.milliseconds(nil as UInt64?) == "-")
    }

    @Test func bytesUseBinaryUnits() {
        #expect(Format.bytes(812) == "812 B")
        #expect(Format.bytes(12_595) == "12.3 KiB")
        #expect(Format.bytes(4 << 20) == "4.0 MiB")
    }

    @Test func portsReadLikeDocker() {
        #expect(Format.ports([]) == "-")
        #expect(
            Format.ports([
                PublishedPort(hostPort: 8080, guestPort: 80), PublishedPort(hostPort: 53, guestPort: 53, proto: "udp"),
            ])
                == "8080->80/tcp,53->53/udp")
    }

    @Test func timelineTableShowsSinceAcceptedAndPhaseDuration() {
        var timeline = Timeline.starting(at: 1_000_000_000)
        timeline.persisted = 1_000_500_000
        timeline.scheduled = 1_000_750_000
        timeline.vmmSpawned = 1_003_000_000
        timeline.ready = 1_045_120_000
        #expect(
            Format.timelineTable(timeline).render() == """
                PHASE        SINCE ACCEPTED (ms)  DURATION (ms)
                accepted                    0.00              -
                persisted                   0.50           0.50
                scheduled                   0.75           0.25
                VMM spawned                 3.00           2.25
                guest READY                45.12          42.12
                """)
    }
}

/// `swiftlet show` printed 18446744073672.37 ms when the agent took a boot before its record was
/// persisted: durations came from the enum's order through a wrapping subtraction.
@Suite struct TimelineOrderTests {
    /// Scheduled (the agent took it) 37 ms before persisted (the insert committed), as a single
    /// instance's boot does, and a third-party image's READY long after.
    static func scheduledBeforePersisted() -> Timeline {
        var timeline = Timeline.starting(at: 1_000_000_000)
        timeline.scheduled = 1_000_100_000
        timeline.imageReady = 1_001_000_000
        timeline.vmmSpawned = 1_002_000_000
        timeline.persisted = 1_039_000_000
        timeline.vmmUp = 1_080_000_000
        timeline.ready = 1_100_000_000
        return timeline
    }

    @Test func phasesAreShownInTimeOrderWithDurationsFromThePhaseBefore() {
        #expect(
            Format.timelineTable(Self.scheduledBeforePersisted()).render() == """
                PHASE        SINCE ACCEPTED (ms)  DURATION (ms)
                accepted                    0.00              -
                scheduled                   0.10           0.10
                image ready                 1.00           0.90
                VMM spawned                 2.00           1.00
                persisted                  39.00          37.00
                VMM up                     80.00          41.00
                guest READY               100.00          20.00
                """)
    }

    /// A phase stamped before accepted (another host's clock) reads as negative, not as 2^64 ns.
    @Test func aPhaseBeforeAcceptedIsNegative() {
        var timeline = Timeline.starting(at: 1_000_000_000)
        timeline.scheduled = 999_500_000
        #expect(
            Format.timelineTable(timeline).render() == """
                PHASE      SINCE ACCEPTED (ms)  DURATION (ms)
                scheduled                -0.50              -
                accepted                  0.00           0.50
                """)
    }

    @Test func summariesNeverWrapAround() {
        let summary = TimelineSummary([Self.scheduledBeforePersisted()])
        #expect(summary.rows.allSatisfy { $0.p90 <= 100_000_000 }, "\(summary.rows)")
        #expect(summary.rows.first { $0.label == "persisted" }?.p50 == 37_000_000)
    }
}

@Suite struct TimelineSummaryTests {
    /// Ten boots whose READY phase takes 10, 20, … 100 ms.
    static func boots() -> [Timeline] {
        (1...10).map { index in
            var timeline = Timeline.starting(at: 5_000_000_000)
            timeline.persisted = 5_001_000_000
            timeline.ready = 5_001_000_000 + UInt64(index) * 10_000_000
            return timeline
        }
    }

    @Test func percentilesPerPhaseAndTotal() {
        let summary = TimelineSummary(Self.boots())
        #expect(summary.rows.map(\.label) == ["persisted", "guest READY", "total (accepted → READY)"])
        let ready = summary.rows[1]
        #expect(ready.samples == 10 && ready.p50 == 50_000_000 && ready.p90 == 90_000_000)
        let total = summary.rows[2]
        #expect(total.p50 == 51_000_000 && total.p90 == 91_000_000)
        #expect(
            summary.table.render().split(separator: "\n").last
                == "total (accepted → READY)  10     51.00     91.00")
    }

    @Test func instancesWithoutATimelineAreSkipped() {
        var building = Timeline.starting(at: 1)
        building.persisted = 2
        let summary = TimelineSummary([Timeline(), building])
        #expect(summary.rows.map(\.label) == ["persisted"])
        #expect(TimelineSummary([]).rows.isEmpty)
    }
}
