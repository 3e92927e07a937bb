import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

@Suite struct ViTDifferentiableTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

    func input() throws -> Tensor {
        let raw = try JSONValue.parse(String(contentsOfFile: folder + "/config.json", encoding: .utf8))
        let mean = raw["pretrained_cfg"]!["mean"]!.arrayValue!.map { Float($0.doubleValue!) }
        let std = raw["pretrained_cfg"]!["std"]!.arrayValue!.map { Float($0.doubleValue!) }
        return try PNG.read(path: folder + "/image.png").normalizedCHW(mean: mean, std: std)
    }

    @Test func differentiableViTMatchesTimmAndTheInferencePath() throws {
        let config = try ViTConfig.timm(configPath: folder + "/config.json")
        let model = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
        let x = try input()
        let out = GradMode.disabled { model.forward(Variable(x)) }
        let reference = try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))["logits"]!
            .arrayValue!.map { Float($0.doubleValue!) }
        #expect(zip(out.logits.scalars, reference).map { abs($0 - $1) }.max()! < 1e-4)
        let fast = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder)).forward(x)
        #expect(zip(out.logits.scalars, try fast.logits.scalars(as: Float.self)).map { abs($0 - $1) }.max()! < 1e-5)
    }

    /// The gradient of the top logit with respect to the last block's norm1 output (Grad-CAM's
    /// input) and with respect to the image, the latter checked against finite differences.
    @Test func gradientsReachTheTargetLayerAndTheImage() throws {
        let config = try ViTConfig.timm(configPath: folder + "/config.json")
        let model = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
        let x = try input()
        let image = Variable(x, requiresGrad: true)
        let out = model.forward(image, keepAttention: true)
        let top = out.logits.scalars.indices.max { out.logits.scalars[$0] < out.logits.scalars[$1] }!
        let score = out.logits.slice(axis: 1, top..<(top + 1)).sum()
        let grads = Autograd.gradients(of: score, wrt: [out.norm1Outputs.last!, image])
        #expect(grads[0]?.shape == [1, 17, 48])
        #expect(out.attentions.count == 2 && out.attentions[1].shape == [1, 3, 17, 17])
        let rowSums = out.attentions[1].sum(axis: -1).scalars
        #expect(rowSums.allSatisfy { abs($0 - 1) < 1e-5 })
        let analytic = grads[1]!.scalars
        var pixels: [Float] = try x.scalars()
        var worst: Float = 0
        for i in stride(from: 5, to: pixels.count, by: 401) {
            let saved = pixels[i]
            func f(_ d: Float) -> Float {
                pixels[i] = saved + d
                defer { pixels[i] = saved }
                return GradMode.disabled { model.forward(Variable(try! Tensor(pixels, shape: x.shape))).logits.scalars[top] }
            }
            let numeric = (f(1e-2) - f(-1e-2)) / 2e-2
            worst = max(worst, abs(numeric - analytic[i]) / max(1e-2, abs(numeric)))
        }
        #expect(worst < 5e-2, "image gradient worst relative error \(worst)")
    }

    @Test func causalAttentionIgnoresTheFutureAndTheCacheMatchesAFullPass() throws {
        var rng = SeededGenerator(seed: 2)
        let attention = MultiheadAttention(width: 8, heads: 2, packed: false, rng: &rng)
        let x = try Variable((0..<(1 * 5 * 8)).map { _ in Float(rng.nextNormal()) }, shape: [1, 5, 8])
        let full = GradMode.disabled { attention(x, causal: true) }.scalars
        var changed = x.scalars
        for j in 32..<40 { changed[j] += 1 } // the last token only
        let other = GradMode.disabled { attention(try! Variable(changed, shape: [1, 5, 8]), causal: true) }.scalars
        #expect(Array(full[0..<32]) == Array(other[0..<32]))
        // Feeding the tokens one by one through a cache gives the same outputs.
        let cache = KVCache()
        var incremental: [Float] = []
        for t in 0..<5 {
            incremental += GradMode.disabled { attention(x.slice(axis: 1, t..<(t + 1)), causal: true, cache: cache) }.scalars
        }
        #expect(cache.length == 5)
        #expect(zip(incremental, full).map { abs($0 - $1) }.max()! < 1e-5)
    }
}

@Suite struct PositionEmbeddingTests {
    @Test func resamplingKeepsConstantsRampsAndTheClassToken() throws {
        // A 4×4 grid of (constant 3, ramp in x) in 2 channels, plus one class-token row.
        var values: [Float] = [7, -7]
        for y in 0..<4 {
            for x in 0..<4 {
                values += [3, Float(x)]
                _ = y
            }
        }
        let pos = try Tensor(values, shape: [1, 17, 2])
        #expect(try resamplePositionEmbedding(pos, prefixTokens: 1, to: 4).scalars(as: Float.self) == values)
        let up = try resamplePositionEmbedding(pos, prefixTokens: 1, to: 8).scalars(as: Float.self)
        #expect(up[0] == 7 && up[1] == -7)
        for k in 0..<64 { #expect(abs(up[2 + 2 * k] - 3) < 1e-5) }
        // Output x = 3 samples the ramp 0,1,2,3 at 1.25 with PyTorch's weights (A = −0.75, t = 0.25):
        // [−0.10547, 0.87891, 0.26172, −0.03516] → 1.296875 (by hand); x = 4 is its mirror, 1.703125.
        #expect(abs(up[2 + 2 * (3 * 8 + 3) + 1] - 1.296875) < 1e-5)
        #expect(abs(up[2 + 2 * (3 * 8 + 4) + 1] - 1.703125) < 1e-5)
        #expect(throws: TensorError.self) {
            try resamplePositionEmbedding(try Tensor([Float](repeating: 0, count: 2 * 6), shape: [1, 6, 2]), prefixTokens: 1, to: 3)
        }
    }

    @Test func aCheckpointLoadsAtAnotherImageSize() throws {
        let folder = TestPaths.fixtures + "/vit-cam-tiny"
        var config = try ViTConfig.timm(configPath: folder + "/config.json")
        config.imageSize = 48 // grid 6 instead of 4
        let model = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
        #expect(model.posEmbed.shape == [1, 37, 48])
        let out = GradMode.disabled { model.forward(Variable(Tensor.filled(0.1, shape: [1, 3, 48, 48]))) }
        #expect(out.logits.shape == [1, 6] && out.logits.scalars.allSatisfy(\.isFinite))
        let fast = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
            .forward(Tensor.filled(0.1, shape: [1, 3, 48, 48]))
        #expect(zip(out.logits.scalars, try fast.logits.scalars(as: Float.self)).map { abs($0 - $1) }.max()! < 1e-5)
    }
}
