import Foundation
import Glibc
import Synchronization

/// glibc's `POSIX_SPAWN_SETSID` (spawn.h, `__USE_GNU`); Swift's Glibc module omits GNU extensions.
private let posixSpawnSetsid: Int32 = 0x80

private typealias PidfdOpenFunction = @convention(c) (pid_t, UInt32) -> Int32
private typealias AddClosefromFunction =
    @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

/// `pidfd_open(2)` and `posix_spawn_file_actions_addclosefrom_np` exist in glibc ≥ 2.34 but are
/// hidden behind `_GNU_SOURCE`, so they are looked up once at run time.
private let pidfdOpenFunction: PidfdOpenFunction? = dlsym(nil, "pidfd_open").map {
    unsafeBitCast($0, to: PidfdOpenFunction.self)
}
private let addClosefromFunction: AddClosefromFunction? = dlsym(
    nil, "posix_spawn_file_actions_addclosefrom_np"
).map { unsafeBitCast($0, to: AddClosefromFunction.self) }

private typealias PrctlFunction = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
/// `prctl(2)` is variadic, which Swift cannot call, so it is looked up with a fixed signature.
private let prctlFunction: PrctlFunction? = dlsym(nil, "prctl").map { unsafeBitCast($0, to: PrctlFunction.self) }
private let setTransparentHugePagesDisable: Int32 = 41  // PR_SET_THP_DISABLE

/// The value of this process's THP-disable flag (`PR_SET_THP_DISABLE`), nil until first set. The
/// flag is process-wide and a spawned child keeps the value it had at exec, so every spawn sets it
/// and execs under this lock.
private let transparentHugePagesFlag = Mutex<Bool?>(nil)

/// Runs `spawn` with transparent huge pages allowed or not for the child. QEMU asks for huge
/// pages on guest RAM and its code buffer (MADV_HUGEPAGE), so the first touch of each 2 MiB
/// zeroes all of it: fewer page faults for one boot, but more CPU and memory when many small VMs
/// start at once (see docs/qemu-driver.md).
private func withTransparentHugePages(_ allowed: Bool, _ spawn: () -> Int32) -> Int32 {
    transparentHugePagesFlag.withLock { disabled in
        if disabled != !allowed, prctlFunction?(setTransparentHugePagesDisable, allowed ? 0 : 1, 0, 0, 0) == 0 {
            disabled = !allowed
        }
        return spawn()
    }
}

func errnoMessage(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// Starts `executable` (searched in PATH) detached from the caller: its own session (so a SIGINT
/// to the agent's process group or the agent's death does not reach it), default signal
/// dispositions, an empty signal mask, stdin/stdout on /dev/null, stderr to `stderrPath`, and no
/// inherited descriptors beyond those three and `inheriting`, which the child gets as 3, 4, ...
/// in order. `extraEnvironment` is added to this process's. The child may use transparent huge
/// pages only if `transparentHugePages`.
public func spawnDetached(
    executable: String, arguments: [String], stderrPath: String, inheriting descriptors: [Int32] = [],
    extraEnvironment: [String: String] = [:], transparentHugePages: Bool = false
) throws(HypervisorError) -> pid_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    posix_spawnattr_setsigmask(&attributes, &emptyMask)
    var defaulted = sigset_t()
    sigemptyset(&defaulted)
    for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2] {
        sigaddset(&defaulted, signal)
    }
    posix_spawnattr_setsigdefault(&attributes, &defaulted)
    posix_spawnattr_setflags(
        &attributes, Int16(posixSpawnSetsid | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    // Copies numbered above every target first, so moving one into place never overwrites
    // another still to be moved (a descriptor may already be 3 or 4 in this process).
    let firstFree = 3 + Int32(descriptors.count)
    let staged = descriptors.map { fcntl($0, F_DUPFD_CLOEXEC, firstFree) }
    defer { for fd in staged where fd >= 0 { close(fd) } }
    guard !staged.contains(where: { $0 < 0 }) else {
        throw .spawnFailed("cannot pass descriptors to \(executable): \(errnoMessage())")
    }
    for (index, fd) in staged.enumerated() {
        posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(index))
    }
    _ = addClosefromFunction?(&actions, firstFree)

    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var environment = ProcessInfo.processInfo.environment
    environment.merge(extraEnvironment) { $1 }
    let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let result = withTransparentHugePages(transparentHugePages) {
        posix_spawnp(&pid, executable, &actions, &attributes, argv, envp)
    }
    guard result == 0 else {
        throw .spawnFailed("cannot execute \(executable): \(errnoMessage(result))")
    }
    return pid
}

/// `/proc/<pid>/stat`: state (field 3) and start time in clock ticks (field 22).
public struct ProcessStat: Equatable {
    public var state: Character
    public var startTime: UInt64

    public init?(pid: pid_t) {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[..<count], as: UTF8.self)
        // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let state = fields[0].first, let start = UInt64(fields[19]) else {
            return nil
        }
        self.state = state
        self.startTime = start
    }
}

/// True if `pid` still runs (not a zombie) and is the process that started at `startTime`.
public func isProcessAlive(pid: pid_t, startTime: UInt64) -> Bool {
    guard let stat = ProcessStat(pid: pid) else { return false }
    return stat.startTime == startTime && stat.state != "Z" && stat.state != "X"
}

/// Builds a `VMExit` from a `waitpid` status word.
func exitFromWaitStatus(_ status: Int32) -> VMExit {
    let signal = status & 0x7f
    if signal == 0 {
        let code = (status >> 8) & 0xff
        let exit = VMExit(status: code, reason: "")
        let reason =
            exit.guestStatus.map { "exited with status \(code) (guest isa-debug-exit value \($0))" }
            ?? "exited with status \(code)"
        return VMExit(status: code, reason: reason)
    }
    return VMExit(status: nil, reason: "killed by signal \(signal)")
}

struct ProcessKey: Hashable, Sendable {
    var pid: pid_t
    var startTime: UInt64
}

/// Watches VMM processes for exit with one thread polling their pidfds: children of this process are
/// reaped as soon as they exit (no zombies, exit status kept), and processes this process did not
/// spawn (re-attached after an agent restart) are noticed the same way, without polling.
final class ExitMonitor: Sendable {
    static let shared = ExitMonitor()

    private struct Watch {
        var key: ProcessKey
        var pidfd: Int32
        var isChild: Bool
        var waiters: [UInt64: CheckedContinuation<VMExit?, Never>] = [:]
    }

    private struct State {
        var watches: [Int32: Watch] = [:]
        var pidfdByKey: [ProcessKey: Int32] = [:]
        var finished: [ProcessKey: VMExit] = [:]
        var nextWaiterID: UInt64 = 0
    }

    private let state = Mutex(State())
    /// A pipe whose read end is polled with the pidfds: a byte written wakes the thread to pick
    /// up a new watch (Swift's Glibc module has no epoll, so the poll set is rebuilt each round).
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe: \(errnoMessage())")
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        Thread.detachNewThread { [self] in run() }
    }

    /// Starts watching; returns false if the process is already gone (or its pid was reused).
    @discardableResult
    func watch(_ key: ProcessKey, isChild: Bool) -> Bool {
        if state.withLock({ $0.pidfdByKey[key] != nil || $0.finished[key] != nil }) { return true }
        guard let pidfdOpen = pidfdOpenFunction else { return false }
        let pidfd = pidfdOpen(key.pid, 0)
        guard pidfd >= 0 else { return false }
        // The pidfd pins the process: checking the start time after opening it rules out pid reuse.
        guard isChild || isProcessAlive(pid: key.pid, startTime: key.startTime) else {
            close(pidfd)
            return false
        }
        let added = state.withLock { state -> Bool in
            guard state.pidfdByKey[key] == nil else { return false }
            state.pidfdByKey[key] = pidfd
            state.watches[pidfd] = Watch(key: key, pidfd: pidfd, isChild: isChild)
            return true
        }
        guard added else {
            close(pidfd)
            return true
        }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        return true
    }

    /// The exit already observed for `key`, if any.
    func finishedExit(_ key: ProcessKey) -> VMExit? {
        state.withLock { $0.finished[key] }
    }

    /// Suspends until the process exits; nil if the calling task is cancelled first.
    func wait(_ key: ProcessKey) async -> VMExit? {
        if !watch(key, isChild: false), finishedExit(key) == nil {
            return VMExit(status: nil, reason: "process \(key.pid) is gone")
        }
        let id = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<VMExit?, Never>) in
                let immediate: VMExit?? = state.withLock { state in
                    if let exit = state.finished[key] { return .some(exit) }
                    if Task.isCancelled { return .some(nil) }
                    guard let pidfd = state.pidfdByKey[key] else {
                        return .some(VMExit(status: nil, reason: "process \(key.pid) is gone"))
                    }
                    state.watches[pidfd]?.waiters[id] = continuation
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let continuation = state.withLock { state in
                state.pidfdByKey[key].flatMap { state.watches[$0]?.waiters.removeValue(forKey: id) }
            }
            continuation?.resume(returning: nil)
        }
    }

    /// Waits at most `timeout`; nil if the process is still alive then.
    func wait(_ key: ProcessKey, timeout: Duration) async -> VMExit? {
        await withTaskGroup(of: VMExit?.self) { group in
            group.addTask { await self.wait(key) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Drops the remembered exit once the VM is destroyed.
    func forget(_ key: ProcessKey) {
        _ = state.withLock { $0.finished.removeValue(forKey: key) }
    }

    private func run() {
        var drain = [UInt8](repeating: 0, count: 64)
        while true {
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            fds += state.withLock { $0.watches.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) } }
            guard poll(&fds, nfds_t(fds.count), -1) > 0 else { continue }  // EINTR
            if fds[0].revents != 0 { _ = read(wakeRead, &drain, drain.count) }
            for entry in fds.dropFirst() where entry.revents != 0 {
                finish(pidfd: entry.fd)
            }
        }
    }

    private func finish(pidfd: Int32) {
        guard let watch = state.withLock({ $0.watches[pidfd] }) else { return }
        let exit: VMExit
        if watch.isChild {
            var status: Int32 = 0
            let reaped = waitpid(watch.key.pid, &status, 0)
            exit =
                reaped == watch.key.pid
                ? exitFromWaitStatus(status)
                : VMExit(status: nil, reason: "exited (reaped elsewhere, status unknown)")
        } else {
            exit = VMExit(
                status: nil,
                reason: "exited (re-attached process, not a child of this agent: status unknown)")
        }
        // Waiters that registered while waitpid ran are still in the table: take them all at once.
        let waiters = state.withLock { state in
            let waiters = state.watches.removeValue(forKey: pidfd)?.waiters ?? [:]
            state.pidfdByKey[watch.key] = nil
            state.finished[watch.key] = exit
            return waiters
        }
        close(pidfd)
        for continuation in waiters.values { continuation.resume(returning: exit) }
    }
}
