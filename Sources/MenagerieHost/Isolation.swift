import CHostSupport
import Foundation
import MenagerieKit
import Synchronization
import Tensors

/// Isolated invocation: the plugin runs in a child process (`menagerie _isolate`), so a crash, an
/// abort, a hang or an `exit()` in it becomes an error message and the host lives on.
///
/// - One child per runtime, started at the first isolated call and kept for the next ones (a call
///   then costs one round trip on a Unix socket, no process start). It loads plugins itself, with
///   the same search path, trust and lock rules; a component the plugin calls through the host
///   runs in the same child.
/// - Tensors travel in shared memory: the inputs are written once into a memfd that the child maps
///   and lends to the plugin without copying; the outputs come back the same way and the host
///   reads them from the mapping without copying.
/// - The child's stdout and stderr are relayed to the host's stderr (the host's stdout stays the
///   run's result); its last lines name the cause of a crash.
/// - Limits: `timeout` seconds per call (then SIGKILL), `memoryLimit` bytes of data segment
///   (RLIMIT_DATA: heap and anonymous mappings, not the memory-mapped weights).
/// - Ctrl-C / SIGTERM reach the child as SIGUSR1, which sets its cancellation flag.
public enum Isolation {
    /// When plugins run in a child process.
    public enum Policy: String, Sendable {
        /// Plugins outside the built-in folder (the default).
        case auto
        case always
        case never

        /// `MENAGERIE_ISOLATE`: 1/true/yes → always, 0/false/no → never, otherwise auto.
        public static var fromEnvironment: Policy {
            switch ProcessInfo.processInfo.environment["MENAGERIE_ISOLATE"]?.lowercased() {
            case "1", "true", "yes", "always": return .always
            case "0", "false", "no", "never": return .never
            default: return .auto
            }
        }
    }

    public struct Limits: Sendable {
        /// Seconds one call may take; nil: no limit. `MENAGERIE_ISOLATE_TIMEOUT`.
        public var timeout: Double?
        /// RLIMIT_DATA of the child in bytes; nil: the machine's memory. `MENAGERIE_ISOLATE_MEMORY`.
        public var memory: Int?
        public init(timeout: Double? = nil, memory: Int? = nil) {
            self.timeout = timeout
            self.memory = memory
        }
        public static var fromEnvironment: Limits {
            let env = ProcessInfo.processInfo.environment
            return Limits(
                timeout: env["MENAGERIE_ISOLATE_TIMEOUT"].flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil },
                memory: env["MENAGERIE_ISOLATE_MEMORY"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil })
        }
    }

    /// Pids of running children, for forwarding cancellation and killing them on a forced exit.
    static let children = Mutex<Set<pid_t>>([])

    static func forwardCancellation() {
        for pid in children.withLock({ $0 }) { kill(pid, SIGUSR1) }
    }

    static func killChildren() {
        for pid in children.withLock({ $0 }) { kill(pid, SIGKILL) }
    }
}

// MARK: - framing

/// Frames on a stream socket: a 4-byte little-endian length, then that many bytes of JSON. A frame
/// may carry one file descriptor (a memfd of tensors); its JSON then says `"fd": true`.
final class FrameChannel {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var fds: [Int32] = []
    static let maxFrame = 256 << 20

    init(fd: Int32) { self.fd = fd }

    deinit { fds.forEach { close($0) } }

    func send(_ value: JSONValue, attaching descriptor: Int32 = -1) throws {
        var object = value.objectValue ?? [:]
        if descriptor >= 0 { object["fd"] = true }
        let payload = Array(JSONValue.object(object).compactText.utf8)
        var frame = [UInt8](repeating: 0, count: 4)
        let n = UInt32(payload.count)
        frame[0] = UInt8(n & 0xFF)
        frame[1] = UInt8(n >> 8 & 0xFF)
        frame[2] = UInt8(n >> 16 & 0xFF)
        frame[3] = UInt8(n >> 24)
        frame += payload
        let rc = frame.withUnsafeBytes { mng_send_with_fd(fd, $0.baseAddress, $0.count, descriptor) }
        guard rc == 0 else { throw HostError(.failed, "isolated plugin channel: send failed: \(String(cString: strerror(-rc)))") }
    }

    /// A complete frame already buffered, if any.
    func takeFrame() throws -> (JSONValue, Int32?)? {
        guard buffer.count >= 4 else { return nil }
        let n = Int(buffer[0]) | Int(buffer[1]) << 8 | Int(buffer[2]) << 16 | Int(buffer[3]) << 24
        guard n <= FrameChannel.maxFrame else { throw HostError(.failed, "isolated plugin channel: a frame of \(n) bytes is refused") }
        guard buffer.count >= 4 + n else { return nil }
        let text = String(decoding: buffer[4..<(4 + n)], as: UTF8.self)
        buffer.removeFirst(4 + n)
        let value = try JSONValue.parse(text, source: "the isolated plugin channel")
        var attached: Int32?
        if value["fd"]?.boolValue == true {
            guard !fds.isEmpty else { throw HostError(.failed, "isolated plugin channel: a frame announced a descriptor that did not come") }
            attached = fds.removeFirst()
        }
        return (value, attached)
    }

    /// Reads what the socket has (blocking once). Returns false at end of stream.
    func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var got: Int32 = -1
        let n = chunk.withUnsafeMutableBytes { mng_recv_with_fd(fd, $0.baseAddress, $0.count, &got) }
        if got >= 0 { fds.append(got) }
        guard n >= 0 else { throw HostError(.failed, "isolated plugin channel: receive failed: \(String(cString: strerror(Int32(-n))))") }
        if n == 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    /// Blocks until a whole frame is there; nil at end of stream.
    func receive() throws -> (JSONValue, Int32?)? {
        while true {
            if let f = try takeFrame() { return f }
            guard try fill() else { return nil }
        }
    }
}

// MARK: - tensors in shared memory

/// A read-only (or read-write) mapping of a memfd; tensors borrowing it keep it alive.
// @unchecked: immutable after init; the mapping is unmapped only in deinit, and its writers fill disjoint tensors before it is sent.
final class SharedMapping: @unchecked Sendable {
    let base: UnsafeMutableRawPointer?
    let size: Int
    init(fd: Int32, size: Int, writable: Bool) throws {
        self.size = size
        if size == 0 {
            base = nil
            return
        }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        guard let p = mmap(nil, size, prot, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw HostError(.failed, "cannot map \(size) bytes of shared tensor memory: \(String(cString: strerror(errno)))")
        }
        base = p
    }
    deinit { if let base { munmap(base, size) } }
}

enum SharedTensors {
    /// Writes `tensors` into a new memfd (64-byte aligned); returns it (or -1 when empty) and the table.
    static func write(_ tensors: [(name: String, tensor: Tensor)]) throws -> (fd: Int32, table: JSONValue) {
        var offsets: [Int] = []
        var total = 0
        for (_, t) in tensors {
            offsets.append(total)
            total += (t.byteCount + 63) / 64 * 64
        }
        var table: [JSONValue] = []
        for (i, (name, t)) in tensors.enumerated() {
            table.append([
                "name": .string(name), "dtype": .number(Double(t.dtype.rawValue)),
                "shape": .array(t.shape.map { .number(Double($0)) }), "offset": .number(Double(offsets[i])),
                "nbytes": .number(Double(t.byteCount)),
            ])
        }
        guard total > 0 else { return (-1, ["size": 0, "tensors": .array(table)]) }
        let fd = mng_memfd("menagerie-tensors", UInt64(total))
        guard fd >= 0 else { throw HostError(.failed, "cannot create shared tensor memory (\(total) bytes): \(String(cString: strerror(-fd)))") }
        do {
            let map = try SharedMapping(fd: fd, size: total, writable: true)
            for (i, (_, t)) in tensors.enumerated() where t.byteCount > 0 {
                t.withUnsafeBytes { (map.base! + offsets[i]).copyMemory(from: $0.baseAddress!, byteCount: t.byteCount) }
            }
        } catch {
            close(fd)
            throw error
        }
        return (fd, ["size": .number(Double(total)), "tensors": .array(table)])
    }

    /// Maps `fd` and wraps the tensors of `table` without copying; every number is checked against
    /// the mapping before it is used.
    static func read(fd: Int32?, table: JSONValue, owner: String) throws -> [(name: String, tensor: Tensor)] {
        defer { if let fd { close(fd) } }
        let entries = table["tensors"]?.arrayValue ?? []
        guard !entries.isEmpty else { return [] }
        guard let fd else { throw HostError(.failed, "\(owner): tensors announced without shared memory") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw HostError(.failed, "\(owner): cannot stat shared tensor memory") }
        let size = Int(st.st_size)
        let map = try SharedMapping(fd: fd, size: size, writable: false)
        var out: [(String, Tensor)] = []
        for e in entries {
            guard let name = e["name"]?.stringValue, let code = e["dtype"]?.intValue, let dtype = DType(rawValue: Int32(truncatingIfNeeded: code)),
                let dims = e["shape"]?.arrayValue, dims.count <= 32, let offset = e["offset"]?.intValue, let nbytes = e["nbytes"]?.intValue,
                offset >= 0, nbytes >= 0, offset <= size, nbytes <= size - offset
            else {
                throw HostError(.failed, "\(owner): a malformed tensor entry \(e.compactText)")
            }
            var shape: [Int] = []
            var need = dtype.size
            for d in dims {
                guard let v = d.intValue, v >= 0 else { throw HostError(.failed, "\(owner): tensor '\(name)' has a bad shape") }
                let (p, o) = need.multipliedReportingOverflow(by: v)
                guard !o else { throw HostError(.failed, "\(owner): tensor '\(name)' shape overflows") }
                need = p
                shape.append(v)
            }
            guard need == nbytes else { throw HostError(.failed, "\(owner): tensor '\(name)' shape \(shape) does not match \(nbytes) bytes") }
            let pointer = nbytes == 0 ? UnsafeMutableRawPointer(bitPattern: 64)! : map.base! + offset
            let storage = TensorStorage(borrowing: pointer, byteCount: nbytes, owner: map)
            out.append((name, try Tensor(dtype: dtype, shape: shape, storage: storage)))
        }
        return out
    }
}

// MARK: - the host side

/// The child process serving isolated calls for one runtime.
// @unchecked: `tail` and `alive` are touched only by the thread making the (one at a time) isolated call, and by `shutdown` under the Runtime's `mutex` afterwards.
final class IsolatedChild: @unchecked Sendable {
    let pid: pid_t
    let channel: FrameChannel
    let outputFD: Int32
    private var tail: [UInt8] = []
    private(set) var alive = true

    init(executable: String, scratchRoot: String, seed: UInt64, safeMode: Bool, lockPath: String?, limits: Isolation.Limits) throws {
        var sockets: [Int32] = [0, 0]
        let rc = mng_socketpair(&sockets)
        guard rc == 0 else { throw HostError(.failed, "socketpair failed: \(String(cString: strerror(-rc)))") }
        var outPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0 else {
            close(sockets[0])
            close(sockets[1])
            throw HostError(.failed, "pipe() failed: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 2)
        posix_spawn_file_actions_adddup2(&actions, sockets[1], 3) // dup2 clears close-on-exec
        for fd in outPipe where fd > 3 { posix_spawn_file_actions_addclose(&actions, fd) }

        var env = ProcessInfo.processInfo.environment
        env["SWIFT_BACKTRACE"] = "enable=no"
        env["MENAGERIE_ISOLATE"] = "0"
        var args = ["_isolate", "--scratch", scratchRoot, "--seed", "\(seed)"]
        if let m = limits.memory { args += ["--memory-limit", "\(m)"] }
        if safeMode { args.append("--safe-mode") }
        if let lockPath { args += ["--lock", lockPath] }
        let (spawned, pid) = spawn(executable, args, environment: env, actions: &actions)
        close(outPipe[1])
        close(sockets[1])
        guard spawned == 0 else {
            close(outPipe[0])
            close(sockets[0])
            throw HostError(.failed, "cannot start the isolation process \(executable): \(String(cString: strerror(spawned)))")
        }
        self.pid = pid
        self.channel = FrameChannel(fd: sockets[0])
        self.outputFD = outPipe[0]
        _ = fcntl(outputFD, F_SETFD, FD_CLOEXEC)
        Isolation.children.withLock { _ = $0.insert(pid) }
    }

    deinit {
        shutdown()
        close(channel.fd)
        close(outputFD)
    }

    /// Asks the child to finish, then reaps it (SIGKILL after a second).
    func shutdown() {
        guard alive else { return }
        alive = false
        try? channel.send(["op": "shutdown"])
        var status: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) == pid { return forget() }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        forget()
    }

    private func forget() { Isolation.children.withLock { _ = $0.remove(pid) } }

    /// Relays what the child printed to our stderr, keeping the last 4 KiB for error messages.
    private func drainOutput() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = read(outputFD, &chunk, chunk.count)
        guard n > 0 else { return }
        _ = chunk.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, n) }
        tail += chunk[0..<n]
        if tail.count > 4096 { tail.removeFirst(tail.count - 4096) }
    }

    private var lastLine: String {
        let lines = String(decoding: tail, as: UTF8.self).split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        return lines.last.map { ": " + $0.prefix(300) } ?? ""
    }

    /// The child is gone: why, in words.
    private func death(_ what: String) -> HostError {
        alive = false
        var status: Int32 = 0
        var reaped = false
        for _ in 0..<200 {
            if waitpid(pid, &status, WNOHANG) == pid {
                reaped = true
                break
            }
            usleep(5_000)
        }
        if !reaped {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
        forget()
        while true {
            var p = pollfd(fd: outputFD, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0, p.revents & Int16(POLLIN) != 0 else { break }
            let before = tail.count
            drainOutput()
            if tail.count == before { break }
        }
        let how: String
        if status & 0x7F == 0 {
            // The child's exit() guard has already said why (relayed above).
            how = "ended its process with status \((status >> 8) & 0xFF) in the middle of the call (the plugin called exit()?)"
        } else {
            let sig = status & 0x7F
            how = "crashed (signal \(sig), \(signalName(sig)))" + lastLine
        }
        return HostError(.failed, "\(what) \(how); the host is fine, nothing was written")
    }

    /// One call: request out, progress frames in, the response last.
    func invoke(
        component: String, operation: String, options: JSONValue, inputs: [(name: String, tensor: Tensor)],
        timeout: Double?, events: ProgressSink?
    ) throws -> InvocationResult {
        let what = "'\(component)' \(operation) (isolated, pid \(pid))"
        guard alive else { throw HostError(.failed, "\(what): the isolation process has ended") }
        let (fd, table) = try SharedTensors.write(inputs)
        defer { if fd >= 0 { close(fd) } }
        do {
            try channel.send(
                [
                    "op": "invoke", "component": .string(component), "operation": .string(operation),
                    "options": .string(options.compactText), "inputs": table,
                ], attaching: fd)
        } catch { throw death(what) }
        let deadline = timeout.map { DispatchTime.now().uptimeNanoseconds + UInt64($0 * 1e9) }
        while true {
            if let (frame, attached) = try channel.takeFrame() {
                switch frame["type"]?.stringValue {
                case "progress":
                    events?.progress(
                        component: component, done: Self.integer(frame["done"]), total: Self.integer(frame["total"]),
                        label: frame["label"]?.stringValue ?? "")
                    continue
                case "phase":
                    let index = Self.integer(frame["index"]), count = Self.integer(frame["count"])
                    if count > 0, (1...count).contains(index) {
                        events?.phase(component: component, index: index, count: count, name: frame["name"]?.stringValue ?? "")
                    }
                    continue
                case "record":
                    // Checked like an in-process record; JSON has no NaN, so null stands for it.
                    let names = frame["names"]?.arrayValue ?? [], values = frame["values"]?.arrayValue ?? []
                    if names.count == values.count, names.count <= MetricsRow.maxMetrics,
                        let row = MetricsRow.checked(
                            unit: frame["unit"]?.stringValue, step: Self.integer(frame["step"]),
                            names: names.map(\.stringValue), values: values.map { $0.doubleValue ?? .nan })
                    {
                        events?.record(component: component, row: row)
                    }
                    continue
                case "text":
                    if let text = frame["text"]?.stringValue { events?.text(component: component, text) }
                    continue
                case "response":
                    return try decodeResponse(frame, fd: attached, what: what)
                default:
                    if let attached { close(attached) }
                    throw HostError(.failed, "\(what): unexpected message \(frame.compactText.prefix(200))")
                }
            }
            var wait: Int32 = -1
            if let deadline {
                let now = DispatchTime.now().uptimeNanoseconds
                guard now < deadline else {
                    kill(pid, SIGKILL)
                    _ = death(what)
                    throw HostError(
                        .failed, "\(what) timed out after \(timeout!) s (MENAGERIE_ISOLATE_TIMEOUT / --timeout) and was killed; nothing was written")
                }
                wait = Int32(min(Double(deadline - now) / 1e6, 1000).rounded(.up))
            }
            var fds = [pollfd(fd: channel.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: outputFD, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, wait)
            if n < 0 && errno != EINTR { throw death(what) }
            if fds[1].revents & Int16(POLLIN) != 0 { drainOutput() }
            if fds[0].revents != 0 {
                let more: Bool
                do { more = try channel.fill() } catch { throw death(what) }
                if !more { throw death(what) }
            }
        }
    }

    /// A count from the child: a finite number within Int64, else 0.
    static func integer(_ v: JSONValue?) -> Int64 {
        guard let d = v?.doubleValue, d.isFinite, abs(d) < 9e18 else { return 0 }
        return Int64(d)
    }

    private func decodeResponse(_ frame: JSONValue, fd: Int32?, what: String) throws -> InvocationResult {
        guard frame["ok"]?.boolValue == true else {
            if let fd { close(fd) }
            let message = frame["message"]?.stringValue ?? "failed"
            let kind: HostError.Kind = frame["kind"]?.stringValue == "usage" ? .usage : frame["kind"]?.stringValue == "notFound" ? .notFound : .failed
            throw HostError(kind, message)
        }
        let result = try JSONValue.parse(frame["result"]?.stringValue ?? "{}", source: "the result of \(what)")
        let tensors = try SharedTensors.read(fd: fd, table: frame["outputs"] ?? .object([:]), owner: what)
        var artifacts: [Artifact] = []
        for a in frame["artifacts"]?.arrayValue ?? [] {
            guard let path = a["path"]?.stringValue, let name = a["name"]?.stringValue else { continue }
            artifacts.append(Artifact(path: path, name: name))
        }
        return InvocationResult(result: result, tensors: tensors, artifacts: artifacts)
    }
}

// MARK: - the child side

/// The loop of `menagerie _isolate`: serves invoke requests on fd 3 until told to stop.
public enum IsolationServer {
    public static let socketFD: Int32 = 3

    /// Lowers RLIMIT_DATA to `bytes` (heap and anonymous mappings; weights mapped from files do not count).
    public static func limitMemory(_ bytes: Int) {
        var r = rlimit(rlim_cur: rlim_t(bytes), rlim_max: rlim_t(bytes))
        _ = setrlimit(Int32(RLIMIT_DATA.rawValue), &r)
    }

    // @unchecked: the channel (not Sendable) is only written inside `sending`'s lock, so frames from several plugin threads never interleave.
    final class ForwardingProgress: ProgressSink, @unchecked Sendable {
        let channel: FrameChannel
        /// Held while a frame is sent; holds when the last progress frame went.
        private let sending = Mutex<UInt64>(0)
        init(channel: FrameChannel) { self.channel = channel }
        private func send(_ frame: JSONValue) {
            sending.withLock { _ in try? channel.send(frame) }
        }
        func progress(component: String, done: Int64, total: Int64, label: String) {
            // At most 20 frames a second (and always the last one).
            let now = DispatchTime.now().uptimeNanoseconds
            sending.withLock { last in
                guard (now > last && now - last > 50_000_000) || done == total else { return }
                last = now
                try? channel.send([
                    "type": "progress", "component": .string(component), "done": .number(Double(done)),
                    "total": .number(Double(total)), "label": .string(label),
                ])
            }
        }
        func phase(component: String, index: Int64, count: Int64, name: String) {
            send([
                "type": "phase", "component": .string(component), "index": .number(Double(index)),
                "count": .number(Double(count)), "name": .string(name),
            ])
        }
        func record(component: String, row: MetricsRow) {
            send([
                "type": "record", "component": .string(component), "unit": .string(row.unit), "step": .number(Double(row.step)),
                "names": .array(row.metrics.map { .string($0.name) }),
                "values": .array(row.metrics.map { $0.value.isFinite ? .number($0.value) : .null }),
            ])
        }
        func text(component: String, _ text: String) {
            send(["type": "text", "component": .string(component), "text": .string(text)])
        }
    }

    public static func serve(runtime: Runtime) -> Never {
        let channel = FrameChannel(fd: socketFD)
        let sink = ForwardingProgress(channel: channel)
        runtime.progressSink = sink
        signal(SIGUSR1) { _ in cancellationFlag.store(true, ordering: .relaxed) }
        while let (frame, fd) = try? channel.receive() {
            guard frame["op"]?.stringValue == "invoke" else { break }
            var reply: JSONValue
            var outFD: Int32 = -1
            do {
                let inputs = try SharedTensors.read(fd: fd, table: frame["inputs"] ?? .object([:]), owner: "isolated request")
                let options = try JSONValue.parse(frame["options"]?.stringValue ?? "{}", source: "options")
                let r = try runtime.invoke(
                    frame["component"]?.stringValue ?? "", operation: frame["operation"]?.stringValue ?? "",
                    options: options, inputs: inputs)
                let (f, table) = try SharedTensors.write(r.tensors)
                outFD = f
                reply = [
                    "type": "response", "ok": true, "result": .string(r.result.compactText), "outputs": table,
                    "artifacts": .array(r.artifacts.map { ["path": .string($0.path), "name": .string($0.name)] }),
                ]
            } catch let e as HostError {
                let kind = e.kind == .usage ? "usage" : e.kind == .notFound ? "notFound" : "failed"
                reply = ["type": "response", "ok": false, "kind": .string(kind), "message": .string(e.message)]
            } catch {
                reply = ["type": "response", "ok": false, "kind": "failed", "message": .string("\(error)")]
            }
            do { try channel.send(reply, attaching: outFD) } catch { break }
            if outFD >= 0 { close(outFD) }
        }
        runtime.shutdown()
        _exit(0)
    }
}
