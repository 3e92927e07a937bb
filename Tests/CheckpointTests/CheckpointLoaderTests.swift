import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

/// The weight loaders take `.bin`/`.pt` where they take `.safetensors`: the torch fixtures hold the
/// same tensors as the safetensors fixtures (written by make_fixtures.py from them), so the models
/// loaded from either must agree exactly.
@Suite struct CheckpointLoaderTests {
    let fixtures = TestPaths.fixtures

    @Test func timmFolderWithAWrappedPrefixedBinLoadsTheSameViT() throws {
        let pt = fixtures + "/torch/vit-cam-tiny-pt", st = fixtures + "/vit-cam-tiny"
        #expect(Checkpoint.weightsFile(in: pt) == pt + "/pytorch_model.bin")
        let a = try Checkpoint(path: pt), b = try Checkpoint(path: st)
        #expect(a.names == b.names) // {"model": {"module.…"}} unwrapped to timm's names
        for name in b.names {
            let x: [Float] = try a.float32(name).scalars(), y: [Float] = try b.float32(name).scalars()
            #expect(x == y, "\(name)")
        }
        let config = try ViTConfig.timm(configPath: pt + "/config.json", checkpoint: a)
        let image = try PNG.read(path: st + "/image.png").normalizedCHW(mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        let fromPT: [Float] = try ViT(config: config, checkpoint: a).forward(image).logits.scalars()
        let fromST: [Float] = try ViT(config: config, checkpoint: b).forward(image).logits.scalars()
        #expect(fromPT == fromST)
    }

    @Test func huggingFaceDecoderFolderWithPytorchModelBin() throws {
        let bin = try DecoderLM(folder: fixtures + "/torch/llama-tiny-bin"), st = try DecoderLM(folder: fixtures + "/llama-tiny")
        let ids: [Int32] = [49, 351, 273, 333, 337]
        #expect(try bin.forward(ids, cache: bin.makeCache()) == st.forward(ids, cache: st.makeCache()))
    }

    @Test func openCLIPFoldersFindTheirPytorchBin() throws {
        let dir = TempDir("openclip")
        #expect(Checkpoint.weightsFile(in: dir.path, Checkpoint.openCLIPFiles) == nil)
        try FileManager.default.copyItem(atPath: fixtures + "/torch/wrapped.pth", toPath: dir.path + "/open_clip_pytorch_model.bin")
        let found = try #require(Checkpoint.weightsFile(in: dir.path, Checkpoint.openCLIPFiles))
        #expect(found == dir.path + "/open_clip_pytorch_model.bin")
        #expect(try Checkpoint(path: found).names == ["layer.bias", "layer.weight"])
    }

    @Test func aFolderWithoutWeightsNamesWhatItLookedFor() throws {
        let dir = TempDir("ckpt")
        #expect(throws: FormatError.self) { try Checkpoint(path: dir.path) }
        do { _ = try Checkpoint(path: dir.path) } catch { #expect("\(error)".contains("pytorch_model.bin")) }
    }
}
