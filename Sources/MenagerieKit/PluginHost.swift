import CMenagerie
import Foundation
import Logging
import Tensors

/// The host's services as a plugin sees them: logging, progress, cancellation, other components,
/// a scratch folder and the run's seed. Wraps the `mng_host_services` table handed to `init`.
// @unchecked: a pointer to the host's table, which is immutable and valid until shutdown; the ABI makes every service thread-safe.
public struct PluginHost: @unchecked Sendable {
    public let services: UnsafePointer<mng_host_services>?

    public init(services: UnsafePointer<mng_host_services>?) { self.services = services }

    /// The run's seed (`--seed`); 0 when there is no host.
    public var seed: UInt64 { services?.pointee.seed ?? 0 }

    /// A writable folder private to this plugin for the current process. Files named in a
    /// response's `artifacts` are moved from here into the run's output folder.
    public var scratchDirectory: String {
        if let p = services?.pointee.scratch_dir { return String(cString: p) }
        return NSTemporaryDirectory()
    }

    public func log(_ level: Logger.Level, _ message: String) {
        guard let s = services?.pointee, let log = s.log else { return }
        log(s.context, Int32(Self.abiLevel(level).rawValue), message)
    }

    /// Reports progress: `done` of `total` units (total ≤ 0 when unknown).
    public func progress(_ done: Int, of total: Int, _ label: String = "") {
        guard let s = services?.pointee, let progress = s.progress else { return }
        progress(s.context, Int64(done), Int64(total), label)
    }

    /// Says the operation is now in part `index` (1-based) of `count`, e.g. `phase(3, of: 5, "net 3")`
    /// before training the third of five networks: the CLI shows one overall bar ("part 3/5 · net 3")
    /// with an ETA for the whole run, and log.csv names the part of every recorded row. A host older
    /// than ABI 1.1 does not have the service; the call then does nothing.
    public func phase(_ index: Int, of count: Int, _ name: String = "") {
        guard let p = services, p.pointee.struct_size >= Self.servicesSize(through: \.phase), let phase = p.pointee.phase else { return }
        phase(p.pointee.context, Int64(index), Int64(count), name)
    }

    /// Records one row of metrics at `step` (counted in `unit`: "epoch", "step"), in the given order:
    /// `record(epoch: 3, ["loss": 0.41, "accuracy": 0.88])`. The CLI prints it as a line on stderr that
    /// stays in the scrollback, and writes it to log.csv in the run's output folder. Nothing happens
    /// on a host older than ABI 1.1.
    public func record(step: Int, unit: String = "step", _ metrics: KeyValuePairs<String, Double>) {
        guard let p = services, p.pointee.struct_size >= Self.servicesSize(through: \.record), let record = p.pointee.record,
            !metrics.isEmpty
        else { return }
        let names: [UnsafeMutablePointer<CChar>?] = metrics.map { strdup($0.key) }
        defer { names.forEach { free($0) } }
        let values = metrics.map(\.value)
        names.map { $0.map { UnsafePointer($0) } }.withUnsafeBufferPointer { n in
            values.withUnsafeBufferPointer { v in
                record(p.pointee.context, unit, Int64(step), UInt64(values.count), n.baseAddress, v.baseAddress)
            }
        }
    }

    /// `record(step:unit:_:)` with the unit "epoch" (1-based epochs, as people count them).
    public func record(epoch: Int, _ metrics: KeyValuePairs<String, Double>) {
        record(step: epoch, unit: "epoch", metrics)
    }

    /// Streams text to the user as it is produced (e.g. tokens as a model generates them), written
    /// as given, without a newline added. The CLI writes it to stdout in text mode and to stderr with
    /// `--json` (stdout stays one JSON document). A plugin never prints itself. On a host older than
    /// ABI 1.2 nothing happens: return the whole text in the result too.
    public func emitText(_ text: String) {
        guard let p = services, p.pointee.struct_size >= Self.servicesSize(through: \.emit_text),
            let emit = p.pointee.emit_text, !text.isEmpty
        else { return }
        emit(p.pointee.context, text)
    }

    /// Whether the host has the `emitText` service (ABI 1.2 and later).
    public var canEmitText: Bool {
        guard let p = services else { return false }
        return p.pointee.struct_size >= Self.servicesSize(through: \.emit_text) && p.pointee.emit_text != nil
    }

    /// The table size that covers a field (a 1.0 host hands a shorter table than a 1.1 one).
    static func servicesSize<T>(through field: KeyPath<mng_host_services, T>) -> UInt32 {
        UInt32(MemoryLayout<mng_host_services>.offset(of: field)! + MemoryLayout<T>.size)
    }

    public var isCancelled: Bool {
        guard let s = services?.pointee, let f = s.is_cancelled else { return false }
        return f(s.context) != 0
    }

    /// Throws `MenagerieError.cancelled` when the user asked to stop. Call it in long loops.
    public func checkCancelled() throws {
        if isCancelled { throw MenagerieError.cancelled }
    }

    /// A swift-log logger whose records go to the host's log.
    public func logger(label: String) -> Logger {
        Logger(label: label) { _ in HostLogHandler(host: self) }
    }

    /// Finds a component of any plugin. With `kind`, also checks that it is of that kind.
    public func resolve(_ id: String, kind: Kind? = nil) throws -> ComponentProxy {
        guard let s = services?.pointee, let resolve = s.resolve else {
            throw MenagerieError.unsupported("no host services: '\(id)' cannot be resolved outside a host")
        }
        var error: UnsafePointer<CChar>?
        guard let handle = resolve(s.context, id, &error) else {
            throw MenagerieError.notFound(error.map { String(cString: $0) } ?? "no component '\(id)'")
        }
        let proxy = ComponentProxy(id: id, handle: handle, host: self)
        if let kind, proxy.kind != kind.rawValue {
            throw MenagerieError.invalidArgument("'\(id)' is a \(proxy.kind), not a \(kind.rawValue)")
        }
        return proxy
    }

    /// Resolves a component another one needs, naming what needs it when it is missing: "concord
    /// with base=d3hr needs component 'd3hr' (plugin d3hr), which is not installed here: …". The
    /// composition rule: methods find each other through the host, and a missing one is said plainly.
    public func resolve(_ id: String, kind: Kind? = nil, neededBy purpose: String, plugin: String? = nil) throws -> ComponentProxy {
        do { return try resolve(id, kind: kind) } catch let e as MenagerieError where e.status == .notFound {
            let from = plugin.map { " (plugin \($0))" } ?? ""
            throw MenagerieError.notFound("\(purpose) needs component '\(id)'\(from), which is not installed here: \(e.message)")
        }
    }

    static func abiLevel(_ level: Logger.Level) -> mng_log_level {
        switch level {
        case .trace: MNG_LOG_TRACE
        case .debug: MNG_LOG_DEBUG
        case .info, .notice: MNG_LOG_INFO
        case .warning: MNG_LOG_WARNING
        case .error, .critical: MNG_LOG_ERROR
        }
    }
}

/// A swift-log handler that forwards to the host services' `log`.
public struct HostLogHandler: LogHandler {
    let host: PluginHost
    public var logLevel: Logger.Level = .trace
    public var metadata: Logger.Metadata = [:]
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    public func log(event: LogEvent) {
        host.log(event.level, "\(event.message)")
    }
}

/// A component of another plugin, called through the host as if it were local.
// @unchecked: immutable; the handle is valid until the process exits and is only passed back to the thread-safe host services.
public struct ComponentProxy: @unchecked Sendable {
    public let id: String
    let handle: OpaquePointer
    let host: PluginHost

    init(id: String, handle: OpaquePointer, host: PluginHost) {
        self.id = id
        self.handle = handle
        self.host = host
    }

    /// The metadata of the plugin providing this component.
    public var pluginMetadata: PluginMetadata? {
        guard let s = host.services?.pointee, let describe = s.describe, let text = describe(s.context, handle) else { return nil }
        return try? JSONValue.decode(PluginMetadata.self, from: String(cString: text))
    }

    public var info: ComponentInfo? { pluginMetadata?.components.first { $0.id == id } }
    public var kind: String { info?.kind ?? "unknown" }

    /// The result of a proxied call; its tensors are copies owned by the caller.
    public struct Result: Sendable {
        public let result: JSONValue
        public let tensors: [String: Tensor]
        public let artifacts: [String]
    }

    /// Invokes `operation` with JSON options and named tensors.
    public func invoke(_ operation: String, options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)] = []) throws -> Result {
        guard let s = host.services?.pointee, let invoke = s.invoke, let free = s.free_response else {
            throw MenagerieError.unsupported("no host services to invoke '\(id)'")
        }
        let arena = TensorArena(inputs)
        let optionsText = options.compactText
        var response = mng_response()
        response.struct_size = UInt32(MemoryLayout<mng_response>.size)
        let status = optionsText.withCString { opts -> Int32 in
            var request = mng_request(
                struct_size: UInt32(MemoryLayout<mng_request>.size), reserved: 0,
                options_json: opts, tensors: UnsafePointer(arena.array), tensor_count: UInt64(inputs.count))
            return invoke(s.context, handle, operation, &request, &response)
        }
        defer { free(s.context, &response) }
        withExtendedLifetime(arena) {}
        guard status == Int32(MNG_OK.rawValue) else {
            let message = response.error.map { String(cString: $0) } ?? "'\(id)' \(operation) failed with status \(status)"
            throw MenagerieError(MenagerieError.Status(rawValue: status) ?? .error, message)
        }
        let result = try response.result_json.map { try JSONValue.parse(String(cString: $0), source: "result of '\(id)'") } ?? .object([:])
        var tensors: [String: Tensor] = [:]
        for (name, t) in try borrowTensors(response.tensors, count: response.tensor_count, owner: id) {
            tensors[name] = t.owned()
        }
        let artifacts = result["artifacts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return Result(result: result, tensors: tensors, artifacts: artifacts)
    }

    /// Invokes with `Encodable` options.
    public func invoke(_ operation: String, options: some Encodable, inputs: [(name: String, tensor: Tensor)] = []) throws -> Result {
        try invoke(operation, options: try JSONValue(encoding: options), inputs: inputs)
    }
}

/// Names a kind at the type level (`KindProxy<MetricTag>`); one caseless enum per kind.
public protocol KindTag: Sendable { static var kind: Kind { get } }

/// A typed proxy: a component of a known kind, resolved through the host (which checks the kind)
/// and called by its primary operation. `MetricProxy(host, id: "segmentation-metrics").evaluate(inputs: …)`
/// and so on for every kind; the per-kind names below are one-line aliases of `callPrimary`.
public struct KindProxy<Tag: KindTag>: Sendable {
    public static var kind: Kind { Tag.kind }
    public let component: ComponentProxy
    public init(component: ComponentProxy) { self.component = component }
    /// Resolves `id` through the host and checks that it is of this proxy's kind.
    public init(_ host: PluginHost, id: String) throws { self.init(component: try host.resolve(id, kind: Tag.kind)) }

    /// Calls the kind's primary operation.
    public func callPrimary(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)] = []) throws -> ComponentProxy.Result {
        try component.invoke(Tag.kind.primaryOperation, options: options, inputs: inputs)
    }
}

public enum MetricTag: KindTag { public static let kind = Kind.metric }
public enum DatasetTag: KindTag { public static let kind = Kind.dataset }
public enum BackboneTag: KindTag { public static let kind = Kind.backbone }
public enum ObjectiveTag: KindTag { public static let kind = Kind.objective }
public enum DistillerTag: KindTag { public static let kind = Kind.distiller }
public enum ExplainerTag: KindTag { public static let kind = Kind.explainer }
public enum SegmenterTag: KindTag { public static let kind = Kind.segmenter }
public enum DetectorTag: KindTag { public static let kind = Kind.detector }
public enum GeneratorTag: KindTag { public static let kind = Kind.generator }

public typealias MetricProxy = KindProxy<MetricTag>
public typealias DatasetProxy = KindProxy<DatasetTag>
public typealias BackboneProxy = KindProxy<BackboneTag>
public typealias ObjectiveProxy = KindProxy<ObjectiveTag>
public typealias DistillerProxy = KindProxy<DistillerTag>
public typealias ExplainerProxy = KindProxy<ExplainerTag>
public typealias SegmenterProxy = KindProxy<SegmenterTag>
public typealias DetectorProxy = KindProxy<DetectorTag>
public typealias GeneratorProxy = KindProxy<GeneratorTag>

extension KindProxy where Tag == MetricTag {
    public func evaluate(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)]) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == DatasetTag {
    public func describe(options: JSONValue = .object([:])) throws -> JSONValue { try component.invoke("describe", options: options).result }
    public func batch(options: JSONValue = .object([:])) throws -> ComponentProxy.Result { try callPrimary(options: options) }
}
extension KindProxy where Tag == BackboneTag {
    public func embed(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)]) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == ObjectiveTag {
    public func loss(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)]) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == DistillerTag {
    public func distill(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)] = []) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == ExplainerTag {
    public func explain(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)]) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == SegmenterTag {
    public func segment(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)]) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == DetectorTag {
    public func detect(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)]) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}
extension KindProxy where Tag == GeneratorTag {
    public func generate(options: JSONValue = .object([:]), inputs: [(name: String, tensor: Tensor)] = []) throws -> ComponentProxy.Result {
        try callPrimary(options: options, inputs: inputs)
    }
}

/// A dataset proxy that adds fixed options to every call: the image size a model needs and a
/// user's `datasetOptions` ("key=value" strings, values parsed as JSON when they are). Options given
/// to a call win over the fixed ones.
/// `key=value` strings (an option passed on to another component) as JSON options: values that
/// parse as JSON keep their type (numbers, booleans, lists), the rest are strings.
public func keyValueOptions(_ pairs: [String], option: String) throws -> [String: JSONValue] {
    var out: [String: JSONValue] = [:]
    for pair in pairs {
        let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
        guard kv.count == 2, !kv[0].isEmpty else { throw MenagerieError.invalidArgument("\(option) entries are key=value, got '\(pair)'") }
        out[kv[0]] = (try? JSONValue.parse(kv[1])) ?? .string(kv[1])
    }
    return out
}

public struct DatasetOptionsProxy {
    public let base: DatasetProxy
    public let extra: [String: JSONValue]

    public init(_ host: PluginHost, id: String, size: Int, options: [String]) throws {
        var extra = try keyValueOptions(options, option: "datasetOptions")
        if extra["size"] == nil { extra["size"] = .number(Double(size)) }
        base = try DatasetProxy(host, id: id)
        self.extra = extra
    }

    public func merged(_ options: JSONValue) -> JSONValue {
        var m = options.objectValue ?? [:]
        for (k, v) in extra where m[k] == nil { m[k] = v }
        return .object(m)
    }
    public func describe(options: JSONValue = .object([:])) throws -> JSONValue { try base.describe(options: merged(options)) }
    public func batch(options: JSONValue) throws -> ComponentProxy.Result { try base.batch(options: merged(options)) }
}

/// The name `PluginHost` had before (it collided with `Foundation.Host`).
@available(*, deprecated, renamed: "PluginHost")
public typealias Host = PluginHost
