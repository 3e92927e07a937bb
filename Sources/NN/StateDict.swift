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
            throw FormatError(path: checkpoint.path, "does not match the model (\(all.count) problem\(all.count == 1 ? "" : "s")):\n  "
                + all.joined(separator: "\n  "))
        }
    }
}
