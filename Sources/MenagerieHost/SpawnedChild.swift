import Foundation

/// A child process started with posix_spawn, stdout and stderr captured through pipes.
/// (About 4× cheaper than Foundation.Process here: ~16 ms per probe instead of ~66 ms.)
public final class SpawnedChild: @unchecked Sendable {
    public enum Termination: Equatable, Sendable {
        case exit(Int32)
        case signal(Int32)
        case timedOut
    }
    public struct Outcome: Sendable {
        public let termination: Termination
        public let stdout: String
        public let stderr: String
    }

    public let pid: pid_t
    private let outFD: Int32
    private let errFD: Int32

    /// Starts `executable` with `arguments`. The environment is inherited, plus `extraEnvironment`
    /// (a crashing child skips Swift's backtracer: `SWIFT_BACKTRACE=enable=no`).
    public init(_ executable: String, _ arguments: [String],
                extraEnvironment: [String: String] = ["SWIFT_BACKTRACE": "enable=no"]) throws {
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw HostError(.failed, "pipe() failed: \(String(cString: strerror(errno)))") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        for fd in outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }

        var env = ProcessInfo.processInfo.environment
        for (k, v) in extraEnvironment { env[k] = v }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        // The child starts with no blocked signals and default handlers, whatever this thread has.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            throw HostError(.failed, "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        self.outFD = outPipe[0]
        self.errFD = errPipe[0]
    }

    /// Reads both pipes until the child exits or `timeout` seconds pass (then SIGKILL).
    public func wait(timeout: Double) -> Outcome {
        var out = Data(), err = Data()
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, timeout) * 1e9)
        var open: [Int32] = [outFD, errFD]
        var buffer = [UInt8](repeating: 0, count: 65536)
        var timedOut = false
        while !open.isEmpty {
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadline {
                timedOut = true
                break
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ms = Int32(min(Double(deadline - now) / 1e6, 1000).rounded(.up))
            let n = poll(&fds, nfds_t(fds.count), ms)
            if n < 0 && errno != EINTR { break }
            for f in fds where f.revents != 0 {
                let got = read(f.fd, &buffer, buffer.count)
                if got > 0 {
                    if f.fd == outFD { out.append(contentsOf: buffer[0..<got]) } else { err.append(contentsOf: buffer[0..<got]) }
                } else {
                    open.removeAll { $0 == f.fd }
                }
            }
        }
        var status: Int32 = 0
        if timedOut {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        } else {
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        close(outFD)
        close(errFD)
        let termination: Termination
        if timedOut { termination = .timedOut }
        else if status & 0x7F == 0 { termination = .exit((status >> 8) & 0xFF) }
        else { termination = .signal(status & 0x7F) }
        return Outcome(termination: termination, stdout: String(decoding: out, as: UTF8.self),
                       stderr: String(decoding: err, as: UTF8.self))
    }
}
