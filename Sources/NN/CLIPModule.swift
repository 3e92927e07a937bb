import Foundation
import Formats
import Tensors

/// open_clip's CLIP as a differentiable module (BioCLIP 2 training, CONCORD's gradient through the
/// image encoder), with open_clip's state-dict names. Same computation as the tape-free `CLIPModel`,
/// which it matches to float precision.
public final class CLIPModule: Module {
    public let config: OpenCLIPConfig
    // Image tower.
    public let conv1: Parameter                  // [width, 3, p, p], no bias
    public let classEmbedding: Parameter         // [width]
    public let visualPositional: Parameter       // [tokens, width]
    public let lnPre: LayerNorm, lnPost: LayerNorm
    public let visualBlocks: [TransformerBlock]
    public let visualProjection: Parameter       // [width, embed]
    // Text tower.
    public let tokenEmbedding: Parameter         // [vocab, width]
    public let textPositional: Parameter         // [context, width]
    public let textBlocks: [TransformerBlock]
    public let lnFinal: LayerNorm
    public let textProjection: Parameter         // [width, embed]
    public let logitScale: Parameter             // [] (log of the temperature's inverse)
    public var isTraining = true

    public init(config c: OpenCLIPConfig, seed: UInt64 = 0) {
        var rng = SeededGenerator(seed: seed)
        config = c
        let v = c.vision, t = c.text
        let act: Activation = c.quickGELU ? .quickGELU : .gelu
        conv1 = Parameter(uniform([v.width, 3, v.patchSize, v.patchSize], bound: 1 / Float(3 * v.patchSize * v.patchSize).squareRoot(), &rng))
        classEmbedding = Parameter(uniform([v.width], bound: 0.02, &rng), decays: false)
        visualPositional = Parameter(uniform([v.tokens, v.width], bound: 0.02, &rng), decays: false)
        lnPre = LayerNorm(v.width)
        lnPost = LayerNorm(v.width)
        visualBlocks = (0..<v.layers).map { _ in
            TransformerBlock(width: v.width, heads: v.heads, hidden: v.hidden, eps: 1e-5, activation: act, naming: .openCLIP, rng: &rng)
        }
        visualProjection = Parameter(uniform([v.width, c.embedDim], bound: 1 / Float(v.width).squareRoot(), &rng))
        tokenEmbedding = Parameter(uniform([t.vocabSize, t.width], bound: 0.02, &rng))
        textPositional = Parameter(uniform([t.contextLength, t.width], bound: 0.01, &rng), decays: false)
        textBlocks = (0..<t.layers).map { _ in
            TransformerBlock(width: t.width, heads: t.heads, hidden: t.hidden, eps: 1e-5, activation: act, naming: .openCLIP, rng: &rng)
        }
        lnFinal = LayerNorm(t.width)
        textProjection = Parameter(uniform([t.width, c.embedDim], bound: 1 / Float(t.width).squareRoot(), &rng))
        logitScale = Parameter(Tensor.filled(Float(log(1 / 0.07)), shape: []), decays: false)
    }

    /// Loads `open_clip_config.json` + `open_clip_model.safetensors` (or a `.bin`/`.pt` of
    /// `Checkpoint.openCLIPFiles`) from `folder`.
    public convenience init(folder: String) throws {
        let config = try OpenCLIPConfig.load(path: folder + "/open_clip_config.json")
        self.init(config: config)
        let weights = Checkpoint.weightsFile(in: folder, Checkpoint.openCLIPFiles) ?? folder
        let checkpoint = try Checkpoint(path: weights)
        let loader = StateDictLoader(checkpoint)
        var values: [(Parameter, Tensor)] = []
        for (name, p) in namedParameters { values.append((p, loader.float32(name, p.shape))) }
        try loader.finish(allowUnused: { $0.hasPrefix("visual.continual_proj") || $0 == "attn_mask" })
        for (p, t) in values { p.assign(t) }
    }

    public var namedParameters: [(String, Parameter)] {
        var p: [(String, Parameter)] = [("visual.conv1.weight", conv1), ("visual.class_embedding", classEmbedding),
                                        ("visual.positional_embedding", visualPositional)]
        p += prefixed("visual.ln_pre.", lnPre.namedParameters)
        for (i, b) in visualBlocks.enumerated() { p += prefixed("visual.transformer.resblocks.\(i).", b.namedParameters) }
        p += prefixed("visual.ln_post.", lnPost.namedParameters) + [("visual.proj", visualProjection)]
        p += [("token_embedding.weight", tokenEmbedding), ("positional_embedding", textPositional)]
        for (i, b) in textBlocks.enumerated() { p += prefixed("transformer.resblocks.\(i).", b.namedParameters) }
        p += prefixed("ln_final.", lnFinal.namedParameters) + [("text_projection", textProjection), ("logit_scale", logitScale)]
        return p
    }

    /// Unnormalised image features [N, embed] of normalised images [N, 3, S, S].
    public func encodeImage(_ images: Variable) -> Variable {
        let v = config.vision
        let n = images.shape[0], g = v.grid
        var x = conv2d(images, weight: conv1.variable, bias: nil, stride: (v.patchSize, v.patchSize))
            .reshaped([n, v.width, g * g]).transposed()                                    // [N, L, D]
        x = concat([classEmbedding.variable.reshaped([1, 1, v.width]).broadcast(to: [n, 1, v.width]), x], axis: 1)
        x = lnPre(x + visualPositional.variable)
        for block in visualBlocks { x = block(x) }
        let pooled = lnPost(x.slice(axis: 1, 0..<1).reshaped([n, v.width]))
        return matmul(pooled, visualProjection.variable)
    }

    /// Unnormalised text features [N, embed] of token ids [N, context] (pooled at the largest id,
    /// the end-of-text token, first occurrence).
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
        var x = tokenEmbedding.variable.gatherRows(ids.flatMap { $0.prefix(used) }).reshaped([n, used, t.width])
            + textPositional.variable.slice(axis: 0, 0..<used)
        for block in textBlocks { x = block(x, causal: true) }
        x = lnFinal(x)
        let pooled = x.reshaped([n * used, t.width]).gatherRows(eot.enumerated().map { $0.offset * used + $0.element })
        return matmul(pooled, textProjection.variable)
    }

    /// exp(logit_scale) · normalize(image) · normalize(text)ᵀ.
    public func logits(image: Variable, text: Variable) -> Variable {
        func normalize(_ f: Variable) -> Variable { f / ((f * f).sum(axis: -1, keepDims: true) + 1e-12).sqrt() }
        return matmul(normalize(image), normalize(text), transposeB: true) * logitScale.variable.exp()
    }
}
