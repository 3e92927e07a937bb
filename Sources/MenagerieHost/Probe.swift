import CMenagerie
import Foundation
import MenagerieKit

/// What a scan learns about one plugin file without running it beyond its entry symbol.
public struct ProbeReport: Codable, Sendable, Equatable {
    public var ok: Bool
    public var reason: String?
    public var abi: String?
    public var toolchain: String?
    public var metadata: PluginMetadata?
    /// Microseconds spent in dlopen + entry + checks (measured inside the child).
    public var handshakeMicros: Double?
    /// True for a failure that may not recur (a scan that timed out, perhaps on a loaded machine):
    /// the registry does not cache it, so the next command scans the file again.
    public var transient: Bool?

    public static func failed(_ reason: String, abi: String? = nil, toolchain: String? = nil) -> ProbeReport {
        ProbeReport(ok: false, reason: reason, abi: abi, toolchain: toolchain, metadata: nil, handshakeMicros: nil)
    }

    /// The file descriptor a scan child writes its report to: a pipe of its own, so nothing a plugin
    /// prints on stdout (at load, or from an `atexit` handler) can be mistaken for the report.
    public static let reportFD: Int32 = 3

    /// Writes the report as one JSON line to `reportFD` (stdout when that is not open, for a person
    /// running `_probe` by hand), then ends the process at once: no `atexit` handler or static
    /// destructor of the plugin runs after the report.
    public static func emit(_ data: Data) -> Never {
        let fd = fcntl(reportFD, F_GETFD) >= 0 ? reportFD : STDOUT_FILENO
        let line = data + Data("\n".utf8)
        line.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = write(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                done += n
            }
        }
        _exit(0)
    }
}

/// Opens a plugin in THIS process and checks its descriptor. Runs inside the child process of a
/// scan (`menagerie _probe PATH`) and, for use, inside the host after a successful scan.
public enum Handshake {
    // @unchecked: immutable; the dlopen handle and descriptor live as long as the process (never dlclose'd), and the descriptor is read-only.
    public struct Opened: @unchecked Sendable {
        public let handle: UnsafeMutableRawPointer
        public let descriptor: UnsafePointer<mng_plugin_descriptor>
        public let metadata: PluginMetadata
        public let metadataText: String
        public let abi: String
        public let toolchain: String
    }

    /// ELF check, dlopen(RTLD_NOW|RTLD_LOCAL|RTLD_NODELETE), entry symbol, version and toolchain
    /// checks, metadata parse and validation. A Swift image is never dlclose'd.
    public static func open(path: String) -> Result<Opened, HostError> {
        if let p = ELFCheck.problem(path: path) { return .failure(HostError(.refused, p)) }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            let message = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            return .failure(HostError(.failed, "dlopen failed: \(message)"))
        }
        guard let sym = dlsym(handle, MENAGERIE_ENTRY_SYMBOL) else {
            return .failure(
                HostError(
                    .failed,
                    "missing entry symbol '\(MENAGERIE_ENTRY_SYMBOL)': not a Menagerie plugin, "
                        + "or built without `@_cdecl(\"\(MENAGERIE_ENTRY_SYMBOL)\")` (Swift) / an exported function of that name (C)"))
        }
        let entry = unsafeBitCast(sym, to: mng_entry_fn.self)
        guard let d = entry() else { return .failure(HostError(.failed, "\(MENAGERIE_ENTRY_SYMBOL)() returned NULL")) }
        let hostMajor = UInt32(MENAGERIE_ABI_MAJOR), hostMinor = UInt32(MENAGERIE_ABI_MINOR)
        let abi = "\(d.pointee.abi_major).\(d.pointee.abi_minor)"
        if let problem = versionProblem(
            pluginMajor: d.pointee.abi_major, pluginMinor: d.pointee.abi_minor,
            hostMajor: hostMajor, hostMinor: hostMinor)
        {
            return .failure(HostError(.refused, problem))
        }
        guard d.pointee.struct_size >= UInt32(MemoryLayout<mng_plugin_descriptor>.offset(of: \.shutdown)! + 8) else {
            return .failure(HostError(.refused, "descriptor struct_size \(d.pointee.struct_size) is smaller than ABI 1.0's"))
        }
        let toolchain = d.pointee.toolchain.map { String(cString: $0) } ?? ""
        if toolchain != MENAGERIE_TOOLCHAIN_NONE && toolchain != swiftToolchain {
            return .failure(
                HostError(
                    .refused,
                    "built with toolchain \(toolchain.isEmpty ? "(unnamed)" : toolchain), but this host runs "
                        + "\(swiftToolchain): Swift plugins share the host's Swift runtime, so rebuild the plugin with \(swiftToolchain)"))
        }
        guard let metaPtr = d.pointee.metadata_json else { return .failure(HostError(.failed, "descriptor has no metadata_json")) }
        // Bounded: the metadata is cached and read by every command.
        let length = strnlen(metaPtr, maxMetadataBytes + 1)
        guard length <= maxMetadataBytes else {
            return .failure(HostError(.failed, "metadata JSON is larger than \(maxMetadataBytes >> 20) MiB: describe components, don't embed data"))
        }
        let text = String(decoding: UnsafeRawBufferPointer(start: metaPtr, count: length), as: UTF8.self)
        let metadata: PluginMetadata
        do { metadata = try JSONValue.decode(PluginMetadata.self, from: text) } catch {
            return .failure(HostError(.failed, "metadata JSON is invalid: \(describeDecoding(error))"))
        }
        let problems = metadata.problems()
        guard problems.isEmpty else { return .failure(HostError(.failed, "metadata: " + problems.joined(separator: "; "))) }
        guard d.pointee.`init` != nil, d.pointee.invoke != nil, d.pointee.free_response != nil, d.pointee.shutdown != nil else {
            return .failure(HostError(.failed, "descriptor lacks one of init, invoke, free_response, shutdown"))
        }
        return .success(Opened(handle: handle, descriptor: d, metadata: metadata, metadataText: text, abi: abi, toolchain: toolchain))
    }

    /// The largest metadata document accepted (the largest built-in plugin's is ~60 KiB).
    public static let maxMetadataBytes = 4 << 20

    /// The ABI rule: same major; the host's minor must be at least the plugin's.
    public static func versionProblem(pluginMajor: UInt32, pluginMinor: UInt32, hostMajor: UInt32, hostMinor: UInt32) -> String? {
        let plugin = "\(pluginMajor).\(pluginMinor)", host = "\(hostMajor).\(hostMinor)"
        if pluginMajor != hostMajor {
            let older = pluginMajor < hostMajor ? "the plugin is older: rebuild it against this SDK" : "the host is older: upgrade menagerie"
            return "ABI major mismatch: plugin ABI \(plugin), host ABI \(host); \(older)"
        }
        if pluginMinor > hostMinor {
            return "ABI minor mismatch: plugin ABI \(plugin) needs a host of ABI ≥ \(plugin), this host is \(host); the host is older: upgrade menagerie"
        }
        return nil
    }

    static func describeDecoding(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let k, let ctx):
            return "missing key '\((ctx.codingPath + [k]).map(\.stringValue).joined(separator: "."))'"
        case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx):
            return "wrong type at '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted(let ctx):
            return ctx.debugDescription
        default:
            return "\(error)"
        }
    }

    /// The body of `menagerie _probe PATH`: one JSON line on stdout.
    public static func probeReport(path: String) -> ProbeReport {
        let start = DispatchTime.now().uptimeNanoseconds
        switch open(path: path) {
        case .success(let o):
            let micros = Double(DispatchTime.now().uptimeNanoseconds - start) / 1000
            return ProbeReport(ok: true, reason: nil, abi: o.abi, toolchain: o.toolchain, metadata: o.metadata, handshakeMicros: micros)
        case .failure(let e):
            return .failed(e.message)
        }
    }
}

/// Runs `executable _probe PATH` in a child process with a timeout: a crash, hang or abort in a
/// plugin's load-time code marks that file failed and the host lives on.
public struct ChildProbe: Sendable {
    public var executable: String
    public var timeout: Double

    public init(executable: String = SearchPath.executablePath, timeout: Double = ChildProbe.defaultTimeout) {
        self.executable = executable
        self.timeout = timeout
    }

    /// `MENAGERIE_SCAN_TIMEOUT` seconds, default 10.
    public static var defaultTimeout: Double {
        ProcessInfo.processInfo.environment["MENAGERIE_SCAN_TIMEOUT"].flatMap(Double.init) ?? 10
    }

    /// Probes several files, at most `parallel` children at a time.
    public func probe(_ paths: [String], parallel: Int = 4) -> [String: ProbeReport] {
        var results: [String: ProbeReport] = [:]
        var pending = paths[...]
        var running: [(path: String, child: SpawnedChild)] = []
        while !pending.isEmpty || !running.isEmpty {
            while running.count < parallel, let path = pending.popFirst() {
                do { running.append((path, try SpawnedChild(executable, ["_probe", path], reportPipe: true))) } catch {
                    results[path] = .failed("could not start the scan process: \(error)")
                }
            }
            guard !running.isEmpty else { break }
            let (path, child) = running.removeFirst()
            results[path] = report(for: child)
        }
        return results
    }

    func report(for child: SpawnedChild) -> ProbeReport {
        let outcome = child.wait(timeout: timeout)
        switch outcome.termination {
        case .timedOut:
            var r = ProbeReport.failed(
                "timed out after \(timeout) s while loading (a hang in a load-time constructor?); "
                    + "raise MENAGERIE_SCAN_TIMEOUT if the plugin is just slow (it is scanned again next time)")
            r.transient = true
            return r
        case .signal(let sig):
            let name = signalName(sig)
            return .failed("crashed while loading (signal \(sig), \(name))" + lastLine(outcome.stderr))
        case .exit(let code):
            if outcome.reportTruncated {
                return .failed("the scan report exceeded \(SpawnedChild.Caps().report >> 20) MiB: refused")
            }
            // The report is the first line on the report pipe; anything after it is not the scanner's.
            if let line = outcome.report.split(separator: UInt8(ascii: "\n"), maxSplits: 1).first,
                let report = try? JSONValue.decode(ProbeReport.self, from: String(decoding: line, as: UTF8.self))
            {
                return report
            }
            return .failed("the scan process exited with status \(code) without a report" + lastLine(outcome.stderr))
        }
    }

    func lastLine(_ s: String) -> String {
        guard let last = s.split(separator: "\n").last(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else { return "" }
        return ": " + last.prefix(300)
    }
}

func signalName(_ sig: Int32) -> String {
    [
        SIGSEGV: "SIGSEGV", SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGILL: "SIGILL", SIGFPE: "SIGFPE",
        SIGKILL: "SIGKILL", SIGTRAP: "SIGTRAP", SIGTERM: "SIGTERM",
    ][sig] ?? "signal \(sig)"
}
