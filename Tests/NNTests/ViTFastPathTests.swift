import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

/// Parity with timm of `ViT`'s no-grad fast path: the `vit-cam-tiny` fixture (random weights, timm 1.0.31, torch 2.15 CPU).
@Suite struct ViTFastPathTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

    func expected() throws -> JSONValue {
        try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))
    }

    func input(_ config: JSONValue) throws -> Tensor {
        let mean = config["pretrained_cfg"]!["mean"]!.arrayValue!.map { Float($0.doubleValue!) }
        let std = config["pretrained_cfg"]!["std"]!.arrayValue!.map { Float($0.doubleValue!) }
        return try PNG.read(path: folder + "/image.png").normalizedCHW(mean: mean, std: std)
    }

    @Test func logitsMatchTimmWithin1e4() throws {
        let config = try ViTConfig.timm(configPath: folder + "/config.json")
        #expect(config.globalPool == "avg" && !config.fcNorm && config.classToken && config.numClasses == 6)
        let model = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
        let raw = try JSONValue.parse(String(contentsOfFile: folder + "/config.json", encoding: .utf8))
        let out = try model.forward(try input(raw))
        let logits: [Float] = try out.logits.scalars()
        let reference = try expected()["logits"]!.arrayValue!.map { Float($0.doubleValue!) }
        #expect(logits.count == reference.count)
        let worst = zip(logits, reference).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-4, "max |Δ| = \(worst)")
    }

    @Test func aBatchGivesEachImageItsOwnLogits() throws {
        let config = try ViTConfig.timm(configPath: folder + "/config.json")
        let model = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
        let raw = try JSONValue.parse(String(contentsOfFile: folder + "/config.json", encoding: .utf8))
        let one: [Float] = try input(raw).scalars()
        let flipped = Array(one.reversed())
        let batch = try Tensor(one + flipped, shape: [2, 3, 32, 32])
        let both: [Float] = try model.forward(batch).logits.scalars()
        let single: [Float] = try model.forward(try Tensor(flipped, shape: [1, 3, 32, 32])).logits.scalars()
        let first: [Float] = try model.forward(try Tensor(one, shape: [1, 3, 32, 32])).logits.scalars()
        #expect(zip(both[0..<6], first).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(zip(both[6..<12], single).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func aMismatchedCheckpointIsReportedWholeInOneError() throws {
        var config = try ViTConfig.timm(configPath: folder + "/config.json")
        config.depth = 3
        config.numClasses = 7
        do {
            _ = try ViT(config: config, checkpoint: SafeTensorsCheckpoint(path: folder))
            Issue.record("a wrong config was accepted")
        } catch {
            let message = "\(error)"
            #expect(message.contains("blocks.2.norm1.weight: missing"))
            #expect(message.contains("head.weight: shape [6, 48] in the checkpoint, [7, 48] expected by the config"))
            #expect(message.contains("problems"))
        }
    }
}
