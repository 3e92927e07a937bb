import Formats
import Foundation
import Tensors

/// diffusers' `DiTTransformer2DModel` (Peebles & Xie's class-conditional Diffusion Transformer):
/// a p×p patch embedding (a strided convolution) plus fixed 2-D sin-cos positions; per block an
/// adaLN-Zero modulation from c = t-embedding + class embedding (the table has one more row, the
/// null class of classifier-free guidance), self-attention and a GELU-tanh MLP, each gated; a final
/// adaLN layer and a linear to p·p·out channels, unpatchified to [N, out, S, S] (out = 2·in: ε and
/// the learned σ's interpolation).
///
/// diffusers gives every block its own timestep and class embedding and conditions the final layer
/// on block 0's; the original checkpoint has one shared embedding (`Layout.original`), which the
/// diffusers conversion copies into every block — the two compute the same thing.
///
/// The forward is differentiable (Variables; under `GradMode.disabled` it records nothing): the
/// latent-diffusion plugin's embedded model is an instance in the original layout with out = in
/// channels (ε only), trained with it.
public final class DiTTransformer2DModel: Module {
    public let config: DiTConfig
    let patchEmbed: Conv2d
    let positions: Tensor
    struct Embedding {
        let linear1: Linear, linear2: Linear
        let table: Parameter
    }
    struct Block {
        let embedding: Int // index into `embeddings`
        let modulation: Linear
        let qkv: Linear?
        let q: Linear?, k: Linear?, v: Linear?
        let out: Linear
        let fc1: Linear, fc2: Linear
    }
    let embeddings: [Embedding]
    let blocks: [Block]
    let finalModulation: Linear, finalLinear: Linear
    /// Names of the parameters in the layout they were built from (diffusers or original DiT).
    let names: [(String, Parameter)]
    public var isTraining = false

    /// Where the parameters come from and under which names.
    public enum Layout: Sendable {
        /// diffusers' names (`pos_embed.proj`, `transformer_blocks.N.…`, `proj_out_1/2`).
        case diffusers
        /// facebookresearch/DiT's names (`x_embedder.proj`, `t_embedder.mlp.0/2`,
        /// `y_embedder.embedding_table`, `blocks.N.attn.qkv/proj`, `blocks.N.mlp.fc1/fc2`,
        /// `blocks.N.adaLN_modulation.1`, `final_layer.linear/adaLN_modulation.1`, `pos_embed`).
        case original
    }

    /// A fresh model with seeded weights, as DiT's `initialize_weights` starts training in the
    /// part that matters (adaLN-Zero): every modulation and the final linear are zero, so each block
    /// starts as the identity and the output as 0. The rest: linears and the patch convolution
    /// U(±1/√fan_in) (torch's defaults), the class table N(0, 0.02).
    public convenience init(config: DiTConfig, seed: UInt64, layout: Layout = .diffusers) throws {
        try config.validate(source: "config")
        try self.init(config: config, source: ParameterSource(seed: seed), layout: layout)
    }

    /// Loads `checkpoint` (diffusers' names, or the original's with `layout: .original`); every
    /// missing, mis-shaped or unexpected tensor is named in one error.
    public convenience init(config: DiTConfig, checkpoint: Checkpoint, layout: Layout = .diffusers) throws {
        try config.validate(source: checkpoint.path)
        let loader = StateDictLoader(checkpoint)
        try self.init(config: config, source: ParameterSource(loader: loader), layout: layout)
        try loader.finish()
    }

    init(config c: DiTConfig, source s: ParameterSource, layout: Layout) throws {
        config = c
        let d = c.width, p = c.patch
        var named: [(String, Parameter)] = []
        func linear(_ name: String, _ i: Int, _ o: Int, bias: Bool = true) -> Linear {
            let l = s.linear(name, i, o, bias: bias)
            named.append((name + ".weight", l.weight))
            if let b = l.bias { named.append((name + ".bias", b)) }
            return l
        }
        // adaLN-Zero: zero when fresh (a checkpoint's values otherwise).
        func zeroLinear(_ name: String, _ i: Int, _ o: Int) -> Linear {
            let w = s.parameter(name + ".weight", [o, i]) { _ in Tensor.filled(0, shape: [o, i]) }
            let b = s.parameter(name + ".bias", [o], decays: false) { _ in Tensor.filled(0, shape: [o]) }
            named += [(name + ".weight", w), (name + ".bias", b)]
            return Linear(weight: w, bias: b)
        }
        func embedding(_ t1: String, _ t2: String, _ table: String) -> Embedding {
            let tab = s.parameter(table, [c.classes + 1, d]) { NN.normal([c.classes + 1, d], std: 0.02, &$0) }
            let e = Embedding(linear1: linear(t1, 256, d), linear2: linear(t2, d, d), table: tab)
            named.append((table, tab))
            return e
        }
        let convName = layout == .diffusers ? "pos_embed.proj" : "x_embedder.proj"
        let bound = 1 / Float(c.inChannels * p * p).squareRoot()
        let cw = s.uniform(convName + ".weight", [d, c.inChannels, p, p], bound: bound)
        let cb = s.uniform(convName + ".bias", [d], bound: bound, decays: false)
        named += [(convName + ".weight", cw), (convName + ".bias", cb)]
        patchEmbed = Conv2d(weight: cw, bias: cb, stride: p)
        let table = Self.sinCosPositions(grid: c.grid, width: d)
        switch layout {
        case .diffusers:
            positions = table
            var embs: [Embedding] = [], blks: [Block] = []
            for i in 0..<c.layers {
                let b = "transformer_blocks.\(i)."
                embs.append(
                    embedding(
                        b + "norm1.emb.timestep_embedder.linear_1", b + "norm1.emb.timestep_embedder.linear_2",
                        b + "norm1.emb.class_embedder.embedding_table.weight"))
                let mod = zeroLinear(b + "norm1.linear", d, 6 * d)
                let q = linear(b + "attn1.to_q", d, d, bias: c.attentionBias), k = linear(b + "attn1.to_k", d, d, bias: c.attentionBias)
                let v = linear(b + "attn1.to_v", d, d, bias: c.attentionBias)
                let out = linear(b + "attn1.to_out.0", d, d)
                let fc1 = linear(b + "ff.net.0.proj", d, c.mlpRatio * d), fc2 = linear(b + "ff.net.2", c.mlpRatio * d, d)
                blks.append(Block(embedding: i, modulation: mod, qkv: nil, q: q, k: k, v: v, out: out, fc1: fc1, fc2: fc2))
            }
            (embeddings, blocks) = (embs, blks)
            finalModulation = zeroLinear("proj_out_1", d, 2 * d)
            finalLinear = zeroLinear("proj_out_2", d, p * p * c.outChannels)
        case .original:
            // The stored table (an nn.Parameter in DiT, frozen) is what its forward adds.
            let stored = s.tensor("pos_embed", [1, c.tokens, d]) { _ in table }
            positions = (try? stored.reshaped([c.tokens, d])) ?? table
            embeddings = [embedding("t_embedder.mlp.0", "t_embedder.mlp.2", "y_embedder.embedding_table.weight")]
            blocks = (0..<c.layers).map { i in
                let b = "blocks.\(i)."
                let mod = zeroLinear(b + "adaLN_modulation.1", d, 6 * d)
                let qkv = linear(b + "attn.qkv", d, 3 * d), out = linear(b + "attn.proj", d, d)
                let fc1 = linear(b + "mlp.fc1", d, c.mlpRatio * d), fc2 = linear(b + "mlp.fc2", c.mlpRatio * d, d)
                return Block(embedding: 0, modulation: mod, qkv: qkv, q: nil, k: nil, v: nil, out: out, fc1: fc1, fc2: fc2)
            }
            finalModulation = zeroLinear("final_layer.adaLN_modulation.1", d, 2 * d)
            finalLinear = zeroLinear("final_layer.linear", d, p * p * c.outChannels)
        }
        names = named
    }

    public var namedParameters: [(String, Parameter)] { names }

    /// The 2-D sin-cos table [g·g, w] of `get_2d_sincos_pos_embed` (base size g, scale 1): the first
    /// half of the channels from the column index, the second from the row; each half sin then cos
    /// of pos·10000^(−k/(w/4)).
    public static func sinCosPositions(grid g: Int, width w: Int) -> Tensor {
        let quarter = w / 4
        return Tensor.make([g * g, w]) { t in
            for i in 0..<g {
                for j in 0..<g {
                    for (half, pos) in [(0, j), (1, i)] {
                        for k in 0..<quarter {
                            let omega = 1 / pow(10000, Double(k) / Double(quarter))
                            t[(i * g + j) * w + half * 2 * quarter + k] = Float(sin(Double(pos) * omega))
                            t[(i * g + j) * w + half * 2 * quarter + quarter + k] = Float(cos(Double(pos) * omega))
                        }
                    }
                }
            }
        }
    }

    /// Sinusoidal timestep features [N, 256], cos then sin of t·exp(−ln(10⁴)·k/(128 − shift)),
    /// computed in float32 as torch does (the product t·f rounds to float32 before sin/cos).
    static func timestepFeatures(_ t: [Int], shift: Int) -> Tensor {
        let half = 128
        return Tensor.make([t.count, 2 * half]) { o in
            for (n, step) in t.enumerated() {
                for k in 0..<half {
                    let exponent = Float(-log(10000.0)) * Float(k) / Float(half - shift)
                    let arg = Float(step) * Float(exp(Double(exponent)))
                    o[n * 2 * half + k] = Float(cos(Double(arg)))
                    o[n * 2 * half + half + k] = Float(sin(Double(arg)))
                }
            }
        }
    }

    /// The conditioning c = timestep MLP + class row of embedding `e`, [N, D].
    func condition(_ e: Embedding, _ features: Variable, _ onehot: Variable) -> Variable {
        e.linear2(e.linear1(features).silu()) + matmul(onehot, e.table.variable)
    }

    /// The model output [N, out, S, S] for latents x [N, in, S, S] at per-row timesteps and classes
    /// (the null class `classes` allowed). Callers check sizes and ranges (`check`).
    public func callAsFunction(_ x: Variable, timesteps t: [Int], classes y: [Int]) -> Variable {
        if !GradMode.isEnabled { return inferenceForward(x, timesteps: t, classes: y) }
        let c = config, n = x.shape[0], d = c.width, g = c.grid, p = c.patch, h = c.heads, hd = c.headDim
        var hs = patchEmbed(x).reshaped([n, d, g * g]).permuted([0, 2, 1]) + Variable(positions) // [N, T, D]
        let features = Variable(Self.timestepFeatures(t, shift: c.frequencyShift))
        let onehot = Variable(try! Tensor.oneHot(y, classes: c.classes + 1))
        let conds = embeddings.map { condition($0, features, onehot) }
        let activated = conds.map { $0.silu() }
        let tokens = g * g
        for b in blocks {
            let m = b.modulation(activated[b.embedding]) // [N, 6D]
            func part(_ k: Int) -> Variable { m.slice(axis: 1, (k * d)..<((k + 1) * d)).reshaped([n, 1, d]) }
            let normed = hs.layerNorm(weight: nil, bias: nil, eps: 1e-6) * (part(1) + 1) + part(0)
            let qh: Variable, kh: Variable, vh: Variable
            if let qkv = b.qkv {
                let all = qkv(normed).reshaped([n, tokens, 3, h, hd]).permuted([2, 0, 3, 1, 4])
                qh = all.slice(axis: 0, 0..<1).reshaped([n, h, tokens, hd])
                kh = all.slice(axis: 0, 1..<2).reshaped([n, h, tokens, hd])
                vh = all.slice(axis: 0, 2..<3).reshaped([n, h, tokens, hd])
            } else {
                func split(_ v: Variable) -> Variable { v.reshaped([n, tokens, h, hd]).permuted([0, 2, 1, 3]) }
                (qh, kh, vh) = (split(b.q!(normed)), split(b.k!(normed)), split(b.v!(normed)))
            }
            let scores = matmul(qh * (1 / Float(hd).squareRoot()), kh, transposeB: true).softmax()
            let attended = b.out(matmul(scores, vh).permuted([0, 2, 1, 3]).reshaped([n, tokens, d]))
            hs = hs + part(2) * attended
            let normed2 = hs.layerNorm(weight: nil, bias: nil, eps: c.mlpNormEps) * (part(4) + 1) + part(3)
            hs = hs + part(5) * b.fc2(b.fc1(normed2).geluTanh())
        }
        let fm = finalModulation(activated[0])
        let shift = fm.slice(axis: 1, 0..<d).reshaped([n, 1, d]), scale = fm.slice(axis: 1, d..<(2 * d)).reshaped([n, 1, d])
        let out = finalLinear(hs.layerNorm(weight: nil, bias: nil, eps: 1e-6) * (scale + 1) + shift) // [N, T, p·p·out]
        // unpatchify: "nhwpqc -> nchpwq"
        return out.reshaped([n, g, g, p, p, c.outChannels]).permuted([0, 5, 1, 3, 2, 4]).reshaped([n, c.outChannels, g * p, g * p])
    }

    /// Checks a call's inputs: latents [N, in, S, S], one timestep in 0..<trainSteps and one class in
    /// 0…classes (the last is the null class) per row.
    public func check(shape: [Int], timesteps t: [Int], classes y: [Int], trainSteps: Int) throws {
        let c = config
        guard shape.count == 4, Array(shape.dropFirst()) == [c.inChannels, c.sampleSize, c.sampleSize] else {
            throw DiffusionError(
                "latents must be [N, \(c.inChannels), \(c.sampleSize), \(c.sampleSize)] (the transformer's in_channels and sample_size), got \(shape)")
        }
        guard t.count == shape[0], y.count == shape[0] else {
            throw DiffusionError("\(shape[0]) latents need as many timesteps and classes, got \(t.count) and \(y.count)")
        }
        if let bad = t.first(where: { !(0..<trainSteps).contains($0) }) {
            throw DiffusionError("timestep \(bad) is outside 0..<\(trainSteps)")
        }
        if let bad = y.first(where: { !(0...c.classes).contains($0) }) {
            throw DiffusionError("class \(bad) is beyond num_embeds_ada_norm = \(c.classes) (0…\(c.classes - 1), \(c.classes) the null class)")
        }
    }
}
