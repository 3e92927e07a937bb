import Foundation
import Tensors

/// How a checkpoint names the parts of a pre-norm transformer block.
public struct BlockNaming: Sendable {
    public var norm1, qkvWeight, qkvBias, proj, norm2, fc1, fc2: String

    /// timm `Block`: `norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`.
    public static let timm = BlockNaming(
        norm1: "norm1", qkvWeight: "attn.qkv.weight", qkvBias: "attn.qkv.bias", proj: "attn.proj",
        norm2: "norm2", fc1: "mlp.fc1", fc2: "mlp.fc2")
    /// open_clip `ResidualAttentionBlock` (torch `nn.MultiheadAttention`): `ln_1`, `attn.in_proj_*`,
    /// `attn.out_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`.
    public static let openCLIP = BlockNaming(
        norm1: "ln_1", qkvWeight: "attn.in_proj_weight", qkvBias: "attn.in_proj_bias",
        proj: "attn.out_proj", norm2: "ln_2", fc1: "mlp.c_fc", fc2: "mlp.c_proj")
}

/// The MLP activation of a transformer.
public enum Activation: String, Sendable {
    /// x·Φ(x) with the exact erf (torch `nn.GELU()`).
    case gelu
    /// x·σ(1.702·x) (OpenAI CLIP's `QuickGELU`).
    case quickGELU = "quick_gelu"
}

/// A pre-norm transformer block, one definition for training and inference:
/// x ← x + γ₁·W_o·attn(LN1(x)) ;  x ← x + γ₂·W_2·act(W_1·LN2(x)), attention = softmax(q kᵀ/√d_head + mask)·v
/// per head, q, k, v from one packed [3D, D] projection, γ the optional layer scale (DINOv2).
/// `callAsFunction` records the graph (autograd); `TransformerStack` runs a list of blocks on the
/// same parameters without a tape (fused sgemm kernels, buffers reused from block to block).
public final class TransformerBlock: Module {
    public let norm1: LayerNorm, norm2: LayerNorm
    public let attention: MultiheadAttention
    public let fc1: Linear, fc2: Linear
    /// Per-channel gains of the two residual branches (timm `ls1.gamma`, `ls2.gamma`; DINOv2).
    public let layerScale1: Parameter?, layerScale2: Parameter?
    public let activation: Activation
    public let naming: BlockNaming
    public var isTraining = true

    public convenience init(
        width: Int, heads: Int, hidden: Int, qkvBias: Bool = true, eps: Float = 1e-6, activation: Activation = .gelu,
        naming: BlockNaming = .timm, layerScale: Bool = false, rng: inout SeededGenerator
    ) {
        let source = ParameterSource(seed: 0)
        source.rng = rng
        self.init(
            source: source, prefix: "", width: width, heads: heads, hidden: hidden, qkvBias: qkvBias, eps: eps,
            activation: activation, naming: naming, layerScale: layerScale)
        rng = source.rng
    }

    /// The block's parameters named `prefix + naming.*`, fresh or from a checkpoint.
    init(
        source s: ParameterSource, prefix p: String, width d: Int, heads: Int, hidden h: Int, qkvBias: Bool, eps: Float,
        activation: Activation, naming: BlockNaming, layerScale: Bool
    ) {
        norm1 = s.layerNorm(p + naming.norm1, d, eps: eps)
        layerScale1 = layerScale ? s.filled(p + "ls1.gamma", [d], 1e-5) : nil
        layerScale2 = layerScale ? s.filled(p + "ls2.gamma", [d], 1e-5) : nil
        norm2 = s.layerNorm(p + naming.norm2, d, eps: eps)
        var names = MultiheadAttention.Names()
        names.qkvWeight = naming.qkvWeight
        names.qkvBias = naming.qkvBias
        names.out = naming.proj
        let bound = 1 / Float(d).squareRoot()
        let qkvWeight = s.uniform(p + naming.qkvWeight, [3 * d, d], bound: bound)
        let qkv = Linear(weight: qkvWeight, bias: qkvBias ? s.uniform(p + naming.qkvBias, [3 * d], bound: bound, decays: false) : nil)
        attention = MultiheadAttention(width: d, heads: heads, qkv: qkv, out: s.linear(p + naming.proj, d, d), names: names)
        fc1 = s.linear(p + naming.fc1, d, h)
        fc2 = s.linear(p + naming.fc2, h, d)
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

    /// The differentiable forward. `norm1Tap` receives the output of the first LayerNorm (Grad-CAM's
    /// usual ViT target layer).
    public func callAsFunction(
        _ x: Variable, causal: Bool = false, cache: KVCache? = nil,
        norm1Tap: ((Variable) -> Void)? = nil
    ) -> Variable {
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

/// The no-grad fast path of a list of `TransformerBlock`s: the same computation as calling them
/// one after the other, on buffers [n·t, width] updated in place, with cblas sgemm products and the
/// attention's (image, head) pairs shared out over the threads. It reads the blocks' current
/// parameter tensors (no copy), so it always sees the weights an optimizer step left.
public struct TransformerStack {
    public let blocks: [TransformerBlock]

    public init(_ blocks: [TransformerBlock]) { self.blocks = blocks }

    public var depth: Int { blocks.count }

    /// Runs every block in place on x [n, t, width]. With `causal`, token i attends to tokens ≤ i.
    /// `observe(i, x)` sees the input of block i (for taps such as Grad-CAM's target layer).
    /// `oneDNN`: whether the blocks run as fused oneDNN products (`fusedAttention`, `fusedMLP`) —
    /// nil: in bf16 precision, and in fp32 wherever oneDNN loads unless MENAGERIE_BACKEND=openblas.
    /// Throws when a block has an attention `scoreTransform` (only the differentiable path applies it).
    public func forward(
        _ x: inout [Float], batch n: Int, tokens t: Int, causal: Bool = false, oneDNN: Bool? = nil,
        observe: ((Int, [Float]) -> Void)? = nil
    ) throws {
        guard let first = blocks.first else { return }
        if blocks.contains(where: { $0.attention.scoreTransform != nil }) {
            throw TensorError("an attention scoreTransform is set: the no-grad fast path does not apply it (use the differentiable forward)")
        }
        let fused = n * t > 1 ? Self.fusedMode(oneDNN: oneDNN) : nil
        var ws = Workspace(rows: n * t, width: first.attention.width, hidden: first.fc1.weight.shape[0], tokens: t, fused: fused)
        for (i, block) in blocks.enumerated() {
            observe?(i, x)
            try apply(block, to: &x, batch: n, tokens: t, causal: causal, workspace: &ws)
        }
    }

    /// The intermediate buffers of a block, allocated once per forward and reused by every block
    /// (fresh multi-megabyte arrays per block cost page faults and clearing).
    struct Workspace {
        var y, qkv, attended, mid, scores: [Float]
        /// The fused oneDNN path's buffers (sized on first use): the packed qkv rows, the heads'
        /// outputs and the MLP's hidden activations (bfloat16 in their first half in bf16), and a
        /// group of images' attention scores (fp32) and, in bf16, probabilities.
        var fusedQKV: [Float] = [], fusedAttended: [Float] = [], fusedMid: [Float] = []
        var headScores: [Float] = [], probs16: [UInt16] = []
        /// Whether (and in which precision) the blocks run fused.
        var fused: FusedMode?
        /// The thread count `scores` was sized for (one t×t block per thread).
        var threads = 1
        /// `fused`: the unfused path's buffers wait until a block needs them (`unfused`).
        init(rows: Int, width d: Int, hidden: Int, tokens t: Int, fused: FusedMode?) {
            y = [Float](repeating: 0, count: rows * d)
            (qkv, attended, mid, scores) = ([], [], [], [])
            self.fused = fused
            if fused == nil { unfused(rows: rows, width: d, hidden: hidden, tokens: t) }
        }
        /// Sizes the unfused path's buffers (each once; `tokens` 0: the MLP's alone).
        mutating func unfused(rows: Int, width d: Int, hidden: Int, tokens t: Int) {
            if qkv.count < rows * 3 * d { qkv = [Float](repeating: 0, count: rows * 3 * d) }
            if attended.count < rows * d { attended = [Float](repeating: 0, count: rows * d) }
            if mid.count < rows * hidden { mid = [Float](repeating: 0, count: rows * hidden) }
            if t > 0, scores.count < max(1, GEMM.threads) * t * t {
                threads = max(1, GEMM.threads)
                scores = [Float](repeating: 0, count: threads * t * t)
            }
        }
    }

    func apply(_ bk: TransformerBlock, to x: inout [Float], batch n: Int, tokens t: Int, causal: Bool, workspace ws: inout Workspace) throws {
        let heads = bk.attention.heads, d = bk.attention.width, hidden = bk.fc1.weight.shape[0], hd = d / heads, rows = n * t
        guard let qkvLayer = bk.attention.qkv, bk.fc1.bias != nil, bk.fc2.bias != nil, bk.attention.out.bias != nil else {
            throw TensorError("the fast path needs a packed qkv projection and biased output, fc1 and fc2 layers")
        }
        let eps = bk.norm1.eps
        try bk.norm1.weight.value.withFloats { w in
            try bk.norm1.bias.value.withFloats { b in
                Kernels.layerNorm(x, rows: rows, width: d, gamma: w, beta: b, eps: eps, into: &ws.y)
            }
        }
        if let mode = ws.fused, try fusedAttention(bk, mode: mode, batch: n, tokens: t, causal: causal, x: &x, workspace: &ws) {
            try mlp(bk, rows: rows, width: d, hidden: hidden, x: &x, workspace: &ws)
            return
        }
        ws.unfused(rows: rows, width: d, hidden: hidden, tokens: t)
        var qkv = ws.qkv
        defer { ws.qkv = qkv }
        ws.qkv = []
        try qkv.withUnsafeMutableBufferPointer { try qkvLayer.inference(ws.y, rows: rows, into: $0.baseAddress!) }
        var attended = ws.attended, scores = ws.scores
        ws.attended = []
        ws.scores = []
        defer { (ws.attended, ws.scores) = (attended, scores) }
        let scale = 1 / Float(hd).squareRoot()
        // One (image, head) pair per item, the pairs shared out over the threads, each with its own
        // scores buffer.
        qkv.withUnsafeBufferPointer { qkvp in
            attended.withUnsafeMutableBufferPointer { outp in
                scores.withUnsafeMutableBufferPointer { sp in
                    let pointers = UncheckedPointers(qkv: qkvp.baseAddress!, out: outp.baseAddress!, scores: sp.baseAddress!)
                    GEMM.concurrently(n * heads, threads: ws.threads) { thread, items in
                        let s = pointers.scores + thread * t * t
                        for item in items {
                            let (b, hh) = item.quotientAndRemainder(dividingBy: heads)
                            let base = pointers.qkv + b * t * 3 * d
                            GEMM.sgemm(
                                transposeB: true, m: t, n: t, k: hd, alpha: scale, a: base + hh * hd, lda: 3 * d,
                                b: base + d + hh * hd, ldb: 3 * d, c: s, ldc: t)
                            if causal { for r in 0..<t { for col in (r + 1)..<max(t, r + 1) { s[r * t + col] = -.infinity } } }
                            Kernels.softmaxRows(s, rows: t, width: t)
                            GEMM.sgemm(
                                m: t, n: hd, k: t, a: s, lda: t, b: base + 2 * d + hh * hd, ldb: 3 * d,
                                c: pointers.out + b * t * d + hh * hd, ldc: d)
                        }
                    }
                }
            }
        }
        try residual(attended, rows: rows, width: d, inFeatures: d, layer: bk.attention.out, gain: bk.layerScale1, into: &x, scratch: &ws.y)
        try mlp(bk, rows: rows, width: d, hidden: hidden, x: &x, workspace: &ws)
    }

    /// x += MLP(LN₂(x)) of a block.
    func mlp(_ bk: TransformerBlock, rows: Int, width d: Int, hidden: Int, x: inout [Float], workspace ws: inout Workspace) throws {
        try bk.norm2.weight.value.withFloats { w in
            try bk.norm2.bias.value.withFloats { b in
                Kernels.layerNorm(x, rows: rows, width: d, gamma: w, beta: b, eps: bk.norm2.eps, into: &ws.y)
            }
        }
        if let mode = ws.fused, try fusedMLP(bk, mode: mode, rows: rows, width: d, hidden: hidden, x: &x, workspace: &ws) { return }
        ws.unfused(rows: rows, width: d, hidden: hidden, tokens: 0)
        var mid = ws.mid
        ws.mid = []
        defer { ws.mid = mid }
        try mid.withUnsafeMutableBufferPointer { try bk.fc1.inference(ws.y, rows: rows, into: $0.baseAddress!) }
        switch bk.activation {
        case .gelu: Kernels.geluExact(&mid, count: mid.count)
        case .quickGELU: Kernels.quickGELU(&mid, count: mid.count)
        }
        try residual(mid, rows: rows, width: d, inFeatures: hidden, layer: bk.fc2, gain: bk.layerScale2, into: &x, scratch: &ws.y)
    }

    /// Which fused oneDNN path the blocks take: bf16 inference, fp32 (asked for, or by default where
    /// oneDNN loads: `GEMM.fusesBlocksThroughOneDNN`), or none (OpenBLAS and our kernels).
    static func fusedMode(oneDNN: Bool?) -> FusedMode? {
        if oneDNN == false { return nil }
        if GEMM.precision == .bf16 { return .bf16 }
        return oneDNN == true || GEMM.fusesBlocksThroughOneDNN || GEMM.backend is OneDNNBackend ? .fp32 : nil
    }
    enum FusedMode { case bf16, fp32 }

    /// The attention of a block as oneDNN calls: the qkv rows come out of their product with the
    /// bias added (in bf16: already bfloat16); the scores of every (image, head) pair are one batched
    /// product reading the heads in place (fp32, scaled by 1/√d_head); softmax in fp32 (in bf16 the
    /// probabilities rounded once); their product with the values lands in the heads' columns; the
    /// output projection adds into x. Images go through in groups whose scores fit in 2²² floats.
    /// False when oneDNN cannot run the first product (nothing written then).
    func fusedAttention(
        _ bk: TransformerBlock, mode: FusedMode, batch n: Int, tokens t: Int, causal: Bool, x: inout [Float], workspace ws: inout Workspace
    ) throws -> Bool {
        guard let qkvLayer = bk.attention.qkv else { return false }
        let heads = bk.attention.heads, d = bk.attention.width, hd = d / heads, rows = n * t
        let bf16 = mode == .bf16
        // The intermediates live in Float arrays; in bf16 each holds bfloat16 values in its first half.
        if ws.fusedQKV.count < rows * 3 * d { ws.fusedQKV = [Float](repeating: 0, count: rows * 3 * d) }
        if ws.fusedAttended.count < rows * d { ws.fusedAttended = [Float](repeating: 0, count: rows * d) }
        let fused = try ws.y.withUnsafeBufferPointer { yp in
            try ws.fusedQKV.withUnsafeMutableBytes { qp in
                try qkvLayer.fused(UnsafeRawPointer(yp.baseAddress!), bf16: bf16, rows: rows, outputBF16: bf16, into: qp.baseAddress!)
            }
        }
        guard fused else { return false }
        let group = max(1, min(n, (1 << 22) / max(1, heads * t * t)))
        let perGroup = group * heads * t * t
        if ws.headScores.count < perGroup { ws.headScores = [Float](repeating: 0, count: perGroup) }
        if bf16 && ws.probs16.count < perGroup { ws.probs16 = [UInt16](repeating: 0, count: perGroup) }
        let scale = 1 / Float(hd).squareRoot()
        let size = bf16 ? 2 : 4
        for first in stride(from: 0, to: n, by: group) {
            let g = min(group, n - first)
            // Q [g, heads, t, hd] and V alike: rows of 3d, a head's columns at h·hd; Kᵀ [g, heads, hd, t].
            let q = Kernels.StridedOperand(dims: [g, heads, t, hd], strides: [t * 3 * d, hd, 3 * d, 1], bf16: bf16)
            let kT = Kernels.StridedOperand(dims: [g, heads, hd, t], strides: [t * 3 * d, hd, 1, 3 * d], bf16: bf16)
            let scores = Kernels.StridedOperand(dims: [g, heads, t, t], strides: [heads * t * t, t * t, t, 1], bf16: false)
            let probs = Kernels.StridedOperand(dims: [g, heads, t, t], strides: [heads * t * t, t * t, t, 1], bf16: bf16)
            let out = Kernels.StridedOperand(dims: [g, heads, t, hd], strides: [t * d, hd, d, 1], bf16: bf16)
            let ok = ws.fusedQKV.withUnsafeBytes { qp in
                ws.headScores.withUnsafeMutableBufferPointer { sp in
                    ws.probs16.withUnsafeMutableBufferPointer { pp in
                        ws.fusedAttended.withUnsafeMutableBytes { op in
                            let base = qp.baseAddress! + first * t * 3 * d * size
                            guard Kernels.stridedProduct(q, base, kT, base + d * size, scores, UnsafeMutableRawPointer(sp.baseAddress!), alpha: scale)
                            else { return false }
                            let box = UncheckedBox((sp.baseAddress!, bf16 ? pp.baseAddress : nil))
                            Parallel.chunks(g * heads, grain: 1) { blocks in
                                let (s, p) = box.value
                                for block in blocks {
                                    let sb = s + block * t * t
                                    if causal { for r in 0..<t { for col in (r + 1)..<max(t, r + 1) { sb[r * t + col] = -.infinity } } }
                                    Kernels.softmaxRows(sb, rows: t, width: t)
                                    if let p { Kernels.roundBF16(sb, into: p + block * t * t, count: t * t) }
                                }
                            }
                            let probabilities = bf16 ? UnsafeRawPointer(pp.baseAddress!) : UnsafeRawPointer(sp.baseAddress!)
                            return Kernels.stridedProduct(probs, probabilities, q, base + 2 * d * size, out, op.baseAddress! + first * t * d * size)
                        }
                    }
                }
            }
            guard ok else { throw TensorError("oneDNN ran the qkv product but not the attention products (\(g)×\(heads) heads of \(t) tokens)") }
        }
        let done = try ws.fusedAttended.withUnsafeBytes { ap -> Bool in
            let source = ap.baseAddress!
            guard bk.layerScale1 == nil else {
                return try ws.y.withUnsafeMutableBufferPointer { sp in
                    try bk.attention.out.fused(source, bf16: bf16, sourceBF16: bf16, rows: rows, into: UnsafeMutableRawPointer(sp.baseAddress!))
                }
            }
            return try x.withUnsafeMutableBufferPointer { xp in
                try bk.attention.out.fused(source, bf16: bf16, sourceBF16: bf16, rows: rows, accumulate: true, into: UnsafeMutableRawPointer(xp.baseAddress!))
            }
        }
        guard done else { throw TensorError("oneDNN ran the attention but not its output projection (\(rows) rows)") }
        if let gain = bk.layerScale1 { try addScaled(gain, ws.y, rows: rows, width: d, into: &x) }
        return true
    }

    /// The MLP of a block as two fused oneDNN products: the hidden activations come out of the first
    /// product already activated (in bf16: already bfloat16, never rounded again), and the second
    /// adds its product into x. False when oneDNN cannot run the first (nothing written then).
    func fusedMLP(_ bk: TransformerBlock, mode: FusedMode, rows: Int, width d: Int, hidden: Int, x: inout [Float], workspace ws: inout Workspace) throws -> Bool
    {
        let bf16 = mode == .bf16
        if ws.fusedMid.count < rows * hidden { ws.fusedMid = [Float](repeating: 0, count: rows * hidden) }
        let act: Kernels.FusedActivation = bk.activation == .gelu ? .gelu : .quickGELU
        let fused = try ws.y.withUnsafeBufferPointer { yp in
            try ws.fusedMid.withUnsafeMutableBytes { mp in
                try bk.fc1.fused(UnsafeRawPointer(yp.baseAddress!), bf16: bf16, rows: rows, activation: act, outputBF16: bf16, into: mp.baseAddress!)
            }
        }
        guard fused else { return false }
        let done = try ws.fusedMid.withUnsafeBytes { mp -> Bool in
            let source = mp.baseAddress!
            guard bk.layerScale2 == nil else {
                return try ws.y.withUnsafeMutableBufferPointer { sp in
                    try bk.fc2.fused(source, bf16: bf16, sourceBF16: bf16, rows: rows, into: UnsafeMutableRawPointer(sp.baseAddress!))
                }
            }
            return try x.withUnsafeMutableBufferPointer { xp in
                try bk.fc2.fused(source, bf16: bf16, sourceBF16: bf16, rows: rows, accumulate: true, into: UnsafeMutableRawPointer(xp.baseAddress!))
            }
        }
        guard done else { throw TensorError("oneDNN ran the first MLP product but not the second (\(rows)×\(hidden) → \(d))") }
        if let gain = bk.layerScale2 { try addScaled(gain, ws.y, rows: rows, width: d, into: &x) }
        return true
    }

    /// x += γ ⊙ branch, row by row (a layer-scaled residual).
    func addScaled(_ gain: Parameter, _ branch: [Float], rows: Int, width d: Int, into x: inout [Float]) throws {
        try gain.value.withFloats { g in
            for r in 0..<rows { for j in 0..<d { x[r * d + j] += g[j] * branch[r * d + j] } }
        }
    }

    /// x += a·Wᵀ + b, the product accumulated straight into x (sgemm with beta = 1); with a layer
    /// scale γ, x += γ ⊙ (a·Wᵀ + b) through `scratch` [rows, width]. In the inference precision.
    func residual(
        _ a: [Float], rows: Int, width d: Int, inFeatures k: Int, layer: Linear, gain: Parameter?,
        into x: inout [Float], scratch: inout [Float]
    ) throws {
        guard let gain else {
            try x.withUnsafeMutableBufferPointer { try layer.inference(a, rows: rows, accumulate: true, into: $0.baseAddress!) }
            return
        }
        try scratch.withUnsafeMutableBufferPointer { try layer.inference(a, rows: rows, into: $0.baseAddress!) }
        try gain.value.withFloats { g in
            for r in 0..<rows { for j in 0..<d { x[r * d + j] += g[j] * scratch[r * d + j] } }
        }
    }
}

/// The attention loop's buffers, shared by its threads.
// @unchecked: each thread writes only its own heads' rows and its own scores block; the loop ends before the buffers are read.
private struct UncheckedPointers: @unchecked Sendable {
    let qkv: UnsafePointer<Float>
    let out: UnsafeMutablePointer<Float>
    let scores: UnsafeMutablePointer<Float>
}

extension Tensor {
    /// Read access to a float32 tensor's elements.
    public func withFloats<R>(_ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        guard dtype == .float32 else { throw TensorError("expected an f32 tensor, got \(dtype.name)") }
        return try body(UnsafeRawPointer(storage.bytes).assumingMemoryBound(to: Float.self))
    }
}

/// Unfolds non-overlapping p×p patches of images [n, c, s, s] into rows [n·g·g, c·p·p]
/// (channel, row, column order: a stride-p convolution becomes one matrix product).
func unfoldPatches(_ pixels: [Float], batch n: Int, channels: Int, size: Int, patch p: Int) -> [Float] {
    let g = size / p, patchDim = channels * p * p
    var out = [Float](repeating: 0, count: n * g * g * patchDim)
    for b in 0..<n {
        for gy in 0..<g {
            for gx in 0..<g {
                let row = (b * g * g + gy * g + gx) * patchDim
                for ch in 0..<channels {
                    for ky in 0..<p {
                        let src = ((b * channels + ch) * size + gy * p + ky) * size + gx * p
                        let dst = row + (ch * p + ky) * p
                        for kx in 0..<p { out[dst + kx] = pixels[src + kx] }
                    }
                }
            }
        }
    }
    return out
}
