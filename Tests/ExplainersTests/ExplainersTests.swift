import Explainers
import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

/// Parity with pytorch-grad-cam 1.5.7 on `vit-cam-tiny` (a random-weight timm ViT, mean-pooled):
/// Grad-CAM of the top class, Finer-CAM (α = 1, ranks 1–3) and Finer-CAM compare mode (α = 0.6).
@Suite struct ExplainersTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

    func expected(_ key: String) throws -> [Float] {
        let json = try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))
        return json[key]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
    }

    func run(_ method: BaseMethod, finer: FinerOptions?) throws -> Explanation {
        let classifier = try ViTClassifier(folder: folder)
        let images = try classifier.normalized([PNG.read(path: folder + "/image.png")])
        return try explain(classifier, images: images, method: method, targets: [nil], finer: finer)
    }

    func maxError(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    @Test func gradCAMMatchesPytorchGradCAM() throws {
        let e = try run(.gradcam, finer: nil)
        let want = try expected("gradcam_top1")
        #expect(e.maps.shape == [1, 32, 32] && want.count == 32 * 32)
        let err = maxError(try e.maps.scalars(as: Float.self), want)
        #expect(err < 1e-3, "Grad-CAM max |Δ| = \(err)")
        #expect(e.grid.shape == [1, 4, 4])
    }

    @Test func finerCAMMatchesBothModes() throws {
        let defaultMode = try run(.gradcam, finer: FinerOptions(alpha: 1, ranks: [1, 2, 3]))
        let err1 = maxError(try defaultMode.maps.scalars(as: Float.self), try expected("finercam_alpha1_ranks123"))
        #expect(err1 < 1e-3, "Finer-CAM α=1 ranks 1–3 max |Δ| = \(err1)")
        let compare = try run(.gradcam, finer: FinerOptions(alpha: 0.6, ranks: [1]))
        let err2 = maxError(try compare.maps.scalars(as: Float.self), try expected("finercam_alpha0.6_rank1"))
        #expect(err2 < 1e-3, "Finer-CAM compare α=0.6 max |Δ| = \(err2)")
        // The comparison classes are the closest logits to the target's.
        let logits = try defaultMode.logits.scalars(as: Float.self)
        let t = defaultMode.targets[0]
        let distances = defaultMode.comparisons[0].map { abs(logits[$0] - logits[t]) }
        let others = logits.indices.filter { $0 != t && !defaultMode.comparisons[0].contains($0) }.map { abs(logits[$0] - logits[t]) }
        #expect(distances == distances.sorted() && distances.last! <= others.min()!)
    }

    /// Score-CAM and Finer-CAM over Score-CAM against pytorch-grad-cam (Tests/Fixtures/vit-cam-tiny/make_scorecam.py).
    @Test func scoreCAMMatchesPytorchGradCAM() throws {
        let json = try JSONValue.parse(String(contentsOfFile: folder + "/scorecam.json", encoding: .utf8))
        func want(_ key: String) -> [Float] { json[key]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } } }
        let score = try run(.scorecam, finer: nil)
        let err1 = maxError(try score.maps.scalars(as: Float.self), want("scorecam_top1"))
        #expect(err1 < 1e-3, "Score-CAM max |Δ| = \(err1)")
        let finer = try run(.scorecam, finer: FinerOptions(alpha: 1, ranks: [1, 2, 3]))
        let err2 = maxError(try finer.maps.scalars(as: Float.self), want("finercam_scorecam_alpha1_ranks123"))
        #expect(err2 < 1e-3, "Finer-CAM (Score-CAM base) max |Δ| = \(err2)")
    }

    /// Grad-CAM++ and HiResCAM, alone and as Finer-CAM's base, against pytorch-grad-cam
    /// (Tests/Fixtures/vit-cam-tiny/make_gradcampp.py).
    @Test(arguments: [BaseMethod.gradcampp, .hirescam])
    func gradCAMPlusPlusAndHiResCAMMatchPytorchGradCAM(_ method: BaseMethod) throws {
        let json = try JSONValue.parse(String(contentsOfFile: folder + "/gradcampp.json", encoding: .utf8))
        func want(_ key: String) -> [Float] { json[key]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } } }
        let base = try run(method, finer: nil)
        let err1 = maxError(try base.maps.scalars(as: Float.self), want(method.rawValue + "_top1"))
        #expect(err1 < 1e-4, "\(method) max |Δ| = \(err1)")
        let finer = try run(method, finer: FinerOptions(alpha: 1, ranks: [1, 2, 3]))
        let err2 = maxError(try finer.maps.scalars(as: Float.self), want("finercam_\(method.rawValue)_alpha1_ranks123"))
        #expect(err2 < 1e-4, "Finer-CAM (\(method) base) max |Δ| = \(err2)")
    }

    /// α = 0 reproduces the base CAM: the score is then a positive multiple of y_t.
    @Test func alphaZeroIsTheBaseCAM() throws {
        let base = try run(.gradcam, finer: nil), zero = try run(.gradcam, finer: FinerOptions(alpha: 0))
        #expect(maxError(try base.maps.scalars(as: Float.self), try zero.maps.scalars(as: Float.self)) < 1e-5)
        let layer = try run(.layercam, finer: nil), layerZero = try run(.layercam, finer: FinerOptions(alpha: 0, weighting: "paper"))
        #expect(maxError(try layer.maps.scalars(as: Float.self), try layerZero.maps.scalars(as: Float.self)) < 1e-5)
        // Layer-CAM is a different map from Grad-CAM, in [0, 1] with its maximum at 1.
        let lm = try layer.maps.scalars(as: Float.self)
        #expect(maxError(lm, try base.maps.scalars(as: Float.self)) > 1e-3 && lm.min()! >= 0 && abs(lm.max()! - 1) < 1e-5)
    }

    @Test func badInputsAreNamed() throws {
        let classifier = try ViTClassifier(folder: folder)
        let images = try classifier.normalized([PNG.read(path: folder + "/image.png")])
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [6], finer: nil) }
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [nil], finer: nil, layer: 5) }
        #expect(throws: CAMError.self) {
            try explain(classifier, images: Tensor.filled(0, shape: [1, 3, 16, 16]), method: .gradcam, targets: [nil], finer: nil)
        }
        let dir = TempDir("cam")
        #expect(throws: FormatError.self) { try ViTClassifier(folder: dir.path) }
    }

    /// Through the CLI: a folder of images of another size (resized, and said so), maps.npy and overlays.
    @Test func throughTheCLI() throws {
        let dir = TempDir("cam-cli")
        let img = try PNG.read(path: folder + "/image.png")
        try PNG.write(img, to: dir.sub("in") + "/a.png")
        try PNG.write(img.resized(width: 48, height: 40), to: dir.sub("in") + "/b.png")
        let cli = CLI()
        // `--input images=DIR`: the host hands a folder to the component's `images` option.
        let r = try cli.run(
            "run", "finer-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(dir.sub("in"))",
            "--set", "alpha=0.6", "--set", "mode=compare", "--out", dir.sub("out"))
        #expect(r.status == 0, "\(r.stderr)")
        let maps = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("out") + "/maps.npy")))
        #expect(maps.shape == [2, 32, 32])
        let first = Array(try maps.scalars(as: Float.self)[0..<(32 * 32)])
        #expect(maxError(first, try expected("finercam_alpha0.6_rank1")) < 1e-3)
        #expect(FileManager.default.fileExists(atPath: dir.sub("out") + "/overlay_001.png"))
        let result = try String(contentsOfFile: dir.sub("out") + "/result.json", encoding: .utf8)
        #expect(result.contains("resized from 48×40 to 32×32"))
        let bad = try cli.run("run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--set", "images=\(dir.sub("in"))", "--set", "target=9")
        #expect(bad.status == 2 && bad.stderr.contains("target class 9"))
        let twice = try cli.run(
            "run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--set", "images=\(dir.sub("in"))",
            "--input", "images=\(dir.sub("in"))")
        #expect(twice.status == 2 && twice.stderr.contains("'images' is given both as --input and as an option"))
    }

    /// The pointing game and energy on hand-made maps and masks.
    @Test func pointingGameByHand() throws {
        let maps = try Tensor([Float(0), 1, 0.5, 0.5, 0.9, 0, 0, 0.1], shape: [2, 2, 2])
        let masks = [[false, true, false, false], [false, true, true, true]]
        let r = try pointingGame(maps: maps, masks: masks)
        #expect(r.hits == [true, false])
        #expect(abs(r.energy[0] - 0.5) < 1e-9 && abs(r.energy[1] - 0.1) < 1e-6)
    }

    /// Relative drop and the deletion/insertion curves against a direct computation with the model.
    @Test func faithfulnessMetricsByDirectComputation() throws {
        let classifier = try ViTClassifier(folder: folder)
        let images = try classifier.normalized([PNG.read(path: folder + "/image.png")])
        let plane = 32 * 32
        // A map that ranks pixels by index (highest first at index 0).
        let ranking: [Float] = (0..<plane).map { (p: Int) -> Float in Float(plane - p) }
        let map = try Tensor(ranking, shape: [1, 32, 32])
        let m = try faithfulness(classifier, images: images, maps: map, targets: [2], similar: [4], fraction: 0.25, steps: 4)
        func probs(_ x: [Float]) throws -> [Float] {
            try GradMode.disabled { classifier.model.forward(Variable(try Tensor(x, shape: [1, 3, 32, 32]))).logits.softmax() }.value.scalars(as: Float.self)
        }
        let x = try images.scalars(as: Float.self)
        var masked = x
        for c in 0..<3 { for p in 0..<256 { masked[c * plane + p] = 0 } }
        let (p0, p1) = (try probs(x), try probs(masked))
        let rd = Double(p0[2] - p1[2]) - Double(p0[4] - p1[4])
        #expect(abs(m.relativeDrop[0] - rd) < 1e-6)
        // Deletion at steps 0, ¼, ½, ¾, 1 (the ¼ step is the masked image); trapezoid over [0, 1].
        var curve: [Double] = []
        for step in 0...4 {
            var d = x
            for c in 0..<3 { for p in 0..<(plane * step / 4) { d[c * plane + p] = 0 } }
            curve.append(Double(try probs(d)[2]))
        }
        var auc = 0.0
        for j in 0..<4 { auc += (curve[j] + curve[j + 1]) / 2 }
        auc /= 4
        #expect(abs(m.deletionAUC[0] - auc) < 1e-6)
        // Insertion ends on the whole image and starts from the zero image.
        #expect(m.insertionAUC[0] > 0 && m.insertionAUC[0] < 1)
    }

    /// `vit-classifier train` on a tiny synthetic-tol writes a timm folder the explainers load,
    /// and `embed` returns pooled features.
    @Test func trainWritesATimmClassifier() throws {
        let dir = TempDir("vit-train")
        let cli = CLI()
        let r = try cli.run(
            "run", "vit-classifier", "train", "--set", "epochs=2", "--set", "size=32", "--set", "patch=8", "--set", "width=24",
            "--set", "depth=1", "--set", "heads=2", "--set", "batch=16",
            "--set", #"dataset_options=["species_per_genus=2","genera_per_family=1","train_per_species=6","val_per_species=2","test_per_species=1"]"#,
            "--out", dir.sub("model"))
        #expect(r.status == 0, "\(r.stderr)")
        let classifier = try ViTClassifier(folder: dir.sub("model"))
        #expect(classifier.config.numClasses == 16 && classifier.config.imageSize == 32 && classifier.config.width == 24)
        let curve = try String(contentsOfFile: dir.sub("model") + "/curve.csv", encoding: .utf8).split(separator: "\n")
        #expect(curve.count == 3)
        try NPY.encode(Tensor.filled(0.1, shape: [2, 3, 32, 32])).write(to: URL(fileURLWithPath: dir.path + "/x.npy"))
        let e = try cli.run(
            "run", "vit-classifier", "embed", "--set", "classifier=\(dir.sub("model"))", "--input", "images=\(dir.path)/x.npy", "--out", dir.sub("emb"))
        #expect(e.status == 0, "\(e.stderr)")
        let features = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("emb") + "/features.npy")))
        #expect(features.shape == [2, 24])
    }

    /// `convnet-classifier train` (the distillation protocol's SGD) lowers the loss and writes a
    /// ConvNet folder that Grad-CAM explains and `embed` reads.
    @Test func convNetTrainsAndIsExplained() throws {
        let dir = TempDir("cnn-train")
        let cli = CLI()
        let r = try cli.run(
            "run", "convnet-classifier", "train", "--set", "epochs=6", "--set", "size=16", "--set", "width=8", "--set", "depth=2",
            "--set", "batch=32", "--set", "lr=0.05",
            "--set", #"dataset_options=["species_per_genus=2","genera_per_family=1","train_per_species=6","val_per_species=1","test_per_species=2"]"#,
            "--out", dir.sub("model"))
        #expect(r.status == 0, "\(r.stderr)")
        let rows = try String(contentsOfFile: dir.sub("model") + "/curve.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        let losses = rows.map { Double($0.split(separator: ",")[1])! }
        #expect(losses.count == 6 && losses.last! < losses.first!, "loss per epoch \(losses)")
        let net = try ConvNetClassifier(folder: dir.sub("model"))
        #expect(net.classes == 16 && net.size == 16 && net.width == 8 && net.depth == 2)
        let img = try PNG.read(path: folder + "/image.png")
        try PNG.write(img, to: dir.sub("in") + "/a.png")
        let e = try cli.run(
            "run", "grad-cam", "explain", "--set", "classifier=\(dir.sub("model"))", "--input", "images=\(dir.sub("in"))", "--out", dir.sub("cam"))
        #expect(e.status == 0, "\(e.stderr)")
        let maps = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("cam") + "/maps.npy")))
        #expect(maps.shape == [1, 16, 16])
        try NPY.encode(Tensor.filled(0.1, shape: [2, 3, 16, 16])).write(to: URL(fileURLWithPath: dir.path + "/x.npy"))
        let f = try cli.run(
            "run", "convnet-classifier", "embed", "--set", "classifier=\(dir.sub("model"))", "--input", "images=\(dir.path)/x.npy", "--out", dir.sub("emb"))
        #expect(f.status == 0, "\(f.stderr)")
        #expect(try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("emb") + "/features.npy"))).shape == [2, 8 * 4 * 4])
    }

    /// `linear-probe train` keeps the backbone's weights, adds a trained head, and the result is a
    /// classifier the explainers load.
    @Test func linearProbeOnAFrozenBackbone() throws {
        let dir = TempDir("probe")
        let cli = CLI()
        let r = try cli.run(
            "run", "linear-probe", "train", "--set", "backbone=\(folder)", "--set", "epochs=150",
            "--set", #"dataset_options=["species_per_genus=2","genera_per_family=1","train_per_species=6","val_per_species=1","test_per_species=1"]"#,
            "--json", "--out", dir.sub("probe"))
        #expect(r.status == 0, "\(r.stderr)")
        let probe = try ViTClassifier(folder: dir.sub("probe"))
        #expect(probe.config.numClasses == 16 && probe.config.imageSize == 32)
        let original = try SafeTensorsFile(path: folder + "/model.safetensors").tensor("blocks.1.attn.qkv.weight")
        let kept = try SafeTensorsFile(path: dir.sub("probe") + "/model.safetensors").tensor("blocks.1.attn.qkv.weight")
        #expect(try original.scalars(as: Float.self) == kept.scalars(as: Float.self))
        let result = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let train = (result?["result"] as? [String: Any])?["train_accuracy"] as? Double ?? 0
        #expect(train > 3.0 / 16, "a probe on random features should still fit some of its 96 training images: \(train)")
        let images = try probe.normalized([PNG.read(path: folder + "/image.png")])
        let e = try explain(probe, images: images, method: .gradcam, targets: [nil], finer: FinerOptions())
        #expect(e.maps.shape == [1, 32, 32] && e.comparisons[0].count == 3)
    }

    // MARK: Prompt-CAM

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

    /// The CNN path: ConvNet-3's last ReLU as the target layer, against pytorch-grad-cam 1.5.7
    /// (Tests/Fixtures/convnet-cam-tiny/make_fixture.py).
    @Test func convNetCAMsMatchPytorchGradCAM() throws {
        let cnn = TestPaths.fixtures + "/convnet-cam-tiny"
        let classifier = try ConvNetClassifier(folder: cnn)
        let json = try JSONValue.parse(String(contentsOfFile: cnn + "/expected.json", encoding: .utf8))
        func want(_ key: String) -> [Float] {
            json[key]!.arrayValue!.flatMap { v in v.arrayValue.map { $0.map { Float($0.doubleValue!) } } ?? [Float(v.doubleValue!)] }
        }
        let img = try PNG.read(path: cnn + "/image.png")
        let images = try img.normalizedCHW(mean: classifier.mean, std: classifier.std).reshaped([1, 3, 32, 32])
        let logits = try classifier.logits(images)
        #expect(maxError(logits, want("logits")) < 1e-4, "ConvNet logits")
        let grad = try explain(classifier, images: images, method: .gradcam, targets: [nil], finer: nil)
        #expect(grad.grid.shape == [1, 8, 8])
        let e1 = maxError(try grad.maps.scalars(as: Float.self), want("gradcam_top1"))
        #expect(e1 < 1e-3, "ConvNet Grad-CAM max |Δ| = \(e1)")
        let finer = try explain(classifier, images: images, method: .gradcam, targets: [nil], finer: FinerOptions())
        let e2 = maxError(try finer.maps.scalars(as: Float.self), want("finercam_alpha1_ranks123"))
        #expect(e2 < 1e-3, "ConvNet Finer-CAM max |Δ| = \(e2)")
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [nil], finer: nil, layer: 3) }
    }
}
