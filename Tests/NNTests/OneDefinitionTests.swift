import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

/// One definition per model family: the no-grad fast path and the differentiable path of the SAME
/// instance agree, and after an optimizer step the fast path computes with the updated weights.
@Suite struct OneDefinitionTests {
    func maxDiff(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    func noise(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return Tensor.make(shape) { p in for i in 0..<shape.reduce(1, *) { p[i] = Float(rng.nextNormal()) } }
    }

    @Test func vitPathsAgreeBeforeAndAfterAStep() throws {
        let folder = TestPaths.fixtures + "/vit-cam-tiny"
        let config = try ViTConfig.timm(configPath: folder + "/config.json")
        let model = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
        model.isTraining = false
        let x = noise([2, 3, 32, 32], seed: 1)
        let before: [Float] = try model.forward(x).logits.scalars()
        #expect(maxDiff(before, GradMode.disabled { model.forward(Variable(x)) }.logits.scalars) < 1e-5)
        let optimizer = SGD(model.parameters, learningRate: 0.5)
        optimizer.minimize(crossEntropy(model.forward(Variable(x)).logits, labels: [0, 1]))
        let after: [Float] = try model.forward(x).logits.scalars()
        #expect(maxDiff(after, before) > 1e-3, "the fast path did not see the step")
        #expect(maxDiff(after, GradMode.disabled { model.forward(Variable(x)) }.logits.scalars) < 1e-5)
    }

    /// A DINOv2-style config (register tokens, layer scale, no_embed_class) with fc_norm and mean
    /// pooling: everything the differentiable path supports, run by the fast path.
    @Test func vitFastPathCoversRegistersLayerScaleAndFcNorm() throws {
        for pool in ["avg", "token"] {
            var c = ViTConfig(imageSize: 28, patchSize: 14, width: 32, depth: 2, heads: 2)
            c.registerTokens = 4
            c.noEmbedClass = true
            c.layerScale = true
            c.globalPool = pool
            c.fcNorm = pool == "avg"
            c.numClasses = 5
            let model = ViT(config: c, seed: 3)
            model.isTraining = false
            // Gains of 0.5 instead of 1e-5, so that the blocks weigh in the comparison.
            for b in model.blocks { for g in [b.layerScale1, b.layerScale2] { g?.assign(Tensor.filled(0.5, shape: [32])) } }
            let x = noise([2, 3, 28, 28], seed: 2)
            let fast = try model.forward(x, keepBlockInputs: true)
            let slow = GradMode.disabled { model.forward(Variable(x)) }
            #expect(fast.blockInputs.count == 2 && fast.blockInputs[0].shape == [2, 9, 32])
            #expect(maxDiff(try fast.logits.scalars(), slow.logits.scalars) < 1e-5, "pool \(pool)")
            #expect(maxDiff(try fast.pooled.scalars(), slow.pooled.scalars) < 1e-5, "pool \(pool)")
        }
    }

    @Test func clipPathsAgreeBeforeAndAfterAStep() throws {
        let folder = TestPaths.fixtures + "/openclip-tiny"
        let model = try CLIP(folder: folder)
        model.isTraining = false
        let e = try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))
        let ids = e["token_ids"]!.arrayValue!.map { row in row.arrayValue!.map { $0.intValue! } + [Int](repeating: 0, count: 77 - row.arrayValue!.count) }
        let idTensor = try Tensor(ids.flatMap { $0.map(Int64.init) }, shape: [ids.count, 77])
        let images = noise([ids.count, 3, 32, 32], seed: 4)
        func check() throws -> [Float] {
            let image: [Float] = try model.encodeImage(images).scalars(), text: [Float] = try model.encodeText(idTensor).scalars()
            let (slowImage, slowText) = try GradMode.disabled { (model.encodeImage(Variable(images)), try model.encodeText(ids)) }
            #expect(maxDiff(image, slowImage.scalars) < 1e-5)
            #expect(maxDiff(text, slowText.scalars) < 1e-5)
            let fastLogits: [Float] = try model.logits(imageFeatures: model.encodeImage(images), textFeatures: model.encodeText(idTensor)).scalars()
            #expect(maxDiff(fastLogits, GradMode.disabled { model.logits(image: slowImage, text: slowText) }.scalars) < 1e-4)
            return image + text
        }
        let before = try check()
        let optimizer = AdamW(model.parameters, learningRate: 1e-2)
        let logits = model.logits(image: model.encodeImage(Variable(images)), text: try model.encodeText(ids))
        optimizer.minimize(crossEntropy(logits, labels: Array(0..<ids.count)))
        let after = try check()
        #expect(maxDiff(after, before) > 1e-3, "the fast path did not see the step")
    }

    @Test func decoderPathsAgreeBeforeAndAfterAStep() throws {
        for name in ["llama-tiny", "opt-tiny"] {
            let model = try DecoderLM(folder: TestPaths.fixtures + "/" + name)
            let ids = [3, 17, 5, 42, 8, 11]
            func fast() throws -> [Float] { try model.forward(ids.map(Int32.init), cache: model.makeCache(), allLogits: true) }
            let before = try fast()
            #expect(maxDiff(before, try GradMode.disabled { try model([ids]) }.scalars) < 1e-4, "\(name)")
            let optimizer = SGD(model.parameters, learningRate: 0.5)
            optimizer.minimize(crossEntropy(try model([ids]).reshaped([ids.count, model.config.vocabSize]), labels: Array(ids.dropFirst()) + [0]))
            let after = try fast()
            #expect(maxDiff(after, before) > 1e-3, "\(name): the fast path did not see the step")
            #expect(maxDiff(after, try GradMode.disabled { try model([ids]) }.scalars) < 1e-4, "\(name)")
        }
    }
}
