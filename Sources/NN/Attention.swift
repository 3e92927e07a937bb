import Foundation
import Tensors

/// Keys and values of earlier positions, for incremental (autoregressive) decoding.
public final class KVCache {
    public internal(set) var keys: Variable? // [N, H, T, hd]
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

    /// Packed attention around existing projections (qkv [3D, D], out [D, D]).
    init(width: Int, heads: Int, qkv: Linear, out: Linear, names: Names) {
        precondition(width % heads == 0, "width \(width) is not divisible by \(heads) heads")
        self.width = width
        self.heads = heads
        packed = true
        self.names = names
        self.qkv = qkv
        (q, k, v) = (nil, nil, nil)
        self.out = out
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
        func split(_ y: Variable) -> Variable { y.reshaped([n, t, heads, hd]).permuted([0, 2, 1, 3]) } // [N, H, T, hd]
        var qh: Variable, kh: Variable, vh: Variable
        if let qkv {
            let all = qkv(x).reshaped([n, t, 3, heads, hd]).permuted([2, 0, 3, 1, 4]) // [3, N, H, T, hd]
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
        var scores = matmul(qh * (1 / Float(hd).squareRoot()), kh, transposeB: true) // [N, H, T, total]
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
