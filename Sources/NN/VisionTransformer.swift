import Foundation
import Formats
import Tensors

/// The shape of a timm / open_clip style Vision Transformer, read from a config file.
public struct ViTConfig: Sendable, Equatable {
    public var imageSize: Int
    public var patchSize: Int
    public var inChannels = 3
    public var width: Int
    public var depth: Int
    public var heads: Int
    public var mlpRatio: Double = 4
    public var qkvBias = true
    public var classToken = true
    /// "token" (the class token), "avg" (mean of the patch tokens) or "" (no pooling).
    public var globalPool = "token"
    /// LayerNorm after pooling instead of on every token (timm `fc_norm`).
    public var fcNorm = false
    public var numClasses = 0
    public var layerNormEps: Float = 1e-6

    public init(imageSize: Int, patchSize: Int, width: Int, depth: Int, heads: Int) {
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.width = width
        self.depth = depth
        self.heads = heads
    }

    public var grid: Int { imageSize / patchSize }
    public var tokens: Int { grid * grid + (classToken ? 1 : 0) }
    public var hidden: Int { Int((Double(width) * mlpRatio).rounded()) }

    /// Reads timm's `config.json` (`architecture`, `num_classes`, `global_pool`, `model_args`).
    public static func timm(configPath: String) throws -> ViTConfig {
        guard let text = try? String(contentsOfFile: configPath, encoding: .utf8) else { throw FormatError(path: configPath, "cannot read") }
        let json: JSONValue
        do { json = try JSONValue.parse(text, source: configPath) } catch { throw FormatError(path: configPath, "\(error)") }
        let args = json["model_args"] ?? .object([:])
        func int(_ key: String, _ fallback: Int? = nil) throws -> Int {
            if let v = args[key]?.intValue ?? json[key]?.intValue { return v }
            if let fallback { return fallback }
            throw FormatError(path: configPath, "model_args has no '\(key)'")
        }
        var c = ViTConfig(imageSize: try int("img_size", 224), patchSize: try int("patch_size", 16), width: try int("embed_dim"),
                          depth: try int("depth"), heads: try int("num_heads"))
        c.inChannels = try int("in_chans", 3)
        c.mlpRatio = args["mlp_ratio"]?.doubleValue ?? 4
        c.qkvBias = args["qkv_bias"]?.boolValue ?? true
        c.classToken = args["class_token"]?.boolValue ?? true
        c.globalPool = args["global_pool"]?.stringValue ?? json["global_pool"]?.stringValue ?? "token"
        c.numClasses = try int("num_classes", 0)
        // timm: fc_norm=None means "use it when pooling by average".
        c.fcNorm = args["fc_norm"]?.boolValue ?? (c.globalPool == "avg")
        guard c.width % c.heads == 0 else { throw FormatError(path: configPath, "embed_dim \(c.width) is not divisible by num_heads \(c.heads)") }
        guard c.imageSize % c.patchSize == 0 else { throw FormatError(path: configPath, "img_size \(c.imageSize) is not a multiple of patch_size \(c.patchSize)") }
        return c
    }
}

/// A Vision Transformer forward pass on the CPU (inference; no gradient tape). Weights are read by
/// timm's names (`patch_embed.proj.weight`, `blocks.N.attn.qkv.weight`, …), shapes checked against
/// the config, every mismatch reported at once.
///
/// Block (timm `Block`, pre-norm): x ← x + proj(attn(LN1(x))); x ← x + fc2(GELU(fc1(LN2(x)))),
/// attention = softmax(q kᵀ / √d_head) v per head, q, k, v from one packed `qkv` Linear.
public final class VisionTransformer: @unchecked Sendable {
    public let config: ViTConfig

    struct Block {
        var norm1w, norm1b, qkvw, projw, projb, norm2w, norm2b, fc1w, fc1b, fc2w, fc2b: Tensor
        var qkvb: Tensor?
    }

    let patchWeight: Tensor   // [D, C·p·p]
    let patchBias: Tensor
    let clsToken: Tensor?
    let posEmbed: Tensor      // [T, D]
    let blocks: [Block]
    let normW, normB: Tensor  // final norm (on tokens, or after pooling when fcNorm)
    let headW, headB: Tensor?

    /// Loads timm weights (`model.safetensors` or a sharded index) for `config`.
    public init(config: ViTConfig, checkpoint: SafeTensorsCheckpoint) throws {
        self.config = config
        let c = config, d = c.width, h = c.hidden
        let w = StateDictLoader(checkpoint)
        patchWeight = try w.float32("patch_embed.proj.weight", [d, c.inChannels, c.patchSize, c.patchSize]).reshaped([d, c.inChannels * c.patchSize * c.patchSize])
        patchBias = w.float32("patch_embed.proj.bias", [d])
        clsToken = c.classToken ? w.float32("cls_token", [1, 1, d]) : nil
        posEmbed = try w.float32("pos_embed", [1, c.tokens, d]).reshaped([c.tokens, d])
        blocks = (0..<c.depth).map { i in
            let p = "blocks.\(i)."
            return Block(norm1w: w.float32(p + "norm1.weight", [d]), norm1b: w.float32(p + "norm1.bias", [d]),
                         qkvw: w.float32(p + "attn.qkv.weight", [3 * d, d]), projw: w.float32(p + "attn.proj.weight", [d, d]),
                         projb: w.float32(p + "attn.proj.bias", [d]), norm2w: w.float32(p + "norm2.weight", [d]),
                         norm2b: w.float32(p + "norm2.bias", [d]), fc1w: w.float32(p + "mlp.fc1.weight", [h, d]),
                         fc1b: w.float32(p + "mlp.fc1.bias", [h]), fc2w: w.float32(p + "mlp.fc2.weight", [d, h]),
                         fc2b: w.float32(p + "mlp.fc2.bias", [d]), qkvb: c.qkvBias ? w.float32(p + "attn.qkv.bias", [3 * d]) : nil)
        }
        let normName = c.fcNorm ? "fc_norm" : "norm"
        normW = w.float32(normName + ".weight", [d])
        normB = w.float32(normName + ".bias", [d])
        if c.numClasses > 0 {
            headW = w.float32("head.weight", [c.numClasses, d])
            headB = w.float32("head.bias", [c.numClasses])
        } else {
            headW = nil
            headB = nil
        }
        try w.finish()
    }

    /// What a forward pass returns.
    public struct Output {
        /// [N, numClasses], or the pooled features [N, D] when the model has no head.
        public var logits: Tensor
        /// [N, D] after pooling (and fc_norm).
        public var pooled: Tensor
        /// Per block, the input of its `norm1` ([N, T, D]) if requested.
        public var blockInputs: [Tensor]
    }

    /// Runs images `[N, C, H, W]` (already normalised) through the network.
    public func forward(_ images: Tensor, keepBlockInputs: Bool = false) throws -> Output {
        let c = config
        guard images.dtype == .float32, images.rank == 4, images.shape[1] == c.inChannels,
              images.shape[2] == c.imageSize, images.shape[3] == c.imageSize else {
            throw TensorError("images must be f32 [N, \(c.inChannels), \(c.imageSize), \(c.imageSize)], got \(images.dtype.name) \(images.shape)")
        }
        let n = images.shape[0], d = c.width, t = c.tokens, g = c.grid, p = c.patchSize
        let prefix = c.classToken ? 1 : 0
        let patchDim = c.inChannels * p * p
        let pixels: [Float] = try images.scalars()
        // Patch embedding as a matrix product: unfold each p×p patch into a row (C, ky, kx order).
        var patches = [Float](repeating: 0, count: n * g * g * patchDim)
        for b in 0..<n {
            for gy in 0..<g {
                for gx in 0..<g {
                    let row = (b * g * g + gy * g + gx) * patchDim
                    for ch in 0..<c.inChannels {
                        for ky in 0..<p {
                            let src = ((b * c.inChannels + ch) * c.imageSize + gy * p + ky) * c.imageSize + gx * p
                            let dst = row + (ch * p + ky) * p
                            for kx in 0..<p { patches[dst + kx] = pixels[src + kx] }
                        }
                    }
                }
            }
        }
        var x = [Float](repeating: 0, count: n * t * d)
        var embedded = [Float](repeating: 0, count: n * g * g * d)
        try patchWeight.withFloats { pw in
            try patchBias.withFloats { pb in
                Kernels.linear(patches, rows: n * g * g, inFeatures: patchDim, weight: pw, bias: pb, outFeatures: d, into: &embedded)
            }
        }
        let pos: [Float] = try posEmbed.scalars()
        let cls: [Float] = try clsToken?.scalars() ?? []
        for b in 0..<n {
            for tok in 0..<t {
                for j in 0..<d {
                    let v: Float = tok < prefix ? cls[j] : embedded[(b * g * g + tok - prefix) * d + j]
                    x[(b * t + tok) * d + j] = v + pos[tok * d + j]
                }
            }
        }
        var blockInputs: [Tensor] = []
        for block in blocks {
            if keepBlockInputs { blockInputs.append(try Tensor(x, shape: [n, t, d])) }
            try apply(block, to: &x, batch: n)
        }
        // Final norm, pooling, head.
        var pooled = [Float](repeating: 0, count: n * d)
        if !c.fcNorm {
            var normed = [Float](repeating: 0, count: x.count)
            try normW.withFloats { nw in try normB.withFloats { nb in
                Kernels.layerNorm(x, rows: n * t, width: d, gamma: nw, beta: nb, eps: c.layerNormEps, into: &normed)
            } }
            x = normed
        }
        for b in 0..<n {
            switch c.globalPool {
            case "avg":
                for tok in prefix..<t { for j in 0..<d { pooled[b * d + j] += x[(b * t + tok) * d + j] } }
                for j in 0..<d { pooled[b * d + j] /= Float(t - prefix) }
            default:
                for j in 0..<d { pooled[b * d + j] = x[(b * t) * d + j] }
            }
        }
        if c.fcNorm {
            var normed = [Float](repeating: 0, count: pooled.count)
            try normW.withFloats { nw in try normB.withFloats { nb in
                Kernels.layerNorm(pooled, rows: n, width: d, gamma: nw, beta: nb, eps: c.layerNormEps, into: &normed)
            } }
            pooled = normed
        }
        var logits = pooled
        if let headW, let headB {
            logits = [Float](repeating: 0, count: n * c.numClasses)
            try headW.withFloats { hw in try headB.withFloats { hb in
                Kernels.linear(pooled, rows: n, inFeatures: d, weight: hw, bias: hb, outFeatures: c.numClasses, into: &logits)
            } }
        }
        return Output(logits: try Tensor(logits, shape: [n, headW == nil ? d : c.numClasses]), pooled: try Tensor(pooled, shape: [n, d]),
                      blockInputs: blockInputs)
    }

    /// One pre-norm transformer block, in place on x [N·T, D].
    func apply(_ bk: Block, to x: inout [Float], batch n: Int) throws {
        let c = config, d = c.width, t = c.tokens, heads = c.heads, hd = d / heads
        let rows = n * t
        var y = [Float](repeating: 0, count: rows * d)
        try bk.norm1w.withFloats { w in try bk.norm1b.withFloats { b in Kernels.layerNorm(x, rows: rows, width: d, gamma: w, beta: b, eps: c.layerNormEps, into: &y) } }
        var qkv = [Float](repeating: 0, count: rows * 3 * d)
        try bk.qkvw.withFloats { w in
            if let qb = bk.qkvb {
                try qb.withFloats { b in Kernels.linear(y, rows: rows, inFeatures: d, weight: w, bias: b, outFeatures: 3 * d, into: &qkv) }
            } else {
                Kernels.linear(y, rows: rows, inFeatures: d, weight: w, bias: nil, outFeatures: 3 * d, into: &qkv)
            }
        }
        // Per sample and head: scores = q kᵀ / √hd (rows of qkv hold [q | k | v], heads contiguous).
        var attended = [Float](repeating: 0, count: rows * d)
        var scores = [Float](repeating: 0, count: t * t)
        let scale = 1 / Float(hd).squareRoot()
        qkv.withUnsafeBufferPointer { qkvp in
            attended.withUnsafeMutableBufferPointer { outp in
                scores.withUnsafeMutableBufferPointer { sp in
                    for b in 0..<n {
                        for hh in 0..<heads {
                            let base = qkvp.baseAddress! + b * t * 3 * d
                            GEMM.sgemm(transposeB: true, m: t, n: t, k: hd, alpha: scale, a: base + hh * hd, lda: 3 * d,
                                       b: base + d + hh * hd, ldb: 3 * d, c: sp.baseAddress!, ldc: t)
                            Kernels.softmaxRows(sp.baseAddress!, rows: t, width: t)
                            GEMM.sgemm(m: t, n: hd, k: t, a: sp.baseAddress!, lda: t, b: base + 2 * d + hh * hd, ldb: 3 * d,
                                       c: outp.baseAddress! + b * t * d + hh * hd, ldc: d)
                        }
                    }
                }
            }
        }
        // x += proj(attended): bias first, then the product accumulated into x (beta = 1).
        try bk.projw.withFloats { w in try bk.projb.withFloats { b in
            for r in 0..<rows { for j in 0..<d { x[r * d + j] += b[j] } }
            x.withUnsafeMutableBufferPointer { xp in
                GEMM.sgemm(transposeB: true, m: rows, n: d, k: d, a: attended, lda: d, b: w, ldb: d, beta: 1, c: xp.baseAddress!, ldc: d)
            }
        } }
        // x += fc2(GELU(fc1(LN2(x)))).
        try bk.norm2w.withFloats { w in try bk.norm2b.withFloats { b in Kernels.layerNorm(x, rows: rows, width: d, gamma: w, beta: b, eps: c.layerNormEps, into: &y) } }
        var hidden = [Float](repeating: 0, count: rows * c.hidden)
        try bk.fc1w.withFloats { w in try bk.fc1b.withFloats { b in
            Kernels.linear(y, rows: rows, inFeatures: d, weight: w, bias: b, outFeatures: c.hidden, into: &hidden)
        } }
        Kernels.geluExact(&hidden, count: hidden.count)
        try bk.fc2w.withFloats { w in try bk.fc2b.withFloats { b in
            for r in 0..<rows { for j in 0..<d { x[r * d + j] += b[j] } }
            x.withUnsafeMutableBufferPointer { xp in
                GEMM.sgemm(transposeB: true, m: rows, n: d, k: c.hidden, a: hidden, lda: c.hidden, b: w, ldb: c.hidden, beta: 1, c: xp.baseAddress!, ldc: d)
            }
        } }
    }
}

extension Tensor {
    /// Read access to a float32 tensor's elements.
    public func withFloats<R>(_ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        guard dtype == .float32 else { throw TensorError("expected an f32 tensor, got \(dtype.name)") }
        return try body(UnsafeRawPointer(storage.bytes).assumingMemoryBound(to: Float.self))
    }
}
