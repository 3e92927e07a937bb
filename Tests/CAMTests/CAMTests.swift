import CAM
import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing
import Vision

/// The base CAMs (the cam plugin) against pytorch-grad-cam 1.5.7 on `vit-cam-tiny` (a random-weight
/// timm ViT, mean-pooled), their general target (linear `target_weights`, a called-back scorer),
/// and the saliency metrics of `Vision`.
@Suite struct CAMTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

    func expected(_ key: String) throws -> [Float] {
        let json = try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8))
        return json[key]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
    }

    func run(_ method: BaseMethod, target: CAMTarget = .classes) throws -> Explanation {
        let classifier = try ViTClassifier(folder: folder)
        let images = try classifier.normalized([PNG.read(path: folder + "/image.png")])
        return try explain(classifier, images: images, method: method, targets: [nil], target: target)
    }

    func maxError(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    @Test func gradCAMMatchesPytorchGradCAM() throws {
        let e = try run(.gradcam)
        let want = try expected("gradcam_top1")
        #expect(e.maps.shape == [1, 32, 32] && want.count == 32 * 32)
        let err = maxError(try e.maps.scalars(as: Float.self), want)
        #expect(err < 1e-3, "Grad-CAM max |Δ| = \(err)")
        #expect(e.grid.shape == [1, 4, 4])
    }

    /// `target_weights`: a one-hot row is the class target (for Grad-CAM a positive multiple of it
    /// too: min–max scaling removes the factor, which Score-CAM's softmax and Grad-CAM++'s g³ keep); another class's row gives that class's map; and a scorer returning the
    /// same linear score and gradient gives the weights' map (the three ways of naming S agree).
    @Test(arguments: [BaseMethod.gradcam, .scorecam, .gradcampp])
    func linearTargetsAndScorers(_ method: BaseMethod) throws {
        let base = try run(method)
        let classes = base.logits.shape[1], t = base.targets[0]
        func onehot(_ c: Int, _ v: Float) -> [Float] { (0..<classes).map { $0 == c ? v : 0 } }
        let same = try run(method, target: .weights(onehot(t, method == .gradcam ? 3 : 1)))
        #expect(maxError(try base.maps.scalars(as: Float.self), try same.maps.scalars(as: Float.self)) < 1e-4)
        let other = (t + 1) % classes
        let otherClass = try explain(
            try ViTClassifier(folder: folder), images: try ViTClassifier(folder: folder).normalized([PNG.read(path: folder + "/image.png")]),
            method: method, targets: [other])
        let weighted = try run(method, target: .weights(onehot(other, 1)))
        #expect(maxError(try otherClass.maps.scalars(as: Float.self), try weighted.maps.scalars(as: Float.self)) < 1e-5)
        #expect(maxError(try base.maps.scalars(as: Float.self), try weighted.maps.scalars(as: Float.self)) > 1e-3)
        // A mixed linear target, given as weights and as a scorer.
        let w: [Float] = (0..<classes).map { Float($0 % 3) - 0.5 }
        let viaWeights = try run(method, target: .weights(w))
        let viaScorer = try run(
            method,
            target: .scorer { logits, _, _ in
                let y = try logits.scalars(as: Float.self), m = logits.shape[0]
                let scores = (0..<m).map { i in (0..<classes).reduce(Float(0)) { $0 + w[$1] * y[i * classes + $1] } }
                return (scores, (0..<m).flatMap { _ in w })
            })
        #expect(maxError(try viaWeights.maps.scalars(as: Float.self), try viaScorer.maps.scalars(as: Float.self)) < 1e-5)
        #expect(maxError(try viaWeights.maps.scalars(as: Float.self), try base.maps.scalars(as: Float.self)) > 1e-3)
    }

    @Test func badInputsAreNamed() throws {
        let classifier = try ViTClassifier(folder: folder)
        let images = try classifier.normalized([PNG.read(path: folder + "/image.png")])
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [6]) }
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [nil], layer: 5) }
        #expect(throws: CAMError.self) { try explain(classifier, images: Tensor.filled(0, shape: [1, 3, 16, 16]), method: .gradcam, targets: [nil]) }
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [nil], target: .weights([1, 2])) }
        let dir = TempDir("cam")
        #expect(throws: FormatError.self) { try ViTClassifier(folder: dir.path) }
    }

    /// Through the CLI: a folder of images of another size (resized, and said so), maps.npy, logits.npy
    /// and overlays; `target_weights` as an input; bad requests named.
    @Test func throughTheCLI() throws {
        let dir = TempDir("cam-cli")
        let img = try PNG.read(path: folder + "/image.png")
        try PNG.write(img, to: dir.sub("in") + "/a.png")
        try PNG.write(img.resized(width: 48, height: 40), to: dir.sub("in") + "/b.png")
        let cli = CLI()
        let r = try cli.run("run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(dir.sub("in"))", "--out", dir.sub("out"))
        #expect(r.status == 0, "\(r.stderr)")
        let maps = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("out") + "/maps.npy")))
        #expect(maps.shape == [2, 32, 32])
        #expect(maxError(Array(try maps.scalars(as: Float.self)[0..<(32 * 32)]), try expected("gradcam_top1")) < 1e-3)
        let logits = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("out") + "/logits.npy")))
        #expect(logits.shape.count == 2 && logits.shape[0] == 2)
        #expect(FileManager.default.fileExists(atPath: dir.sub("out") + "/overlay_001.png"))
        let result = try String(contentsOfFile: dir.sub("out") + "/result.json", encoding: .utf8)
        #expect(result.contains("resized from 48×40 to 32×32"))
        // A one-hot target_weights row of class 2 is the map of target=2.
        let classes = logits.shape[1]
        try NPY.encode(try Tensor((0..<(2 * classes)).map { $0 % classes == 2 ? Float(1) : 0 }, shape: [2, classes]))
            .write(to: URL(fileURLWithPath: dir.path + "/w.npy"))
        let w = try cli.run(
            "run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(dir.sub("in"))", "--input", "target_weights=\(dir.path)/w.npy",
            "--out", dir.sub("w"))
        #expect(w.status == 0, "\(w.stderr)")
        let t2 = try cli.run(
            "run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(dir.sub("in"))", "--set", "target=2", "--out", dir.sub("t2"))
        #expect(t2.status == 0, "\(t2.stderr)")
        let a = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("w") + "/maps.npy"))).scalars(as: Float.self)
        let b = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("t2") + "/maps.npy"))).scalars(as: Float.self)
        #expect(maxError(a, b) < 1e-5)
        let bad = try cli.run("run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--set", "images=\(dir.sub("in"))", "--set", "target=9")
        #expect(bad.status == 2 && bad.stderr.contains("target class 9"))
        let twice = try cli.run(
            "run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--set", "images=\(dir.sub("in"))",
            "--input", "images=\(dir.sub("in"))")
        #expect(twice.status == 2 && twice.stderr.contains("'images' is given both as --input and as an option"))
        let both = try cli.run(
            "run", "grad-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(dir.sub("in"))", "--input", "target_weights=\(dir.path)/w.npy",
            "--set", "scorer=finer-cam")
        #expect(both.status == 2 && both.stderr.contains("not both"), "\(both.stderr)")
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
        let grad = try explain(classifier, images: images, method: .gradcam, targets: [nil])
        #expect(grad.grid.shape == [1, 8, 8])
        let e1 = maxError(try grad.maps.scalars(as: Float.self), want("gradcam_top1"))
        #expect(e1 < 1e-3, "ConvNet Grad-CAM max |Δ| = \(e1)")
        #expect(throws: CAMError.self) { try explain(classifier, images: images, method: .gradcam, targets: [nil], layer: 3) }
    }

    /// Layer-CAM and HiResCAM by hand on a toy classifier whose target layer is its input (2 channels
    /// on a 2 × 2 grid) and whose logits are y_c = Σ_k W[c][k]·Σ_p A[k, p], so ∂y_t/∂A[k, p] = W[t][k]
    /// everywhere. With W[0] = (1, −1): Layer-CAM keeps only channel 0 (ReLU on the gradient) → A₀ =
    /// (1, 2, 3, 4) → (0, ⅓, ⅔, 1) after min–max scaling; HiResCAM takes A₀ − A₁ = (−3, 1, 3, 2) →
    /// ReLU → (0, ⅓, 1, ⅔).
    @Test func layerCAMAndHiResCAMByHand() throws {
        struct Toy: CAMClassifier {
            let w: [Float] = [1, -1, -0.5, 2]
            var inputChannels: Int { 2 }
            var inputSize: Int { 2 }
            func forwardForCAM(_ images: Variable, layer: Int) throws -> (logits: Variable, target: Variable, layout: ActivationLayout) {
                let n = images.shape[0]
                // The target layer: the input through a zero shift that records the graph (as a network's layer would).
                let target = images + Variable(Tensor(zeros: .float32, shape: [1, 2, 1, 1]), requiresGrad: true)
                let pooled = target.reshaped([n, 2, 4]).sum(axis: 2) // [N, 2]
                let logits = matmul(pooled, Variable(Tensor(shape: [2, 2], scalars: w)), transposeB: true)
                return (logits, target, .channels(height: 2, width: 2))
            }
            func logits(_ images: Tensor) throws -> [Float] { try forwardForCAM(Variable(images), layer: -1).logits.value.scalars(as: Float.self) }
            func fit(_ image: Image) -> (Image, resized: Bool) { (image, false) }
            func normalized(_ images: [Image]) throws -> Tensor { Tensor(zeros: .float32, shape: [images.count, 2, 2, 2]) }
        }
        let images = Tensor(shape: [1, 2, 2, 2], scalars: [1, 2, 3, 4, 4, 1, 0, 2] as [Float])
        let layer = try GradMode.with(true) { try explain(Toy(), images: images, method: .layercam, targets: [0]) }
        let hires = try GradMode.with(true) { try explain(Toy(), images: images, method: .hirescam, targets: [0]) }
        for (got, want) in zip(try layer.grid.scalars(as: Float.self), [0, 1.0 / 3, 2.0 / 3, 1] as [Float]) {
            #expect(abs(got - want) < 1e-5, "Layer-CAM \(got) vs \(want)")
        }
        for (got, want) in zip(try hires.grid.scalars(as: Float.self), [0, 1.0 / 3, 1, 2.0 / 3] as [Float]) {
            #expect(abs(got - want) < 1e-5, "HiResCAM \(got) vs \(want)")
        }
    }
}
