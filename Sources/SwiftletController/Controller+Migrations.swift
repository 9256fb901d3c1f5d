import Foundation
import Logging
import SwiftletAgentProtocol
import SwiftletCore
import SwiftletImages
import SwiftletStore

// Live migration between hosts (docs/migration.md). The controller drives the steps through the
// two agents' links: check here, prepare on the target, send from the source, finish on the
// target, then move the record in one commit. Any failure before that commit rolls back: the
// target's VMM goes and the source's guest runs on, with the reason in the migration and in the
// instance's events.
extension Controller {
    var migrationStore: any MigrationStore {
        get throws(SwiftletError) {
            guard let store = store as? any MigrationStore else {
                throw SwiftletError(.internal, "migration.unsupported_store", "this store keeps no migrations")
            }
            return store
        }
    }

    /// Checks the move, chooses the target, records the migration and starts it (202: it runs on
    /// after the answer). 409 when the instance cannot move now, saying why.
    public func migrate(_ idOrName: String, _ request: MigrateInstanceRequest, by principal: Principal)
        async throws(SwiftletError) -> InstanceMigration
    {
        let mode = try request.parsedMode()
        if let mbps = request.maxBandwidthMbps, !(1...100_000).contains(mbps) {
            throw .badRequest("migration.bad_bandwidth", "maxBandwidthMbps must be 1-100000, got \(mbps)")
        }
        if request.host != nil { try requireAdmin(principal) }
        let instance = try await self.instance(idOrName, by: principal)
        if let task = instance.task {
            throw SwiftletError(
                .conflict, "migration.in_progress",
                "instance '\(instance.name)' is already moving to '\(task.to)' (\(task.kind.rawValue))")
        }
        guard instance.state == .running else {
            throw SwiftletError(
                .conflict, "migration.not_running",
                "only a RUNNING instance moves; '\(instance.name)' is \(instance.state.rawValue)")
        }
        guard instance.publishedPorts.isEmpty else {
            throw SwiftletError(
                .conflict, "migration.published_ports",
                "instance '\(instance.name)' publishes host ports, which belong to its host; attach it to a network "
                    + "to move it")
        }
        guard let source = instance.hostId, isUp(hostId: source) else {
            throw SwiftletError(
                .conflict, "host.down", "the host of instance '\(instance.name)' is DOWN: it cannot send the VM")
        }
        var requested: String?
        if let host = request.host {
            requested = try await hostId(for: host)
            guard requested != source else {
                throw SwiftletError(
                    .conflict, "migration.same_host", "instance '\(instance.name)' already runs on host '\(source)'")
            }
        }
        guard let image = try await store.image(idOrName: instance.imageId, projectId: nil) else {
            throw .notFound("image", instance.imageId)
        }
        if mode == .stateful, try LaunchProfile(kind: image.kind, properties: image.properties).stateInterface == nil {
            throw .badRequest(
                "migration.no_state_interface",
                "image '\(image.name)' declares no state interface (the image property "
                    + "\(LaunchProfile.stateInterfaceProperty)), so '\(instance.name)' moves only live")
        }
        let placement = try await placeInstances(
            count: 1, memoryMib: instance.memoryMib, vcpus: instance.vcpus, image: image, target: requested,
            needsNetworks: !(instance.ports ?? []).isEmpty, group: serverGroup(of: instance), excluding: instance.id,
            avoiding: source)
        let target = placement.hostIds[0]
        let migration = InstanceMigration(
            id: ResourceID.make("mig"), instanceId: instance.id, instanceName: instance.name,
            projectId: instance.projectId, mode: mode, sourceHostId: source, targetHostId: target,
            status: .preparing, createdAt: Date(), maxBandwidthMbps: request.maxBandwidthMbps)
        let migrations = try migrationStore
        try await migrations.createMigration(migration)
        let accepted = ContinuousClock.now
        let moving: Instance
        do {
            moving = try await store.updateInstance(
                id: instance.id,
                events: [("migrating", "\(mode.rawValue) migration \(migration.id) to host \(target) accepted")],
                handle: nil
            ) { record throws(SwiftletError) in
                guard record.task == nil, record.state == .running, record.hostId == source else {
                    throw SwiftletError(
                        .conflict, "migration.instance_changed",
                        "instance '\(record.name)' changed while it was checked")
                }
                record.task = InstanceTask(
                    kind: .migrating, from: source, to: target, startedAt: Date(), migrationId: migration.id)
            }
        } catch {
            _ = try? await migrations.updateMigration(id: migration.id) { $0.fail(error.message) }
            throw error
        }
        let started = background.submit {
            await self.runMigration(migration, of: moving, claim: placement.claim, accepted: accepted)
        }
        guard started else {
            await endMove(migration, of: moving, status: .failed, reason: "the controller is shutting down")
            throw SwiftletError(.unavailable, "controller.shutting_down", "the controller is shutting down")
        }
        logger.notice(
            "migration accepted",
            metadata: [
                "migration.id": "\(migration.id)", "migration.mode": "\(mode.rawValue)",
                "instance.id": "\(instance.id)",
                "host.from": "\(source)", "host.to": "\(target)",
            ])
        return migration
    }

    /// Cordons a host and starts moving every RUNNING instance on it, each in the best mode its
    /// image allows and where the scheduler puts it (admin). What cannot move now (not running, no
    /// room elsewhere, host ports) stays, with the reason; a later drain tries again.
    public func drain(host idOrName: String, by principal: Principal) async throws(SwiftletError) -> DrainReport {
        try requireAdmin(principal)
        let hostId = try await hostId(for: idOrName)
        try await store.setCordoned(hostId: hostId, true)
        var report = DrainReport(hostId: hostId, migrations: [], skipped: [])
        for instance in try await store.instances(projectId: nil, state: nil, name: nil, imageId: nil)
        where instance.hostId == hostId && instance.state != .deleted {
            guard instance.state == .running else {
                report.skipped.append(
                    .init(
                        instanceId: instance.id, name: instance.name, state: instance.state,
                        reason: "not running (\(instance.state.rawValue)): only a running instance moves"))
                continue
            }
            do {
                let mode = await bestMode(for: instance)
                report.migrations.append(
                    try await migrate(instance.id, MigrateInstanceRequest(mode: mode.rawValue), by: principal))
            } catch {
                report.skipped.append(
                    .init(
                        instanceId: instance.id, name: instance.name, state: instance.state,
                        reason: "\(error.code): \(error.message)"))
            }
        }
        logger.notice(
            "draining a host",
            metadata: [
                "host.id": "\(hostId)", "drain.moving": "\(report.migrations.count)",
                "drain.skipped": "\(report.skipped.count)",
            ])
        return report
    }

    /// Stateful when the image declares a state interface (the least downtime and bytes), else live.
    private func bestMode(for instance: Instance) async -> MigrationMode {
        guard let image = try? await store.image(idOrName: instance.imageId, projectId: nil),
            (try? LaunchProfile(kind: image.kind, properties: image.properties))?.stateInterface != nil
        else { return .live }
        return .stateful
    }

    public func migrations(instance idOrName: String?, by principal: Principal) async throws(SwiftletError)
        -> [InstanceMigration]
    {
        var instanceId: String?
        if let idOrName { instanceId = try await instance(idOrName, by: principal).id }
        return try await migrationStore.migrations(projectId: scope(principal), instanceId: instanceId)
    }

    public func migration(_ id: String, by principal: Principal) async throws(SwiftletError) -> InstanceMigration {
        guard let migration = try await migrationStore.migration(id: id, projectId: scope(principal)) else {
            throw .notFound("migration", id)
        }
        return migration
    }

    /// The steps, after the answer. Each failure before the commit rolls back.
    func runMigration(
        _ migration: InstanceMigration, of instance: Instance, claim: PlacementClaim, accepted: ContinuousClock.Instant
    ) async {
        movesInFlight.withLock { _ = $0.insert(migration.id) }
        defer { movesInFlight.withLock { _ = $0.remove(migration.id) } }
        let (source, target) = (migration.sourceHostId, migration.targetHostId)
        let generation = (instance.generation ?? 0) + 1
        var sent = false
        do throws(SwiftletError) {
            let sourceLink = try agents.link(for: source)
            let targetLink = try agents.link(for: target)
            // The target gets the instance's security-group policy before its VMM plugs the ports.
            if !(instance.securityGroups ?? []).isEmpty { await publishNetworks() }
            var moved = instance
            moved.hostId = target
            moved.generation = generation
            moved.task = nil
            let assignment = try await instanceSync.assignment(for: moved)
            let report: MoveReport
            do {
                var quiesced: ContinuousClock.Instant?
                var outcome: MoveReport
                switch migration.mode {
                case .live:
                    let tls = try migrationAuthority?.issueMigrationCredentials(targetName: target)
                    let endpoint = try await targetLink.prepareIncoming(assignment, tls: tls?.target)
                    try await advance(migration, to: .running)
                    let settings = MoveSettings(
                        maxBandwidthBytesPerSecond: migration.maxBandwidthMbps.map { $0 * 1_000_000 / 8 },
                        tls: tls?.source)
                    outcome = try await sourceLink.migrateOut(instanceId: instance.id, to: endpoint, settings: settings)
                case .stateful:
                    // The source serves while the target boots; from the quiesce on, it answers
                    // nothing new until the target takes over (or the move rolls back).
                    try await targetLink.prepareStandby(assignment)
                    try await advance(migration, to: .running)
                    quiesced = .now
                    let export = try await sourceLink.exportState(instanceId: instance.id)
                    try await targetLink.importState(instanceId: instance.id, state: export.state)
                    outcome = MoveReport(downtimeMs: 0, totalMs: 0, transferredBytes: Int64(export.state.count))
                }
                sent = true
                try await advance(migration, to: .finishing)
                let handle = try await targetLink.finishIncoming(instanceId: instance.id, generation: generation)
                if let quiesced { outcome.downtimeMs = milliseconds(ContinuousClock.now - quiesced) }
                report = outcome
                try await commitMove(migration, of: instance, generation: generation, handle: handle, claim: claim)
            } catch {
                // In this order, each awaited: the target's VM (incoming, or taken over) is gone
                // before the source's guest runs again, so the two never run at once. A call that
                // timed out may have done its work, so the source is resumed whatever `sent` says.
                try? await targetLink.abortIncoming(instanceId: instance.id)
                await targetLink.apply(.unassign(instanceId: instance.id, generation: generation), pendingCommit: nil)
                try? await sourceLink.resumeAfterMove(instanceId: instance.id)
                if sent {
                    logger.notice("rolled back after the transfer", metadata: ["migration.id": "\(migration.id)"])
                }
                throw error
            }
            // The source forgets the instance (its paused VM and its ports go); the target's desired
            // state now has it, with the VM it took over.
            await sourceLink.apply(.unassign(instanceId: instance.id, generation: generation), pendingCommit: nil)
            if let committed = try await store.instance(idOrName: instance.id, projectId: nil) {
                await instanceSync.dispatch(committed)
            }
            if !(instance.securityGroups ?? []).isEmpty { await publishNetworks() }
            let total = milliseconds(ContinuousClock.now - accepted)
            try await migrationStore.updateMigration(id: migration.id) {
                $0.status = .completed
                $0.downtimeMs = report.downtimeMs
                $0.transferredBytes = report.transferredBytes
                $0.totalMs = total
            }
            metrics.recordMigration(
                mode: migration.mode.rawValue, result: "completed", downtimeMs: report.downtimeMs,
                bytes: report.transferredBytes)
            logger.notice(
                "migration completed",
                metadata: [
                    "migration.id": "\(migration.id)", "migration.mode": "\(migration.mode.rawValue)",
                    "instance.id": "\(instance.id)", "host.to": "\(target)",
                    "migration.downtime_ms": "\(report.downtimeMs)", "migration.bytes": "\(report.transferredBytes)",
                ])
        } catch {
            logger.warning(
                "migration failed: the instance runs on its source",
                metadata: ["migration.id": "\(migration.id)", "instance.id": "\(instance.id)", "error": "\(error)"])
            let cancelled = (try? await migrationStore.migration(id: migration.id, projectId: nil))?.cancelRequested
            await endMove(
                migration, of: instance, status: cancelled == true ? .cancelled : .failed,
                reason: "\(error.code): \(error.message)")
        }
    }

    /// The next step's status, unless the migration was cancelled meanwhile (then it rolls back).
    private func advance(_ migration: InstanceMigration, to status: MigrationStatus) async throws(SwiftletError) {
        try await migrationStore.updateMigration(id: migration.id) { record throws(SwiftletError) in
            if record.cancelRequested == true {
                throw SwiftletError(.conflict, "migration.cancelled", "cancelled before the target took over")
            }
            record.status = status
        }
    }

    /// Calls a migration off while the target has not taken over: it rolls back, and ends
    /// `cancelled` with the instance running on its source. 409 once it is finishing or ended.
    public func cancelMigration(_ id: String, by principal: Principal) async throws(SwiftletError)
        -> InstanceMigration
    {
        _ = try await migration(id, by: principal)
        let marked = try await migrationStore.updateMigration(id: id) { record throws(SwiftletError) in
            guard !record.status.isFinal else {
                throw SwiftletError(
                    .conflict, "migration.ended", "migration \(id) has ended (\(record.status.rawValue))")
            }
            guard record.status != .finishing else {
                throw SwiftletError(
                    .conflict, "migration.finishing", "migration \(id) is finishing: the target has taken over")
            }
            record.cancelRequested = true
        }
        // A transfer in progress stops now; the other steps see the request before they start.
        if marked.status == .running, let source = try? agents.link(for: marked.sourceHostId) {
            try? await source.cancelMigrateOut(instanceId: marked.instanceId)
        }
        logger.notice("migration cancel requested", metadata: ["migration.id": "\(id)"])
        return marked
    }

    /// The one commit that moves the instance: its host, a new generation (reports of the source's
    /// VM are stale from now on), the target's handle, and the target's capacity claimed.
    private func commitMove(
        _ migration: InstanceMigration, of instance: Instance, generation: UInt64, handle: Data, claim: PlacementClaim
    ) async throws(SwiftletError) {
        let target = migration.targetHostId
        try await store.updateInstance(
            id: instance.id,
            events: [("migrated", "\(migration.mode.rawValue) migration \(migration.id): now on host \(target)")],
            handle: handle, claim: claim
        ) { record throws(SwiftletError) in
            guard record.task?.migrationId == migration.id, record.hostId == migration.sourceHostId,
                record.state == .running
            else {
                throw SwiftletError(
                    .conflict, "migration.instance_changed", "instance '\(record.name)' changed while it moved")
            }
            record.hostId = target
            record.generation = generation
            record.task = nil
            record.observed = ObservedState(phase: .running, hostId: target, at: Date())
        }
    }

    /// A move that did not happen: the instance's task is cleared (it runs on its source) and the
    /// migration ends with the reason.
    func endMove(_ migration: InstanceMigration, of instance: Instance, status: MigrationStatus, reason: String) async {
        _ = try? await store.updateInstance(
            id: instance.id,
            events: [
                (
                    "migration_failed",
                    "\(migration.mode.rawValue) migration \(migration.id) \(status.rawValue): \(reason)"
                )
            ],
            handle: nil
        ) { record throws(SwiftletError) in
            guard record.task?.migrationId == migration.id else { return }
            record.task = nil
        }
        if !(instance.securityGroups ?? []).isEmpty { await publishNetworks() }
        _ = try? await migrationStore.updateMigration(id: migration.id) { record in
            record.status = status
            record.reason = reason
        }
        metrics.recordMigration(mode: migration.mode.rawValue, result: status.rawValue, downtimeMs: nil, bytes: nil)
    }
}

private func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

extension InstanceMigration {
    mutating func fail(_ reason: String) {
        status = .failed
        self.reason = reason
    }
}

extension Controller {
    /// Longer than any step may take without its record being touched (a transfer's timeout).
    static let abandonedMigrationAge: TimeInterval = 180

    /// Settles the migrations no controller drives any more (the one that did died): one whose
    /// commit happened completes (its source forgets the instance); any other rolls back (the
    /// target's VMM goes, the source's guest runs on). Run by the leader.
    func settleAbandonedMigrations(now: Date = Date()) async {
        guard let migrations = try? await migrationStore.migrations(projectId: nil, instanceId: nil) else { return }
        let inFlight = movesInFlight.withLock { $0 }
        for migration in migrations
        where !migration.status.isFinal && !inFlight.contains(migration.id)
            && now.timeIntervalSince(migration.updatedAt) > Self.abandonedMigrationAge
        {
            guard let instance = try? await store.instance(idOrName: migration.instanceId, projectId: nil) else {
                _ = try? await migrationStore.updateMigration(id: migration.id) {
                    $0.fail("abandoned: its instance is gone")
                }
                continue
            }
            let generation = instance.generation ?? 0
            if instance.hostId == migration.targetHostId {
                try? await agents.link(for: migration.sourceHostId).apply(
                    .unassign(instanceId: instance.id, generation: generation), pendingCommit: nil)
                _ = try? await migrationStore.updateMigration(id: migration.id) { $0.status = .completed }
                logger.notice(
                    "completed an abandoned migration: its commit was done",
                    metadata: ["migration.id": "\(migration.id)", "instance.id": "\(instance.id)"])
                continue
            }
            if let target = try? agents.link(for: migration.targetHostId) {
                try? await target.abortIncoming(instanceId: instance.id)
                await target.apply(.unassign(instanceId: instance.id, generation: generation + 1), pendingCommit: nil)
            }
            try? await agents.link(for: migration.sourceHostId).resumeAfterMove(instanceId: instance.id)
            await endMove(
                migration, of: instance, status: .failed,
                reason: "abandoned: the controller driving it stopped; rolled back by the leader")
            logger.notice(
                "rolled back an abandoned migration",
                metadata: ["migration.id": "\(migration.id)", "instance.id": "\(instance.id)"])
        }
    }
}
