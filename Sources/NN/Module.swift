import Formats
import Foundation
import Synchronization
import Tensors

/// A trainable tensor. Modules hold parameters; optimizers update them in place.
///
/// Sendable without `@unchecked`: its whole state (the leaf and the decay flag) lives in a Mutex,
/// and every read or write goes through it (an uncontended lock per access, not per element).
public final class Parameter: Sendable {
    private struct State {
        var variable: Variable
        var decays: Bool
        /// Counts replacements and updates of the value: what the bf16 copy is checked against.
        var version = 0
        var bf16: (version: Int, tensor: Tensor)? = nil
    }
    private let state: Mutex<State>

    public init(_ value: Tensor, decays: Bool = true) {
        state = Mutex(State(variable: Variable(value, requiresGrad: true), decays: decays))
    }

    /// The leaf that a forward pass records. Setting it replaces the leaf (e.g. a frozen copy).
    public var variable: Variable {
        get { state.withLock { $0.variable } }
        set {
            state.withLock {
                $0.variable = newValue
                $0.version += 1
            }
        }
    }
    /// Whether weight decay applies (false for biases and normalisation gains, the usual rule).
    public var decays: Bool {
        get { state.withLock { $0.decays } }
        set { state.withLock { $0.decays = newValue } }
    }

    public var value: Tensor { variable.value }
    public var shape: [Int] { value.shape }

    /// The value rounded to bfloat16, for bf16 inference (`Precision`): made on first use and again
    /// after the value is replaced or updated, so it never lags an optimizer step.
    public func bf16Value() throws -> Tensor {
        try state.withLock { s in
            if let cached = s.bf16, cached.version == s.version { return cached.tensor }
            let rounded = try s.variable.value.converted(to: .bfloat16)
            s.bf16 = (s.version, rounded)
            return rounded
        }
    }

    /// Replaces the value (a fresh leaf that requires a gradient).
    public func assign(_ t: Tensor) { variable = Variable(t, requiresGrad: true) }

    /// One optimizer update: `body(destination, source)` writes every new element from the old one
    /// (`Tensor.updateFloats`). In place when the parameter owns its storage alone; a value shared
    /// with another tensor or borrowed from a memory-mapped checkpoint is copied once, on the first
    /// update, never written through. The leaf stays the same object when it requires a gradient;
    /// a frozen leaf (`requiresGrad == false`) is replaced by a trainable one, as `assign` does.
    public func update(_ body: (UnsafeMutableBufferPointer<Float>, UnsafeBufferPointer<Float>) -> Void) {
        state.withLock { s in
            s.version += 1
            if s.variable.requiresGrad && s.variable.isLeaf {
                s.variable.updateLeaf(body)
            } else {
                var t = s.variable.value
                t.updateFloats(body)
                s.variable = Variable(t, requiresGrad: true)
            }
        }
    }
}

/// A network part with named parameters and buffers, addressable by PyTorch state-dict names.
public protocol Module: AnyObject {
    /// Parameters by their state-dict name relative to this module ("weight", "0.bias", …).
    var namedParameters: [(String, Parameter)] { get }
    /// Non-trainable state saved with the parameters (BatchNorm's running statistics).
    var namedBuffers: [(String, Tensor)] { get }
    func loadBuffer(_ name: String, _ value: Tensor)
    /// Training (dropout active, batch statistics) or evaluation.
    var isTraining: Bool { get set }
}

extension Module {
    public var namedBuffers: [(String, Tensor)] { [] }
    public func loadBuffer(_ name: String, _ value: Tensor) {}
    public var parameters: [Parameter] { namedParameters.map(\.1) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// The state dict: parameters and buffers by name.
    public var stateDict: [(name: String, tensor: Tensor)] {
        namedParameters.map { ($0.0, $0.1.value) } + namedBuffers.map { ($0.0, $0.1) }
    }

    /// Saves the state dict as safetensors (atomically).
    /// Writes every parameter and buffer as safetensors (`dtype` .float16 or .bfloat16 halves the file).
    public func save(to path: String, metadata: [String: String] = [:], dtype: DType = .float32) throws {
        let tensors = dtype == .float32 ? stateDict : try stateDict.map { ($0.name, try $0.tensor.converted(to: dtype)) }
        try SafeTensors.write(tensors, metadata: metadata, to: path)
    }

    /// Loads every parameter and buffer by name; all missing, wrong-shaped and unexpected tensors
    /// are reported in one error.
    public func load(from checkpoint: Checkpoint, prefix: String = "") throws {
        let loader = StateDictLoader(checkpoint, prefix: prefix)
        var values: [(Parameter, Tensor)] = []
        for (name, p) in namedParameters { values.append((p, loader.float32(name, p.shape))) }
        var buffers: [(String, Tensor)] = []
        for (name, b) in namedBuffers { buffers.append((name, loader.float32(name, b.shape))) }
        try loader.finish()
        for (p, t) in values { p.assign(t) } // memory-mapped: no copy until the first update
        for (name, t) in buffers { loadBuffer(name, t) }
    }
}

/// Prefixes the names of a child module's parameters ("features.0." + "weight").
public func prefixed(_ prefix: String, _ items: [(String, Parameter)]) -> [(String, Parameter)] {
    items.map { (prefix + $0.0, $0.1) }
}

/// Uniform U(−bound, bound) initial values from a seeded generator.
func uniform(_ shape: [Int], bound: Float, _ rng: inout SeededGenerator) -> Tensor {
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, scalars: (0..<n).map { _ in Float(rng.nextUniform() * 2 - 1) * bound })
}

/// Normal N(0, std²) initial values from a seeded generator.
func normal(_ shape: [Int], std: Float, _ rng: inout SeededGenerator) -> Tensor {
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, scalars: (0..<n).map { _ in Float(rng.nextNormal()) * std })
}
