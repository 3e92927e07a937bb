import Foundation
import Formats
import Tensors

/// A decoder-only language model (OPT or LLaMA, Hugging Face layout) for inference with a key-value
/// cache, batch 1. Weights are read by the `transformers` state-dict names and kept as the
/// memory-mapped f32 (or converted) tensors of the checkpoint.
///
/// OPT (pre-LN): x = E[ids] (· project_in) + P[pos + 2]; per layer x += Wo·attn(LN₁x) ;
///   x += W2·ReLU(W1·LN₂x + b1) + b2; final LN (· project_out); logits = x·Eᵀ (or lm_head).
/// LLaMA: x = E[ids]; per layer x += Wo·attn(RMS₁x) with RoPE on q, k (rotate-half form, inv_freq =
///   θ^(−2i/d)) and grouped-query heads; x += Wdown·(SiLU(Wgate·RMS₂x) ⊙ Wup·RMS₂x); RMS; lm_head.
public final class DecoderLM: @unchecked Sendable {
    public let config: DecoderConfig

    struct Layer {
        var q: Tensor, k: Tensor, v: Tensor, o: Tensor
        var qb: Tensor?, kb: Tensor?, vb: Tensor?, ob: Tensor?
        var norm1: Tensor, norm1b: Tensor?, norm2: Tensor, norm2b: Tensor?
        // OPT: up = fc1 [dff, D] (+ b), down = fc2 [D, dff] (+ b). LLaMA: gate, up, down.
        var up: Tensor, upb: Tensor?, gate: Tensor?, down: Tensor, downb: Tensor?
    }
    let layers: [Layer]
    let embed: Tensor, positions: Tensor?, finalNorm: Tensor, finalNormB: Tensor?, head: Tensor
    let projectIn: Tensor?, projectOut: Tensor?
    let ropeInv: [Float]

    /// Per layer, an optional replacement of the FFN's neurons: only `neurons` are computed, from
    /// weights gathered once into contiguous matrices (CoreInfer's decoding).
    public struct SparseFFN: Sendable {
        public let neurons: [Int]
        let up: [Float], upb: [Float]?, gate: [Float]?, down: [Float]   // [k, D], [k], [k, D], [D, k]
    }
    public var sparse: [SparseFFN?]
    /// When set, called with (layer, activations [T, dff]) after every FFN during a forward pass:
    /// OPT's fc1 output before ReLU, LLaMA's SiLU(gate)·up (the input of down_proj).
    public var activationHook: ((Int, [Float], Int) -> Void)?
    /// When set, called with the seconds each FFN took (benchmarks: the FFN's share of a step).
    public var ffnTimer: ((Double) -> Void)?

    public init(folder: String) throws {
        let config = try DecoderConfig.load(path: folder)
        self.config = config
        let checkpoint = try Checkpoint(path: folder)
        let w = StateDictLoader(checkpoint)
        let c = config, d = c.hiddenSize, dff = c.intermediateSize
        let qd = c.heads * c.headDim, kvd = c.keyValueHeads * c.headDim
        var layers: [Layer] = []
        switch c.architecture {
        case .opt:
            let p = "model.decoder."
            let e = c.wordEmbedProjDim
            embed = w.float32(p + "embed_tokens.weight", [c.vocabSize, e])
            positions = w.float32(p + "embed_positions.weight", [c.maxPositions + 2, d])
            projectIn = e != d ? w.float32(p + "project_in.weight", [d, e]) : nil
            projectOut = e != d ? w.float32(p + "project_out.weight", [e, d]) : nil
            finalNorm = w.float32(p + "final_layer_norm.weight", [d])
            finalNormB = w.float32(p + "final_layer_norm.bias", [d])
            for l in 0..<c.layers {
                let q = p + "layers.\(l)."
                func b(_ n: String, _ s: Int) -> Tensor? { c.attentionBias ? w.float32(q + n, [s]) : nil }
                layers.append(Layer(q: w.float32(q + "self_attn.q_proj.weight", [qd, d]), k: w.float32(q + "self_attn.k_proj.weight", [kvd, d]),
                                    v: w.float32(q + "self_attn.v_proj.weight", [kvd, d]), o: w.float32(q + "self_attn.out_proj.weight", [d, qd]),
                                    qb: b("self_attn.q_proj.bias", qd), kb: b("self_attn.k_proj.bias", kvd), vb: b("self_attn.v_proj.bias", kvd),
                                    ob: b("self_attn.out_proj.bias", d),
                                    norm1: w.float32(q + "self_attn_layer_norm.weight", [d]), norm1b: w.float32(q + "self_attn_layer_norm.bias", [d]),
                                    norm2: w.float32(q + "final_layer_norm.weight", [d]), norm2b: w.float32(q + "final_layer_norm.bias", [d]),
                                    up: w.float32(q + "fc1.weight", [dff, d]), upb: c.mlpBias ? w.float32(q + "fc1.bias", [dff]) : nil, gate: nil,
                                    down: w.float32(q + "fc2.weight", [d, dff]), downb: c.mlpBias ? w.float32(q + "fc2.bias", [d]) : nil))
            }
            head = checkpoint.contains("lm_head.weight") && !c.tieWordEmbeddings ? w.float32("lm_head.weight", [c.vocabSize, e]) : embed
            try w.finish(allowUnused: { $0 == "lm_head.weight" })
        case .llama:
            let p = "model."
            embed = w.float32(p + "embed_tokens.weight", [c.vocabSize, d])
            positions = nil
            projectIn = nil
            projectOut = nil
            finalNorm = w.float32(p + "norm.weight", [d])
            finalNormB = nil
            for l in 0..<c.layers {
                let q = p + "layers.\(l)."
                func b(_ n: String, _ s: Int) -> Tensor? { c.attentionBias ? w.float32(q + n, [s]) : nil }
                layers.append(Layer(q: w.float32(q + "self_attn.q_proj.weight", [qd, d]), k: w.float32(q + "self_attn.k_proj.weight", [kvd, d]),
                                    v: w.float32(q + "self_attn.v_proj.weight", [kvd, d]), o: w.float32(q + "self_attn.o_proj.weight", [d, qd]),
                                    qb: b("self_attn.q_proj.bias", qd), kb: b("self_attn.k_proj.bias", kvd), vb: b("self_attn.v_proj.bias", kvd),
                                    ob: b("self_attn.o_proj.bias", d),
                                    norm1: w.float32(q + "input_layernorm.weight", [d]), norm1b: nil,
                                    norm2: w.float32(q + "post_attention_layernorm.weight", [d]), norm2b: nil,
                                    up: w.float32(q + "mlp.up_proj.weight", [dff, d]), upb: c.mlpBias ? w.float32(q + "mlp.up_proj.bias", [dff]) : nil,
                                    gate: w.float32(q + "mlp.gate_proj.weight", [dff, d]),
                                    down: w.float32(q + "mlp.down_proj.weight", [d, dff]), downb: c.mlpBias ? w.float32(q + "mlp.down_proj.bias", [d]) : nil))
            }
            head = c.tieWordEmbeddings || !checkpoint.contains("lm_head.weight") ? embed : w.float32("lm_head.weight", [c.vocabSize, d])
            try w.finish()
        }
        self.layers = layers
        let half = c.headDim / 2
        ropeInv = (0..<half).map { Float(1 / pow(c.ropeTheta, Double(2 * $0) / Double(c.headDim))) }
        sparse = Array(repeating: nil, count: c.layers)
    }

    /// Keys and values of every layer so far: [layer][position · kvDim].
    public final class Cache {
        var keys: [[Float]], values: [[Float]]
        public private(set) var length = 0
        init(layers: Int) { (keys, values) = (Array(repeating: [], count: layers), Array(repeating: [], count: layers)) }
        func advance(_ n: Int) { length += n }
    }
    public func makeCache() -> Cache { Cache(layers: config.layers) }

    /// Runs `ids` after the cached positions; returns the logits of every new position [T, V] when
    /// `allLogits`, else of the last one [1, V]. Throws when the context would overflow.
    public func forward(_ ids: [Int32], cache: Cache, allLogits: Bool = false) throws -> [Float] {
        let c = config, t = ids.count, d = c.hiddenSize, past = cache.length
        guard t > 0 else { return [] }
        guard past + t <= c.maxPositions else {
            throw FormatError(path: "prompt", "\(past + t) tokens exceed the model's context of \(c.maxPositions) positions")
        }
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= c.vocabSize }) { throw FormatError(path: "prompt", "token id \(bad) is outside the vocabulary of \(c.vocabSize)") }
        var x = try embedTokens(ids, past: past)
        var h = [Float](repeating: 0, count: t * d)
        for (l, layer) in layers.enumerated() {
            try norm(x, rows: t, weight: layer.norm1, bias: layer.norm1b, into: &h)
            let attn = try attention(h, rows: t, layer: layer, index: l, cache: cache, past: past)
            for i in 0..<(t * d) { x[i] += attn[i] }
            try norm(x, rows: t, weight: layer.norm2, bias: layer.norm2b, into: &h)
            let started = ffnTimer == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            let f = try ffn(h, rows: t, layer: layer, index: l)
            if let ffnTimer { ffnTimer(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9) }
            for i in 0..<(t * d) { x[i] += f[i] }
        }
        cache.advance(t)
        let rows = allLogits ? t : 1
        let last = Array(x[((t - rows) * d)..<(t * d)])
        var normed = [Float](repeating: 0, count: rows * d)
        try norm(last, rows: rows, weight: finalNorm, bias: finalNormB, into: &normed)
        if let projectOut { normed = try linear(normed, rows: rows, weight: projectOut, bias: nil) }
        return try linear(normed, rows: rows, weight: head, bias: nil)
    }

    func embedTokens(_ ids: [Int32], past: Int) throws -> [Float] {
        let c = config, d = c.hiddenSize, e = embed.shape[1]
        var x = [Float](repeating: 0, count: ids.count * e)
        try embed.withFloats { w in
            for (i, id) in ids.enumerated() { for j in 0..<e { x[i * e + j] = w[Int(id) * e + j] } }
        }
        if let projectIn { x = try linear(x, rows: ids.count, weight: projectIn, bias: nil) }
        if let positions {
            try positions.withFloats { p in
                for i in 0..<ids.count { for j in 0..<d { x[i * d + j] += p[(past + i + 2) * d + j] } }
            }
        }
        return x
    }

    /// y = x·Wᵀ (+ b) for W [out, in].
    func linear(_ x: [Float], rows: Int, weight: Tensor, bias: Tensor?) throws -> [Float] {
        let (out, inF) = (weight.shape[0], weight.shape[1])
        var y = [Float](repeating: 0, count: rows * out)
        try weight.withFloats { w in
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    if let bias {
                        try? bias.withFloats { b in Kernels.linear(xp.baseAddress!, rows: rows, inFeatures: inF, weight: w, bias: b, outFeatures: out, into: yp.baseAddress!) }
                    } else {
                        Kernels.linear(xp.baseAddress!, rows: rows, inFeatures: inF, weight: w, bias: nil, outFeatures: out, into: yp.baseAddress!)
                    }
                }
            }
        }
        return y
    }

    func norm(_ x: [Float], rows: Int, weight: Tensor, bias: Tensor?, into y: inout [Float]) throws {
        let d = weight.shape[0], eps = Float(config.normEps)
        if config.architecture == .opt {
            try weight.withFloats { g in
                if let bias { try bias.withFloats { b in Kernels.layerNorm(x, rows: rows, width: d, gamma: g, beta: b, eps: eps, into: &y) } }
                else { Kernels.layerNorm(x, rows: rows, width: d, gamma: g, beta: nil, eps: eps, into: &y) }
            }
            return
        }
        // HF LlamaRMSNorm: x · rsqrt(mean(x²) + eps), then · weight.
        try weight.withFloats { g in
            for r in 0..<rows {
                var s: Float = 0
                for j in 0..<d { s += x[r * d + j] * x[r * d + j] }
                let inv = 1 / (s / Float(d) + eps).squareRoot()
                for j in 0..<d { y[r * d + j] = g[j] * (x[r * d + j] * inv) }
            }
        }
    }

    func attention(_ h: [Float], rows t: Int, layer: Layer, index l: Int, cache: Cache, past: Int) throws -> [Float] {
        let c = config, hd = c.headDim, heads = c.heads, kvHeads = c.keyValueHeads
        var q = try linear(h, rows: t, weight: layer.q, bias: layer.qb)
        var k = try linear(h, rows: t, weight: layer.k, bias: layer.kb)
        let v = try linear(h, rows: t, weight: layer.v, bias: layer.vb)
        if c.architecture == .llama {
            rope(&q, rows: t, heads: heads, past: past)
            rope(&k, rows: t, heads: kvHeads, past: past)
        }
        cache.keys[l] += k
        cache.values[l] += v
        let total = past + t, kvd = kvHeads * hd, group = heads / kvHeads
        let scale = 1 / Float(hd).squareRoot()
        var out = [Float](repeating: 0, count: t * heads * hd)
        let keys = cache.keys[l], values = cache.values[l]
        var scores = [Float](repeating: 0, count: total)
        for head in 0..<heads {
            let kh = head / group
            for i in 0..<t {
                let visible = past + i + 1
                var m = -Float.infinity
                for j in 0..<visible {
                    var s: Float = 0
                    for e in 0..<hd { s += q[(i * heads + head) * hd + e] * keys[j * kvd + kh * hd + e] }
                    scores[j] = s * scale
                    m = max(m, scores[j])
                }
                var z: Float = 0
                for j in 0..<visible { scores[j] = expf(scores[j] - m); z += scores[j] }
                for j in 0..<visible {
                    let p = scores[j] / z
                    for e in 0..<hd { out[(i * heads + head) * hd + e] += p * values[j * kvd + kh * hd + e] }
                }
            }
        }
        return try linear(out, rows: t, weight: layer.o, bias: layer.ob)
    }

    /// HF's rotate-half RoPE at absolute positions past…past+rows−1.
    func rope(_ x: inout [Float], rows: Int, heads: Int, past: Int) {
        let hd = config.headDim, half = hd / 2
        for i in 0..<rows {
            let pos = Float(past + i)
            for h in 0..<heads {
                let base = (i * heads + h) * hd
                for j in 0..<half {
                    let angle = pos * ropeInv[j]
                    let (cs, sn) = (cosf(angle), sinf(angle))
                    let (a, b) = (x[base + j], x[base + j + half])
                    x[base + j] = a * cs - b * sn
                    x[base + j + half] = b * cs + a * sn
                }
            }
        }
    }

    func ffn(_ h: [Float], rows t: Int, layer: Layer, index l: Int) throws -> [Float] {
        let c = config, d = c.hiddenSize
        if let s = sparse[l] {
            // The kept neurons only, from the gathered contiguous weights.
            let k = s.neurons.count
            var a = [Float](repeating: 0, count: t * k)
            s.up.withUnsafeBufferPointer { w in h.withUnsafeBufferPointer { x in a.withUnsafeMutableBufferPointer { y in
                if let ub = s.upb { ub.withUnsafeBufferPointer { b in Kernels.linear(x.baseAddress!, rows: t, inFeatures: d, weight: w.baseAddress!, bias: b.baseAddress!, outFeatures: k, into: y.baseAddress!) } }
                else { Kernels.linear(x.baseAddress!, rows: t, inFeatures: d, weight: w.baseAddress!, bias: nil, outFeatures: k, into: y.baseAddress!) }
            } } }
            if let gate = s.gate {
                var g = [Float](repeating: 0, count: t * k)
                gate.withUnsafeBufferPointer { w in h.withUnsafeBufferPointer { x in g.withUnsafeMutableBufferPointer { y in
                    Kernels.linear(x.baseAddress!, rows: t, inFeatures: d, weight: w.baseAddress!, bias: nil, outFeatures: k, into: y.baseAddress!)
                } } }
                for i in 0..<(t * k) { a[i] *= g[i] / (1 + expf(-g[i])) }
            } else {
                for i in 0..<(t * k) { a[i] = max(a[i], 0) }
            }
            var y = [Float](repeating: 0, count: t * d)
            s.down.withUnsafeBufferPointer { w in a.withUnsafeBufferPointer { x in y.withUnsafeMutableBufferPointer { out in
                Kernels.linear(x.baseAddress!, rows: t, inFeatures: k, weight: w.baseAddress!, bias: nil, outFeatures: d, into: out.baseAddress!)
            } } }
            if let db = layer.downb { try db.withFloats { b in for r in 0..<t { for j in 0..<d { y[r * d + j] += b[j] } } } }
            return y
        }
        var a = try linear(h, rows: t, weight: layer.up, bias: layer.upb)
        if let gate = layer.gate {
            let g = try linear(h, rows: t, weight: gate, bias: nil)
            for i in 0..<a.count { a[i] *= g[i] / (1 + expf(-g[i])) }     // SiLU(gate) · up
            activationHook?(l, a, t)
        } else {
            activationHook?(l, a, t)                                    // fc1 output before ReLU
            switch c.activation {
            case .relu: for i in 0..<a.count { a[i] = max(a[i], 0) }
            case .gelu:
                a.withUnsafeMutableBufferPointer { Kernels.geluExact($0.baseAddress!, count: $0.count) }
            case .geluTanh:
                for i in 0..<a.count { let v = a[i]; a[i] = 0.5 * v * (1 + tanhf(0.7978845608028654 * (v + 0.044715 * v * v * v))) }
            case .silu: for i in 0..<a.count { a[i] /= (1 + expf(-a[i])) }
            }
        }
        return try linear(a, rows: t, weight: layer.down, bias: layer.downb)
    }

    /// Gathers the rows (columns of the down projection) of `neurons` in layer `l` once, so that
    /// decoding runs dense products on smaller matrices. `nil` restores the dense FFN.
    public func setSparse(layer l: Int, neurons: [Int]?) throws {
        guard let neurons else { sparse[l] = nil; return }
        let layer = layers[l], d = config.hiddenSize, dff = config.intermediateSize
        guard neurons.allSatisfy({ (0..<dff).contains($0) }) else { throw FormatError(path: "core neurons", "an index is outside 0..<\(dff)") }
        func rows(_ t: Tensor) throws -> [Float] {
            try t.withFloats { w in neurons.flatMap { n in (0..<d).map { w[n * d + $0] } } }
        }
        let up = try rows(layer.up), gate = try layer.gate.map(rows)
        let upb = try layer.upb.map { b in try b.withFloats { p in neurons.map { p[$0] } } }
        let down = try layer.down.withFloats { w in (0..<d).flatMap { r in neurons.map { w[r * dff + $0] } } }
        sparse[l] = SparseFFN(neurons: neurons, up: up, upb: upb, gate: gate, down: down)
    }
}
