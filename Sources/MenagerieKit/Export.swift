import CMenagerie
import Foundation
import Tensors

/// A plugin: its identity and its components. Export it with one line:
///
/// ```swift
/// @_cdecl("menagerie_plugin_v1")
/// public func menageriePlugin() -> UnsafeRawPointer { export(MyPlugin.self) }
/// ```
public protocol Plugin {
    /// Lower-case name, unique among installed plugins.
    static var name: String { get }
    static var version: String { get }
    static var summary: String { get }
    /// SPDX identifier, e.g. "MIT".
    static var license: String { get }
    static var authors: [String] { get }
    /// The paper this plugin implements, if any.
    static var paper: Paper? { get }
    static var components: [any Component.Type] { get }
}

extension Plugin {
    public static var paper: Paper? { nil }
    public static var metadata: PluginMetadata {
        PluginMetadata(
            name: name, version: version, summary: summary, license: license, authors: authors,
            paper: paper, components: components.map { $0.info })
    }
}

/// The state behind one `init` of this image's plugin.
// @unchecked: `instances` is filled in init and only read afterwards; the host is an immutable table.
final class PluginState: @unchecked Sendable {
    let host: PluginHost
    var instances: [String: any Component] = [:]
    init(host: PluginHost, components: [any Component.Type]) {
        self.host = host
        for c in components { instances[c.id] = c.init() }
    }
}

/// The response bookkeeping freed by `free_response`.
final class ResponseBox {
    let arena: TensorArena
    var cStrings: [UnsafeMutablePointer<CChar>] = []
    init(_ tensors: [(name: String, tensor: Tensor)]) { arena = TensorArena(tensors) }
    func keep(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        cStrings.append(p)
        return UnsafePointer(p)
    }
    deinit { cStrings.forEach { free($0) } }
}

/// This image's exported plugin. Each plugin image links its own copy of the SDK, so this global
/// is per plugin.
// nonisolated(unsafe): both are written once, under `exportLock`, before the descriptor is handed out, and only read afterwards.
nonisolated(unsafe) private var exportedType: (any Plugin.Type)?
nonisolated(unsafe) private var exportedDescriptor: UnsafeMutablePointer<mng_plugin_descriptor>?
private let exportLock = NSLock()

/// Builds (once) and returns this image's `mng_plugin_descriptor`.
public func export(_ plugin: any Plugin.Type) -> UnsafeRawPointer {
    exportLock.lock()
    defer { exportLock.unlock() }
    if let d = exportedDescriptor { return UnsafeRawPointer(d) }
    exportedType = plugin
    let metadata = String(decoding: try! JSONEncoder.sorted.encode(plugin.metadata), as: UTF8.self)
    let d = UnsafeMutablePointer<mng_plugin_descriptor>.allocate(capacity: 1)
    d.initialize(
        to: mng_plugin_descriptor(
            abi_major: abiVersion.major, abi_minor: abiVersion.minor,
            struct_size: UInt32(MemoryLayout<mng_plugin_descriptor>.size), reserved: 0,
            toolchain: UnsafePointer(strdup(swiftToolchain)), metadata_json: UnsafePointer(strdup(metadata)),
            init: { services, state, error in
                guard let type = exportedType, let state else { return Int32(MNG_ERROR.rawValue) }
                let s = PluginState(host: PluginHost(services: services), components: type.components)
                state.pointee = Unmanaged.passRetained(s).toOpaque()
                error?.pointee = nil
                return Int32(MNG_OK.rawValue)
            },
            invoke: { state, component, operation, request, response in
                guard let response else { return Int32(MNG_INVALID_ARGUMENT.rawValue) }
                guard let state else {
                    return fail(response, MenagerieError.failed("invoke called before init"))
                }
                let s = Unmanaged<PluginState>.fromOpaque(state).takeUnretainedValue()
                let componentID = component.map { String(cString: $0) } ?? ""
                let operationName = operation.map { String(cString: $0) } ?? ""
                do {
                    guard let instance = s.instances[componentID] else {
                        throw MenagerieError.notFound(
                            "this plugin has no component '\(componentID)'."
                                + didYouMean(componentID, in: Array(s.instances.keys)))
                    }
                    guard let request else { throw MenagerieError.invalidArgument("request is NULL") }
                    let optionsText = request.pointee.options_json.map { String(cString: $0) } ?? "{}"
                    let options = try JSONValue.parse(optionsText, source: "options of '\(componentID)'")
                    let tensors = try borrowTensors(request.pointee.tensors, count: request.pointee.tensor_count, owner: componentID)
                    let inputs = Inputs(Dictionary(tensors, uniquingKeysWith: { a, _ in a }), component: componentID)
                    let out = try perform(
                        instance, operation: operationName.isEmpty ? type(of: instance).operations[0].name : operationName,
                        options: options, inputs: inputs, host: s.host)
                    var result = out.result
                    if !out.artifacts.isEmpty, case .object(var o) = result {
                        o["artifacts"] = .array(out.artifacts.map { .string($0) })
                        result = .object(o)
                    }
                    let box = ResponseBox(out.tensors)
                    response.pointee.status = Int32(MNG_OK.rawValue)
                    response.pointee.error = nil
                    response.pointee.result_json = box.keep(result.compactText)
                    response.pointee.tensors = UnsafePointer(box.arena.array)
                    response.pointee.tensor_count = UInt64(out.tensors.count)
                    response.pointee.owner = Unmanaged.passRetained(box).toOpaque()
                    return Int32(MNG_OK.rawValue)
                } catch {
                    return fail(response, error)
                }
            },
            free_response: { _, response in
                guard let response, let owner = response.pointee.owner else { return }
                Unmanaged<ResponseBox>.fromOpaque(owner).release()
                response.pointee.owner = nil
                response.pointee.tensors = nil
                response.pointee.tensor_count = 0
                response.pointee.result_json = nil
                response.pointee.error = nil
            },
            shutdown: { state in
                guard let state else { return }
                Unmanaged<PluginState>.fromOpaque(state).release()
            }))
    exportedDescriptor = d
    return UnsafeRawPointer(d)
}

/// Opens the component's concrete type to decode its options and run the operation. The reserved
/// operation `benchmark` of a component that declares benchmarks runs them (`Benchmark.swift`).
private func perform<C: Component>(_ component: C, operation: String, options: JSONValue, inputs: Inputs, host: PluginHost) throws -> Response {
    if operation == "benchmark", !C.benchmarks.isEmpty, !C.operations.contains(where: { $0.name == "benchmark" }) {
        return try runBenchmark(component, options: options, host: host)
    }
    let decoded = try C.Options.decode(options, component: C.id)
    let request = Request(options: decoded, inputs: inputs, host: host, component: C.id, operation: operation)
    return try component.perform(operation, request)
}

private func fail(_ response: UnsafeMutablePointer<mng_response>, _ error: Error) -> Int32 {
    let typed =
        error as? MenagerieError
        ?? (error is JSONParseError ? MenagerieError.invalidArgument("\(error)") : MenagerieError.failed("\(error)"))
    let box = ResponseBox([])
    response.pointee.status = typed.status.rawValue
    response.pointee.error = box.keep(typed.message)
    response.pointee.result_json = nil
    response.pointee.tensors = nil
    response.pointee.tensor_count = 0
    response.pointee.owner = Unmanaged.passRetained(box).toOpaque()
    return typed.status.rawValue
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
