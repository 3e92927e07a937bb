import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing
import Vision

/// The classifiers plugin: `vit-classifier` (train, embed, the embedded classifier other plugins ask
/// for), `convnet-classifier` and `linear-probe`, each explained afterwards through the host.
@Suite struct ClassifiersTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

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
        let e = try cli.run(
            "run", "finer-cam", "explain", "--set", "classifier=\(dir.sub("probe"))", "--input", "images=\(folder)/image.png", "--out", dir.sub("cam"))
        #expect(e.status == 0, "\(e.stderr)")
        #expect(try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("cam") + "/maps.npy"))).shape == [1, 32, 32])
        let camResult = try String(contentsOfFile: dir.sub("cam") + "/result.json", encoding: .utf8)
        #expect(camResult.contains("\"comparisons\""))
    }

    /// `vit-classifier embedded` names the shipped folder, which holds the classifier and Prompt-CAM's prompts.
    @Test func theEmbeddedClassifierIsAskedForThroughItsOperation() throws {
        let r = try CLI().run("run", "vit-classifier", "embedded", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let manifest = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let path = try #require((manifest?["result"] as? [String: Any])?["folder"] as? String, "\(r.stdout)")
        #expect(path.hasSuffix("Menagerie_Classifiers.resources/vit-tol"))
        let classifier = try ViTClassifier(folder: path)
        #expect(classifier.config.numClasses > 1)
        #expect(FileManager.default.fileExists(atPath: path + "/prompt-cam.safetensors"))
    }
}
