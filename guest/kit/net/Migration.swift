// The network side of stateful migration, driven by console commands (see
// guest/README.md, "Stateful migration"). A target boots with `standby=1`,
// silent on the wire while it takes the state, and `activate` puts it on the
// network; the source is quiesced so that nothing it acknowledges after its
// state is exported can be lost; `resume` undoes that when a move rolls back.

extension NetStack {
    /// How long `quiesce` waits for in-flight responses before answering anyway.
    static let quiesceAnswerTimeout: UInt64 = 500_000

    /// Handles `quiesce`, `resume` and `activate`; false for any other line.
    func handleMigrationCommand(_ line: String) -> Bool {
        now = Clock.nowMicros()
        if Config.same(line, "quiesce") {
            quiesce()
        } else if Config.same(line, "resume") {
            quiesced = false
            quiesceAnswerDeadline = nil
            print("swiftlet: resumed")
        } else if Config.same(line, "activate") {
            activate()
        } else {
            return false
        }
        return true
    }

    /// Refuses what is new and closes every connection once its queued
    /// response is out; `poll` answers when those responses are acknowledged.
    private func quiesce() {
        quiesced = true
        for connection in connections {
            if connection.state == .synReceived {
                connection.abort()  // its request could only come after the quiesce
            } else {
                connection.close()
            }
        }
        flush()
        quiesceAnswerDeadline = now + Self.quiesceAnswerTimeout
    }

    /// Leaves standby and announces every address (twice, in case one is lost),
    /// so neighbours and bridges send its traffic here at once.
    private func activate() {
        standby = false
        for interface in interfaces {
            sendGratuitousARP(on: interface)
            sendGratuitousARP(on: interface)
        }
        flush()
        print("swiftlet: active")
    }

    /// Answers a pending `quiesce` once no connection holds an unacknowledged
    /// response, or at its deadline with how many still do. Returns when to look again.
    func answerQuiesceIfDrained() -> UInt64 {
        guard let deadline = quiesceAnswerDeadline else { return UInt64.max }
        var pending = 0
        for connection in connections where connection.queuedSendCount > 0 { pending += 1 }
        if pending == 0 {
            print("swiftlet: quiesced")
        } else if now >= deadline {
            print("swiftlet: quiesced pending=\(pending)")
        } else {
            return deadline
        }
        quiesceAnswerDeadline = nil
        return UInt64.max
    }
}
