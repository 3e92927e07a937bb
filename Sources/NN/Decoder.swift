import Formats
import Foundation
import Tensors

/// A decoder-only language model (OPT or LLaMA, Hugging Face layout), one definition for training
/// and inference, its parameters named as the `transformers` state dict, so `save` writes a folder
/// (with `config.json`) that `init(folder:)` and `transformers` read.
///
/// OPT (pre-LN): x = E[ids] (· project_in) + P[pos + 2]; per layer x += Wo·attn(LN₁x) ;
///   x += W2·act(W1·LN₂x + b1) + b2; final LN (· project_out); logits = x·Eᵀ (or lm_head).
/// LLaMA: x = E[ids]; per layer x += Wo·attn(RMS₁x) with RoPE on q, k (rotate-half form, inv_freq =
///   θ^(−2i/d)) and grouped-query heads; x += Wdown·(SiLU(Wgate·RMS₂x) ⊙ Wup·RMS₂x); RMS; lm_head.
///
/// Two paths on the same parameters: `callAsFunction(_: [[Int]])` records the graph (training:
/// logits of whole sequences); `forward(_:cache:)` is the no-grad fast path for decoding, batch 1,
/// with a key-value cache and CoreInfer's sparse FFN (`setSparse`), reading the current parameter
/// tensors (memory-mapped as loaded until an optimizer replaces them).
public final class DecoderLM: Module {
    public let config: DecoderConfig

    /// One decoder layer's parameters. OPT: up = fc1, down = fc2, no gate; LLaMA: gate, up, down.
    public struct Layer {
        public let norm1: Parameter, norm1Bias: Parameter?, norm2: Parameter, norm2Bias: Parameter?
        public let q: Linear, k: Linear, v: Linear, o: Linear
        public let gate: Linear?, up: Linear, down: Linear
    }
    public let layers: [Layer]
    public let embed: Parameter
    /// OPT's learned positions [maxPositions + 2, D].
    public let positions: Parameter?
    public let finalNorm: Parameter, finalNormBias: Parameter?
    /// The output projection: `embed` itself when the embeddings are tied.
    public let head: Parameter
    public let projectIn: Parameter?, projectOut: Parameter?
    public var isTraining = true
    let ropeInv: [Float]

    /// Per layer, an optional replacement of the FFN's neurons: only `neurons` are computed, from
    /// weights gathered once into contiguous matrices (CoreInfer's decoding). In bf16 inference the
    /// gathered matrices are also kept rounded to bfloat16 (made by `setSparse` under bf16, or at the
    /// first bf16 product).
    public struct SparseFFN: Sendable {
        public let neurons: [Int]
        let up: [Float], upb: [Float]?, gate: [Float]?, down: [Float] // [k, D], [k], [k, D], [D, k]
        var rounded: Rounded?
        struct Rounded: Sendable { let up: [UInt16], gate: [UInt16]?, down: [UInt16] }

        init(neurons: [Int], up: [Float], upb: [Float]?, gate: [Float]?, down: [Float]) {
            (self.neurons, self.up, self.upb, self.gate, self.down) = (neurons, up, upb, gate, down)
            if GEMM.precision == .bf16 { rounded = makeRounded() }
        }

        func makeRounded() -> Rounded {
            Rounded(up: Kernels.roundedBF16(up), gate: gate.map(Kernels.roundedBF16), down: Kernels.roundedBF16(down))
        }
    }
    /// Gathered copies: call `setSparse` again after the weights change.
    public var sparse: [SparseFFN?]
    /// When set, called with (layer, activations [T, dff]) after every FFN during a forward pass:
    /// OPT's fc1 output before ReLU, LLaMA's SiLU(gate)·up (the input of down_proj).
    public var activationHook: ((Int, [Float], Int) -> Void)?
    /// LLaMA only: when set, called with (layer, gate_proj output [T, dff] — the SiLU's input, rows)
    /// during a dense FFN (CoreInfer's similarity signal in the released code).
    public var gateHook: ((Int, [Float], Int) -> Void)?
    /// When set, called with the seconds each FFN took (benchmarks: the FFN's share of a step).
    public var ffnTimer: ((Double) -> Void)?

    /// A fresh model with seeded random parameters (N(0, 0.02) embeddings and head, torch's Linear
    /// initialisation, unit norms).
    public convenience init(config: DecoderConfig, seed: UInt64 = 0) {
        self.init(config: config, source: ParameterSource(seed: seed), tiedHead: config.tieWordEmbeddings)
    }

    /// Loads `config.json` and the weights (safetensors, sharded or `pytorch_model.bin`) of a
    /// Hugging Face folder; every mismatch is reported in one error.
    public convenience init(folder: String) throws {
        let config = try DecoderConfig.load(path: folder)
        let checkpoint = try Checkpoint(path: folder)
        let loader = StateDictLoader(checkpoint)
        let hasHead = checkpoint.contains("lm_head.weight")
        switch config.architecture {
        case .opt:
            self.init(config: config, source: ParameterSource(loader: loader), tiedHead: !(hasHead && !config.tieWordEmbeddings))
            try loader.finish(allowUnused: { $0 == "lm_head.weight" })
        case .llama:
            self.init(config: config, source: ParameterSource(loader: loader), tiedHead: config.tieWordEmbeddings || !hasHead)
            try loader.finish()
        }
    }

    init(config c: DecoderConfig, source s: ParameterSource, tiedHead: Bool) {
        config = c
        let d = c.hiddenSize, dff = c.intermediateSize
        let qd = c.heads * c.headDim, kvd = c.keyValueHeads * c.headDim
        func normal(_ name: String, _ shape: [Int]) -> Parameter {
            s.parameter(name, shape) { rng in Tensor.make(shape) { p in for i in 0..<shape.reduce(1, *) { p[i] = Float(rng.nextNormal()) * 0.02 } } }
        }
        var layers: [Layer] = []
        switch c.architecture {
        case .opt:
            let p = "model.decoder.", e = c.wordEmbedProjDim
            embed = normal(p + "embed_tokens.weight", [c.vocabSize, e])
            positions = normal(p + "embed_positions.weight", [c.maxPositions + 2, d])
            projectIn = e != d ? normal(p + "project_in.weight", [d, e]) : nil
            projectOut = e != d ? normal(p + "project_out.weight", [e, d]) : nil
            head = tiedHead ? embed : normal("lm_head.weight", [c.vocabSize, e])
            finalNorm = s.filled(p + "final_layer_norm.weight", [d], 1)
            finalNormBias = s.filled(p + "final_layer_norm.bias", [d], 0)
            for l in 0..<c.layers {
                let q = p + "layers.\(l)."
                layers.append(
                    Layer(
                        norm1: s.filled(q + "self_attn_layer_norm.weight", [d], 1), norm1Bias: s.filled(q + "self_attn_layer_norm.bias", [d], 0),
                        norm2: s.filled(q + "final_layer_norm.weight", [d], 1), norm2Bias: s.filled(q + "final_layer_norm.bias", [d], 0),
                        q: s.linear(q + "self_attn.q_proj", d, qd, bias: c.attentionBias), k: s.linear(q + "self_attn.k_proj", d, kvd, bias: c.attentionBias),
                        v: s.linear(q + "self_attn.v_proj", d, kvd, bias: c.attentionBias), o: s.linear(q + "self_attn.out_proj", qd, d, bias: c.attentionBias),
                        gate: nil, up: s.linear(q + "fc1", d, dff, bias: c.mlpBias), down: s.linear(q + "fc2", dff, d, bias: c.mlpBias)))
            }
        case .llama:
            let p = "model."
            embed = normal(p + "embed_tokens.weight", [c.vocabSize, d])
            head = tiedHead ? embed : normal("lm_head.weight", [c.vocabSize, d])
            positions = nil
            projectIn = nil
            projectOut = nil
            finalNorm = s.filled(p + "norm.weight", [d], 1)
            finalNormBias = nil
            for l in 0..<c.layers {
                let q = p + "layers.\(l)."
                let norm1 = s.filled(q + "input_layernorm.weight", [d], 1), norm2 = s.filled(q + "post_attention_layernorm.weight", [d], 1)
                let (wq, wk) = (s.linear(q + "self_attn.q_proj", d, qd, bias: c.attentionBias), s.linear(q + "self_attn.k_proj", d, kvd, bias: c.attentionBias))
                let (wv, wo) = (s.linear(q + "self_attn.v_proj", d, kvd, bias: c.attentionBias), s.linear(q + "self_attn.o_proj", qd, d, bias: c.attentionBias))
                let gate = s.linear(q + "mlp.gate_proj", d, dff, bias: c.mlpBias), up = s.linear(q + "mlp.up_proj", d, dff, bias: c.mlpBias)
                layers.append(
                    Layer(
                        norm1: norm1, norm1Bias: nil, norm2: norm2, norm2Bias: nil, q: wq, k: wk, v: wv, o: wo,
                        gate: gate, up: up, down: s.linear(q + "mlp.down_proj", dff, d, bias: c.mlpBias)))
            }
        }
        self.layers = layers
        let half = c.headDim / 2
        ropeInv = (0..<half).map { Float(1 / pow(c.ropeTheta, Double(2 * $0) / Double(c.headDim))) }
        sparse = Array(repeating: nil, count: c.layers)
    }

    public var namedParameters: [(String, Parameter)] {
        let llama = config.architecture == .llama
        let p = llama ? "model." : "model.decoder."
        var out: [(String, Parameter)] = [(p + "embed_tokens.weight", embed)]
        if head !== embed { out.append(("lm_head.weight", head)) }
        if let positions { out.append((p + "embed_positions.weight", positions)) }
        if let projectIn { out.append((p + "project_in.weight", projectIn)) }
        if let projectOut { out.append((p + "project_out.weight", projectOut)) }
        out.append((p + (llama ? "norm.weight" : "final_layer_norm.weight"), finalNorm))
        if let finalNormBias { out.append((p + "final_layer_norm.bias", finalNormBias)) }
        for (i, l) in layers.enumerated() {
            let n = p + "layers.\(i)."
            let (n1, n2) = llama ? ("input_layernorm", "post_attention_layernorm") : ("self_attn_layer_norm", "final_layer_norm")
            out += [(n + n1 + ".weight", l.norm1)] + (l.norm1Bias.map { [(n + n1 + ".bias", $0)] } ?? [])
            out += [(n + n2 + ".weight", l.norm2)] + (l.norm2Bias.map { [(n + n2 + ".bias", $0)] } ?? [])
            out += prefixed(n + "self_attn.q_proj.", l.q.namedParameters) + prefixed(n + "self_attn.k_proj.", l.k.namedParameters)
            out += prefixed(n + "self_attn.v_proj.", l.v.namedParameters)
            out += prefixed(n + (llama ? "self_attn.o_proj." : "self_attn.out_proj."), l.o.namedParameters)
            if let gate = l.gate { out += prefixed(n + "mlp.gate_proj.", gate.namedParameters) }
            out += prefixed(n + (llama ? "mlp.up_proj." : "fc1."), l.up.namedParameters)
            out += prefixed(n + (llama ? "mlp.down_proj." : "fc2."), l.down.namedParameters)
        }
        return out
    }

    // MARK: Differentiable path

    /// Logits [B, T, V] of token ids [B][T] (equal lengths, positions 0…T−1), recording the graph.
    public func callAsFunction(_ ids: [[Int]]) throws -> Variable {
        let c = config, b = ids.count, t = ids.first?.count ?? 0, d = c.hiddenSize, hd = c.headDim, h = c.heads, kv = c.keyValueHeads
        guard b > 0, t > 0, ids.allSatisfy({ $0.count == t && $0.allSatisfy { (0..<c.vocabSize).contains($0) } }) else {
            throw TensorError("token ids must be \(b) non-empty rows of equal length with ids in 0..<\(c.vocabSize)")
        }
        guard t <= c.maxPositions else { throw TensorError("\(t) tokens exceed the model's context of \(c.maxPositions) positions") }
        let eps = Float(c.normEps), llama = c.architecture == .llama
        func norm(_ x: Variable, _ w: Parameter, _ bias: Parameter?) -> Variable {
            llama ? x.rmsNorm(weight: w.variable, eps: eps) : x.layerNorm(weight: w.variable, bias: bias?.variable, eps: eps)
        }
        var x = embed.variable.gatherRows(ids.flatMap { $0 })
        if let projectIn { x = matmul(x, projectIn.variable, transposeB: true) }
        x = x.reshaped([b, t, d])
        if let positions { x = x + positions.variable.slice(axis: 0, 2..<(t + 2)) }
        // RoPE tables [1, T, 1, hd] (cos and sin of pos · inv_freq, halves repeated).
        let half = hd / 2
        let inv = (0..<half).map { 1 / pow(c.ropeTheta, Double(2 * $0) / Double(hd)) }
        let angles = (0..<t).flatMap { p in (0..<hd).map { Double(p) * inv[$0 % half] } }
        let cosT = Variable(Tensor.make([1, t, 1, hd]) { p in for i in angles.indices { p[i] = Float(cos(angles[i])) } })
        let sinT = Variable(Tensor.make([1, t, 1, hd]) { p in for i in angles.indices { p[i] = Float(sin(angles[i])) } })
        func rope(_ v: Variable) -> Variable {
            guard llama else { return v }
            let rotated = concat([-v.slice(axis: 3, half..<hd), v.slice(axis: 3, 0..<half)], axis: 3)
            return v * cosT + rotated * sinT
        }
        let mask = Variable(Tensor.make([t, t]) { m in for i in 0..<t { for j in (i + 1)..<max(t, i + 1) { m[i * t + j] = -.infinity } } })
        let group = h / kv
        for layer in layers {
            let a = norm(x, layer.norm1, layer.norm1Bias)
            let q = rope(layer.q(a).reshaped([b, t, h, hd])).permuted([0, 2, 1, 3])
            func expand(_ y: Variable) -> Variable {
                group == 1 ? y : y.reshaped([b, t, kv, 1, hd]).broadcast(to: [b, t, kv, group, hd]).reshaped([b, t, h, hd])
            }
            let k = expand(rope(layer.k(a).reshaped([b, t, kv, hd]))).permuted([0, 2, 1, 3])
            let v = expand(layer.v(a).reshaped([b, t, kv, hd])).permuted([0, 2, 1, 3])
            let scores = matmul(q * (1 / Float(hd).squareRoot()), k, transposeB: true) + mask
            let mixed = matmul(scores.softmax(), v).permuted([0, 2, 1, 3]).reshaped([b, t, h * hd])
            x = x + layer.o(mixed)
            let f = norm(x, layer.norm2, layer.norm2Bias)
            if let gate = layer.gate {
                x = x + layer.down(gate(f).silu() * layer.up(f))
            } else {
                let u = layer.up(f)
                let act: Variable
                switch c.activation {
                case .relu: act = u.relu()
                case .gelu: act = u.gelu()
                case .geluTanh: act = u.geluTanh()
                case .silu: act = u.silu()
                }
                x = x + layer.down(act)
            }
        }
        var y = norm(x, finalNorm, finalNormBias)
        if let projectOut { y = matmul(y, projectOut.variable, transposeB: true) }
        return matmul(y, head.variable, transposeB: true)
    }

    // MARK: No-grad fast path

    /// One layer's current norm and FFN tensors (references, no copies); the projections run
    /// through the layer's `Linear`s (`Linear.inference`, in the inference precision).
    struct Weights {
        var norm1: Tensor, norm1b: Tensor?, norm2: Tensor, norm2b: Tensor?
        var up: Tensor, upb: Tensor?, gate: Tensor?, down: Tensor, downb: Tensor?

        init(_ l: Layer) {
            (norm1, norm1b, norm2, norm2b) = (l.norm1.value, l.norm1Bias?.value, l.norm2.value, l.norm2Bias?.value)
            (up, upb, gate, down, downb) = (l.up.weight.value, l.up.bias?.value, l.gate?.weight.value, l.down.weight.value, l.down.bias?.value)
        }
    }

    /// Keys and values of every layer so far: [layer][position · kvDim].
    public final class Cache {
        var keys: [[Float]], values: [[Float]]
        public private(set) var length = 0
        init(layers: Int) { (keys, values) = (Array(repeating: [], count: layers), Array(repeating: [], count: layers)) }
        func advance(_ n: Int) { length += n }
        /// Forgets every position after the first `n` (a shared prompt continued several ways: one
        /// prefill, then each continuation from the same state).
        public func truncate(to n: Int) {
            guard n >= 0, n < length else { return }
            for l in keys.indices {
                let perPosition = keys[l].count / length
                keys[l].removeSubrange((n * perPosition)...)
                values[l].removeSubrange((n * perPosition)...)
            }
            length = n
        }
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
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= c.vocabSize }) {
            throw FormatError(path: "prompt", "token id \(bad) is outside the vocabulary of \(c.vocabSize)")
        }
        var x = try embedTokens(ids, past: past)
        var h = [Float](repeating: 0, count: t * d)
        for (l, layer) in layers.map(Weights.init).enumerated() {
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
        try norm(last, rows: rows, weight: finalNorm.value, bias: finalNormBias?.value, into: &normed)
        if let projectOut { normed = try linear(normed, rows: rows, weight: projectOut) }
        return try linear(normed, rows: rows, weight: head)
    }

    func embedTokens(_ ids: [Int32], past: Int) throws -> [Float] {
        let c = config, d = c.hiddenSize, e = embed.shape[1]
        var x = [Float](repeating: 0, count: ids.count * e)
        try embed.value.withFloats { w in
            for (i, id) in ids.enumerated() { for j in 0..<e { x[i * e + j] = w[Int(id) * e + j] } }
        }
        if let projectIn { x = try linear(x, rows: ids.count, weight: projectIn) }
        if let positions {
            try positions.value.withFloats { p in
                for i in 0..<ids.count { for j in 0..<d { x[i * d + j] += p[(past + i + 2) * d + j] } }
            }
        }
        return x
    }

    /// y = x·Wᵀ + b of a linear layer in the inference precision (`Linear.inference`: bf16 uses
    /// the weight rounded once per parameter version).
    func linear(_ x: [Float], rows: Int, _ layer: Linear) throws -> [Float] {
        var y = [Float](repeating: 0, count: rows * layer.weight.shape[0])
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeMutableBufferPointer { try layer.inference(xp.baseAddress!, rows: rows, into: $0.baseAddress!) }
        }
        return y
    }

    /// y = x·Wᵀ for a bias-free weight W [out, in] held as a parameter (the head, OPT's projections),
    /// in the inference precision.
    func linear(_ x: [Float], rows: Int, weight: Parameter) throws -> [Float] {
        try linear(x, rows: rows, Linear(weight: weight, bias: nil))
    }

    func norm(_ x: [Float], rows: Int, weight: Tensor, bias: Tensor?, into y: inout [Float]) throws {
        let d = weight.shape[0], eps = Float(config.normEps)
        if config.architecture == .opt {
            try weight.withFloats { g in
                if let bias {
                    try bias.withFloats { b in Kernels.layerNorm(x, rows: rows, width: d, gamma: g, beta: b, eps: eps, into: &y) }
                } else {
                    Kernels.layerNorm(x, rows: rows, width: d, gamma: g, beta: nil, eps: eps, into: &y)
                }
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

    func attention(_ h: [Float], rows t: Int, layer: Weights, index l: Int, cache: Cache, past: Int) throws -> [Float] {
        let c = config, hd = c.headDim, heads = c.heads, kvHeads = c.keyValueHeads
        let projections = layers[l]
        var q = try linear(h, rows: t, projections.q)
        var k = try linear(h, rows: t, projections.k)
        let v = try linear(h, rows: t, projections.v)
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
                for j in 0..<visible {
                    scores[j] = expf(scores[j] - m)
                    z += scores[j]
                }
                for j in 0..<visible {
                    let p = scores[j] / z
                    for e in 0..<hd { out[(i * heads + head) * hd + e] += p * values[j * kvd + kh * hd + e] }
                }
            }
        }
        return try linear(out, rows: t, projections.o)
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

    func ffn(_ h: [Float], rows t: Int, layer: Weights, index l: Int) throws -> [Float] {
        let c = config, d = c.hiddenSize
        if var s = sparse[l] {
            // The kept neurons only, from the gathered contiguous weights (rounded ones in bf16).
            let k = s.neurons.count
            if GEMM.precision == .bf16, s.rounded == nil {
                s.rounded = s.makeRounded()
                sparse[l] = s
            }
            let rounded = GEMM.precision == .bf16 ? s.rounded : nil
            /// y [t, out] = x [t, in] · Wᵀ (+ b) for the gathered W [out, in].
            func product(_ x: [Float], _ w: [Float], _ w16: [UInt16]?, bias: [Float]?, in inF: Int, out outF: Int) -> [Float] {
                var y = [Float](repeating: 0, count: t * outF)
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        bias.withOptionalPointer { bp in
                            if let w16 {
                                w16.withUnsafeBufferPointer {
                                    Kernels.linearBF16(
                                        xp.baseAddress!, rows: t, inFeatures: inF, weight: $0.baseAddress!, bias: bp, outFeatures: outF, into: yp.baseAddress!)
                                }
                            } else {
                                w.withUnsafeBufferPointer {
                                    Kernels.linear(
                                        xp.baseAddress!, rows: t, inFeatures: inF, weight: $0.baseAddress!, bias: bp, outFeatures: outF, into: yp.baseAddress!)
                                }
                            }
                        }
                    }
                }
                return y
            }
            var a = product(h, s.up, rounded?.up, bias: s.upb, in: d, out: k)
            if let gate = s.gate {
                let g = product(h, gate, rounded?.gate, bias: nil, in: d, out: k)
                for i in 0..<(t * k) { a[i] *= g[i] / (1 + expf(-g[i])) }
            } else {
                for i in 0..<(t * k) { a[i] = max(a[i], 0) }
            }
            var y = product(a, s.down, rounded?.down, bias: nil, in: k, out: d)
            if let db = layer.downb { try db.withFloats { b in for r in 0..<t { for j in 0..<d { y[r * d + j] += b[j] } } } }
            return y
        }
        let projections = layers[l]
        var a = try linear(h, rows: t, projections.up)
        if let gate = projections.gate {
            let g = try linear(h, rows: t, gate)
            gateHook?(l, g, t)
            for i in 0..<a.count { a[i] *= g[i] / (1 + expf(-g[i])) } // SiLU(gate) · up
            activationHook?(l, a, t)
        } else {
            activationHook?(l, a, t) // fc1 output before ReLU
            switch c.activation {
            case .relu: for i in 0..<a.count { a[i] = max(a[i], 0) }
            case .gelu:
                a.withUnsafeMutableBufferPointer { Kernels.geluExact($0.baseAddress!, count: $0.count) }
            case .geluTanh:
                for i in 0..<a.count {
                    let v = a[i]
                    a[i] = 0.5 * v * (1 + tanhf(0.7978845608028654 * (v + 0.044715 * v * v * v)))
                }
            case .silu: for i in 0..<a.count { a[i] /= (1 + expf(-a[i])) }
            }
        }
        return try linear(a, rows: t, projections.down)
    }

    /// Gathers the rows (columns of the down projection) of `neurons` in layer `l` once, so that
    /// decoding runs dense products on smaller matrices. `nil` restores the dense FFN.
    public func setSparse(layer l: Int, neurons: [Int]?) throws {
        guard let neurons else {
            sparse[l] = nil
            return
        }
        let layer = Weights(layers[l]), d = config.hiddenSize, dff = config.intermediateSize
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

extension Optional where Wrapped == [Float] {
    /// `body` with the array's base address, or nil when there is no array.
    fileprivate func withOptionalPointer<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let self else { return body(nil) }
        return self.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
