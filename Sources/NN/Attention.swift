import Foundation
import Tensors

/// Keys and values of earlier positions, for incremental (autoregressive) decoding.
public final class KVCache {
    public internal(set) var keys: Variable?     // [N, H, T, hd]
    public internal(set) var values: Variable?
    public init() {}
    public var length: Int { keys?.shape[2] ?? 0 }
}

/// Multi-head self-attention (differentiable): q, k, v from one packed [3D, D] projection (timm,
/// open_clip) or three separate [D, D] ones (Hugging Face), softmax(q kᵀ/√hd + mask) v per head,
/// then the output projection. Optional causal mask and key-value cache; the post-softmax attention
/// [N, H, T, T_total] of the last call is kept on request (trait maps, attention rollout).
public final class MultiheadAttention: Module {
    public let width: Int, heads: Int
    public let packed: Bool
    public let qkv: Linear?
    public let q: Linear?, k: Linear?, v: Linear?
    public let out: Linear
    public var isTraining = true
    public var keepAttention = false
    /// Applied to the scaled pre-softmax scores [N, H, T, T'] of every call when set (e.g. Prompt-CAM
    /// "blurs" a head by setting a query's scores to 0, which makes its attention uniform).
    public var scoreTransform: ((Variable) -> Variable)?
    public private(set) var lastAttention: Variable?
    /// State-dict names: the packed projection's weight and bias ("qkv.weight" in timm,
    /// "in_proj_weight" in torch's nn.MultiheadAttention), the separate projections' prefixes, the
    /// output projection's prefix.
    public struct Names: Sendable {
        public var qkvWeight = "qkv.weight", qkvBias = "qkv.bias"
        public var q = "q_proj", k = "k_proj", v = "v_proj", out = "proj"
        public init() {}
    }
    let names: Names

    public init(width: Int, heads: Int, packed: Bool = true, bias: Bool = true, rng: inout SeededGenerator, names: Names = Names()) {
        precondition(width % heads == 0, "width \(width) is not divisible by \(heads) heads")
        self.width = width
        self.heads = heads
        self.packed = packed
        self.names = names
        if packed {
            qkv = Linear(width, 3 * width, bias: bias, rng: &rng)
            (q, k, v) = (nil, nil, nil)
        } else {
            qkv = nil
            q = Linear(width, width, bias: bias, rng: &rng)
            k = Linear(width, width, bias: bias, rng: &rng)
            v = Linear(width, width, bias: bias, rng: &rng)
        }
        out = Linear(width, width, rng: &rng)
    }

    public var namedParameters: [(String, Parameter)] {
        var p: [(String, Parameter)] = []
        if let qkv { p += [(names.qkvWeight, qkv.weight)] + (qkv.bias.map { [(names.qkvBias, $0)] } ?? []) }
        if let q, let k, let v {
            p += prefixed(names.q + ".", q.namedParameters) + prefixed(names.k + ".", k.namedParameters) + prefixed(names.v + ".", v.namedParameters)
        }
        return p + prefixed(names.out + ".", out.namedParameters)
    }

    /// x [N, T, D] → [N, T, D]. With `cache`, the new keys and values are appended to it and the
    /// queries attend to every cached position (and, with `causal`, to earlier new ones).
    public func callAsFunction(_ x: Variable, causal: Bool = false, cache: KVCache? = nil) -> Variable {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let hd = d / heads
        func split(_ y: Variable) -> Variable { y.reshaped([n, t, heads, hd]).permuted([0, 2, 1, 3]) }   // [N, H, T, hd]
        var qh: Variable, kh: Variable, vh: Variable
        if let qkv {
            let all = qkv(x).reshaped([n, t, 3, heads, hd]).permuted([2, 0, 3, 1, 4])   // [3, N, H, T, hd]
            qh = all.slice(axis: 0, 0..<1).reshaped([n, heads, t, hd])
            kh = all.slice(axis: 0, 1..<2).reshaped([n, heads, t, hd])
            vh = all.slice(axis: 0, 2..<3).reshaped([n, heads, t, hd])
        } else {
            qh = split(q!(x))
            kh = split(k!(x))
            vh = split(v!(x))
        }
        let past = cache?.length ?? 0
        if let cache {
            if let keys = cache.keys, let values = cache.values {
                kh = concat([keys, kh], axis: 2)
                vh = concat([values, vh], axis: 2)
            }
            cache.keys = kh.detached()
            cache.values = vh.detached()
        }
        let total = past + t
        // q scaled before the product (as timm's non-fused path): a T×hd pass instead of T×T.
        var scores = matmul(qh * (1 / Float(hd).squareRoot()), kh, transposeB: true)   // [N, H, T, total]
        if causal {
            let mask = Tensor.make([t, total]) { m in
                for i in 0..<t { for j in 0..<total where j > past + i { m[i * total + j] = -.infinity } }
            }
            scores = scores + Variable(mask)
        }
        if let scoreTransform { scores = scoreTransform(scores) }
        let attention = scores.softmax()
        lastAttention = keepAttention ? attention : nil
        let mixed = matmul(attention, vh).permuted([0, 2, 1, 3]).reshaped([n, t, d])
        return out(mixed)
    }
}

/// A pre-norm transformer block (differentiable): x + attn(LN1 x), then x + MLP(LN2 x).
public final class TransformerBlock: Module {
    public let norm1: LayerNorm, norm2: LayerNorm
    public let attention: MultiheadAttention
    public let fc1: Linear, fc2: Linear
    /// Per-channel gains of the two residual branches (timm `ls1.gamma`, `ls2.gamma`; DINOv2).
    public let layerScale1: Parameter?, layerScale2: Parameter?
    public let activation: Activation
    public let naming: BlockNaming
    public var isTraining = true

    public init(width: Int, heads: Int, hidden: Int, qkvBias: Bool = true, eps: Float = 1e-6, activation: Activation = .gelu,
                naming: BlockNaming = .timm, layerScale: Bool = false, rng: inout SeededGenerator) {
        norm1 = LayerNorm(width, eps: eps)
        layerScale1 = layerScale ? Parameter(Tensor.filled(1e-5, shape: [width]), decays: false) : nil
        layerScale2 = layerScale ? Parameter(Tensor.filled(1e-5, shape: [width]), decays: false) : nil
        norm2 = LayerNorm(width, eps: eps)
        var names = MultiheadAttention.Names()
        names.qkvWeight = naming.qkvWeight
        names.qkvBias = naming.qkvBias
        names.out = naming.proj
        attention = MultiheadAttention(width: width, heads: heads, bias: qkvBias, rng: &rng, names: names)
        fc1 = Linear(width, hidden, rng: &rng)
        fc2 = Linear(hidden, width, rng: &rng)
        self.activation = activation
        self.naming = naming
    }

    public var namedParameters: [(String, Parameter)] {
        // The attention's names are relative to the block (e.g. "attn.qkv.weight").
        prefixed(naming.norm1 + ".", norm1.namedParameters) + attention.namedParameters
            + prefixed(naming.norm2 + ".", norm2.namedParameters) + prefixed(naming.fc1 + ".", fc1.namedParameters)
            + prefixed(naming.fc2 + ".", fc2.namedParameters)
            + (layerScale1.map { [("ls1.gamma", $0)] } ?? []) + (layerScale2.map { [("ls2.gamma", $0)] } ?? [])
    }

    /// `norm1Tap` receives the output of the first LayerNorm (Grad-CAM's usual ViT target layer).
    public func callAsFunction(_ x: Variable, causal: Bool = false, cache: KVCache? = nil,
                               norm1Tap: ((Variable) -> Void)? = nil) -> Variable {
        let normed = norm1(x)
        norm1Tap?(normed)
        let attended = attention(normed, causal: causal, cache: cache)
        let h = x + (layerScale1.map { attended * $0.variable } ?? attended)
        let y = fc1(norm2(h))
        let a = activation == .gelu ? y.gelu() : y.quickGELU()
        let mlp = fc2(a)
        return h + (layerScale2.map { mlp * $0.variable } ?? mlp)
    }
}
