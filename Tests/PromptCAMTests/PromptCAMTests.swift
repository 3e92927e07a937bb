import Formats
import Foundation
import Imaging
import NN
import PromptCAM
import Tensors
import TestSupport
import Testing
import Vision

/// Prompt-CAM (the prompt-cam plugin): training moves only the prompts and head, trait maps,
/// blurring and head ranking, and the CLI (its default backbone comes from the classifiers plugin
/// through the host).
@Suite struct PromptCAMTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

    func promptModel(classes: Int = 5) throws -> (PromptCAMModel, Tensor) {
        let vit = try ViTClassifier(folder: folder)
        let image = try vit.normalized([PNG.read(path: folder + "/image.png")])
        let flipped = try vit.normalized([PNG.read(path: folder + "/image.png").resized(width: 32, height: 32)])
        let pair = try Tensor(try image.scalars(as: Float.self) + flipped.scalars(as: Float.self).reversed(), shape: [2, 3, 32, 32])
        return (PromptCAMModel(backbone: vit.model, classes: classes, seed: 1), pair)
    }

    @Test func promptCAMTrainsOnlyPromptsAndHead() throws {
        let (model, images) = try promptModel()
        let frozen = try model.backbone.blocks[0].attention.qkv!.weight.value.scalars(as: Float.self)
        let before = try model.prompts.value.scalars(as: Float.self)
        let optimizer = SGD(model.trainable, learningRate: 0.05, momentum: 0.9)
        let labels = [1, 3]
        var losses: [Float] = []
        for _ in 0..<15 {
            let loss = crossEntropy(model.forward(Variable(images)).logits, labels: labels)
            losses.append(loss.scalars[0])
            optimizer.minimize(loss)
        }
        #expect(losses.last! < losses.first! * 0.7, "loss \(losses.first!) → \(losses.last!)")
        #expect(try model.backbone.blocks[0].attention.qkv!.weight.value.scalars(as: Float.self) == frozen)
        #expect(try model.prompts.value.scalars(as: Float.self) != before)
    }

    @Test func promptCAMTraitMapsBlurringAndRanking() throws {
        let (model, images) = try promptModel()
        let (maps, _) = model.traitMaps(images, query: [2, 4])
        let c = model.backbone.config
        #expect(maps.shape == [2, c.heads, c.grid, c.grid])
        // Each head's attention over the patches is part of a softmax row: non-negative, summing below 1.
        let m = try maps.scalars(as: Float.self), patches = c.grid * c.grid
        for row in 0..<(2 * c.heads) {
            let sum = m[(row * patches)..<((row + 1) * patches)].reduce(0, +)
            #expect(sum > 0 && sum < 1 && m[(row * patches)..<((row + 1) * patches)].allSatisfy { $0 >= 0 })
        }
        // Blurring a head makes that prompt's attention in it uniform.
        let blurred = GradMode.disabled { model.forward(Variable(images), keepAttention: true, blur: [(head: 1, query: 2)]) }
        let a = try blurred.attention!.value.scalars(as: Float.self), t = blurred.attention!.shape[2]
        let row = Array(a[((0 * c.heads + 1) * t + 2) * t..<(((0 * c.heads + 1) * t + 2) * t + t)])
        #expect(row.allSatisfy { abs($0 - 1 / Float(t)) < 1e-6 })
        let other = Array(a[((0 * c.heads + 0) * t + 2) * t..<(((0 * c.heads + 0) * t + 2) * t + t)])
        #expect(!other.allSatisfy { abs($0 - 1 / Float(t)) < 1e-6 })
        let ranking = model.rankHeads(try Tensor(Array(try images.scalars(as: Float.self)[0..<(3 * 32 * 32)]), shape: [1, 3, 32, 32]), target: 2)
        #expect(ranking.sorted() == Array(0..<c.heads))
    }

    @Test func promptCAMThroughTheCLI() throws {
        let dir = TempDir("prompt-cam")
        let cli = CLI()
        let train = try cli.run(
            "run", "prompt-cam", "train", "--set", "backbone=\(folder)", "--set", "epochs=1", "--set", "batch=8",
            "--set", #"dataset_options=["species_per_genus=2","genera_per_family=1","train_per_species=2","val_per_species=1","test_per_species=1"]"#,
            "--out", dir.sub("p"))
        #expect(train.status == 0, "\(train.stderr)")
        let explain = try cli.run(
            "run", "prompt-cam", "explain", "--set", "backbone=\(folder)", "--set", "prompts=\(dir.sub("p"))/prompts.safetensors",
            "--set", "images=\(folder)/image.png", "--set", "query=3", "--out", dir.sub("e"))
        #expect(explain.status == 0, "\(explain.stderr)")
        let maps = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("e") + "/maps.npy")))
        #expect(maps.shape == [1, 3, 32, 32])
        #expect(FileManager.default.fileExists(atPath: dir.sub("e") + "/heads_000.png"))
        let bad = try cli.run(
            "run", "prompt-cam", "explain", "--set", "backbone=\(folder)", "--set", "prompts=\(dir.sub("p"))/prompts.safetensors",
            "--set", "images=\(folder)/image.png", "--set", "query=99")
        #expect(bad.status == 2 && bad.stderr.contains("query class 99"))
    }

    /// `trait_maps` and `logits` (what finer-cam's tour asks of prompt-cam through the host) on the
    /// embedded backbone and prompts equal the model run in process.
    @Test func traitMapsAndLogitsOperations() throws {
        let dir = TempDir("prompt-ops")
        let cli = CLI()
        let embedded = try cli.run("run", "vit-classifier", "embedded", "--json")
        let manifest = try JSONSerialization.jsonObject(with: Data(embedded.stdout.utf8)) as? [String: Any]
        let path = try #require((manifest?["result"] as? [String: Any])?["folder"] as? String, "\(embedded.stderr)")
        let vit = try ViTClassifier(folder: path, requireHead: false)
        let s = vit.config.imageSize
        let x = try Tensor((0..<(2 * 3 * s * s)).map { Float(($0 * 37) % 101) / 50 - 1 }, shape: [2, 3, s, s])
        try NPY.encode(x).write(to: URL(fileURLWithPath: dir.path + "/x.npy"))
        try NPY.encode(Tensor([Int64(1), 3])).write(to: URL(fileURLWithPath: dir.path + "/q.npy"))
        let r = try cli.run(
            "run", "prompt-cam", "trait_maps", "--set", "prompts=\(path)/prompt-cam.safetensors", "--input", "images=\(dir.path)/x.npy",
            "--input", "query=\(dir.path)/q.npy", "--out", dir.sub("t"))
        #expect(r.status == 0, "\(r.stderr)")
        let model = PromptCAMModel(backbone: vit.model, classes: try SafeTensorsFile(path: path + "/prompt-cam.safetensors").entry("prompts").shape[1])
        try model.load(from: path + "/prompt-cam.safetensors")
        let (grid, logits) = model.traitMaps(x, query: [1, 3])
        let got = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("t") + "/grid.npy")))
        #expect(got.shape == grid.shape)
        #expect(try got.scalars(as: Float.self) == grid.scalars(as: Float.self))
        let l = try cli.run(
            "run", "prompt-cam", "logits", "--set", "prompts=\(path)/prompt-cam.safetensors", "--input", "images=\(dir.path)/x.npy", "--out", dir.sub("l"))
        #expect(l.status == 0, "\(l.stderr)")
        let gotLogits = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("l") + "/logits.npy"))).scalars(as: Float.self)
        let want = try logits.scalars(as: Float.self)
        #expect(zip(gotLogits, want).allSatisfy { abs($0 - $1) < 1e-5 })
    }
}
