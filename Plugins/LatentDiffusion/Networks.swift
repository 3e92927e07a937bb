import Formats
import Foundation
import NN
import Tensors

/// The shape of a latent diffusion model, saved as its folder's `config.json`.
public struct LatentDiffusionConfig: Codable, Sendable, Equatable {
    public var imageSize = 32
    public var channels = 3
    /// Latent channels (4, as Stable Diffusion's VAE).
    public var latentChannels = 4
    /// Autoencoder widths: the first at full resolution, then one per halving (32 px → 8 with three).
    public var autoencoderWidths = [32, 64, 64]
    public var ditWidth = 128
    public var ditDepth = 4
    public var ditHeads = 4
    public var patch = 2
    public var classes = 0
    public var classNames: [String] = []
    public var schedule = "linear"
    public var trainSteps = 1000
    /// Latents are multiplied by this after encoding (and divided before decoding): 1 / their std on
    /// the training set, LDM's `scale_factor`, so the diffusion sees unit-variance latents.
    public var scaleFactor: Float = 1
    public var dataset = ""

    public init() {}

    public var downsampling: Int { 1 << (autoencoderWidths.count - 1) }
    public var latentSize: Int { imageSize / downsampling }
    public var latentDimension: Int { latentChannels * latentSize * latentSize }
    /// The null class of classifier-free guidance.
    public var nullClass: Int { classes }

    /// The denoiser as NN's `DiTTransformer2DModel` (facebookresearch/DiT's layout: one shared
    /// timestep + class embedding, fused q/k/v): ε only (out = latent channels, no learned σ),
    /// DiT's own numerics (timestep frequencies over 128, the MLP's LayerNorm eps 1e-6).
    public var ditConfig: DiTConfig {
        DiTConfig(
            heads: ditHeads, headDim: ditWidth / max(ditHeads, 1), inChannels: latentChannels, outChannels: latentChannels, layers: ditDepth,
            sampleSize: latentSize, patch: patch, classes: classes, attentionBias: true, mlpNormEps: 1e-6, frequencyShift: 0)
    }

    /// Checks every size before a model is built from this config (a folder's `config.json` or the
    /// training options): each positive and in range before any division, the image divisible by the
    /// autoencoder's downsampling and the latent side by the patch, heads dividing the width, a
    /// finite positive scale factor, and the parameter memory within `Limits.allocation`. Errors name
    /// the key and the value.
    public func validate() throws {
        func check(_ key: String, _ v: Int, _ range: ClosedRange<Int>) throws {
            guard range.contains(v) else { throw DiffusionError("'\(key)' = \(v) is out of range: it must lie in \(range.lowerBound)…\(range.upperBound)") }
        }
        try check("imageSize", imageSize, 1...65536)
        try check("channels", channels, 1...64)
        try check("latentChannels", latentChannels, 1...4096)
        guard (1...8).contains(autoencoderWidths.count) else {
            throw DiffusionError("'autoencoderWidths' has \(autoencoderWidths.count) entries: 1…8 are allowed (one per halving, plus the first)")
        }
        for (i, w) in autoencoderWidths.enumerated() { try check("autoencoderWidths[\(i)]", w, 1...65536) }
        try check("ditWidth", ditWidth, 1...65536)
        try check("ditDepth", ditDepth, 1...1024)
        try check("ditHeads", ditHeads, 1...65536)
        try check("patch", patch, 1...65536)
        try check("classes", classes, 1...Limits.vocabulary.upperBound)
        try check("trainSteps", trainSteps, 1...1_000_000)
        guard scaleFactor.isFinite, scaleFactor > 0 else { throw DiffusionError("'scaleFactor' = \(scaleFactor) must be a finite positive number") }
        guard imageSize % downsampling == 0, latentSize % patch == 0, latentSize > 0 else {
            throw DiffusionError(
                "'imageSize' = \(imageSize) must be a multiple of \(downsampling) (the autoencoder's downsampling) and the latent side \(latentSize) of 'patch' = \(patch)"
            )
        }
        guard ditWidth % ditHeads == 0 else { throw DiffusionError("'ditWidth' = \(ditWidth) is not divisible by 'ditHeads' = \(ditHeads)") }
        guard NoiseSchedule.Kind(rawValue: schedule) != nil else { throw DiffusionError("schedule '\(schedule)' is not linear or cosine") }
        do {
            let tokens = (latentSize / patch) * (latentSize / patch)
            let w = autoencoderWidths
            try Limits.parameters(
                [
                    [w.count * 4, w.max()!, w.max()!, 9], [channels + latentChannels, w.max()!, 18],
                    [ditDepth, 12, ditWidth, ditWidth], [tokens, ditWidth], [classes + 1, ditWidth],
                    [latentChannels, patch, patch, ditWidth, 2],
                ], what: "the latent diffusion model's parameters", source: "config")
            try Limits.allocation(shape: [w.max()!, imageSize, imageSize], elementSize: 4, what: "one image's autoencoder activation", source: "config")
            try Limits.allocation(shape: [ditHeads, tokens, tokens], elementSize: 4, what: "one image's attention scores", source: "config")
        } catch let e as FormatError { throw DiffusionError(e.problem) }
    }
}

/// A convolutional autoencoder to a `latentChannels`-channel latent: 3×3 convolutions with SiLU,
/// stride-2 convolutions down, bilinear ×2 + convolution up, sigmoid output in [0, 1].
public final class LatentAutoencoder: Module {
    public let config: LatentDiffusionConfig
    let encoderLayers: [Conv2d]
    let decoderLayers: [Conv2d]
    public var isTraining = true

    public init(config c: LatentDiffusionConfig, rng: inout SeededGenerator) {
        config = c
        let w = c.autoencoderWidths
        var enc = [Conv2d(c.channels, w[0], kernel: 3, padding: 1, rng: &rng)]
        for k in 1..<max(w.count, 1) {
            enc.append(Conv2d(w[k - 1], w[k], kernel: 3, stride: 2, padding: 1, rng: &rng))
            enc.append(Conv2d(w[k], w[k], kernel: 3, padding: 1, rng: &rng))
        }
        enc.append(Conv2d(w.last!, c.latentChannels, kernel: 3, padding: 1, rng: &rng))
        encoderLayers = enc
        var dec = [Conv2d(c.latentChannels, w.last!, kernel: 3, padding: 1, rng: &rng)]
        for k in stride(from: w.count - 1, to: 0, by: -1) {
            dec.append(Conv2d(w[k], w[k - 1], kernel: 3, padding: 1, rng: &rng))
            dec.append(Conv2d(w[k - 1], w[k - 1], kernel: 3, padding: 1, rng: &rng))
        }
        dec.append(Conv2d(w[0], c.channels, kernel: 3, padding: 1, rng: &rng))
        decoderLayers = dec
    }

    public var namedParameters: [(String, Parameter)] {
        encoderLayers.enumerated().flatMap { prefixed("encoder.\($0.offset).", $0.element.namedParameters) }
            + decoderLayers.enumerated().flatMap { prefixed("decoder.\($0.offset).", $0.element.namedParameters) }
    }

    /// Images [N, C, S, S] in [0, 1] → unscaled latents [N, latentChannels, S/d, S/d].
    public func encode(_ x: Variable) -> Variable {
        var h = x * 2 - 1
        for (i, layer) in encoderLayers.enumerated() {
            h = layer(h)
            if i < encoderLayers.count - 1 { h = h.silu() }
        }
        return h
    }

    /// Unscaled latents → images in [0, 1].
    public func decode(_ z: Variable) -> Variable { decodeLogits(z).sigmoid() }

    /// Unscaled latents → the output's logits (before the sigmoid), for a loss in logit space.
    public func decodeLogits(_ z: Variable) -> Variable {
        var h = decoderLayers[0](z).silu()
        var k = 1
        while k + 1 < decoderLayers.count {
            let s = h.shape[2] * 2
            h = h.upsampleBilinear(height: s, width: s)
            h = decoderLayers[k](h).silu()
            h = decoderLayers[k + 1](h).silu()
            k += 2
        }
        return decoderLayers[k](h)
    }
}
