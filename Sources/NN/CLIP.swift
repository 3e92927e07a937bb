import Foundation
import Formats
import Tensors

/// open_clip's `model_cfg` (from `open_clip_config.json`), for ViT image towers and the CLIP text
/// transformer. Every size is read from the file.
public struct OpenCLIPConfig: Sendable, Equatable {
    public struct Vision: Sendable, Equatable {
        public var imageSize: Int
        public var patchSize: Int
        public var width: Int
        public var layers: Int
        public var heads: Int
        public var mlpRatio: Double
        public var grid: Int { imageSize / patchSize }
        public init(imageSize: Int, patchSize: Int, width: Int, layers: Int, heads: Int, mlpRatio: Double = 4) {
            (self.imageSize, self.patchSize, self.width, self.layers, self.heads, self.mlpRatio) = (imageSize, patchSize, width, layers, heads, mlpRatio)
        }
        public var tokens: Int { grid * grid + 1 }
        public var hidden: Int { Int((Double(width) * mlpRatio).rounded()) }
    }
    public struct Text: Sendable, Equatable {
        public var contextLength: Int
        public var vocabSize: Int
        public var width: Int
        public var heads: Int
        public var layers: Int
        public var mlpRatio: Double
        public var hidden: Int { Int((Double(width) * mlpRatio).rounded()) }
        public init(contextLength: Int = 77, vocabSize: Int = 49408, width: Int, heads: Int, layers: Int, mlpRatio: Double = 4) {
            (self.contextLength, self.vocabSize, self.width, self.heads, self.layers, self.mlpRatio) = (contextLength, vocabSize, width, heads, layers, mlpRatio)
        }
    }
    public var embedDim: Int
    public var vision: Vision
    public var text: Text
    public var quickGELU: Bool
    public var mean: [Float]
    public var std: [Float]

    public init(embedDim: Int, vision: Vision, text: Text, quickGELU: Bool = false,
                mean: [Float] = [0.48145466, 0.4578275, 0.40821073], std: [Float] = [0.26862954, 0.26130258, 0.27577711]) {
        (self.embedDim, self.vision, self.text, self.quickGELU, self.mean, self.std) = (embedDim, vision, text, quickGELU, mean, std)
    }

    /// Reads `open_clip_config.json` (or an open_clip model config with `model_cfg` at the top).
    public static func load(path: String) throws -> OpenCLIPConfig {
        let json: JSONValue
        do { json = try JSONValue.parse(try RegularFile.text(path, limit: 16 << 20), source: path) } catch let e as FormatError {
            throw e
        } catch { throw FormatError(path: path, "\(error)") }
        let cfg = json["model_cfg"] ?? json
        func need(_ v: JSONValue?, _ key: String, in range: ClosedRange<Int> = Limits.dimension) throws -> Int {
            try Limits.int(v, key: key, in: range, source: path)
        }
        func optional(_ v: JSONValue?, _ key: String, default d: Int, in range: ClosedRange<Int> = Limits.dimension) throws -> Int {
            try Limits.int(v, key: key, in: range, source: path, default: d)
        }
        func ratio(_ v: JSONValue?, _ key: String) throws -> Double {
            guard let v, v != .null else { return 4 }
            guard let r = v.doubleValue else { throw FormatError(path: path, "'\(key)' = \(v.compactText) is not a number") }
            return try Limits.finite(r, key: key, in: 1e-6...1e6, source: path)
        }
        guard let v = cfg["vision_cfg"], let t = cfg["text_cfg"] else { throw FormatError(path: path, "model_cfg needs vision_cfg and text_cfg") }
        if v["timm_model_name"]?.stringValue != nil || v["layers"]?.arrayValue != nil {
            throw FormatError(path: path, "only ViT image towers are supported (this config has a timm or ResNet tower)")
        }
        let vWidth = try need(v["width"], "vision_cfg.width")
        let headWidth = try optional(v["head_width"], "vision_cfg.head_width", default: 64)
        guard vWidth % headWidth == 0 else {
            throw FormatError(path: path, "'vision_cfg.width' = \(vWidth) is not a multiple of 'vision_cfg.head_width' = \(headWidth)")
        }
        let vision = Vision(imageSize: try need(v["image_size"], "vision_cfg.image_size"), patchSize: try need(v["patch_size"], "vision_cfg.patch_size"),
                            width: vWidth, layers: try need(v["layers"], "vision_cfg.layers"), heads: vWidth / headWidth,
                            mlpRatio: try ratio(v["mlp_ratio"], "vision_cfg.mlp_ratio"))
        let tWidth = try need(t["width"], "text_cfg.width")
        let textCfg = Text(contextLength: try optional(t["context_length"], "text_cfg.context_length", default: 77),
                           vocabSize: try optional(t["vocab_size"], "text_cfg.vocab_size", default: 49408, in: Limits.vocabulary),
                           width: tWidth, heads: try optional(t["heads"], "text_cfg.heads", default: 8), layers: try need(t["layers"], "text_cfg.layers"),
                           mlpRatio: try ratio(t["mlp_ratio"], "text_cfg.mlp_ratio"))
        let pre = json["preprocess_cfg"]
        let mean = pre?["mean"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.48145466, 0.4578275, 0.40821073]
        let std = pre?["std"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.26862954, 0.26130258, 0.27577711]
        guard mean.count == 3, std.count == 3, (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw FormatError(path: path, "preprocess_cfg mean and std need 3 finite values each (std positive), got \(mean) and \(std)")
        }
        let config = OpenCLIPConfig(embedDim: try need(cfg["embed_dim"], "embed_dim"), vision: vision, text: textCfg,
                                    quickGELU: cfg["quick_gelu"]?.boolValue ?? false, mean: mean, std: std)
        try config.validate(source: path)
        return config
    }

    /// Checks every size before a model is built (from a file or from options): each in
    /// `Limits.dimension`, widths divisible by head counts, the image size by the patch size, finite
    /// MLP ratios with hidden sizes in range, and the parameter memory within `Limits.allocation`.
    public func validate(source: String) throws {
        let checks: [(String, Int, ClosedRange<Int>)] = [
            ("embed_dim", embedDim, Limits.dimension),
            ("vision_cfg.image_size", vision.imageSize, Limits.dimension), ("vision_cfg.patch_size", vision.patchSize, Limits.dimension),
            ("vision_cfg.width", vision.width, Limits.dimension), ("vision_cfg.layers", vision.layers, Limits.dimension),
            ("vision_cfg.heads", vision.heads, Limits.dimension),
            ("text_cfg.context_length", text.contextLength, Limits.dimension), ("text_cfg.vocab_size", text.vocabSize, Limits.vocabulary),
            ("text_cfg.width", text.width, Limits.dimension), ("text_cfg.heads", text.heads, Limits.dimension),
            ("text_cfg.layers", text.layers, Limits.dimension),
        ]
        for (k, v, r) in checks { _ = try Limits.check(v, key: k, in: r, source: source) }
        guard vision.width % vision.heads == 0 else {
            throw FormatError(path: source, "'vision_cfg.width' = \(vision.width) is not divisible by its \(vision.heads) heads")
        }
        guard text.width % text.heads == 0 else {
            throw FormatError(path: source, "'text_cfg.width' = \(text.width) is not divisible by 'text_cfg.heads' = \(text.heads)")
        }
        guard vision.imageSize % vision.patchSize == 0 else {
            throw FormatError(path: source, "'vision_cfg.image_size' = \(vision.imageSize) is not a multiple of 'vision_cfg.patch_size' = \(vision.patchSize)")
        }
        let vHidden = try Limits.scaled(vision.width, by: vision.mlpRatio, key: "vision_cfg.mlp_ratio", source: source)
        let tHidden = try Limits.scaled(text.width, by: text.mlpRatio, key: "text_cfg.mlp_ratio", source: source)
        let g = vision.imageSize / vision.patchSize
        let tokens = try Limits.product([g, g], what: "the vision token grid", source: source) + 1
        try Limits.parameters([
            [vision.width, 3, vision.patchSize, vision.patchSize], [tokens, vision.width], [vision.layers, 4, vision.width, vision.width],
            [vision.layers, 2, vision.width, vHidden], [vision.width, embedDim],
            [text.vocabSize, text.width], [text.contextLength, text.width], [text.layers, 4, text.width, text.width],
            [text.layers, 2, text.width, tHidden], [text.width, embedDim],
        ], what: "the CLIP model's parameters", source: source)
        try Limits.allocation(shape: [vision.heads, tokens, tokens], elementSize: 4, what: "the attention scores of one image", source: source)
        try Limits.allocation(shape: [text.heads, text.contextLength, text.contextLength], elementSize: 4,
                              what: "the attention scores of one text", source: source)
    }
}

/// An open_clip CLIP model (ViT image tower + causal text transformer), read by open_clip's
/// state-dict names, for inference.
///
/// encode_image: conv1 patches ; [class_embedding; patches] + positional_embedding ; ln_pre ;
///   blocks ; ln_post ; token 0 ; · proj.
/// encode_text: token_embedding[ids] + positional_embedding ; causal blocks ; ln_final ;
///   the token at argmax(ids) (the end-of-text token) ; · text_projection.
/// LayerNorm eps is torch's default 1e-5.
public final class CLIPModel: @unchecked Sendable {
    public let config: OpenCLIPConfig
    let conv1: Tensor, classEmbedding: Tensor, visualPos: Tensor, lnPreW: Tensor, lnPreB: Tensor
    let lnPostW: Tensor, lnPostB: Tensor, visualProj: Tensor
    public let visual: TransformerStack
    let tokenEmbedding: Tensor, textPos: Tensor, lnFinalW: Tensor, lnFinalB: Tensor, textProjection: Tensor
    public let text: TransformerStack
    /// The learned temperature, as stored (logits use exp(logitScale)).
    public let logitScale: Float
    let eps: Float = 1e-5

    /// Loads `open_clip_config.json` and `open_clip_model.safetensors` (or a `.bin`/`.pt` of
    /// `Checkpoint.openCLIPFiles`) from `folder`.
    public convenience init(folder: String) throws {
        let config = try OpenCLIPConfig.load(path: folder + "/open_clip_config.json")
        let weights = Checkpoint.weightsFile(in: folder, Checkpoint.openCLIPFiles) ?? folder
        try self.init(config: config, checkpoint: Checkpoint(path: weights))
    }

    public init(config: OpenCLIPConfig, checkpoint: Checkpoint) throws {
        self.config = config
        let v = config.vision, t = config.text
        let w = StateDictLoader(checkpoint)
        let act: Activation = config.quickGELU ? .quickGELU : .gelu
        conv1 = try w.float32("visual.conv1.weight", [v.width, 3, v.patchSize, v.patchSize]).reshaped([v.width, 3 * v.patchSize * v.patchSize])
        classEmbedding = w.float32("visual.class_embedding", [v.width])
        visualPos = w.float32("visual.positional_embedding", [v.tokens, v.width])
        lnPreW = w.float32("visual.ln_pre.weight", [v.width])
        lnPreB = w.float32("visual.ln_pre.bias", [v.width])
        visual = TransformerStack(loader: w, prefix: "visual.transformer.resblocks.", naming: .openCLIP, depth: v.layers, width: v.width,
                                  heads: v.heads, hidden: v.hidden, qkvBias: true, eps: 1e-5, activation: act)
        lnPostW = w.float32("visual.ln_post.weight", [v.width])
        lnPostB = w.float32("visual.ln_post.bias", [v.width])
        visualProj = w.float32("visual.proj", [v.width, config.embedDim])
        tokenEmbedding = w.float32("token_embedding.weight", [t.vocabSize, t.width])
        textPos = w.float32("positional_embedding", [t.contextLength, t.width])
        text = TransformerStack(loader: w, prefix: "transformer.resblocks.", naming: .openCLIP, depth: t.layers, width: t.width,
                                heads: t.heads, hidden: t.hidden, qkvBias: true, eps: 1e-5, activation: act)
        lnFinalW = w.float32("ln_final.weight", [t.width])
        lnFinalB = w.float32("ln_final.bias", [t.width])
        textProjection = w.float32("text_projection", [t.width, config.embedDim])
        let scale = w.float32("logit_scale", [])
        logitScale = try scale.scalars(as: Float.self).first ?? 0
        // BioCLIP 2's continual_proj serves training on replay data only; inference uses visual.proj.
        try w.finish(allowUnused: { $0 == "visual.continual_proj" || $0.hasPrefix("visual.continual_proj.") || $0 == "attn_mask" })
    }

    /// Unnormalised image features [N, embedDim] of images [N, 3, S, S] (normalised with config.mean/std).
    public func encodeImage(_ images: Tensor) throws -> Tensor { try encodeImage(images, patchTokens: false).embedding }

    /// The image features and, with `patchTokens`, the patch tokens after the last block and
    /// `ln_post` [N, G, G, width] (open_clip's `tokens` with `final_ln_after_pool` off: the
    /// features label propagation tracks).
    public func encodeImage(_ images: Tensor, patchTokens: Bool) throws -> (embedding: Tensor, tokens: Tensor?) {
        let v = config.vision
        guard images.dtype == .float32, images.rank == 4, images.shape[1] == 3, images.shape[2] == v.imageSize, images.shape[3] == v.imageSize else {
            throw TensorError("images must be f32 [N, 3, \(v.imageSize), \(v.imageSize)], got \(images.dtype.name) \(images.shape)")
        }
        let n = images.shape[0], d = v.width, t = v.tokens, g = v.grid
        let patches = unfoldPatches(try images.scalars(), batch: n, channels: 3, size: v.imageSize, patch: v.patchSize)
        var embedded = [Float](repeating: 0, count: n * g * g * d)
        try conv1.withFloats { cw in
            Kernels.linear(patches, rows: n * g * g, inFeatures: 3 * v.patchSize * v.patchSize, weight: cw, bias: nil, outFeatures: d, into: &embedded)
        }
        let cls: [Float] = try classEmbedding.scalars(), pos: [Float] = try visualPos.scalars()
        var x = [Float](repeating: 0, count: n * t * d)
        for b in 0..<n {
            for tok in 0..<t {
                for j in 0..<d {
                    x[(b * t + tok) * d + j] = (tok == 0 ? cls[j] : embedded[(b * g * g + tok - 1) * d + j]) + pos[tok * d + j]
                }
            }
        }
        var normed = x
        try lnPreW.withFloats { gw in try lnPreB.withFloats { gb in Kernels.layerNorm(x, rows: n * t, width: d, gamma: gw, beta: gb, eps: eps, into: &normed) } }
        x = normed
        try visual.forward(&x, batch: n, tokens: t)
        var pooled = [Float](repeating: 0, count: n * d)
        for b in 0..<n { for j in 0..<d { pooled[b * d + j] = x[b * t * d + j] } }
        let embedding = try normalizeAndProject(pooled, rows: n, width: d, gain: lnPostW, bias: lnPostB, projection: visualProj)
        guard patchTokens else { return (embedding, nil) }
        var gridTokens = [Float](repeating: 0, count: n * g * g * d)
        for b in 0..<n {
            for p in 0..<(g * g) {
                let src = (b * t + 1 + p) * d, dst = (b * g * g + p) * d
                for j in 0..<d { gridTokens[dst + j] = x[src + j] }
            }
        }
        var normedPatches = gridTokens
        try lnPostW.withFloats { gw in try lnPostB.withFloats { gb in
            Kernels.layerNorm(gridTokens, rows: n * g * g, width: d, gamma: gw, beta: gb, eps: eps, into: &normedPatches)
        } }
        return (embedding, try Tensor(normedPatches, shape: [n, g, g, d]))
    }

    /// LN(pooled) · projection ([rows, width] → [rows, embedDim]), the end of both towers.
    func normalizeAndProject(_ pooled: [Float], rows n: Int, width d: Int, gain: Tensor, bias: Tensor, projection: Tensor) throws -> Tensor {
        var normed = pooled
        try gain.withFloats { gw in try bias.withFloats { gb in Kernels.layerNorm(pooled, rows: n, width: d, gamma: gw, beta: gb, eps: eps, into: &normed) } }
        var out = [Float](repeating: 0, count: n * config.embedDim)
        try projection.withFloats { p in
            GEMM.sgemm(m: n, n: config.embedDim, k: d, a: normed, lda: d, b: p, ldb: config.embedDim, c: &out, ldc: config.embedDim)
        }
        return try Tensor(out, shape: [n, config.embedDim])
    }

    /// Unnormalised text features [N, embedDim] of token ids [N, contextLength] (i32 or i64), as the
    /// open_clip tokenizer makes them (start token, BPE, end token = the largest id, zero padding).
    public func encodeText(_ ids: Tensor) throws -> Tensor {
        let tc = config.text
        guard ids.rank == 2, ids.shape[1] == tc.contextLength else {
            throw TensorError("token ids must be [N, \(tc.contextLength)], got \(ids.shape)")
        }
        let tokens = try ids.integers()
        let n = ids.shape[0], t = tc.contextLength, d = tc.width
        if let bad = tokens.first(where: { $0 < 0 || $0 >= tc.vocabSize }) {
            throw TensorError("token id \(bad) is outside the vocabulary of \(tc.vocabSize)")
        }
        // The pooled position per text: the end-of-text token, argmax of the ids (first occurrence,
        // as torch.argmax). Under the causal mask no position sees later ones, so the stack only
        // runs up to the last pooled position of the batch: the same result, a fraction of the work
        // for short captions.
        let eot = (0..<n).map { b in
            var best = 0
            for tok in 1..<t where tokens[b * t + tok] > tokens[b * t + best] { best = tok }
            return best
        }
        let used = (eot.max() ?? 0) + 1
        let pos: [Float] = try textPos.scalars()
        var x = [Float](repeating: 0, count: n * used * d)
        try tokenEmbedding.withFloats { emb in
            for b in 0..<n {
                for tok in 0..<used {
                    let id = tokens[b * t + tok]
                    for j in 0..<d { x[(b * used + tok) * d + j] = emb[id * d + j] + pos[tok * d + j] }
                }
            }
        }
        try text.forward(&x, batch: n, tokens: used, causal: true)
        var pooled = [Float](repeating: 0, count: n * d)
        for b in 0..<n { for j in 0..<d { pooled[b * d + j] = x[(b * used + eot[b]) * d + j] } }
        return try normalizeAndProject(pooled, rows: n, width: d, gain: lnFinalW, bias: lnFinalB, projection: textProjection)
    }

    /// logits[i, j] = exp(logitScale) · ⟨f_i/‖f_i‖, g_j/‖g_j‖⟩ for image features f and text features g.
    public func logits(imageFeatures: Tensor, textFeatures: Tensor) throws -> Tensor {
        let e = config.embedDim
        var f: [Float] = try imageFeatures.scalars(), g: [Float] = try textFeatures.scalars()
        func normalize(_ v: inout [Float]) {
            for r in 0..<(v.count / e) {
                var s: Float = 0
                for j in 0..<e { s += v[r * e + j] * v[r * e + j] }
                let inv = 1 / max(s.squareRoot(), 1e-12)
                for j in 0..<e { v[r * e + j] *= inv }
            }
        }
        normalize(&f)
        normalize(&g)
        let ni = f.count / e, nt = g.count / e
        var out = [Float](repeating: 0, count: ni * nt)
        GEMM.sgemm(transposeB: true, m: ni, n: nt, k: e, alpha: expf(logitScale), a: f, lda: e, b: g, ldb: e, c: &out, ldc: nt)
        return try Tensor(out, shape: [ni, nt])
    }
}
