import Formats
import Tensors

/// Loads named tensors into a model and reports every problem at once: missing tensors,
/// wrong shapes, and (on `finish`) tensors of the checkpoint the model did not use.
public final class StateDictLoader {
    public let checkpoint: Checkpoint
    public let prefix: String
    private(set) var used = Set<String>()
    private var problems: [String] = []

    public init(_ checkpoint: Checkpoint, prefix: String = "") {
        self.checkpoint = checkpoint
        self.prefix = prefix
    }

    /// The float32 tensor `prefix + name` with `shape`, or a zero tensor and a recorded problem.
    public func float32(_ name: String, _ shape: [Int]) -> Tensor {
        let full = prefix + name
        used.insert(full)
        do {
            let e = try checkpoint.entry(full)
            guard e.shape == shape else {
                problems.append("\(full): shape \(e.shape) in the checkpoint, \(shape) expected by the config")
                return Tensor(zeros: .float32, shape: shape)
            }
            return try checkpoint.float32(full)
        } catch {
            problems.append("\(full): missing (\(shape))")
            return Tensor(zeros: .float32, shape: shape)
        }
    }

    /// Whether the checkpoint has `prefix + name` (for optional parts such as biases).
    public func has(_ name: String) -> Bool { checkpoint.contains(prefix + name) }

    /// Throws one error listing every problem; tensors under `prefix` that were not used count as
    /// unexpected unless `allowUnused` says they may be ignored (e.g. a training-only head).
    public func finish(allowUnused: (String) -> Bool = { _ in false }) throws {
        let unexpected = checkpoint.names.filter { $0.hasPrefix(prefix) && !used.contains($0) && !allowUnused($0) }
        var all = problems
        all += unexpected.map { "\($0): unexpected (not part of this model)" }
        guard all.isEmpty else {
            throw FormatError(
                path: checkpoint.path,
                "does not match the model (\(all.count) problem\(all.count == 1 ? "" : "s")):\n  "
                    + all.joined(separator: "\n  "))
        }
    }
}

/// Where a model's parameters come from while it is built: seeded random values (a fresh model,
/// drawn in a fixed order) or the tensors of a checkpoint, by state-dict name (memory-mapped, no
/// random value allocated first, every mismatch collected by the loader).
final class ParameterSource {
    var rng: SeededGenerator
    let loader: StateDictLoader?

    init(seed: UInt64) {
        rng = SeededGenerator(seed: seed)
        loader = nil
    }

    init(loader: StateDictLoader) {
        rng = SeededGenerator(seed: 0)
        self.loader = loader
    }

    /// The tensor `name` of `shape` from the checkpoint, else `random(&rng)`.
    func tensor(_ name: String, _ shape: [Int], _ random: (inout SeededGenerator) -> Tensor) -> Tensor {
        if let loader { return loader.float32(name, shape) }
        return random(&rng)
    }

    func parameter(_ name: String, _ shape: [Int], decays: Bool = true, _ random: (inout SeededGenerator) -> Tensor) -> Parameter {
        Parameter(tensor(name, shape, random), decays: decays)
    }

    /// U(±bound) when fresh.
    func uniform(_ name: String, _ shape: [Int], bound: Float, decays: Bool = true) -> Parameter {
        parameter(name, shape, decays: decays) { NN.uniform(shape, bound: bound, &$0) }
    }

    /// `value` everywhere when fresh (normalisation gains and shifts, layer scales: no decay).
    func filled(_ name: String, _ shape: [Int], _ value: Float) -> Parameter {
        parameter(name, shape, decays: false) { _ in Tensor.filled(value, shape: shape) }
    }

    /// torch nn.Linear `prefix.weight` [out, in] and `prefix.bias` (U(±1/√in) when fresh).
    func linear(_ prefix: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) -> Linear {
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = uniform(prefix + ".weight", [outFeatures, inFeatures], bound: bound)
        return Linear(weight: w, bias: bias ? uniform(prefix + ".bias", [outFeatures], bound: bound, decays: false) : nil)
    }

    /// LayerNorm `prefix.weight`, `prefix.bias` (1 and 0 when fresh).
    func layerNorm(_ prefix: String, _ width: Int, eps: Float) -> LayerNorm {
        LayerNorm(weight: filled(prefix + ".weight", [width], 1), bias: filled(prefix + ".bias", [width], 0), eps: eps)
    }
}
