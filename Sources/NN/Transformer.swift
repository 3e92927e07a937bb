import Foundation
import Tensors

/// How a checkpoint names the parts of a pre-norm transformer block.
public struct BlockNaming: Sendable {
    public var norm1, qkvWeight, qkvBias, proj, norm2, fc1, fc2: String

    /// timm `Block`: `norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`.
    public static let timm = BlockNaming(norm1: "norm1", qkvWeight: "attn.qkv.weight", qkvBias: "attn.qkv.bias", proj: "attn.proj",
                                         norm2: "norm2", fc1: "mlp.fc1", fc2: "mlp.fc2")
    /// open_clip `ResidualAttentionBlock` (torch `nn.MultiheadAttention`): `ln_1`, `attn.in_proj_*`,
    /// `attn.out_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`.
    public static let openCLIP = BlockNaming(norm1: "ln_1", qkvWeight: "attn.in_proj_weight", qkvBias: "attn.in_proj_bias",
                                             proj: "attn.out_proj", norm2: "ln_2", fc1: "mlp.c_fc", fc2: "mlp.c_proj")
}

/// The MLP activation of a transformer.
public enum Activation: String, Sendable {
    /// x·Φ(x) with the exact erf (torch `nn.GELU()`).
    case gelu
    /// x·σ(1.702·x) (OpenAI CLIP's `QuickGELU`).
    case quickGELU = "quick_gelu"
}

/// A stack of pre-norm transformer blocks (inference):
/// x ← x + W_o·attn(LN1(x)) ;  x ← x + W_2·act(W_1·LN2(x)), attention = softmax(q kᵀ/√d_head + mask)·v
/// per head, q, k, v from one packed [3D, D] projection.
public final class TransformerStack: @unchecked Sendable {
    public let width: Int
    public let heads: Int
    public let hidden: Int
    public let eps: Float
    public let activation: Activation

    struct Block {
        var norm1w, norm1b, qkvw, projw, projb, norm2w, norm2b, fc1w, fc1b, fc2w, fc2b: Tensor
        var qkvb: Tensor?
    }
    let blocks: [Block]

    /// Loads `depth` blocks named `prefix + "\(i)." + naming.*`.
    public init(loader w: StateDictLoader, prefix: String, naming: BlockNaming, depth: Int, width d: Int, heads: Int,
                hidden h: Int, qkvBias: Bool, eps: Float, activation: Activation) {
        self.width = d
        self.heads = heads
        self.hidden = h
        self.eps = eps
        self.activation = activation
        blocks = (0..<depth).map { i in
            let p = prefix + "\(i)."
            return Block(norm1w: w.float32(p + naming.norm1 + ".weight", [d]), norm1b: w.float32(p + naming.norm1 + ".bias", [d]),
                         qkvw: w.float32(p + naming.qkvWeight, [3 * d, d]), projw: w.float32(p + naming.proj + ".weight", [d, d]),
                         projb: w.float32(p + naming.proj + ".bias", [d]), norm2w: w.float32(p + naming.norm2 + ".weight", [d]),
                         norm2b: w.float32(p + naming.norm2 + ".bias", [d]), fc1w: w.float32(p + naming.fc1 + ".weight", [h, d]),
                         fc1b: w.float32(p + naming.fc1 + ".bias", [h]), fc2w: w.float32(p + naming.fc2 + ".weight", [d, h]),
                         fc2b: w.float32(p + naming.fc2 + ".bias", [d]), qkvb: qkvBias ? w.float32(p + naming.qkvBias, [3 * d]) : nil)
        }
    }

    public var depth: Int { blocks.count }

    /// Runs every block in place on x [n, t, width]. With `causal`, token i attends to tokens ≤ i.
    /// `observe(i, x)` sees the input of block i (for taps such as Grad-CAM's target layer).
    public func forward(_ x: inout [Float], batch n: Int, tokens t: Int, causal: Bool = false,
                        observe: ((Int, [Float]) -> Void)? = nil) throws {
        var ws = Workspace(rows: n * t, width: width, hidden: hidden, tokens: t)
        for (i, block) in blocks.enumerated() {
            observe?(i, x)
            try apply(block, to: &x, batch: n, tokens: t, causal: causal, workspace: &ws)
        }
    }

    /// The intermediate buffers of a block, allocated once per forward and reused by every block
    /// (fresh multi-megabyte arrays per block cost page faults and clearing).
    struct Workspace {
        var y, qkv, attended, mid, scores: [Float]
        /// The thread count `scores` was sized for (one t×t block per thread).
        var threads = 1
        init(rows: Int, width d: Int, hidden: Int, tokens t: Int) {
            y = [Float](repeating: 0, count: rows * d)
            qkv = [Float](repeating: 0, count: rows * 3 * d)
            attended = [Float](repeating: 0, count: rows * d)
            mid = [Float](repeating: 0, count: rows * hidden)
            threads = max(1, GEMM.threads)
            scores = [Float](repeating: 0, count: threads * t * t)
        }
    }

    func apply(_ bk: Block, to x: inout [Float], batch n: Int, tokens t: Int, causal: Bool, workspace ws: inout Workspace) throws {
        let d = width, hd = d / heads, rows = n * t
        try bk.norm1w.withFloats { w in try bk.norm1b.withFloats { b in Kernels.layerNorm(x, rows: rows, width: d, gamma: w, beta: b, eps: eps, into: &ws.y) } }
        var qkv = ws.qkv
        defer { ws.qkv = qkv }
        ws.qkv = []
        try bk.qkvw.withFloats { w in
            if let qb = bk.qkvb {
                try qb.withFloats { b in Kernels.linear(ws.y, rows: rows, inFeatures: d, weight: w, bias: b, outFeatures: 3 * d, into: &qkv) }
            } else {
                Kernels.linear(ws.y, rows: rows, inFeatures: d, weight: w, bias: nil, outFeatures: 3 * d, into: &qkv)
            }
        }
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
                            GEMM.sgemm(transposeB: true, m: t, n: t, k: hd, alpha: scale, a: base + hh * hd, lda: 3 * d,
                                       b: base + d + hh * hd, ldb: 3 * d, c: s, ldc: t)
                            if causal { for r in 0..<t { for col in (r + 1)..<max(t, r + 1) { s[r * t + col] = -.infinity } } }
                            Kernels.softmaxRows(s, rows: t, width: t)
                            GEMM.sgemm(m: t, n: hd, k: t, a: s, lda: t, b: base + 2 * d + hh * hd, ldb: 3 * d,
                                       c: pointers.out + b * t * d + hh * hd, ldc: d)
                        }
                    }
                }
            }
        }
        try residualLinear(attended, rows: rows, inFeatures: d, weight: bk.projw, bias: bk.projb, into: &x)
        try bk.norm2w.withFloats { w in try bk.norm2b.withFloats { b in Kernels.layerNorm(x, rows: rows, width: d, gamma: w, beta: b, eps: eps, into: &ws.y) } }
        var mid = ws.mid
        ws.mid = []
        defer { ws.mid = mid }
        try bk.fc1w.withFloats { w in try bk.fc1b.withFloats { b in
            Kernels.linear(ws.y, rows: rows, inFeatures: d, weight: w, bias: b, outFeatures: hidden, into: &mid)
        } }
        switch activation {
        case .gelu: Kernels.geluExact(&mid, count: mid.count)
        case .quickGELU: Kernels.quickGELU(&mid, count: mid.count)
        }
        try residualLinear(mid, rows: rows, inFeatures: hidden, weight: bk.fc2w, bias: bk.fc2b, into: &x)
    }

    /// x += a·Wᵀ + b, the product accumulated straight into x (sgemm with beta = 1).
    func residualLinear(_ a: [Float], rows: Int, inFeatures k: Int, weight: Tensor, bias: Tensor, into x: inout [Float]) throws {
        let d = width
        try weight.withFloats { w in try bias.withFloats { b in
            for r in 0..<rows { for j in 0..<d { x[r * d + j] += b[j] } }
            x.withUnsafeMutableBufferPointer { xp in
                GEMM.sgemm(transposeB: true, m: rows, n: d, k: k, a: a, lda: k, b: w, ldb: k, beta: 1, c: xp.baseAddress!, ldc: d)
            }
        } }
    }
}

/// The attention loop's buffers, shared by its threads (each writes its own heads and scores).
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
