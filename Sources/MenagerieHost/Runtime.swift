import CMenagerie
import Foundation
import Logging
import MenagerieKit
import Synchronization
import Tensors

/// Set by the SIGINT handler (and by tests); plugins see it through `is_cancelled`.
public let cancellationFlag = Atomic<Bool>(false)

/// The result of one invocation, with tensors copied out of the callee's memory.
public struct InvocationResult: Sendable {
    public let result: JSONValue
    public let tensors: [(name: String, tensor: Tensor)]
    /// The files the call wrote in its scratch folder.
    public let artifacts: [Artifact]

    public init(result: JSONValue, tensors: [(name: String, tensor: Tensor)] = [], artifacts: [Artifact] = []) {
        self.result = result
        self.tensors = tensors
        self.artifacts = artifacts
    }
}

/// A file an invocation wrote: where it is now, and its path relative to the scratch folder (kept
/// below the run's output folder, so a plugin can lay out `images/<class>/<file>.png` trees).
public struct Artifact: Sendable, Equatable {
    public let path: String
    public let name: String
    public init(path: String, name: String) {
        self.path = path
        self.name = name
    }
}

/// The in-process side of the host: loads plugins for use, implements the host-services table,
/// routes invocations (including plugin → host → plugin) and responses.
///
/// State ownership: the settings below live in `settings` (a Mutex); the tables of loaded plugins,
/// handles and responses in `mutex` (an NSRecursiveLock, because a plugin's call through the host
/// re-enters the runtime on the same thread).
// @unchecked: every mutable field is behind `settings` (Mutex) or `mutex` (recursive lock); the rest is `let`.
public final class Runtime: @unchecked Sendable {
    public let registry: Registry
    public let seed: UInt64
    public let scratchRoot: String
    public let lock: (file: LockFile, path: String)?

    private struct Settings {
        var logger: Logger
        weak var progressSink: ProgressSink?
        var isolation: Isolation.Policy = .fromEnvironment
        var isolationLimits: Isolation.Limits = .fromEnvironment
        var safeMode = false
    }
    private let settings: Mutex<Settings>

    /// Where plugins' `log` messages and the host's warnings go.
    public var logger: Logger {
        get { settings.withLock { $0.logger } }
        set { settings.withLock { $0.logger = newValue } }
    }
    /// Receives progress, parts, metric rows and streamed text (held weakly).
    public var progressSink: ProgressSink? {
        get { settings.withLock { $0.progressSink } }
        set { settings.withLock { $0.progressSink = newValue } }
    }
    /// Which plugins run in a child process (`Isolation`), and its limits.
    public var isolation: Isolation.Policy {
        get { settings.withLock { $0.isolation } }
        set { settings.withLock { $0.isolation = newValue } }
    }
    public var isolationLimits: Isolation.Limits {
        get { settings.withLock { $0.isolationLimits } }
        set { settings.withLock { $0.isolationLimits = newValue } }
    }
    /// Passed to the isolation child so it loads plugins under the same rules.
    public var safeMode: Bool {
        get { settings.withLock { $0.safeMode } }
        set { settings.withLock { $0.safeMode = newValue } }
    }
    private var isolatedChild: IsolatedChild? // under `mutex`

    final class LoadedPlugin {
        let entry: RegistryEntry
        let opened: Handshake.Opened
        var state: UnsafeMutableRawPointer?
        let services: UnsafeMutablePointer<mng_host_services>
        let metadataCString: UnsafeMutablePointer<CChar>
        init(entry: RegistryEntry, opened: Handshake.Opened, services: UnsafeMutablePointer<mng_host_services>) {
            self.entry = entry
            self.opened = opened
            self.services = services
            self.metadataCString = strdup(opened.metadataText)
        }
    }

    /// A stable pointer handed to plugins as `mng_component_handle *`. `plugin` is nil for a
    /// component whose plugin runs isolated (it is never loaded into this process).
    final class Handle {
        let plugin: LoadedPlugin?
        let entry: RegistryEntry
        let component: String
        /// "component 'x' (plugin y, path)" as a C string, for the exit() guard; never freed.
        let label: UnsafeMutablePointer<CChar>
        let metadataCString: UnsafeMutablePointer<CChar>
        init(plugin: LoadedPlugin?, entry: RegistryEntry, component: String) {
            self.plugin = plugin
            self.entry = entry
            self.component = component
            self.label = strdup("component '\(component)' (plugin \(entry.name), \(entry.path))")
            self.metadataCString =
                plugin?.metadataCString
                ?? strdup(entry.metadata.flatMap { try? String(decoding: JSONEncoder().encode($0), as: UTF8.self) } ?? "{}")
        }
    }

    /// Who frees a response handed out through the services table.
    enum ResponseOwner {
        case plugin(LoadedPlugin)
        /// A response the host built from an isolated call: its strings and tensors.
        case host(TensorArena, [UnsafeMutablePointer<CChar>])
    }

    private let mutex = NSRecursiveLock()
    private var loaded: [String: LoadedPlugin] = [:]
    private var handles: [String: Handle] = [:]
    private var pendingResponses: [UnsafeMutableRawPointer: ResponseOwner] = [:]
    private var strings: [UnsafeMutablePointer<CChar>] = []
    private var current: [String] = []

    public init(
        registry: Registry, seed: UInt64 = 0, scratchRoot: String? = nil,
        lock: (file: LockFile, path: String)? = nil, logger: Logger = Logger(label: "menagerie")
    ) throws {
        self.registry = registry
        self.seed = seed
        self.lock = lock
        self.settings = Mutex(Settings(logger: logger))
        let created = scratchRoot == nil
        if let scratchRoot {
            self.scratchRoot = scratchRoot
        } else {
            var template = Array(((NSTemporaryDirectory() as NSString).appendingPathComponent("menagerie-run-XXXXXX")).utf8CString)
            guard let p = mkdtemp(&template) else { throw HostError(.failed, "cannot create a scratch folder in \(NSTemporaryDirectory())") }
            self.scratchRoot = String(cString: p)
        }
        try FileManager.default.createDirectory(atPath: self.scratchRoot, withIntermediateDirectories: true)
        if created {
            Lifecycle.markOwned(self.scratchRoot)
            Lifecycle.removeOnForcedExit(self.scratchRoot)
        }
        Lifecycle.installExitGuard()
    }

    /// Shuts every loaded plugin down (the images stay mapped: Swift images are never dlclose'd).
    public func shutdown() {
        mutex.lock()
        defer { mutex.unlock() }
        isolatedChild?.shutdown()
        isolatedChild = nil
        for p in loaded.values {
            if let s = p.state { p.opened.descriptor.pointee.shutdown?(s) }
            p.state = nil
        }
    }

    /// Removes the scratch folder.
    public func removeScratch() {
        try? FileManager.default.removeItem(atPath: scratchRoot)
        Lifecycle.forget(scratchRoot)
    }

    // MARK: loading

    func plugin(for entry: RegistryEntry) throws -> LoadedPlugin {
        mutex.lock()
        defer { mutex.unlock() }
        if let p = loaded[entry.path] { return p }
        if let problem = Trust.problem(path: entry.path) { throw HostError(.refused, "\(entry.path): \(problem)") }
        if let lock, !entry.builtIn {
            let digest = try FileDigest.sha256(path: entry.path)
            if let p = lock.file.problem(path: entry.path, digest: digest, lockPath: lock.path) {
                throw HostError(.refused, "\(entry.path): \(p)")
            }
        }
        let opened: Handshake.Opened
        switch Handshake.open(path: entry.path) {
        case .success(let o): opened = o
        case .failure(let e): throw HostError(e.kind, "\(entry.path): \(e.message)")
        }
        let name = opened.metadata.name
        let scratch = scratchRoot + "/" + name
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let services = UnsafeMutablePointer<mng_host_services>.allocate(capacity: 1)
        services.initialize(to: makeServices(scratch: keep(scratch)))
        let p = LoadedPlugin(entry: entry, opened: opened, services: services)
        var state: UnsafeMutableRawPointer?
        var error: UnsafePointer<CChar>?
        let status = opened.descriptor.pointee.`init`!(services, &state, &error)
        guard status == 0 else {
            let message = error.map { String(cString: $0) } ?? "status \(status)"
            throw HostError(.failed, "plugin '\(name)' (\(entry.path)) failed to initialise: \(message)")
        }
        p.state = state
        loaded[entry.path] = p
        return p
    }

    private func keep(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return UnsafePointer(p)
    }

    func handle(for id: String) throws -> Handle {
        mutex.lock()
        defer { mutex.unlock() }
        if let h = handles[id] { return h }
        let (entry, _) = try registry.component(id)
        let h = Handle(plugin: isolates(entry) ? nil : try plugin(for: entry), entry: entry, component: id)
        handles[id] = h
        return h
    }

    /// Whether `entry`'s plugin runs in the isolation child.
    public func isolates(_ entry: RegistryEntry) -> Bool {
        switch isolation {
        case .always: return true
        case .never: return false
        case .auto: return !entry.builtIn
        }
    }

    /// The isolation child, started on first use and again after it died.
    func child() throws -> IsolatedChild {
        mutex.lock()
        defer { mutex.unlock() }
        if let c = isolatedChild, c.alive { return c }
        let c = try IsolatedChild(
            executable: SearchPath.executablePath, scratchRoot: scratchRoot, seed: seed, safeMode: safeMode,
            lockPath: lock?.path, limits: isolationLimits)
        isolatedChild = c
        return c
    }

    /// An isolated call, with progress reported as the component's own.
    func invokeIsolated(_ h: Handle, operation: String, options: JSONValue, inputs: [(name: String, tensor: Tensor)]) throws -> InvocationResult {
        let c = try child()
        defer { progressSink?.ended(component: h.component) }
        return try c.invoke(
            component: h.component, operation: operation, options: options, inputs: inputs,
            timeout: isolationLimits.timeout, events: progressSink)
    }

    /// The scratch folder of the plugin providing `component` (artifacts are written there).
    public func scratchDirectory(of component: String) throws -> String {
        let h = try handle(for: component)
        if let p = h.plugin { return String(cString: p.services.pointee.scratch_dir) }
        return scratchRoot + "/" + h.entry.name
    }

    // MARK: invoking

    /// Invokes `operation` of `component` with JSON options and tensors; copies the results out.
    public func invoke(
        _ component: String, operation: String, options: JSONValue = .object([:]),
        inputs: [(name: String, tensor: Tensor)] = []
    ) throws -> InvocationResult {
        let h = try handle(for: component)
        guard let plugin = h.plugin else { return try invokeIsolated(h, operation: operation, options: options, inputs: inputs) }
        let arena = TensorArena(inputs)
        var response = mng_response()
        response.struct_size = UInt32(MemoryLayout<mng_response>.size)
        let status = options.compactText.withCString { opts -> Int32 in
            var request = mng_request(
                struct_size: UInt32(MemoryLayout<mng_request>.size), reserved: 0, options_json: opts,
                tensors: UnsafePointer(arena.array), tensor_count: UInt64(inputs.count))
            return call(h, operation: operation, request: &request, response: &response)
        }
        defer { plugin.opened.descriptor.pointee.free_response!(plugin.state, &response) }
        withExtendedLifetime(arena) {}
        guard status == 0 else {
            let message = response.error.map { String(cString: $0) } ?? "failed with status \(status)"
            if status == Int32(MNG_CANCELLED.rawValue) { throw HostError(.failed, "'\(component)' \(operation): cancelled by the user") }
            let kind: HostError.Kind = status == Int32(MNG_INVALID_ARGUMENT.rawValue) || status == Int32(MNG_NOT_FOUND.rawValue) ? .usage : .failed
            throw HostError(kind, "'\(component)' \(operation): \(message)")
        }
        let result: JSONValue
        do {
            result = try response.result_json.map { try JSONValue.parse(String(cString: $0), source: "the result of '\(component)'") } ?? .object([:])
        } catch { throw HostError(.failed, "\(error)") }
        let tensors: [(name: String, tensor: Tensor)]
        do {
            tensors = try borrowTensors(response.tensors, count: response.tensor_count, owner: component).map { ($0.name, $0.tensor.owned()) }
        } catch { throw HostError(.failed, "'\(component)' returned a malformed tensor: \(error)") }
        let scratch = String(cString: plugin.services.pointee.scratch_dir)
        var artifacts: [Artifact] = []
        for a in result["artifacts"]?.arrayValue?.compactMap(\.stringValue) ?? [] {
            let full = (scratch as NSString).appendingPathComponent(a)
            guard !a.hasPrefix("/"), !a.split(separator: "/").contains(".."), FileManager.default.fileExists(atPath: full) else {
                throw HostError(.failed, "'\(component)' named an artifact '\(a)' that is not a file in its scratch folder \(scratch)")
            }
            artifacts.append(Artifact(path: full, name: (a as NSString).standardizingPath))
        }
        return InvocationResult(result: result, tensors: tensors, artifacts: artifacts)
    }

    /// The raw call, recording who owns the response and which component is running.
    func call(_ h: Handle, operation: String, request: UnsafePointer<mng_request>, response: UnsafeMutablePointer<mng_response>) -> Int32 {
        guard let plugin = h.plugin else { return callIsolated(h, operation: operation, request: request, response: response) }
        mutex.lock()
        current.append(h.component)
        mutex.unlock()
        let outer = Lifecycle.invokingLabel.exchange(Int(bitPattern: h.label), ordering: .relaxed)
        Lifecycle.invoking.add(1, ordering: .relaxed)
        let status = plugin.opened.descriptor.pointee.invoke!(plugin.state, h.component, operation, request, response)
        Lifecycle.invoking.subtract(1, ordering: .relaxed)
        Lifecycle.invokingLabel.store(outer, ordering: .relaxed)
        mutex.lock()
        current.removeLast()
        mutex.unlock()
        progressSink?.ended(component: h.component)
        return status
    }

    /// A plugin → host → isolated plugin call: the response is built (and later freed) by the host.
    func callIsolated(_ h: Handle, operation: String, request: UnsafePointer<mng_request>, response: UnsafeMutablePointer<mng_response>) -> Int32 {
        var strings: [UnsafeMutablePointer<CChar>] = []
        func text(_ s: String) -> UnsafePointer<CChar> {
            let p = strdup(s)!
            strings.append(p)
            return UnsafePointer(p)
        }
        var arena = TensorArena([])
        let status: Int32
        do {
            let inputs = try borrowTensors(request.pointee.tensors, count: request.pointee.tensor_count, owner: "a request to '\(h.component)'")
            let options = try JSONValue.parse(
                request.pointee.options_json.map { String(cString: $0) } ?? "{}", source: "the options of a request to '\(h.component)'")
            let r = try invokeIsolated(h, operation: operation, options: options, inputs: inputs)
            arena = TensorArena(r.tensors)
            response.pointee.result_json = text(r.result.compactText)
            response.pointee.tensors = UnsafePointer(arena.array)
            response.pointee.tensor_count = UInt64(r.tensors.count)
            status = 0
        } catch let e as HostError {
            response.pointee.error = text(e.message)
            status = Int32(e.kind == .usage ? MNG_INVALID_ARGUMENT.rawValue : e.kind == .notFound ? MNG_NOT_FOUND.rawValue : MNG_ERROR.rawValue)
        } catch {
            response.pointee.error = text("\(error)")
            status = Int32(MNG_INVALID_ARGUMENT.rawValue)
        }
        response.pointee.status = status
        mutex.lock()
        pendingResponses[UnsafeMutableRawPointer(response)] = .host(arena, strings)
        mutex.unlock()
        return status
    }

    var currentComponent: String {
        mutex.lock()
        defer { mutex.unlock() }
        return current.last ?? ""
    }

    // MARK: the host-services table

    private func makeServices(scratch: UnsafePointer<CChar>) -> mng_host_services {
        mng_host_services(
            struct_size: UInt32(MemoryLayout<mng_host_services>.size),
            abi_major: abiVersion.major, abi_minor: abiVersion.minor, reserved: 0,
            context: Unmanaged.passUnretained(self).toOpaque(),
            log: { ctx, level, message in
                let rt = Runtime.from(ctx)
                let text = message.map { String(cString: $0) } ?? ""
                let lvl: Logger.Level = [0: .trace, 1: .debug, 2: .info, 3: .warning, 4: .error][Int(level)] ?? .info
                rt.logger.log(level: lvl, "\(text)", metadata: ["component": "\(rt.currentComponent)"])
            },
            progress: { ctx, done, total, label in
                let rt = Runtime.from(ctx)
                rt.progressSink?.progress(
                    component: rt.currentComponent, done: done, total: total,
                    label: label.map { String(cString: $0) } ?? "")
            },
            is_cancelled: { _ in cancellationFlag.load(ordering: .relaxed) ? 1 : 0 },
            resolve: { ctx, id, errorOut in
                let rt = Runtime.from(ctx)
                let name = id.map { String(cString: $0) } ?? ""
                do {
                    let h = try rt.handle(for: name)
                    return OpaquePointer(Unmanaged.passUnretained(h).toOpaque())
                } catch {
                    rt.mutex.lock()
                    errorOut?.pointee = rt.keep("\(error)")
                    rt.mutex.unlock()
                    return nil
                }
            },
            describe: { _, handle in
                guard let handle else { return nil }
                let h = Unmanaged<Handle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
                return UnsafePointer(h.metadataCString)
            },
            invoke: { ctx, handle, operation, request, response in
                let rt = Runtime.from(ctx)
                guard let handle, let request, let response else { return Int32(MNG_INVALID_ARGUMENT.rawValue) }
                let h = Unmanaged<Handle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
                let status = rt.call(h, operation: operation.map { String(cString: $0) } ?? "", request: request, response: response)
                if let plugin = h.plugin {
                    rt.mutex.lock()
                    rt.pendingResponses[UnsafeMutableRawPointer(response)] = .plugin(plugin)
                    rt.mutex.unlock()
                }
                return status
            },
            free_response: { ctx, response in
                let rt = Runtime.from(ctx)
                guard let response else { return }
                rt.mutex.lock()
                let owner = rt.pendingResponses.removeValue(forKey: UnsafeMutableRawPointer(response))
                rt.mutex.unlock()
                switch owner {
                case .plugin(let p): p.opened.descriptor.pointee.free_response!(p.state, response)
                case .host(let arena, let strings):
                    withExtendedLifetime(arena) {}
                    strings.forEach { free($0) }
                case nil: break
                }
            },
            scratch_dir: scratch,
            seed: seed,
            phase: { ctx, index, count, name in
                let rt = Runtime.from(ctx)
                guard count > 0, (1...count).contains(index) else { return }
                rt.progressSink?.phase(component: rt.currentComponent, index: index, count: count, name: name.map { String(cString: $0) } ?? "")
            },
            record: { ctx, unit, step, count, names, values in
                let rt = Runtime.from(ctx)
                // Nothing the plugin passed is trusted: the count is bounded before any pointer is read.
                guard count > 0, count <= UInt64(MetricsRow.maxMetrics), let names, let values else { return }
                let n = Int(count)
                let row = MetricsRow.checked(
                    unit: unit.map { String(cString: $0) }, step: step,
                    names: (0..<n).map { names[$0].map { String(cString: $0) } },
                    values: (0..<n).map { values[$0] })
                if let row { rt.progressSink?.record(component: rt.currentComponent, row: row) }
            },
            emit_text: { ctx, text in
                let rt = Runtime.from(ctx)
                guard let text else { return }
                let string = String(cString: text)
                if let sink = rt.progressSink {
                    sink.text(component: rt.currentComponent, string)
                } else {
                    rt.logger.info("\(string)", metadata: ["component": "\(rt.currentComponent)"])
                }
            })
    }

    static func from(_ ctx: UnsafeMutableRawPointer?) -> Runtime {
        Unmanaged<Runtime>.fromOpaque(ctx!).takeUnretainedValue()
    }
}
