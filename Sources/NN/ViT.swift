import Formats
import Foundation
import Tensors

/// The shape of a timm / open_clip style Vision Transformer, read from a config file (and, for what
/// the file leaves out, from the checkpoint's tensor shapes).
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
    /// Register tokens after the class token (DINOv2 `_reg4` models: timm `reg_tokens`).
    public var registerTokens = 0
    /// The position embedding covers the patch tokens only, added before the prefix tokens are
    /// prepended (timm `no_embed_class`, DINOv2 register models).
    public var noEmbedClass = false
    /// Per-channel residual gains `ls1.gamma` / `ls2.gamma` (timm `init_values`, DINOv2).
    public var layerScale = false
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
    /// Tokens before the patch tokens: the class token and the register tokens.
    public var prefixTokens: Int { (classToken ? 1 : 0) + registerTokens }
    public var tokens: Int { grid * grid + prefixTokens }
    /// Rows of `pos_embed`.
    public var positionTokens: Int { noEmbedClass ? grid * grid : tokens }
    public var hidden: Int { Int((Double(width) * mlpRatio).rounded()) }

    /// Reads timm's `config.json` (`architecture`, `num_classes`, `global_pool`, `model_args`,
    /// `pretrained_cfg.input_size`). The configs timm publishes for its pretrained models (DINO,
    /// DINOv2, …) carry no `model_args`: with `checkpoint`, every size the file leaves out is read
    /// from the tensors (width, depth, patch size, MLP ratio, class/register tokens, layer scale,
    /// qkv bias, image size from the position embedding), and the head count from the architecture
    /// name (tiny 3, small 6, base 12, large 16, huge 16, giant 16; DINOv2 giant 24), else width / 64.
    public static func timm(configPath: String, checkpoint: Checkpoint? = nil) throws -> ViTConfig {
        let json: JSONValue
        do { json = try JSONValue.parse(try RegularFile.text(configPath, limit: 16 << 20), source: configPath) } catch let e as FormatError {
            throw e
        } catch { throw FormatError(path: configPath, "\(error)") }
        let args = json["model_args"] ?? .object([:])
        let architecture = json["architecture"]?.stringValue ?? ""
        let shapes = checkpoint.map { TimmShapes($0) }
        // A key present in the file must be a valid integer (a bad value is never silently replaced
        // by the checkpoint's or the default); inferred values are range-checked too.
        func int(_ key: String, _ inferred: Int? = nil, _ fallback: Int? = nil, in range: ClosedRange<Int> = Limits.dimension) throws -> Int {
            if var v = args[key] ?? json[key], v != .null {
                if let list = v.arrayValue, let last = list.last { v = last } // img_size as [H, W]
                return try Limits.int(v, key: key, in: range, source: configPath)
            }
            if let inferred { return try Limits.check(inferred, key: key, in: range, source: configPath) }
            if let fallback { return fallback }
            throw FormatError(path: configPath, "model_args has no '\(key)'" + (checkpoint == nil ? "" : " and the checkpoint does not show it"))
        }
        var inputSize: Int?
        if let v = json["pretrained_cfg"]?["input_size"]?.arrayValue?.last {
            inputSize = try Limits.int(v, key: "pretrained_cfg.input_size", in: Limits.dimension, source: configPath)
        }
        let width = try int("embed_dim", shapes?.width)
        let patch = try int("patch_size", shapes?.patch, 16)
        var c = ViTConfig(
            imageSize: try int("img_size", inputSize ?? shapes?.imageSize(patch: patch), 224), patchSize: patch, width: width,
            depth: try int("depth", shapes?.depth), heads: try int("num_heads", timmHeads(architecture: architecture, width: width)))
        c.inChannels = try int("in_chans", shapes?.inChannels, 3)
        if let r = args["mlp_ratio"], r != .null {
            guard let ratio = r.doubleValue else { throw FormatError(path: configPath, "'mlp_ratio' = \(r.compactText) is not a number") }
            c.mlpRatio = try Limits.finite(ratio, key: "mlp_ratio", in: 1e-6...1e6, source: configPath)
        } else if let hidden = shapes?.hidden {
            c.mlpRatio = Double(hidden) / Double(width)
        }
        c.qkvBias = args["qkv_bias"]?.boolValue ?? shapes?.qkvBias ?? true
        c.classToken = args["class_token"]?.boolValue ?? shapes?.classToken ?? true
        c.registerTokens = try int("reg_tokens", shapes?.registerTokens, 0, in: 0...Limits.dimension.upperBound)
        c.noEmbedClass =
            args["no_embed_class"]?.boolValue ?? shapes?.positionRows.map { rows in
                c.prefixTokens > 0 && isSquare(rows) && !isSquare(rows - c.prefixTokens)
            } ?? false
        c.layerScale = args["init_values"].map { $0.doubleValue != nil } ?? shapes?.layerScale ?? false
        c.globalPool = args["global_pool"]?.stringValue ?? json["global_pool"]?.stringValue ?? "token"
        c.numClasses = try int("num_classes", shapes?.classes, 0, in: 0...Limits.vocabulary.upperBound)
        // timm: fc_norm=None means "use it when pooling by average".
        c.fcNorm = args["fc_norm"]?.boolValue ?? shapes?.fcNorm ?? (c.globalPool == "avg")
        try c.validate(source: configPath)
        return c
    }

    /// Checks every size before a model is built from this config (from a file or from options):
    /// each in `Limits.dimension`, `embed_dim` divisible by `num_heads`, `img_size` by `patch_size`,
    /// a finite `mlp_ratio` with the hidden size in range, and the parameter and attention memory
    /// within `Limits.allocation`. `keys` names the sizes as the source spells them (timm's by default).
    public func validate(source: String, keys: [String: String] = [:]) throws {
        func name(_ k: String) -> String { keys[k] ?? k }
        for (k, v) in [
            ("img_size", imageSize), ("patch_size", patchSize), ("embed_dim", width), ("depth", depth),
            ("num_heads", heads), ("in_chans", inChannels),
        ] {
            _ = try Limits.check(v, key: name(k), in: Limits.dimension, source: source)
        }
        _ = try Limits.check(registerTokens, key: name("reg_tokens"), in: 0...Limits.dimension.upperBound, source: source)
        _ = try Limits.check(numClasses, key: name("num_classes"), in: 0...Limits.vocabulary.upperBound, source: source)
        guard width % heads == 0 else {
            throw FormatError(path: source, "'\(name("embed_dim"))' = \(width) is not divisible by '\(name("num_heads"))' = \(heads)")
        }
        guard imageSize % patchSize == 0 else {
            throw FormatError(path: source, "'\(name("img_size"))' = \(imageSize) is not a multiple of '\(name("patch_size"))' = \(patchSize)")
        }
        let hidden = try Limits.scaled(width, by: mlpRatio, key: name("mlp_ratio"), source: source)
        let g = imageSize / patchSize
        let tokens = try Limits.product([g, g], what: "the token grid", source: source) + prefixTokens
        try Limits.parameters(
            [
                [width, inChannels, patchSize, patchSize], [tokens, width], [depth, 4, width, width],
                [depth, 2, width, hidden], [numClasses, width],
            ], what: "the ViT's parameters", source: source)
        try Limits.allocation(shape: [heads, tokens, tokens], elementSize: 4, what: "the ViT's attention scores of one image", source: source)
    }

    /// The head count of timm's named ViT sizes (`vit_small_…`, `vit_large_…_dinov2`), else width / 64
    /// (every standard timm ViT up to large has 64-channel heads).
    static func timmHeads(architecture: String, width: Int) -> Int? {
        let name = architecture.lowercased()
        let table: [(String, Int)] = [
            ("_tiny_", 3), ("_small_", 6), ("_base_", 12), ("_large_", 16), ("_huge_", 16), ("_giant_", name.contains("dinov2") ? 24 : 16),
        ]
        if let (_, h) = table.first(where: { name.contains($0.0) }) { return h }
        return width % 64 == 0 && width >= 64 ? width / 64 : nil
    }
}

private func isSquare(_ n: Int) -> Bool {
    let r = Int(Double(max(n, 0)).squareRoot().rounded())
    return n > 0 && r * r == n
}

/// Sizes of a timm ViT read from its tensors.
struct TimmShapes {
    var width, patch, inChannels, depth, hidden, positionRows, registerTokens, classes: Int?
    var qkvBias, classToken, layerScale, fcNorm: Bool

    init(_ checkpoint: Checkpoint) {
        func shape(_ name: String) -> [Int]? { try? checkpoint.entry(name).shape }
        let names = Set(checkpoint.names)
        let proj = shape("patch_embed.proj.weight")
        width = proj?.first
        patch = proj.map { $0.count == 4 ? $0[3] : nil } ?? nil
        inChannels = proj.map { $0.count == 4 ? $0[1] : nil } ?? nil
        var blocks = 0
        while names.contains("blocks.\(blocks).norm1.weight") { blocks += 1 }
        depth = blocks > 0 ? blocks : nil
        hidden = shape("blocks.0.mlp.fc1.weight")?.first
        positionRows = shape("pos_embed").map { $0.count == 3 ? $0[1] : nil } ?? nil
        registerTokens = shape("reg_token").map { $0.count == 3 ? $0[1] : 0 } ?? 0
        classes = shape("head.weight")?.first ?? 0
        qkvBias = names.contains("blocks.0.attn.qkv.bias")
        classToken = names.contains("cls_token")
        layerScale = names.contains("blocks.0.ls1.gamma")
        fcNorm = names.contains("fc_norm.weight")
    }

    /// The training image size the position embedding was made for.
    func imageSize(patch p: Int) -> Int? {
        guard let rows = positionRows else { return nil }
        let prefix = (classToken ? 1 : 0) + (registerTokens ?? 0)
        for tokens in [rows, rows - prefix] where tokens > 0 {
            let g = Int(Double(tokens).squareRoot().rounded())
            if g * g == tokens { return g * p }
        }
        return nil
    }
}

/// A timm Vision Transformer, one definition for training and inference, its parameters named as
/// timm's state dict (`patch_embed.proj.weight`, `cls_token`, `reg_token`, `pos_embed`,
/// `blocks.N.attn.qkv.weight`, `blocks.N.ls1.gamma`, `norm` or `fc_norm`, `head`).
///
/// tokens = [cls; registers; patches·W_e + b_e] + pos (with `noEmbedClass`, pos on the patches
/// only) ; blocks (`TransformerBlock`) ; LN ; pool (class token or mean of the patch tokens; with
/// `fcNorm` the LN after pooling) ; head.
///
/// Two forwards on the same parameters: `forward(_: Variable)` records the graph (training,
/// Grad-CAM / Finer-CAM on token grids, Prompt-CAM's attention maps); `forward(_: Tensor)` is the
/// no-grad fast path (fused sgemm kernels, no tape), which reads the current parameter tensors.
public final class ViT: Module {
    public let config: ViTConfig
    public let patchEmbed: Conv2d
    public let clsToken: Parameter?
    /// DINOv2's register tokens [1, R, D], after the class token.
    public let regToken: Parameter?
    public let posEmbed: Parameter
    public let blocks: [TransformerBlock]
    public let norm: LayerNorm
    public let head: Linear?
    public var isTraining = true {
        didSet { for m in [patchEmbed, norm] as [Module] + blocks + (head.map { [$0] } ?? []) { m.isTraining = isTraining } }
    }

    /// A fresh model with seeded random parameters.
    public convenience init(config: ViTConfig, seed: UInt64 = 0) {
        self.init(config: config, source: ParameterSource(seed: seed), positionEmbedding: nil)
    }

    /// Loads timm weights for `config` (every mismatch reported in one error; the tensors stay
    /// memory-mapped until an optimizer replaces them). A checkpoint trained at another image size
    /// has its position embedding resampled to this config's grid.
    public convenience init(config: ViTConfig, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        let c = config
        var position: Tensor?
        if let e = try? checkpoint.entry("pos_embed"), e.shape != [1, c.positionTokens, c.width], e.shape.count == 3, e.shape[2] == c.width {
            position = try resamplePositionEmbedding(loader.float32("pos_embed", e.shape), prefixTokens: c.noEmbedClass ? 0 : c.prefixTokens, to: c.grid)
        }
        self.init(config: config, source: ParameterSource(loader: loader), positionEmbedding: position)
        try loader.finish()
    }

    init(config c: ViTConfig, source s: ParameterSource, positionEmbedding: Tensor?) {
        config = c
        let fanIn = c.inChannels * c.patchSize * c.patchSize, bound = 1 / Float(fanIn).squareRoot()
        let patchWeight = s.uniform("patch_embed.proj.weight", [c.width, c.inChannels, c.patchSize, c.patchSize], bound: bound)
        patchEmbed = Conv2d(
            weight: patchWeight, bias: s.uniform("patch_embed.proj.bias", [c.width], bound: bound, decays: false),
            stride: c.patchSize)
        clsToken = c.classToken ? s.uniform("cls_token", [1, 1, c.width], bound: 0.02, decays: false) : nil
        regToken = c.registerTokens > 0 ? s.uniform("reg_token", [1, c.registerTokens, c.width], bound: 0.02, decays: false) : nil
        if let positionEmbedding {
            posEmbed = Parameter(positionEmbedding, decays: false)
        } else {
            posEmbed = s.uniform("pos_embed", [1, c.positionTokens, c.width], bound: 0.02, decays: false)
        }
        blocks = (0..<c.depth).map { i in
            TransformerBlock(
                source: s, prefix: "blocks.\(i).", width: c.width, heads: c.heads, hidden: c.hidden, qkvBias: c.qkvBias,
                eps: c.layerNormEps, activation: .gelu, naming: .timm, layerScale: c.layerScale)
        }
        norm = s.layerNorm(c.fcNorm ? "fc_norm" : "norm", c.width, eps: c.layerNormEps)
        head = c.numClasses > 0 ? s.linear("head", c.width, c.numClasses) : nil
    }

    public var namedParameters: [(String, Parameter)] {
        var p = prefixed("patch_embed.proj.", patchEmbed.namedParameters)
        if let clsToken { p.append(("cls_token", clsToken)) }
        if let regToken { p.append(("reg_token", regToken)) }
        p.append(("pos_embed", posEmbed))
        for (i, b) in blocks.enumerated() { p += prefixed("blocks.\(i).", b.namedParameters) }
        p += prefixed(config.fcNorm ? "fc_norm." : "norm.", norm.namedParameters)
        if let head { p += prefixed("head.", head.namedParameters) }
        return p
    }

    /// The blocks' no-grad fast path.
    public var stack: TransformerStack { TransformerStack(blocks) }

    public struct Output {
        /// [N, classes] (or the pooled features when there is no head).
        public var logits: Variable
        public var pooled: Variable
        /// Per block, the output of its first LayerNorm [N, T, D] (Grad-CAM's usual ViT target layer).
        public var norm1Outputs: [Variable]
        /// Per block, the post-softmax attention [N, H, T, T] when `keepAttention`.
        public var attentions: [Variable]
        /// The patch tokens after the last block and the final norm, prefix tokens dropped [N, L, D]
        /// (DINO's features for label propagation).
        public var patchTokens: Variable
    }

    /// The differentiable forward: images [N, C, S, S] (normalised) through the network, recording
    /// the graph when gradients are on.
    public func forward(_ images: Variable, keepAttention: Bool = false) -> Output {
        let c = config
        let n = images.shape[0], d = c.width, g = c.grid
        var x = patchEmbed(images).reshaped([n, d, g * g]).transposed() // [N, L, D]
        // timm `_pos_embed`: the position embedding is added after prepending the class and register
        // tokens, or (no_embed_class) to the patch tokens alone before.
        if c.noEmbedClass { x = x + posEmbed.variable }
        var prefixTokens: [Variable] = []
        if let clsToken { prefixTokens.append(clsToken.variable.broadcast(to: [n, 1, d])) }
        if let regToken { prefixTokens.append(regToken.variable.broadcast(to: [n, c.registerTokens, d])) }
        if !prefixTokens.isEmpty { x = concat(prefixTokens + [x], axis: 1) }
        if !c.noEmbedClass { x = x + posEmbed.variable }
        var norm1: [Variable] = [], attentions: [Variable] = []
        for block in blocks {
            block.attention.keepAttention = keepAttention
            x = block(x, norm1Tap: { norm1.append($0) })
            if keepAttention, let a = block.attention.lastAttention { attentions.append(a) }
        }
        let prefix = c.prefixTokens
        let patchTokens = norm(x.slice(axis: 1, prefix..<c.tokens))
        var pooled: Variable
        if c.fcNorm {
            pooled = norm(c.globalPool == "avg" ? x.slice(axis: 1, prefix..<c.tokens).mean(axis: 1) : x.slice(axis: 1, 0..<1).reshaped([n, d]))
        } else {
            let normed = norm(x)
            pooled = c.globalPool == "avg" ? normed.slice(axis: 1, prefix..<c.tokens).mean(axis: 1) : normed.slice(axis: 1, 0..<1).reshaped([n, d])
        }
        return Output(logits: head.map { $0(pooled) } ?? pooled, pooled: pooled, norm1Outputs: norm1, attentions: attentions, patchTokens: patchTokens)
    }

    /// What the fast path returns.
    public struct Inference {
        /// [N, numClasses], or the pooled features [N, D] when the model has no head.
        public var logits: Tensor
        /// [N, D] after pooling (and fc_norm).
        public var pooled: Tensor
        /// Per block, its input ([N, T, D]) when requested.
        public var blockInputs: [Tensor]
    }

    /// The no-grad fast path: images `[N, C, H, W]` (already normalised) through the network, with
    /// the same result as `forward(Variable(images))` to float precision. Records no graph.
    public func forward(_ images: Tensor, keepBlockInputs: Bool = false) throws -> Inference {
        let c = config
        guard images.dtype == .float32, images.rank == 4, images.shape[1] == c.inChannels,
            images.shape[2] == c.imageSize, images.shape[3] == c.imageSize
        else {
            throw TensorError("images must be f32 [N, \(c.inChannels), \(c.imageSize), \(c.imageSize)], got \(images.dtype.name) \(images.shape)")
        }
        let n = images.shape[0], d = c.width, t = c.tokens, g = c.grid
        let prefix = c.prefixTokens
        let patchDim = c.inChannels * c.patchSize * c.patchSize
        let patches = unfoldPatches(try images.scalars(), batch: n, channels: c.inChannels, size: c.imageSize, patch: c.patchSize)
        var embedded = [Float](repeating: 0, count: n * g * g * d)
        try patchEmbed.weight.value.withFloats { pw in // [D, C, p, p] read as [D, C·p·p]
            if let bias = patchEmbed.bias {
                try bias.value.withFloats { pb in
                    Kernels.linear(patches, rows: n * g * g, inFeatures: patchDim, weight: pw, bias: pb, outFeatures: d, into: &embedded)
                }
            } else {
                Kernels.linear(patches, rows: n * g * g, inFeatures: patchDim, weight: pw, bias: nil, outFeatures: d, into: &embedded)
            }
        }
        var x = [Float](repeating: 0, count: n * t * d)
        try posEmbed.value.withFloats { pos in
            // Position row of token `tok` (nil: none, the prefix tokens under no_embed_class).
            func row(_ tok: Int) -> Int? { c.noEmbedClass ? (tok < prefix ? nil : tok - prefix) : tok }
            let cls: [Float] = try clsToken?.value.scalars() ?? [], reg: [Float] = try regToken?.value.scalars() ?? []
            let classes = c.classToken ? 1 : 0
            for b in 0..<n {
                for tok in 0..<t {
                    let out = (b * t + tok) * d
                    if tok < classes {
                        for j in 0..<d { x[out + j] = cls[j] }
                    } else if tok < prefix {
                        for j in 0..<d { x[out + j] = reg[(tok - classes) * d + j] }
                    } else {
                        for j in 0..<d { x[out + j] = embedded[(b * g * g + tok - prefix) * d + j] }
                    }
                    if let r = row(tok) { for j in 0..<d { x[out + j] += pos[r * d + j] } }
                }
            }
        }
        var blockInputs: [Tensor] = []
        try stack.forward(
            &x, batch: n, tokens: t,
            observe: keepBlockInputs
                ? { _, input in
                    blockInputs.append(Tensor.make([n, t, d]) { out in for i in 0..<input.count { out[i] = input[i] } })
                } : nil)
        let eps = norm.eps
        if !c.fcNorm {
            var normed = [Float](repeating: 0, count: x.count)
            try norm.weight.value.withFloats { nw in
                try norm.bias.value.withFloats { nb in
                    Kernels.layerNorm(x, rows: n * t, width: d, gamma: nw, beta: nb, eps: eps, into: &normed)
                }
            }
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
            try norm.weight.value.withFloats { nw in
                try norm.bias.value.withFloats { nb in
                    Kernels.layerNorm(pooled, rows: n, width: d, gamma: nw, beta: nb, eps: eps, into: &normed)
                }
            }
            pooled = normed
        }
        var logits = pooled
        if let head {
            logits = [Float](repeating: 0, count: n * c.numClasses)
            try head.weight.value.withFloats { hw in
                if let hb = head.bias {
                    try hb.value.withFloats { b in Kernels.linear(pooled, rows: n, inFeatures: d, weight: hw, bias: b, outFeatures: c.numClasses, into: &logits)
                    }
                } else {
                    Kernels.linear(pooled, rows: n, inFeatures: d, weight: hw, bias: nil, outFeatures: c.numClasses, into: &logits)
                }
            }
        }
        return Inference(
            logits: try Tensor(logits, shape: [n, head == nil ? d : c.numClasses]), pooled: try Tensor(pooled, shape: [n, d]),
            blockInputs: blockInputs)
    }
}
