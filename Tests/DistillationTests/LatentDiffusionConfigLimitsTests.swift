import Concord
import D3HR
import DatasetDistillation
import DistillationKit
import Formats
import Foundation
import LatentDiffusion
import Tensors
import TestSupport
import Testing

/// Issue 19: a latent diffusion config.json (or the training options that fill one) is validated
/// before `imageSize % downsampling`, `ditWidth % ditHeads` or any allocation: each case trapped.
@Suite struct LatentDiffusionConfigLimitsTests {
    func message(_ change: (inout LatentDiffusionConfig) -> Void) -> String {
        var c = LatentDiffusionConfig()
        c.classes = 4
        change(&c)
        do {
            try c.validate()
            return ""
        } catch { return String(describing: error) }
    }

    @Test func theDefaultConfigIsValid() {
        #expect(message { _ in } == "")
    }

    @Test func everyBadSizeNamesItsKeyAndValue() {
        #expect(message { $0.ditHeads = 0 }.contains("'ditHeads' = 0 is out of range"))
        #expect(message { $0.patch = 0 }.contains("'patch' = 0 is out of range"))
        #expect(message { $0.patch = -8 }.contains("'patch' = -8 is out of range"))
        #expect(message { $0.imageSize = 0 }.contains("'imageSize' = 0 is out of range"))
        #expect(message { $0.ditDepth = -1 }.contains("'ditDepth' = -1 is out of range"))
        #expect(message { $0.autoencoderWidths = [32, 0] }.contains("'autoencoderWidths[1]' = 0 is out of range"))
        // 100 widths made `1 << 99` = 0 and then `imageSize % 0`.
        #expect(message { $0.autoencoderWidths = Array(repeating: 8, count: 100) }.contains("'autoencoderWidths' has 100 entries"))
        #expect(
            message {
                $0.ditWidth = 100
                $0.ditHeads = 3
            }.contains("'ditWidth' = 100 is not divisible by 'ditHeads' = 3"))
        #expect(message { $0.scaleFactor = .nan }.contains("'scaleFactor' = nan"))
        #expect(
            message {
                $0.ditWidth = 65536
                $0.ditHeads = 1
                $0.ditDepth = 1024
            }.contains("parameters"))
    }

    /// A model folder whose config.json is corrupt: the CLI names the file and the key.
    @Test func corruptModelFolderThroughTheCLI() throws {
        let dir = TempDir("ldm-limits")
        let folder = dir.sub("model")
        let shipped = TestPaths.sourceRoot + "/Plugins/LatentDiffusion/Resources/ldm-tol"
        try FileManager.default.copyItem(atPath: shipped + "/model.safetensors", toPath: folder + "/model.safetensors")
        let config = try String(contentsOfFile: shipped + "/config.json", encoding: .utf8)
            .replacingOccurrences(of: #""ditHeads" : 4"#, with: #""ditHeads" : 0"#)
        try #require(config.contains(#""ditHeads" : 0"#))
        try config.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
        let r = try CLI().run("run", "latent-diffusion", "sample", "--set", "model=\(folder)", "--set", "per_class=1", "--out", dir.path + "/out")
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(folder + "/config.json") && r.stderr.contains("'ditHeads' = 0 is out of range"), "\(r.stderr)")
    }
}

/// Issue 19: a distilled.safetensors is a file from outside: a negative label made `0...max` a
/// reversed range (trap), a NaN pixel trapped in the grid's UInt8 conversion.
@Suite struct DistilledSetLimitsTests {
    let dir = TempDir("distilled-limits")

    func message(images: [Float], labels: [Int64]) throws -> String {
        let path = dir.path + "/set-\(UUID().uuidString).safetensors"
        try SafeTensors.write(
            [("images", try Tensor(images, shape: [labels.count, 1, 1, 1])), ("labels", try Tensor(labels, shape: [labels.count]))],
            to: path)
        do {
            _ = try DistilledSet.read(path)
            return ""
        } catch { return String(describing: error) }
    }

    @Test func negativeLabelIsRefused() throws {
        let m = try message(images: [0.5, 0.5], labels: [0, -5])
        #expect(m.contains("label -5 at index 1 is not a class index"), "\(m)")
    }

    @Test func nonFinitePixelIsRefused() throws {
        let m = try message(images: [0.5, .nan], labels: [0, 1])
        #expect(m.contains("tensor 'images' holds a non-finite value at flat index 1"), "\(m)")
    }

    @Test func aValidSetStillReads() throws {
        #expect(try message(images: [0.5, 0.25], labels: [0, 1]) == "")
    }
}
