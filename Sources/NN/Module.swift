import Formats
import Foundation
import Tensors

/// A trainable tensor. Modules hold parameters; optimizers replace `variable` after each step.
public final class Parameter: @unchecked Sendable {
    public var variable: Variable
    /// Whether weight decay applies (false for biases and normalisation gains, the usual rule).
    public var decays: Bool

    public init(_ value: Tensor, decays: Bool = true) {
        variable = Variable(value, requiresGrad: true)
        self.decays = decays
    }

    public var value: Tensor { variable.value }
    public var shape: [Int] { value.shape }

    /// Replaces the value (a fresh leaf that requires a gradient).
    public func assign(_ t: Tensor) { variable = Variable(t, requiresGrad: true) }
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
        for (p, t) in values { p.assign(t) }        // memory-mapped: no copy until the first update
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
    return try! Tensor((0..<n).map { _ in Float(rng.nextUniform() * 2 - 1) * bound }, shape: shape)
}
