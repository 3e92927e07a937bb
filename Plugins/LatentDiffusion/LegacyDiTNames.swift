import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// latent-diffusion 0.2 had its own DiT class and stored it under its own names; since 0.3 the
/// denoiser is NN's `DiTTransformer2DModel` in facebookresearch/DiT's layout. This rewrites a 0.2
/// state dict once (the `convert` operation; how the shipped ldm-tol weights were converted):
///
/// | 0.2 | now (DiT's names) |
/// |---|---|
/// | `dit.x_embedder.{weight,bias}` (a linear on patches, [D, C·p·p]) | `dit.x_embedder.proj.{weight,bias}` (the p×p convolution, [D, C, p, p]: the same numbers) |
/// | `dit.t_embedder.0`, `dit.t_embedder.2` | `dit.t_embedder.mlp.0`, `dit.t_embedder.mlp.2` |
/// | `dit.y_embedder.table` | `dit.y_embedder.embedding_table.weight` |
/// | `dit.blocks.N.adaLN` | `dit.blocks.N.adaLN_modulation.1` |
/// | `dit.blocks.N.attn.{qkv,proj}`, `dit.blocks.N.mlp.{fc1,fc2}` | unchanged |
/// | `dit.final.adaLN` | `dit.final_layer.adaLN_modulation.1` |
/// | `dit.final.linear` (output rows ordered channel, row, column) | `dit.final_layer.linear` (rows ordered row, column, channel: DiT's unpatchify) |
///
/// Everything else (`autoencoder.*`) is copied. Values are moved, never recomputed, and every
/// tensor keeps its stored dtype, so an f16 file converts exactly.
public enum LegacyDiTNames {
    /// Whether `checkpoint` holds the DiT under 0.2's names.
    public static func isLegacy(_ checkpoint: Checkpoint) -> Bool { checkpoint.contains("dit.x_embedder.weight") }

    /// The whole file converted, in the checkpoint's order. Every missing, mis-shaped or unknown
    /// `dit.*` tensor is named in one error.
    public static func convert(_ checkpoint: Checkpoint, config c: LatentDiffusionConfig) throws -> [(name: String, tensor: Tensor)] {
        try c.validate()
        let w = c.ditWidth, p = c.patch, lc = c.latentChannels, patchDim = lc * p * p
        enum Move {
            case rename
            case patchEmbedding // [D, C·p·p] → [D, C, p, p]
            case finalRows // rows (c, a, b) → (a, b, c)
        }
        var table: [String: (new: String, shape: [Int], move: Move)] = [:]
        func add(_ old: String, _ new: String, _ shape: [Int], _ move: Move = .rename) { table["dit." + old] = ("dit." + new, shape, move) }
        func linear(_ old: String, _ new: String, _ i: Int, _ o: Int, _ move: Move = .rename) {
            add(old + ".weight", new + ".weight", [o, i], move)
            add(old + ".bias", new + ".bias", [o], move)
        }
        add("x_embedder.weight", "x_embedder.proj.weight", [w, patchDim], .patchEmbedding)
        add("x_embedder.bias", "x_embedder.proj.bias", [w])
        linear("t_embedder.0", "t_embedder.mlp.0", 256, w)
        linear("t_embedder.2", "t_embedder.mlp.2", w, w)
        add("y_embedder.table", "y_embedder.embedding_table.weight", [c.classes + 1, w])
        for i in 0..<c.ditDepth {
            let b = "blocks.\(i)."
            linear(b + "adaLN", b + "adaLN_modulation.1", w, 6 * w)
            linear(b + "attn.qkv", b + "attn.qkv", w, 3 * w)
            linear(b + "attn.proj", b + "attn.proj", w, w)
            linear(b + "mlp.fc1", b + "mlp.fc1", w, 4 * w)
            linear(b + "mlp.fc2", b + "mlp.fc2", 4 * w, w)
        }
        linear("final.adaLN", "final_layer.adaLN_modulation.1", w, 2 * w)
        linear("final.linear", "final_layer.linear", w, patchDim, .finalRows)

        var problems: [String] = []
        var out: [(name: String, tensor: Tensor)] = []
        for name in checkpoint.names {
            guard name.hasPrefix("dit.") else {
                out.append((name, try checkpoint.tensor(name)))
                continue
            }
            guard let (new, shape, move) = table[name] else {
                problems.append("\(name): unexpected (not a tensor of latent-diffusion 0.2's DiT)")
                continue
            }
            let e = try checkpoint.entry(name)
            guard e.shape == shape else {
                problems.append("\(name): shape \(e.shape), \(shape) expected by config.json")
                continue
            }
            let t = try checkpoint.tensor(name)
            switch move {
            case .rename: out.append((new, t))
            case .patchEmbedding: out.append((new, try t.reshaped([w, lc, p, p])))
            case .finalRows:
                // Old row ch·p² + a·p + b holds output (channel ch, patch row a, column b); DiT's
                // unpatchify reads row (a·p + b)·C + ch.
                let v = try t.converted(to: .float32).scalars(as: Float.self)
                let rowWidth = shape.count == 2 ? w : 1
                var moved = [Float](repeating: 0, count: v.count)
                for ch in 0..<lc {
                    for a in 0..<p {
                        for b in 0..<p {
                            let from = (ch * p * p + a * p + b) * rowWidth, to = ((a * p + b) * lc + ch) * rowWidth
                            for j in 0..<rowWidth { moved[to + j] = v[from + j] }
                        }
                    }
                }
                out.append((new, try Tensor(moved, shape: shape).converted(to: t.dtype)))
            }
        }
        let present = Set(checkpoint.names)
        problems += table.filter { !present.contains($0.key) }.sorted { $0.key < $1.key }.map { "\($0.key): missing (\($0.value.shape))" }
        guard problems.isEmpty else {
            throw MenagerieError.invalidArgument(
                "'\(checkpoint.path)' is not a latent-diffusion 0.2 model of this config.json (\(problems.count) problem\(problems.count == 1 ? "" : "s")):\n  "
                    + problems.joined(separator: "\n  "))
        }
        return out
    }
}
