import Foundation
import SwiftletCore

// The steps of a live migration, as calls the controller makes on the two agents
// (docs/agent-protocol.md, "Moves"): prepare on the target, send from the source, finish on the
// target; abort on the target and resume on the source roll a failed one back.

/// Where a prepared target listens for the VM's state.
public struct MoveEndpoint: Codable, Sendable, Equatable {
    public var address: String
    public var port: Int

    public init(address: String, port: Int) {
        self.address = address
        self.port = port
    }
}

/// How the source sends the state.
public struct MoveSettings: Codable, Sendable, Equatable {
    /// The longest the guest may be paused for the last pass.
    public var downtimeLimitMs: Int
    /// Throttles the guest's vCPUs when it dirties memory faster than the link carries it.
    public var autoConverge: Bool
    public var timeoutMs: Int
    /// The most the transfer may take of the link (nil: as much as it carries).
    public var maxBandwidthBytesPerSecond: Int?
    /// The source's end of the stream's TLS (nil: in the clear, when the controller has no CA).
    public var tls: MigrationCredentials?

    public init(
        downtimeLimitMs: Int = 300, autoConverge: Bool = true, timeoutMs: Int = 120_000,
        maxBandwidthBytesPerSecond: Int? = nil, tls: MigrationCredentials? = nil
    ) {
        self.tls = tls
        self.maxBandwidthBytesPerSecond = maxBandwidthBytesPerSecond
        self.downtimeLimitMs = downtimeLimitMs
        self.autoConverge = autoConverge
        self.timeoutMs = timeoutMs
    }
}

/// The source's account of a transfer that completed; its guest is left paused.
public struct MoveReport: Codable, Sendable, Equatable {
    /// The guest paused for the last pass, as the VMM measured it.
    public var downtimeMs: Double
    public var totalMs: Double
    public var transferredBytes: Int64

    public init(downtimeMs: Double, totalMs: Double, transferredBytes: Int64) {
        self.downtimeMs = downtimeMs
        self.totalMs = totalMs
        self.transferredBytes = transferredBytes
    }
}

/// The source's application state, taken from its quiesced guest (a stateful move); the guest is
/// left quiesced and paused, to be torn down once the target took over or resumed if it fails.
public struct StateExport: Codable, Sendable, Equatable {
    public var state: Data
    /// The guest stopped taking requests → its state was out, as the source agent timed it.
    public var exportMs: Double

    public init(state: Data, exportMs: Double) {
        self.state = state
        self.exportMs = exportMs
    }
}
