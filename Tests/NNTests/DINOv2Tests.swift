import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// Parity with timm on a DINOv2-shaped ViT (`dinov2-tiny`: 4 register tokens, layer scale,
/// no_embed_class, patch 14; random weights, timm 1.0.31) whose config.json, like the configs timm
/// publishes for pretrained models, has no `model_args`: every size comes from the tensors.
@Suite struct DINOv2Tests {
    let folder = TestPaths.fixtures + "/dinov2-tiny"

    func load(imageSize: Int = 0) throws -> (ViTConfig, ViT) {
        let checkpoint = try SafeTensorsCheckpoint(path: folder + "/model.safetensors")
        var config = try ViTConfig.timm(configPath: folder + "/config.json", checkpoint: checkpoint)
        if imageSize > 0 { config.imageSize = imageSize }
        let model = try ViT(config: config, checkpoint: checkpoint)
        model.isTraining = false
        return (config, model)
    }

    @Test func theConfigIsReadFromTheTensorsAndTheArchitectureName() throws {
        let (c, _) = try load()
        #expect(c.width == 192 && c.depth == 2 && c.heads == 3 && c.patchSize == 14 && c.imageSize == 56)
        #expect(c.registerTokens == 4 && c.noEmbedClass && c.layerScale && c.classToken && c.mlpRatio == 1 && c.numClasses == 0)
        #expect(c.prefixTokens == 5 && c.tokens == 21 && c.positionTokens == 16)
    }

    @Test func patchTokensAndClassTokenMatchTimmWithin1e4() throws {
        let (c, model) = try load()
        let input = try NPY.read(path: folder + "/input.npy")
        let out = GradMode.disabled { model.forward(Variable(input)) }
        #expect(out.patchTokens.shape == [1, c.grid * c.grid, c.width])
        let tokens: [Float] = try out.patchTokens.value.scalars()
        let expected: [Float] = try NPY.read(path: folder + "/tokens.npy").scalars()
        let worst = zip(tokens, expected).map { abs($0 - $1) }.max()!
        #expect(tokens.count == expected.count && worst < 1e-4, "max |Δ| = \(worst)")
        let cls: [Float] = try out.pooled.value.scalars()
        let expectedCLS: [Float] = try NPY.read(path: folder + "/cls.npy").scalars()
        #expect(zip(cls, expectedCLS).map { abs($0 - $1) }.max()! < 1e-4)
    }

    @Test func anotherInputSizeResamplesThePatchPositionsOnly() throws {
        // 84 px: a 6 × 6 grid; the position embedding (patch rows only) is resampled, the register
        // and class tokens carry no position.
        let (c, model) = try load(imageSize: 84)
        #expect(c.grid == 6 && model.posEmbed.shape == [1, 36, 192] && model.regToken?.shape == [1, 4, 192])
        let out = GradMode.disabled { model.forward(Variable(Tensor.filled(0.1, shape: [2, 3, 84, 84]))) }
        #expect(out.patchTokens.shape == [2, 36, 192])
        #expect(try out.patchTokens.value.scalars(as: Float.self).allSatisfy { $0.isFinite })
    }

    /// The no-grad fast path runs register tokens, layer scale and no_embed_class too: timm's class
    /// token within 1e-4, and the differentiable path of the same instance to float precision.
    @Test func theFastPathRunsDINOv2() throws {
        let (_, model) = try load()
        let input = try NPY.read(path: folder + "/input.npy")
        let fast = try model.forward(input)
        let cls: [Float] = try fast.pooled.scalars()
        let expectedCLS: [Float] = try NPY.read(path: folder + "/cls.npy").scalars()
        #expect(zip(cls, expectedCLS).map { abs($0 - $1) }.max()! < 1e-4)
        let slow = GradMode.disabled { model.forward(Variable(input)) }
        #expect(zip(cls, slow.pooled.scalars).map { abs($0 - $1) }.max()! < 1e-5)
    }
}
