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

/// A timm Vision Transformer forward pass on the CPU (inference; no gradient tape). Weights are
/// read by timm's names (`patch_embed.proj.weight`, `blocks.N.attn.qkv.weight`, …), shapes checked
/// against the config, every mismatch reported at once.
///
/// tokens = [cls; patches·W_e + b_e] + pos ; blocks (see `TransformerStack`) ; LN ; pool (class token
/// or mean of patch tokens) ; head.
public final class VisionTransformer: @unchecked Sendable {
    public let config: ViTConfig
    let patchWeight: Tensor   // [D, C·p·p]
    let patchBias: Tensor
    let clsToken: Tensor?
    let posEmbed: Tensor      // [T, D]
    public let stack: TransformerStack
    let normW, normB: Tensor  // final norm (on tokens, or after pooling when fcNorm)
    let headW, headB: Tensor?

    /// Loads timm weights (`model.safetensors` or a sharded index) for `config`.
    public init(config: ViTConfig, checkpoint: SafeTensorsCheckpoint) throws {
        self.config = config
        let c = config, d = c.width
        let w = StateDictLoader(checkpoint)
        patchWeight = try w.float32("patch_embed.proj.weight", [d, c.inChannels, c.patchSize, c.patchSize]).reshaped([d, c.inChannels * c.patchSize * c.patchSize])
        patchBias = w.float32("patch_embed.proj.bias", [d])
        clsToken = c.classToken ? w.float32("cls_token", [1, 1, d]) : nil
        // A checkpoint trained at another image size: resample its position embedding to this grid.
        if let e = try? checkpoint.entry("pos_embed"), e.shape.count == 3, e.shape[2] == d, e.shape[1] != c.tokens {
            posEmbed = try resamplePositionEmbedding(w.float32("pos_embed", e.shape), prefixTokens: c.classToken ? 1 : 0, to: c.grid)
                .reshaped([c.tokens, d])
        } else {
            posEmbed = try w.float32("pos_embed", [1, c.tokens, d]).reshaped([c.tokens, d])
        }
        stack = TransformerStack(loader: w, prefix: "blocks.", naming: .timm, depth: c.depth, width: d, heads: c.heads,
                                 hidden: c.hidden, qkvBias: c.qkvBias, eps: c.layerNormEps, activation: .gelu)
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
        /// Per block, its input ([N, T, D]) when requested.
        public var blockInputs: [Tensor]
    }

    /// Runs images `[N, C, H, W]` (already normalised) through the network.
    public func forward(_ images: Tensor, keepBlockInputs: Bool = false) throws -> Output {
        let c = config
        guard images.dtype == .float32, images.rank == 4, images.shape[1] == c.inChannels,
              images.shape[2] == c.imageSize, images.shape[3] == c.imageSize else {
            throw TensorError("images must be f32 [N, \(c.inChannels), \(c.imageSize), \(c.imageSize)], got \(images.dtype.name) \(images.shape)")
        }
        let n = images.shape[0], d = c.width, t = c.tokens, g = c.grid
        let prefix = c.classToken ? 1 : 0
        let patchDim = c.inChannels * c.patchSize * c.patchSize
        let patches = unfoldPatches(try images.scalars(), batch: n, channels: c.inChannels, size: c.imageSize, patch: c.patchSize)
        var embedded = [Float](repeating: 0, count: n * g * g * d)
        try patchWeight.withFloats { pw in
            try patchBias.withFloats { pb in
                Kernels.linear(patches, rows: n * g * g, inFeatures: patchDim, weight: pw, bias: pb, outFeatures: d, into: &embedded)
            }
        }
        let pos: [Float] = try posEmbed.scalars()
        let cls: [Float] = try clsToken?.scalars() ?? []
        var x = [Float](repeating: 0, count: n * t * d)
        for b in 0..<n {
            for tok in 0..<t {
                for j in 0..<d {
                    let v: Float = tok < prefix ? cls[j] : embedded[(b * g * g + tok - prefix) * d + j]
                    x[(b * t + tok) * d + j] = v + pos[tok * d + j]
                }
            }
        }
        var blockInputs: [Tensor] = []
        try stack.forward(&x, batch: n, tokens: t, observe: keepBlockInputs ? { _, input in
            blockInputs.append(try! Tensor(input, shape: [n, t, d]))
        } : nil)
        if !c.fcNorm {
            var normed = [Float](repeating: 0, count: x.count)
            try normW.withFloats { nw in try normB.withFloats { nb in
                Kernels.layerNorm(x, rows: n * t, width: d, gamma: nw, beta: nb, eps: c.layerNormEps, into: &normed)
            } }
            x = normed
        }
        var pooled = [Float](repeating: 0, count: n * d)
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
}
