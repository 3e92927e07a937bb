import Foundation
import Formats
import Tensors

/// A timm Vision Transformer as a differentiable module (for training, Grad-CAM / Finer-CAM on
/// token grids, Prompt-CAM's attention maps). Same names and computation as `VisionTransformer`
/// (the tape-free inference path), which it matches to float precision.
public final class ViTModel: Module {
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

    public init(config c: ViTConfig, seed: UInt64 = 0) {
        var rng = SeededGenerator(seed: seed)
        config = c
        patchEmbed = Conv2d(c.inChannels, c.width, kernel: c.patchSize, stride: c.patchSize, rng: &rng)
        clsToken = c.classToken ? Parameter(uniform([1, 1, c.width], bound: 0.02, &rng), decays: false) : nil
        regToken = c.registerTokens > 0 ? Parameter(uniform([1, c.registerTokens, c.width], bound: 0.02, &rng), decays: false) : nil
        posEmbed = Parameter(uniform([1, c.positionTokens, c.width], bound: 0.02, &rng), decays: false)
        blocks = (0..<c.depth).map { _ in
            TransformerBlock(width: c.width, heads: c.heads, hidden: c.hidden, qkvBias: c.qkvBias, eps: c.layerNormEps,
                             layerScale: c.layerScale, rng: &rng)
        }
        norm = LayerNorm(c.width, eps: c.layerNormEps)
        head = c.numClasses > 0 ? Linear(c.width, c.numClasses, rng: &rng) : nil
    }

    /// Loads timm weights for `config` (every mismatch reported in one error). A checkpoint trained
    /// at another image size has its position embedding resampled to this config's grid.
    public convenience init(config: ViTConfig, checkpoint: Checkpoint) throws {
        self.init(config: config)
        let loader = StateDictLoader(checkpoint)
        var values: [(Parameter, Tensor)] = []
        for (name, p) in namedParameters {
            if name == "pos_embed", let e = try? checkpoint.entry(name), e.shape != p.shape, e.shape.count == 3, e.shape[2] == p.shape[2] {
                let stored = loader.float32(name, e.shape)
                values.append((p, try resamplePositionEmbedding(stored, prefixTokens: config.noEmbedClass ? 0 : config.prefixTokens, to: config.grid)))
            } else {
                values.append((p, loader.float32(name, p.shape)))
            }
        }
        try loader.finish()
        for (p, t) in values { p.assign(t) }
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

    /// Images [N, C, S, S] (normalised) through the network, recording the graph when gradients are on.
    public func forward(_ images: Variable, keepAttention: Bool = false) -> Output {
        let c = config
        let n = images.shape[0], d = c.width, g = c.grid
        var x = patchEmbed(images).reshaped([n, d, g * g]).transposed()                  // [N, L, D]
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
}
