import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

/// Parity with open_clip 3.3.0 on the `openclip-tiny` fixture (BioCLIP 2's architecture, scaled down).
@Suite struct CLIPTests {
    let folder = TestPaths.fixtures + "/openclip-tiny"

    func expected() throws -> JSONValue {
        try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))
    }

    func matrix(_ v: JSONValue?) -> [[Float]] { v!.arrayValue!.map { $0.arrayValue!.map { Float($0.doubleValue!) } } }

    /// max |a − b| / max |b|, row by row.
    func relativeError(_ ours: [Float], _ reference: [[Float]]) -> Float {
        let flat = reference.flatMap { $0 }
        let scale = flat.map(abs).max()!
        return zip(ours, flat).map { abs($0 - $1) }.max()! / scale
    }

    @Test func configIsReadFromTheFile() throws {
        let c = try OpenCLIPConfig.load(path: folder + "/open_clip_config.json")
        #expect(c.vision.heads == 2 && c.vision.tokens == 17 && c.text.heads == 2 && c.embedDim == 32 && !c.quickGELU)
    }

    @Test func imageFeaturesMatchOpenCLIP() throws {
        let model = try CLIP(folder: folder)
        let e = try expected()
        let names = e["images"]!.arrayValue!.map { $0.stringValue! }
        var pixels: [Float] = []
        for name in names {
            pixels += try PNG.read(path: folder + "/" + name).normalizedCHW(mean: model.config.mean, std: model.config.std).scalars()
        }
        let features: [Float] = try model.encodeImage(try Tensor(pixels, shape: [names.count, 3, 32, 32])).scalars()
        let err = relativeError(features, matrix(e["image_features"]))
        #expect(err < 1e-4, "relative error \(err)")
    }

    @Test func textFeaturesLogitsAndProbabilitiesMatchOpenCLIP() throws {
        let model = try CLIP(folder: folder)
        let e = try expected()
        let ids = e["token_ids"]!.arrayValue!.map { $0.arrayValue!.map { Int64($0.intValue!) } }
        let padded = ids.flatMap { $0 + [Int64](repeating: 0, count: 77 - $0.count) }
        let text = try model.encodeText(try Tensor(padded, shape: [ids.count, 77]))
        let textErr = relativeError(try text.scalars(), matrix(e["text_features"]))
        #expect(textErr < 1e-4, "relative error \(textErr)")
        #expect(abs(expf(model.logitScaleValue) - Float(e["logit_scale"]!.doubleValue!)) < 1e-4)

        let imageFeatures = try Tensor(matrix(e["image_features"]).flatMap { $0 }, shape: [3, 32])
        let logits: [Float] = try model.logits(imageFeatures: imageFeatures, textFeatures: text).scalars()
        let refLogits = matrix(e["logits"]).flatMap { $0 }
        #expect(zip(logits, refLogits).map { abs($0 - $1) }.max()! < 1e-4)
        // Softmax over the labels of each image.
        var probs: [Float] = []
        for r in 0..<3 {
            let row = logits[(r * 5)..<(r * 5 + 5)]
            let m = row.max()!
            let exps = row.map { expf($0 - m) }
            probs += exps.map { $0 / exps.reduce(0, +) }
        }
        #expect(zip(probs, matrix(e["probs"]).flatMap { $0 }).map { abs($0 - $1) }.max()! < 1e-4)
    }

    @Test func badTokenIdsAreRefused() throws {
        let model = try CLIP(folder: folder)
        #expect(throws: TensorError.self) { try model.encodeText(try Tensor([Int64](repeating: 0, count: 76), shape: [1, 76])) }
        #expect(throws: TensorError.self) { try model.encodeText(try Tensor([Int64(49408)] + [Int64](repeating: 0, count: 76), shape: [1, 77])) }
    }
}

@Suite struct CLIPDifferentiableTests {
    let folder = TestPaths.fixtures + "/openclip-tiny"

    @Test func differentiableCLIPMatchesOpenCLIPAndCarriesGradients() throws {
        let module = try CLIP(folder: folder)
        let e = try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))
        var pixels: [Float] = []
        for name in e["images"]!.arrayValue!.map({ $0.stringValue! }) {
            pixels += try PNG.read(path: folder + "/" + name).normalizedCHW(mean: module.config.mean, std: module.config.std).scalars()
        }
        let images = Variable(try Tensor(pixels, shape: [3, 3, 32, 32]), requiresGrad: true)
        let ids = e["token_ids"]!.arrayValue!.map { row in row.arrayValue!.map { $0.intValue! } + [Int](repeating: 0, count: 77 - row.arrayValue!.count) }
        let image = module.encodeImage(images), text = try module.encodeText(ids)
        let refImage = e["image_features"]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
        let refText = e["text_features"]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
        let scale = refImage.map(abs).max()!, tscale = refText.map(abs).max()!
        #expect(zip(image.scalars, refImage).map { abs($0 - $1) }.max()! / scale < 1e-4)
        #expect(zip(text.scalars, refText).map { abs($0 - $1) }.max()! / tscale < 1e-4)
        let logits = module.logits(image: image, text: text)
        let refLogits = e["logits"]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
        #expect(zip(logits.scalars, refLogits).map { abs($0 - $1) }.max()! < 1e-4)
        // A contrastive-style loss reaches the pixels, the towers' weights and the temperature.
        let loss = crossEntropy(logits.slice(axis: 1, 0..<3), labels: [0, 1, 2])
        let grads = Autograd.gradients(of: loss, wrt: [images, module.conv1.variable, module.tokenEmbedding.variable, module.logitScale.variable])
        #expect(grads.allSatisfy { $0 != nil })
        #expect(grads[0]!.shape == [3, 3, 32, 32] && grads[0]!.scalars.contains { $0 != 0 })
    }
}
