import Foundation
import Synchronization

/// How a run ends when it is not allowed to finish: signals, a plugin that calls `exit()`, and the
/// folders a killed run leaves behind.
///
/// - SIGINT and SIGTERM (Slurm's `scancel`, `kill`, a job's time limit) both cancel: the flag plugins
///   poll through `is_cancelled` is set and the run ends as a failure that writes nothing. A second
///   signal, or a plugin that does not stop within `MENAGERIE_TERM_GRACE` seconds (default 10),
///   ends the process at once — after removing the run's scratch and partial-output folders.
/// - A plugin calling `exit()` (or `quick_exit`'s `atexit` twin) while it is being invoked ends the
///   run with status 1 and a message naming it, instead of a silent exit 0.
/// - Folders of runs that were killed outright (SIGKILL, power loss) are found by their owner marker
///   and removed by the next run and by `menagerie doctor --clean`.
public enum Lifecycle {
    // MARK: folders removed on a forced exit

    private static let cleanup = Mutex<Set<String>>([])

    /// Remove `path` if the process is forced to exit before `forget(path)`.
    public static func removeOnForcedExit(_ path: String) { cleanup.withLock { _ = $0.insert(path) } }
    public static func forget(_ path: String) { cleanup.withLock { _ = $0.remove(path) } }

    static func removeRegistered() {
        let paths = cleanup.withLock { $0 }
        for p in paths { try? FileManager.default.removeItem(atPath: p) }
    }

    // MARK: signals

    private static let signalPipe = Mutex<[Int32]>([])
    /// The pipe's write end for the signal handler (an Atomic: lock-free, so async-signal-safe).
    private static let writeEnd = Atomic<Int32>(-1)

    /// Installs the SIGINT/SIGTERM handling once per process. `onFirst` runs (on a helper thread)
    /// when the first signal arrives.
    public static func installSignalHandling(onFirst: @escaping @Sendable (Int32) -> Void = { _ in }) {
        let fresh = signalPipe.withLock { fds -> Bool in
            guard fds.isEmpty else { return false }
            var p: [Int32] = [0, 0]
            guard pipe(&p) == 0 else { return false }
            _ = fcntl(p[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(p[1], F_SETFD, FD_CLOEXEC)
            fds = p
            return true
        }
        guard fresh else { return }
        let fds = signalPipe.withLock { $0 }
        writeEnd.store(fds[1], ordering: .releasing)
        // A parent may have left the signals blocked or ignored (both are inherited across exec).
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        // The handler only writes the signal number: everything else happens on the watcher thread.
        let handler: @convention(c) (Int32) -> Void = { sig in
            var byte = UInt8(truncatingIfNeeded: sig)
            _ = write(Lifecycle.writeEnd.load(ordering: .acquiring), &byte, 1)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        let readEnd = fds[0]
        let thread = Thread {
            var first = true
            var byte: UInt8 = 0
            while true {
                let n = read(readEnd, &byte, 1)
                if n < 0 && errno == EINTR { continue }
                guard n == 1 else { return }
                let sig = Int32(byte)
                if first {
                    first = false
                    cancellationFlag.store(true, ordering: .relaxed)
                    Isolation.forwardCancellation()
                    let name = sig == SIGTERM ? "SIGTERM" : "Ctrl-C"
                    let msg = "\ncancelling on \(name)… (send it again to quit at once)\n"
                    FileHandle.standardError.write(Data(msg.utf8))
                    onFirst(sig)
                    let grace = ProcessInfo.processInfo.environment["MENAGERIE_TERM_GRACE"].flatMap(Double.init) ?? 10
                    DispatchQueue.global().asyncAfter(deadline: .now() + max(0, grace)) {
                        forcedExit(sig, reason: "the plugin did not stop within \(grace) s (MENAGERIE_TERM_GRACE)")
                    }
                } else {
                    forcedExit(sig, reason: "second signal")
                }
            }
        }
        thread.stackSize = 1 << 18
        thread.start()
    }

    /// Removes the registered folders and exits with 128 + signal.
    static func forcedExit(_ sig: Int32, reason: String) -> Never {
        Isolation.killChildren()
        removeRegistered()
        FileHandle.standardError.write(Data("error: stopped (\(reason)); nothing was written\n".utf8))
        _exit(128 + sig)
    }

    // MARK: exit() inside a plugin

    /// How many invocations are running and the innermost one's description (a C string kept alive
    /// by its `Runtime.Handle`).
    static let invoking = Atomic<Int>(0)
    /// The label's address as an integer (pointers are not Sendable; the C string is never freed).
    static let invokingLabel = Atomic<Int>(0)
    private static let exitGuard: Void = {
        atexit {
            guard Lifecycle.invoking.load(ordering: .relaxed) > 0 else { return }
            let label = UnsafePointer<CChar>(bitPattern: Lifecycle.invokingLabel.load(ordering: .relaxed)).map { String(cString: $0) } ?? "a plugin"
            Lifecycle.removeRegistered()
            FileHandle.standardError.write(
                Data(
                    ("error: \(label) called exit() while running: the run did not finish and wrote nothing "
                        + "(a plugin must return an error instead; `--isolate` runs it in a child process)\n").utf8))
            _exit(1)
        }
    }()

    /// Installs the `atexit` guard (once).
    public static func installExitGuard() { _ = exitGuard }

    // MARK: folders left by killed runs

    /// The marker file inside a scratch or partial folder: "pid starttime host" of the process that owns it.
    public static let ownerFile = ".menagerie-owner"

    /// This machine's name (a folder on storage shared by several nodes is judged only by its own node).
    static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    /// Writes the owner marker of this process into `folder`.
    public static func markOwned(_ folder: String) {
        let text = "\(getpid()) \(processStartTime(getpid()) ?? 0) \(hostName)\n"
        _ = FileManager.default.createFile(atPath: folder + "/" + ownerFile, contents: Data(text.utf8))
    }

    /// The start time (clock ticks since boot) of `pid`, from /proc; nil when no such process.
    static func processStartTime(_ pid: pid_t) -> UInt64? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        // Field 22; the command name (field 2) may contain spaces, so count after its closing ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// True when `folder`'s owner marker names a process of this machine that no longer runs (or a
    /// different one with a reused pid). A folder of another machine (shared storage) is never judged
    /// here; a folder without a marker counts as stale after an hour.
    public static func isStale(_ folder: String) -> Bool {
        if let data = FileManager.default.contents(atPath: folder + "/" + ownerFile) {
            let parts = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace)
            if parts.count >= 3, String(parts[2]) != hostName { return false }
            guard parts.count >= 2, let pid = Int32(parts[0]), let start = UInt64(parts[1]) else { return true }
            guard let now = processStartTime(pid) else { return true }
            return start != 0 && now != start
        }
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: folder),
            let modified = attrs[.modificationDate] as? Date
        else { return false }
        return Date().timeIntervalSince(modified) > 3600
    }

    /// Removes stale `menagerie-run-*` scratch folders (ours only) in `temporary`, and stale
    /// `.menagerie-partial-*` folders in each of `outputs`. Returns what was removed.
    @discardableResult
    public static func sweep(temporary: String? = NSTemporaryDirectory(), outputs: [String] = []) -> [String] {
        var removed: [String] = []
        let me = geteuid()
        func visit(_ dir: String, prefix: String) {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
            for name in names where name.hasPrefix(prefix) {
                let path = (dir as NSString).appendingPathComponent(name)
                var st = stat()
                guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == me, isStale(path) else { continue }
                if (try? FileManager.default.removeItem(atPath: path)) != nil { removed.append(path) }
            }
        }
        if let temporary { visit(temporary, prefix: "menagerie-run-") }
        for o in outputs {
            visit(o, prefix: ".menagerie-partial-")
            visit(parentPath(o).isEmpty ? "." : parentPath(o), prefix: ".menagerie-partial-")
        }
        return removed
    }
}
