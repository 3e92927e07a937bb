import Formats
import Foundation
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
            (self.contextLength, self.vocabSize, self.width, self.heads, self.layers, self.mlpRatio) = (
                contextLength, vocabSize, width, heads, layers, mlpRatio
            )
        }
    }
    public var embedDim: Int
    public var vision: Vision
    public var text: Text
    public var quickGELU: Bool
    public var mean: [Float]
    public var std: [Float]

    public init(
        embedDim: Int, vision: Vision, text: Text, quickGELU: Bool = false,
        mean: [Float] = [0.48145466, 0.4578275, 0.40821073], std: [Float] = [0.26862954, 0.26130258, 0.27577711]
    ) {
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
        let vision = Vision(
            imageSize: try need(v["image_size"], "vision_cfg.image_size"), patchSize: try need(v["patch_size"], "vision_cfg.patch_size"),
            width: vWidth, layers: try need(v["layers"], "vision_cfg.layers"), heads: vWidth / headWidth,
            mlpRatio: try ratio(v["mlp_ratio"], "vision_cfg.mlp_ratio"))
        let tWidth = try need(t["width"], "text_cfg.width")
        let textCfg = Text(
            contextLength: try optional(t["context_length"], "text_cfg.context_length", default: 77),
            vocabSize: try optional(t["vocab_size"], "text_cfg.vocab_size", default: 49408, in: Limits.vocabulary),
            width: tWidth, heads: try optional(t["heads"], "text_cfg.heads", default: 8), layers: try need(t["layers"], "text_cfg.layers"),
            mlpRatio: try ratio(t["mlp_ratio"], "text_cfg.mlp_ratio"))
        let pre = json["preprocess_cfg"]
        let mean = pre?["mean"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.48145466, 0.4578275, 0.40821073]
        let std = pre?["std"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.26862954, 0.26130258, 0.27577711]
        guard mean.count == 3, std.count == 3, (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw FormatError(path: path, "preprocess_cfg mean and std need 3 finite values each (std positive), got \(mean) and \(std)")
        }
        let config = OpenCLIPConfig(
            embedDim: try need(cfg["embed_dim"], "embed_dim"), vision: vision, text: textCfg,
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
        try Limits.parameters(
            [
                [vision.width, 3, vision.patchSize, vision.patchSize], [tokens, vision.width], [vision.layers, 4, vision.width, vision.width],
                [vision.layers, 2, vision.width, vHidden], [vision.width, embedDim],
                [text.vocabSize, text.width], [text.contextLength, text.width], [text.layers, 4, text.width, text.width],
                [text.layers, 2, text.width, tHidden], [text.width, embedDim],
            ], what: "the CLIP model's parameters", source: source)
        try Limits.allocation(shape: [vision.heads, tokens, tokens], elementSize: 4, what: "the attention scores of one image", source: source)
        try Limits.allocation(
            shape: [text.heads, text.contextLength, text.contextLength], elementSize: 4,
            what: "the attention scores of one text", source: source)
    }
}

/// open_clip's CLIP (ViT image tower + causal text transformer), one definition for training and
/// inference, its parameters named as open_clip's state dict (`visual.conv1.weight`,
/// `visual.transformer.resblocks.N.attn.in_proj_weight`, `token_embedding.weight`, `logit_scale`, …).
///
/// encode_image: conv1 patches ; [class_embedding; patches] + positional_embedding ; ln_pre ;
///   blocks ; ln_post ; token 0 ; · proj.
/// encode_text: token_embedding[ids] + positional_embedding ; causal blocks ; ln_final ;
///   the token at argmax(ids) (the end-of-text token) ; · text_projection.
/// LayerNorm eps is torch's default 1e-5.
///
/// Two paths on the same parameters: `encodeImage(_: Variable)`, `encodeText(_: [[Int]])` and
/// `logits(image:text:)` record the graph (BioCLIP 2 training, CONCORD's gradient through the image
/// encoder); `encodeImage(_: Tensor)`, `encodeText(_: Tensor)` and `logits(imageFeatures:textFeatures:)`
/// are the no-grad fast path (fused sgemm kernels), reading the current parameter tensors.
public final class CLIP: Module {
    public let config: OpenCLIPConfig
    // Image tower.
    public let conv1: Parameter // [width, 3, p, p], no bias
    public let classEmbedding: Parameter // [width]
    public let visualPositional: Parameter // [tokens, width]
    public let lnPre: LayerNorm, lnPost: LayerNorm
    public let visualBlocks: [TransformerBlock]
    public let visualProjection: Parameter // [width, embed]
    // Text tower.
    public let tokenEmbedding: Parameter // [vocab, width]
    public let textPositional: Parameter // [context, width]
    public let textBlocks: [TransformerBlock]
    public let lnFinal: LayerNorm
    public let textProjection: Parameter // [width, embed]
    public let logitScale: Parameter // [] (log of the temperature's inverse)
    public var isTraining = true
    let eps: Float = 1e-5

    /// A fresh model with seeded random parameters.
    public convenience init(config: OpenCLIPConfig, seed: UInt64 = 0) {
        self.init(config: config, source: ParameterSource(seed: seed))
    }

    /// Loads `open_clip_config.json` and `open_clip_model.safetensors` (or a `.bin`/`.pt` of
    /// `Checkpoint.openCLIPFiles`) from `folder`.
    public convenience init(folder: String) throws {
        let config = try OpenCLIPConfig.load(path: folder + "/open_clip_config.json")
        let weights = Checkpoint.weightsFile(in: folder, Checkpoint.openCLIPFiles) ?? folder
        try self.init(config: config, checkpoint: Checkpoint(path: weights))
    }

    /// Loads open_clip weights for `config` (every mismatch reported in one error; the tensors stay
    /// memory-mapped until an optimizer replaces them). BioCLIP 2's `visual.continual_proj` (training
    /// on replay data only) and a stored `attn_mask` are ignored.
    public convenience init(config: OpenCLIPConfig, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        self.init(config: config, source: ParameterSource(loader: loader))
        try loader.finish(allowUnused: { $0 == "visual.continual_proj" || $0.hasPrefix("visual.continual_proj.") || $0 == "attn_mask" })
    }

    init(config c: OpenCLIPConfig, source s: ParameterSource) {
        config = c
        let v = c.vision, t = c.text
        let act: Activation = c.quickGELU ? .quickGELU : .gelu
        conv1 = s.uniform("visual.conv1.weight", [v.width, 3, v.patchSize, v.patchSize], bound: 1 / Float(3 * v.patchSize * v.patchSize).squareRoot())
        classEmbedding = s.uniform("visual.class_embedding", [v.width], bound: 0.02, decays: false)
        visualPositional = s.uniform("visual.positional_embedding", [v.tokens, v.width], bound: 0.02, decays: false)
        lnPre = s.layerNorm("visual.ln_pre", v.width, eps: 1e-5)
        lnPost = s.layerNorm("visual.ln_post", v.width, eps: 1e-5)
        visualBlocks = (0..<v.layers).map { i in
            TransformerBlock(
                source: s, prefix: "visual.transformer.resblocks.\(i).", width: v.width, heads: v.heads, hidden: v.hidden,
                qkvBias: true, eps: 1e-5, activation: act, naming: .openCLIP, layerScale: false)
        }
        visualProjection = s.uniform("visual.proj", [v.width, c.embedDim], bound: 1 / Float(v.width).squareRoot())
        tokenEmbedding = s.uniform("token_embedding.weight", [t.vocabSize, t.width], bound: 0.02)
        textPositional = s.uniform("positional_embedding", [t.contextLength, t.width], bound: 0.01, decays: false)
        textBlocks = (0..<t.layers).map { i in
            TransformerBlock(
                source: s, prefix: "transformer.resblocks.\(i).", width: t.width, heads: t.heads, hidden: t.hidden,
                qkvBias: true, eps: 1e-5, activation: act, naming: .openCLIP, layerScale: false)
        }
        lnFinal = s.layerNorm("ln_final", t.width, eps: 1e-5)
        textProjection = s.uniform("text_projection", [t.width, c.embedDim], bound: 1 / Float(t.width).squareRoot())
        logitScale = s.filled("logit_scale", [], Float(log(1 / 0.07)))
    }

    public var namedParameters: [(String, Parameter)] {
        var p: [(String, Parameter)] = [
            ("visual.conv1.weight", conv1), ("visual.class_embedding", classEmbedding),
            ("visual.positional_embedding", visualPositional),
        ]
        p += prefixed("visual.ln_pre.", lnPre.namedParameters)
        for (i, b) in visualBlocks.enumerated() { p += prefixed("visual.transformer.resblocks.\(i).", b.namedParameters) }
        p += prefixed("visual.ln_post.", lnPost.namedParameters) + [("visual.proj", visualProjection)]
        p += [("token_embedding.weight", tokenEmbedding), ("positional_embedding", textPositional)]
        for (i, b) in textBlocks.enumerated() { p += prefixed("transformer.resblocks.\(i).", b.namedParameters) }
        p += prefixed("ln_final.", lnFinal.namedParameters) + [("text_projection", textProjection), ("logit_scale", logitScale)]
        return p
    }

    /// The learned temperature's logarithm as a number (logits use exp of it).
    public var logitScaleValue: Float { (try? logitScale.value.scalars(as: Float.self).first) ?? 0 }

    // MARK: Differentiable path

    /// Unnormalised image features [N, embed] of normalised images [N, 3, S, S] (records the graph).
    public func encodeImage(_ images: Variable) -> Variable {
        let v = config.vision
        let n = images.shape[0], g = v.grid
        var x = conv2d(images, weight: conv1.variable, bias: nil, stride: (v.patchSize, v.patchSize))
            .reshaped([n, v.width, g * g]).transposed() // [N, L, D]
        x = concat([classEmbedding.variable.reshaped([1, 1, v.width]).broadcast(to: [n, 1, v.width]), x], axis: 1)
        x = lnPre(x + visualPositional.variable)
        for block in visualBlocks { x = block(x) }
        let pooled = lnPost(x.slice(axis: 1, 0..<1).reshaped([n, v.width]))
        return matmul(pooled, visualProjection.variable)
    }

    /// Unnormalised text features [N, embed] of token ids [N, context] (pooled at the largest id,
    /// the end-of-text token, first occurrence; records the graph).
    public func encodeText(_ ids: [[Int]]) throws -> Variable {
        let t = config.text
        guard ids.allSatisfy({ $0.count == t.contextLength && $0.allSatisfy { (0..<t.vocabSize).contains($0) } }) else {
            throw TensorError("token ids must be rows of \(t.contextLength) ids in 0..<\(t.vocabSize)")
        }
        let n = ids.count
        let eot = ids.map { row in row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }! }
        // Positions after the last end-of-text token of the batch cannot reach any pooled output
        // under the causal mask: they are left out (same values and gradients, less work).
        let used = (eot.max() ?? 0) + 1
        var x =
            tokenEmbedding.variable.gatherRows(ids.flatMap { $0.prefix(used) }).reshaped([n, used, t.width])
            + textPositional.variable.slice(axis: 0, 0..<used)
        for block in textBlocks { x = block(x, causal: true) }
        x = lnFinal(x)
        let pooled = x.reshaped([n * used, t.width]).gatherRows(eot.enumerated().map { $0.offset * used + $0.element })
        return matmul(pooled, textProjection.variable)
    }

    /// exp(logit_scale) · normalize(image) · normalize(text)ᵀ (records the graph).
    public func logits(image: Variable, text: Variable) -> Variable {
        func normalize(_ f: Variable) -> Variable { f / ((f * f).sum(axis: -1, keepDims: true) + 1e-12).sqrt() }
        return matmul(normalize(image), normalize(text), transposeB: true) * logitScale.variable.exp()
    }

    // MARK: No-grad fast path

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
        try conv1.value.withFloats { cw in // [width, 3, p, p] read as [width, 3·p·p]
            Kernels.linear(patches, rows: n * g * g, inFeatures: 3 * v.patchSize * v.patchSize, weight: cw, bias: nil, outFeatures: d, into: &embedded)
        }
        var x = [Float](repeating: 0, count: n * t * d)
        try classEmbedding.value.withFloats { cls in
            try visualPositional.value.withFloats { pos in
                for b in 0..<n {
                    for tok in 0..<t {
                        for j in 0..<d {
                            x[(b * t + tok) * d + j] = (tok == 0 ? cls[j] : embedded[(b * g * g + tok - 1) * d + j]) + pos[tok * d + j]
                        }
                    }
                }
            }
        }
        var normed = x
        try lnPre.weight.value.withFloats { gw in
            try lnPre.bias.value.withFloats { gb in
                Kernels.layerNorm(x, rows: n * t, width: d, gamma: gw, beta: gb, eps: eps, into: &normed)
            }
        }
        x = normed
        try TransformerStack(visualBlocks).forward(&x, batch: n, tokens: t)
        var pooled = [Float](repeating: 0, count: n * d)
        for b in 0..<n { for j in 0..<d { pooled[b * d + j] = x[b * t * d + j] } }
        let embedding = try normalizeAndProject(pooled, rows: n, width: d, norm: lnPost, projection: visualProjection)
        guard patchTokens else { return (embedding, nil) }
        var gridTokens = [Float](repeating: 0, count: n * g * g * d)
        for b in 0..<n {
            for p in 0..<(g * g) {
                let src = (b * t + 1 + p) * d, dst = (b * g * g + p) * d
                for j in 0..<d { gridTokens[dst + j] = x[src + j] }
            }
        }
        var normedPatches = gridTokens
        try lnPost.weight.value.withFloats { gw in
            try lnPost.bias.value.withFloats { gb in
                Kernels.layerNorm(gridTokens, rows: n * g * g, width: d, gamma: gw, beta: gb, eps: eps, into: &normedPatches)
            }
        }
        return (embedding, try Tensor(normedPatches, shape: [n, g, g, d]))
    }

    /// LN(pooled) · projection ([rows, width] → [rows, embedDim]), the end of both towers.
    func normalizeAndProject(_ pooled: [Float], rows n: Int, width d: Int, norm: LayerNorm, projection: Parameter) throws -> Tensor {
        var normed = pooled
        try norm.weight.value.withFloats { gw in
            try norm.bias.value.withFloats { gb in
                Kernels.layerNorm(pooled, rows: n, width: d, gamma: gw, beta: gb, eps: eps, into: &normed)
            }
        }
        var out = [Float](repeating: 0, count: n * config.embedDim)
        try projection.value.withFloats { p in
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
        var x = [Float](repeating: 0, count: n * used * d)
        try tokenEmbedding.value.withFloats { emb in
            try textPositional.value.withFloats { pos in
                for b in 0..<n {
                    for tok in 0..<used {
                        let id = tokens[b * t + tok]
                        for j in 0..<d { x[(b * used + tok) * d + j] = emb[id * d + j] + pos[tok * d + j] }
                    }
                }
            }
        }
        try TransformerStack(textBlocks).forward(&x, batch: n, tokens: used, causal: true)
        var pooled = [Float](repeating: 0, count: n * d)
        for b in 0..<n { for j in 0..<d { pooled[b * d + j] = x[(b * used + eot[b]) * d + j] } }
        return try normalizeAndProject(pooled, rows: n, width: d, norm: lnFinal, projection: textProjection)
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
        GEMM.sgemm(transposeB: true, m: ni, n: nt, k: e, alpha: expf(logitScaleValue), a: f, lda: e, b: g, ldb: e, c: &out, ldc: nt)
        return try Tensor(out, shape: [ni, nt])
    }
}
