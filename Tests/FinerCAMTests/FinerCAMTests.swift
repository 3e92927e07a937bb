import CAM
import FinerCAM
import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing
import Vision

/// Finer-CAM (the finer-cam plugin) against pytorch-grad-cam 1.5.7 on `vit-cam-tiny`: in process
/// (its score as the CAM engine's scorer), through the host over the cam plugin's CAMs (scorer
/// called back, and the linearised target), and over a third-party CAM written in C.
@Suite struct FinerCAMTests {
    let folder = TestPaths.fixtures + "/vit-cam-tiny"

    func fixture(_ file: String, _ key: String) throws -> [Float] {
        let json = try JSONValue.parse(String(contentsOfFile: folder + "/" + file, encoding: .utf8))
        return json[key]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
    }
    func expected(_ key: String) throws -> [Float] { try fixture("expected.json", key) }

    /// In process: the CAM engine with Finer-CAM's score as its scorer (nil: the base CAM).
    func run(_ method: BaseMethod, finer: FinerOptions?) throws -> Explanation {
        let classifier = try ViTClassifier(folder: folder)
        let images = try classifier.normalized([PNG.read(path: folder + "/image.png")])
        return try explain(classifier, images: images, method: method, targets: [nil], target: scorer(finer))
    }
    func scorer(_ finer: FinerOptions?) -> CAMTarget {
        guard let finer else { return .classes }
        return .scorer { logits, reference, targets in try finer.scoreAndGradients(logits: logits, reference: reference, targets: targets) }
    }

    func maxError(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

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
        let comparisons = FinerOptions().comparisons(logits, target: t)
        let distances = comparisons.map { abs(logits[$0] - logits[t]) }
        let others = logits.indices.filter { $0 != t && !comparisons.contains($0) }.map { abs(logits[$0] - logits[t]) }
        #expect(distances == distances.sorted() && distances.last! <= others.min()!)
    }

    /// Score-CAM and Finer-CAM over Score-CAM against pytorch-grad-cam (Tests/Fixtures/vit-cam-tiny/make_scorecam.py):
    /// in process and through the host (score-cam calling finer-cam's score back for its masked batches).
    @Test func scoreCAMMatchesPytorchGradCAM() throws {
        let score = try run(.scorecam, finer: nil)
        let err1 = maxError(try score.maps.scalars(as: Float.self), try fixture("scorecam.json", "scorecam_top1"))
        #expect(err1 < 1e-3, "Score-CAM max |Δ| = \(err1)")
        let finer = try run(.scorecam, finer: FinerOptions(alpha: 1, ranks: [1, 2, 3]))
        let want = try fixture("scorecam.json", "finercam_scorecam_alpha1_ranks123")
        let err2 = maxError(try finer.maps.scalars(as: Float.self), want)
        #expect(err2 < 1e-3, "Finer-CAM (Score-CAM base) max |Δ| = \(err2)")
        let (hosted, result) = try throughTheHost(base: "scorecam")
        let err3 = maxError(hosted, want)
        #expect(err3 < 1e-3, "Finer-CAM (score-cam through the host) max |Δ| = \(err3)")
        #expect(result.contains("scorer=finer-cam") && !result.contains("linearised"), "\(result)")
    }

    /// Grad-CAM++ and HiResCAM, alone and as Finer-CAM's base, against pytorch-grad-cam
    /// (Tests/Fixtures/vit-cam-tiny/make_gradcampp.py).
    @Test(arguments: [BaseMethod.gradcampp, .hirescam])
    func gradCAMPlusPlusAndHiResCAMMatchPytorchGradCAM(_ method: BaseMethod) throws {
        let base = try run(method, finer: nil)
        let err1 = maxError(try base.maps.scalars(as: Float.self), try fixture("gradcampp.json", method.rawValue + "_top1"))
        #expect(err1 < 1e-4, "\(method) max |Δ| = \(err1)")
        let finer = try run(method, finer: FinerOptions(alpha: 1, ranks: [1, 2, 3]))
        let err2 = maxError(try finer.maps.scalars(as: Float.self), try fixture("gradcampp.json", "finercam_\(method.rawValue)_alpha1_ranks123"))
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

    /// `menagerie run finer-cam` with the fixture image; returns the map and result.json.
    func throughTheHost(base: String, _ extra: String...) throws -> ([Float], String) {
        let dir = TempDir("finer-host")
        let r = try CLI().run(
            ["run", "finer-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(folder)/image.png", "--set", "base=\(base)"] + extra
                + ["--out", dir.sub("out")])
        #expect(r.status == 0, "\(r.stderr)")
        let maps = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("out") + "/maps.npy")))
        #expect(maps.shape == [1, 32, 32])
        return (try maps.scalars(as: Float.self), try String(contentsOfFile: dir.sub("out") + "/result.json", encoding: .utf8))
    }

    /// Through the host, finer-cam equals the former in-process Finer-CAM's numbers (the fixtures) for
    /// every base: the base calls finer-cam's score back; and with `linearise=true` (two base calls,
    /// the second with target_weights = ∂S/∂y), which is exact for the gradient CAMs.
    @Test(arguments: [
        ("gradcam", "expected.json", "finercam_alpha1_ranks123", Float(1e-3)),
        ("grad-cam", "expected.json", "finercam_alpha1_ranks123", 1e-3),
        ("gradcampp", "gradcampp.json", "finercam_gradcampp_alpha1_ranks123", 1e-4),
        ("hirescam", "gradcampp.json", "finercam_hirescam_alpha1_ranks123", 1e-4),
    ])
    func throughTheHostEqualsTheFixtures(_ base: String, _ file: String, _ key: String, _ tolerance: Float) throws {
        let want = try fixture(file, key)
        let (called, result) = try throughTheHost(base: base)
        #expect(maxError(called, want) < tolerance, "finer-cam over \(base), scorer called back: max |Δ| = \(maxError(called, want))")
        #expect(result.contains("scorer=finer-cam") && result.contains("\"comparisons\""), "\(result)")
        let (linear, linearResult) = try throughTheHost(base: base, "--set", "linearise=true")
        #expect(maxError(linear, want) < tolerance, "finer-cam over \(base), linearised: max |Δ| = \(maxError(linear, want))")
        #expect(linearResult.contains("linearised target"), "\(linearResult)")
    }

    /// Through the CLI: compare mode α = 0.6 on a folder of images of two sizes (resized, and said
    /// so), overlays written by finer-cam, the comparison classes in result.json.
    @Test func throughTheCLI() throws {
        let dir = TempDir("finer-cli")
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
        #expect(result.contains("resized from 48×40 to 32×32") && result.contains("a.png"))
        let missing = try cli.run(
            "run", "finer-cam", "explain", "--set", "classifier=\(folder)", "--set", "images=\(dir.sub("in"))", "--set", "base=no-such-cam")
        #expect(missing.status != 0 && missing.stderr.contains("no-such-cam"), "\(missing.stderr)")
        let notExplainer = try cli.run(
            "run", "finer-cam", "explain", "--set", "classifier=\(folder)", "--set", "images=\(dir.sub("in"))", "--set", "base=vit-classifier")
        #expect(notExplainer.status != 0 && notExplainer.stderr.contains("not a explainer"), "\(notExplainer.stderr)")
    }

    /// The ConvNet path: Finer-CAM on ConvNet-3 against pytorch-grad-cam (Tests/Fixtures/convnet-cam-tiny).
    @Test func convNetFinerCAMMatchesPytorchGradCAM() throws {
        let cnn = TestPaths.fixtures + "/convnet-cam-tiny"
        let classifier = try ConvNetClassifier(folder: cnn)
        let json = try JSONValue.parse(String(contentsOfFile: cnn + "/expected.json", encoding: .utf8))
        let want = json["finercam_alpha1_ranks123"]!.arrayValue!.flatMap { $0.arrayValue!.map { Float($0.doubleValue!) } }
        let images = try PNG.read(path: cnn + "/image.png").normalizedCHW(mean: classifier.mean, std: classifier.std).reshaped([1, 3, 32, 32])
        let finer = try explain(classifier, images: images, method: .gradcam, targets: [nil], target: scorer(FinerOptions()))
        let e = maxError(try finer.maps.scalars(as: Float.self), want)
        #expect(e < 1e-3, "ConvNet Finer-CAM max |Δ| = \(e)")
    }

    /// Finer-CAM over a third-party CAM written in C (Tests/Fixtures/plugins/toy_cam.c), loaded from
    /// MENAGERIE_PLUGIN_PATH: it takes `target_weights` and declares no scorer, so finer-cam calls it
    /// twice (logits, then w = ∂S/∂y). Its map is Σ_k w_k·x_k on channel-mean logits, so the expected
    /// map is computed here independently: logits by hand, comparison classes, ∂S/∂y by central
    /// differences of S in double precision.
    @Test(arguments: ["code", "paper"])
    func overAThirdPartyCAMInC(_ weighting: String) throws {
        let dir = TempDir("toy-cam")
        try buildCPlugin(named: "libtoycam.so", in: dir.sub("plugins"), source: TestPaths.fixtures + "/plugins/toy_cam.c")
        let (n, k, h, w) = (2, 6, 3, 4), plane = 12
        // Distinct channel means (so the top class and the ranks are unambiguous), varied pixels.
        var x = [Float](repeating: 0, count: n * k * plane)
        for i in 0..<n {
            for c in 0..<k {
                let mean = Float((c * 7 + i * 3) % k) * 0.37 + Float(i) * 0.11 + Float(c) * 0.013
                for p in 0..<plane { x[(i * k + c) * plane + p] = mean + 0.05 * Float((p * (c + 2) + i) % 5) - 0.1 }
            }
        }
        try NPY.encode(try Tensor(x, shape: [n, k, h, w])).write(to: URL(fileURLWithPath: dir.path + "/x.npy"))
        let cli = CLI(pluginPath: [dir.sub("plugins")])
        let r = try cli.run(
            "run", "finer-cam", "explain", "--set", "base=toy-cam", "--set", "alpha=0.7", "--set", "weighting=\(weighting)",
            "--input", "images=\(dir.path)/x.npy", "--out", dir.sub("out"))
        #expect(r.status == 0, "\(r.stderr)")
        let got = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("out") + "/maps.npy")))
        #expect(got.shape == [n, h, w])
        let result = try String(contentsOfFile: dir.sub("out") + "/result.json", encoding: .utf8)
        #expect(result.contains("linearised target") && result.contains("toy-cam"), "\(result)")
        // Independently: logits, the target (top class), the 3 closest classes, S and its gradient.
        var expectedMaps: [Float] = [], plainMaps: [Float] = []
        for i in 0..<n {
            let y: [Double] = (0..<k).map { c in (0..<plane).reduce(0.0) { $0 + Double(x[(i * k + c) * plane + $1]) } / Double(plane) }
            let t = (0..<k).max { y[$0] < y[$1] }!
            let closest = (0..<k).filter { $0 != t }.sorted { abs(y[$0] - y[t]) < abs(y[$1] - y[t]) }.prefix(3)
            func s(_ v: [Double]) -> Double {
                let m = v.max()!, e = v.map { Foundation.exp($0 - m) }, z = e.reduce(0, +)
                var num = 0.0, den = 0.0
                for j in closest {
                    let p = weighting == "paper" ? 1 : e[j] / z
                    num += p * (v[t] - 0.7 * v[j])
                    den += p
                }
                return num / (den + 1e-9)
            }
            let g: [Double] = (0..<k).map { c in
                var up = y, down = y
                up[c] += 1e-5
                down[c] -= 1e-5
                return (s(up) - s(down)) / 2e-5
            }
            for p in 0..<plane {
                expectedMaps.append(Float((0..<k).reduce(0.0) { $0 + g[$1] * Double(x[(i * k + $1) * plane + p]) }))
                plainMaps.append(x[(i * k + t) * plane + p])
            }
        }
        let values = try got.scalars(as: Float.self)
        let err = maxError(values, expectedMaps), scale = expectedMaps.map(abs).max()!
        #expect(err < 1e-3 * max(scale, 1), "finer-cam over toy-cam (\(weighting)): max |Δ| = \(err), scale \(scale)")
        // The expected map is not the base's own map: the test tells them apart.
        #expect(maxError(values, plainMaps) > 0.05)
    }

    /// Without the classifiers plugin: finer-cam still explains a classifier folder it is given, and
    /// the tours (finer-cam's, prompt-cam's), which ask the host for the embedded classifier, fail
    /// with a message naming the missing plugin. A copy of the executable with only some built-in
    /// plugins beside it (the built-in folder is the executable's).
    @Test func withoutTheClassifiersPluginTheToursNameIt() throws {
        let dir = TempDir("no-classifiers")
        let bin = dir.sub("bin")
        for file in ["menagerie", "libCAM.so", "libFinerCAM.so", "libPromptCAM.so", "libSyntheticTreeOfLife.so"] {
            try copyFile(TestPaths.products + "/" + file, to: bin + "/" + file)
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin + "/menagerie")
        let env = CLI().environment
        func run(_ arguments: String...) throws -> CommandResult { try runProcess(bin + "/menagerie", arguments, environment: env) }
        let explained = try run(
            "run", "finer-cam", "explain", "--set", "classifier=\(folder)", "--input", "images=\(folder)/image.png", "--out", dir.sub("out"))
        #expect(explained.status == 0, "\(explained.stderr)")
        for component in ["finer-cam", "prompt-cam"] {
            let tour = try run("run", component, "tour")
            #expect(tour.status != 0 && tour.stderr.contains("'classifiers' plugin") && tour.stderr.contains(component), "\(component): \(tour.stderr)")
        }
    }

    /// Finer-CAM's score by hand at α = 0.5, the form Score-CAM's masked batches are scored with:
    /// logits (2, 1, 0), target 0, comparison class 1 → S = w·(2 − 0.5·1)/(w + 1e-9) = 1.5 with
    /// "code" weights (w = softmax(y)₁) and with "paper" weights (w = 1); α = 0 gives y_t = 2.
    @Test func finerScoreByHandAtAnAlphaOtherThanOne() throws {
        for weighting in ["code", "paper"] {
            let finer = FinerOptions(alpha: 0.5, ranks: [1], weighting: weighting)
            #expect(finer.comparisons([2, 1, 0], target: 0) == [1])
            #expect(abs(finer.score([2, 1, 0], target: 0, comparisons: [1]) - 1.5) < 1e-5)
            #expect(abs(FinerOptions(alpha: 0, ranks: [1], weighting: weighting).score([2, 1, 0], target: 0, comparisons: [1]) - 2) < 1e-5)
            // The scorer operation's values agree with the score of each row.
            let (scores, _) = try finer.scoreAndGradients(
                logits: Tensor(shape: [1, 3], scalars: [2, 1, 0] as [Float]), reference: Tensor(shape: [1, 3], scalars: [2, 1, 0] as [Float]), targets: [0])
            #expect(abs(scores[0] - 1.5) < 1e-5)
        }
    }
}
