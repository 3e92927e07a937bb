import Concord
import D3HR
import DatasetDistillation
import DistillationKit
import Formats
import Foundation
import LatentDiffusion
import MenagerieKit
import NN
import Tensors
import TestSupport
import Testing

/// The distillation frame: CMNIST-DD's colour assignment, DC's distance, DM's descent, DSA's
/// shared transforms, the distilled-set file, and bad input through the CLI.
@Suite struct DistillationTests {
    /// ρ = 0.95, 500 digits of class 0: milestones round(500 · cumsum) = 475, 478, 481, 483, 486,
    /// 489, 492, 494, 497, 500 (half-to-even) → counts 475, 3, 3, 2, 3, 3, 3, 2, 3, 3.
    /// DM's distance by hand: real rows (1, 2), (3, 4) have mean (2, 3); synthetic rows (0, 0),
    /// (2, 2), (4, 1) have mean (2, 1); d = (0, 2), loss ‖d‖² = 4 (a sum of the synthetic rows instead
    /// of their mean would give 16). ∂loss/∂syn_i = −2d/3 = (0, −4/3) for every row. With weights
    /// (1/4, 3/4) the real side is (2.5, 3.5): d = (0.5, 2.5), loss 6.5.
    @Test func distributionMatchingDistanceByHand() throws {
        let real = Variable(Tensor(shape: [2, 2], scalars: [Float(1), 2, 3, 4]))
        let synthetic = Variable(Tensor(shape: [3, 2], scalars: [Float(0), 0, 2, 2, 4, 1]), requiresGrad: true)
        let loss = Matching.meanEmbeddingDistance(real: real, synthetic: synthetic)
        #expect(abs(try loss.value.scalars(as: Float.self)[0] - 4) < 1e-6)
        let g = try #require(Autograd.gradients(of: loss, wrt: [synthetic])[0])
        let expected: [Float] = [0, -4.0 / 3, 0, -4.0 / 3, 0, -4.0 / 3]
        for (a, b) in zip(try g.value.scalars(as: Float.self), expected) { #expect(abs(a - b) < 1e-6) }
        let weighted = Matching.meanEmbeddingDistance(real: real, synthetic: synthetic, weights: [0.25, 0.75])
        #expect(abs(try weighted.value.scalars(as: Float.self)[0] - 6.5) < 1e-5)
    }

    @Test func coloursFollowTheMilestones() {
        let labels = (0..<5000).map { $0 % 10 }
        let colours = biasedAttributes(labels: labels, classes: 10, rho: 0.95)
        var counts = [[Int]](repeating: [Int](repeating: 0, count: 10), count: 10)
        for (y, c) in zip(labels, colours) { counts[y][c] += 1 }
        #expect(counts[0] == [475, 3, 3, 2, 3, 3, 3, 2, 3, 3])
        // Class 9: the aligned colour is the last milestone: 9 · 2.78 → 3, 3, 2, 3, 3, 3, 2, 3, 3 then 475.
        #expect(counts[9] == [3, 3, 2, 3, 3, 3, 2, 3, 3, 475])
        // In sample order: the first colours' quota comes first.
        let class0 = zip(labels, colours).filter { $0.0 == 0 }.map(\.1)
        #expect(Array(class0.prefix(476)) == [Int](repeating: 0, count: 475) + [1])
        // ρ = 1: all aligned; ρ = 0: none; ρ = 0.1 = 1/K: uniform.
        #expect(zip(labels, biasedAttributes(labels: labels, classes: 10, rho: 1)).allSatisfy { $0 == $1 })
        #expect(zip(labels, biasedAttributes(labels: labels, classes: 10, rho: 0)).allSatisfy { $0 != $1 })
        var uniform = [Int](repeating: 0, count: 10)
        for (y, c) in zip(labels, biasedAttributes(labels: labels, classes: 10, rho: 0.1)) where y == 3 { uniform[c] += 1 }
        #expect(uniform == [Int](repeating: 50, count: 10))
    }

    /// Two rows: identical (cos 1 → 0) and orthogonal (cos 0 → 1); 1-D parameters are ignored; a
    /// conv gradient [out, in, kh, kw] is compared row by row over in·kh·kw.
    @Test func gradientDistanceOnHandMadeGradients() {
        let real = [Variable(try! Tensor([1, 0, 0, 1] as [Float], shape: [2, 2])), Variable(try! Tensor([5, 5] as [Float], shape: [2]))]
        let syn = [Variable(try! Tensor([2, 0, 1, 0] as [Float], shape: [2, 2])), Variable(try! Tensor([-5, 1] as [Float], shape: [2]))]
        let d = Matching.gradientDistance(real: real, synthetic: syn).scalars[0]
        #expect(abs(d - 1) < 1e-5)
        let conv = Matching.gradientDistance(
            real: [Variable(try! Tensor([1, 2, 3, 4] as [Float], shape: [2, 1, 1, 2]))],
            synthetic: [Variable(try! Tensor([-1, -2, 3, 4] as [Float], shape: [2, 1, 1, 2]))]
        ).scalars[0]
        #expect(abs(conv - 2) < 1e-5) // row 0 opposite (1 − (−1)), row 1 identical
    }

    /// The DC loss is differentiable in the synthetic images through the synthetic gradients
    /// (second order): its gradient matches central finite differences.
    @Test func gradientMatchingSecondOrderAgreesWithFiniteDifferences() throws {
        let net = ConvNet(channels: 1, classes: 2, width: 4, depth: 2, imageSize: 8, seed: 3)
        var rng = SeededGenerator(seed: 1)
        let real = Variable(try Tensor((0..<(3 * 64)).map { _ in Float(rng.nextNormal()) }, shape: [3, 1, 8, 8]))
        let start = (0..<(2 * 64)).map { _ in Float(rng.nextNormal()) }
        let gReal = Matching.gradients(net, images: real, labels: [0, 0, 0], createGraph: false).map { $0.detached() }
        func loss(_ pixels: [Float], graph: Bool) -> (Double, Variable) {
            let syn = Variable(try! Tensor(pixels, shape: [2, 1, 8, 8]), requiresGrad: true)
            let d = Matching.gradientDistance(real: gReal, synthetic: Matching.gradients(net, images: syn, labels: [0, 0], createGraph: graph))
            return (Double(d.scalars[0]), graph ? Autograd.gradients(of: d, wrt: [syn])[0]! : d)
        }
        let analytic = loss(start, graph: true).1.scalars
        for i in [0, 17, 70, 127] {
            var plus = start, minus = start
            plus[i] += 1e-2
            minus[i] -= 1e-2
            let numeric = (loss(plus, graph: false).0 - loss(minus, graph: false).0) / 2e-2
            #expect(abs(numeric - Double(analytic[i])) < 2e-3 + 0.05 * abs(numeric), "pixel \(i): \(numeric) vs \(analytic[i])")
        }
    }

    static func renderedData(perClass: Int, size: Int) -> RealData {
        var images: [Float] = [], labels: [Int] = []
        var rng = SeededGenerator(seed: 5)
        for i in 0..<(perClass * 10) {
            let y = i % 10
            images += colourise(DigitRenderer.render(y, size: size, rng: &rng), size: size, colour: y, severity: 4, rng: &rng)
            labels.append(y)
        }
        return RealData(images: images, labels: labels, attributes: labels, classes: (0..<10).map { "\($0)" }, channels: 3, size: size, dataset: "test")
    }

    @Test func distributionMatchingLossDecreases() throws {
        let data = Self.renderedData(perClass: 24, size: 16)
        let normalizer = Normalizer(data)
        var s = DistillSettings()
        s.ipc = 2
        s.iterations = 40
        s.batchReal = 24
        s.width = 32
        s.dsa = nil
        var losses: [Double] = []
        _ = try Distillers.distributionMatching(
            data, normalized: normalizer.normalize(data.images, channels: 3, plane: data.plane), settings: s,
            host: PluginHost(services: nil)
        ) { losses.append($1) }
        let first = losses.prefix(8).reduce(0, +) / 8, last = losses.suffix(8).reduce(0, +) / 8
        #expect(losses.count == 40 && last < 0.85 * first, "DM loss \(first) → \(last): \(losses)")
    }

    /// One draw, two batches: identical images stay identical after the transform; each spatial
    /// operation does what it says; gradients reach the synthetic pixels.
    @Test func dsaAppliesTheSameTransformToBothBatches() throws {
        var rng = SeededGenerator(seed: 9)
        let pixels = (0..<(2 * 3 * 64)).map { _ in Float(rng.nextUniform()) }
        let x = try Tensor(pixels, shape: [2, 3, 8, 8])
        var seen = Set<String>()
        for _ in 0..<40 {
            let draw = DSA().draw(size: 8, rng: &rng)
            if case .spatial(let name, _) = draw { seen.insert(name) } else { seen.insert("color") }
            let real = DSA.apply(draw, Variable(x)).scalars
            let syn = Variable(x, requiresGrad: true)
            let out = DSA.apply(draw, syn)
            #expect(out.scalars == real)
            let g = Autograd.gradients(of: out.sum(), wrt: [syn])[0]
            #expect(g != nil)
        }
        #expect(seen.count == 6, "\(seen)")
        // A flip reverses each row; a crop by (tx, ty) shifts with zeros coming in.
        var dsa = DSA()
        dsa.strategy = ["flip"]
        var flipped: [Float] = []
        repeat { flipped = DSA.apply(dsa.draw(size: 8, rng: &rng), Variable(x)).scalars } while flipped == pixels
        for r in 0..<8 { for c in 0..<8 { #expect(flipped[r * 8 + c] == pixels[r * 8 + 7 - c]) } }
    }

    @Test func distilledSetRoundTrips() throws {
        let dir = TempDir("distilled")
        var rng = SeededGenerator(seed: 2)
        let images = try Tensor((0..<(4 * 3 * 16)).map { _ in Float(rng.nextUniform()) }, shape: [4, 3, 4, 4])
        var set = DistilledSet(
            images: images, labels: [0, 0, 1, 1], softLabels: try Tensor([0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6] as [Float], shape: [4, 2]),
            classes: ["cat", "dog"], method: "dm", dataset: "cmnist-dd", ipc: 2)
        set.extra["mean"] = "[0.5,0.5,0.5]"
        try set.write(to: dir.path + "/d.safetensors")
        let back = try DistilledSet.read(dir.path + "/d.safetensors")
        #expect(try back.images.scalars(as: Float.self) == images.scalars(as: Float.self) && back.images.shape == [4, 3, 4, 4])
        #expect(back.labels == [0, 0, 1, 1] && back.classes == ["cat", "dog"] && back.method == "dm" && back.ipc == 2)
        #expect(try back.softLabels?.scalars(as: Float.self) == set.softLabels?.scalars(as: Float.self))
        #expect(back.extra["mean"] == "[0.5,0.5,0.5]")
        let grid = try back.grid()
        #expect(grid.tiles.count == Set(back.labels).count && grid.rowHeaders == Set(back.labels).sorted().map { back.classes[$0] })
        #expect(grid.figure().raster(scale: 1).width > 0)
    }

    @Test func objectivesThroughTheCLI() throws {
        let dir = TempDir("objectives")
        try NPY.encode(try Tensor([0, 0, 2, 0] as [Float], shape: [2, 2])).write(to: URL(fileURLWithPath: dir.path + "/logits.npy"))
        try NPY.encode(Tensor([0, 1] as [Int64])).write(to: URL(fileURLWithPath: dir.path + "/labels.npy"))
        let r = try CLI().run(
            "run", "cross-entropy", "--input", "logits=\(dir.path)/logits.npy", "--input", "labels=\(dir.path)/labels.npy",
            "--out", dir.sub("ce"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        // Row 0: ln 2; row 1: ln(1 + e²); mean. Gradient (softmax − onehot)/N.
        let loss = try JSONValue.parse(r.stdout)["result"]!["loss"]!.doubleValue!
        #expect(abs(loss - (log(2.0) + log(1 + exp(2.0))) / 2) < 1e-6)
        let g = try NPY.read(path: dir.sub("ce") + "/grad_logits.npy").scalars(as: Float.self)
        let p = Float(exp(2.0) / (1 + exp(2.0)))
        #expect(abs(g[0] + 0.25) < 1e-6 && abs(g[1] - 0.25) < 1e-6 && abs(g[2] - p / 2) < 1e-6 && abs(g[3] + p / 2) < 1e-6)
    }

    @Test func badInputIsNamed() throws {
        let dir = TempDir("distill-bad")
        let cli = CLI()
        let ipc = try cli.run("run", "random-selection", "distill", "--set", "ipc=30", "--set", "dataset_options=[\"per_class=20\"]")
        #expect(ipc.status != 0 && ipc.stderr.contains("ipc 30 is larger than class"))
        let one = try cli.run(
            "run", "random-selection", "distill", "--set", "dataset=synthetic-tol", "--set", "size=32",
            "--set", "dataset_options=[\"phyla=1\",\"orders_per_class=1\",\"families_per_order=1\",\"genera_per_family=1\",\"species_per_genus=1\"]")
        #expect(one.status != 0 && one.stderr.contains("has one class"))
        let rho = try cli.run("run", "cmnist-dd", "describe", "--set", "rho=1.5")
        #expect(rho.status != 0 && rho.stderr.contains("'rho'") && rho.stderr.contains("[0, 1]"))
        let severity = try cli.run("run", "cmnist-dd", "describe", "--set", "severity=5")
        #expect(severity.status != 0 && severity.stderr.contains("'severity'"))
        // A CMNIST set evaluated on synthetic-tol (64 classes), and a one-channel set on cmnist-dd (three channels).
        let made = try cli.run("run", "random-selection", "distill", "--set", "ipc=1", "--set", "dataset_options=[\"per_class=5\"]", "--out", dir.sub("r"))
        #expect(made.status == 0, "\(made.stderr)")
        let classes = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("r"))/distilled.safetensors", "--set", "dataset=synthetic-tol",
            "--set", "dataset_options=[\"test_per_species=1\"]", "--set", "nets=1", "--set", "epochs=1")
        #expect(classes.status != 0 && classes.stderr.contains("10 classes") && classes.stderr.contains("64"), "\(classes.stderr)")
        let grey = DistilledSet(
            images: Tensor(zeros: .float32, shape: [10, 1, 28, 28]), labels: Array(0..<10), classes: (0..<10).map { "\($0)" },
            method: "random-selection", dataset: "cmnist-dd", ipc: 1)
        try grey.write(to: dir.path + "/grey.safetensors")
        let shape = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.path)/grey.safetensors", "--set", "dataset_options=[\"per_class=5\"]",
            "--set", "nets=1", "--set", "epochs=1")
        #expect(shape.status != 0 && shape.stderr.contains("1×28×28") && shape.stderr.contains("expects 3×28×28"), "\(shape.stderr)")
        let missing = try cli.run("run", "distilled-eval", "--set", "distilled=\(dir.path)/none.safetensors")
        #expect(missing.status != 0 && missing.stderr.contains("none.safetensors"))
    }

    /// Random selection, herding and a short DM run through the CLI, then protocol 1 on one net.
    @Test func distilAndEvaluateThroughTheCLI() throws {
        let dir = TempDir("distill-cli")
        let cli = CLI()
        for method in ["random-selection", "herding", "dm"] {
            let r = try cli.run(
                "run", method, "distill", "--set", "ipc=2", "--set", "dataset_options=[\"per_class=20\",\"test_per_class=10\"]",
                "--set", "iterations=3", "--set", "batch_real=16", "--set", "width=16", "--out", dir.sub(method), "--json")
            #expect(r.status == 0, "\(method): \(r.stderr)")
            let set = try DistilledSet.read(dir.sub(method) + "/distilled.safetensors")
            #expect(set.count == 20 && set.labels == (0..<10).flatMap { [$0, $0] } && set.method == method)
            #expect(FileManager.default.fileExists(atPath: dir.sub(method) + "/grid.png"))
        }
        let e = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("dm"))/distilled.safetensors", "--set", "nets=2", "--set", "epochs=2",
            "--set", "width=16", "--out", dir.sub("eval"), "--json")
        #expect(e.status == 0, "\(e.stderr)")
        let result = try JSONValue.parse(e.stdout)["result"]!
        #expect(result["accuracies"]?.arrayValue?.count == 2 && result["test_images"]?.intValue == 100)
    }
}

/// CCIFAR10-DD's corruptions and protocol 2.
@Suite struct BiasDataTests {
    func image(_ seed: UInt64, size: Int = 32) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        // A smooth colour gradient with a square: structure for every corruption to act on.
        var x = [Float](repeating: 0, count: 3 * size * size)
        for ch in 0..<3 {
            for y in 0..<size {
                for c in 0..<size {
                    let ramp: Float = 0.5 * Float(y + c * (ch + 1)) / Float(size * (ch + 2))
                    let square: Float = (8..<20).contains(y) && (10..<22).contains(c) ? 0.2 : 0
                    let noise: Float = 0.05 * Float(rng.nextUniform())
                    x[ch * size * size + y * size + c] = 0.2 + ramp + noise + square
                }
            }
        }
        return x
    }

    @Test func corruptionsChangeImagesWithinRange() {
        let x = image(1)
        for c in Corruption.allCases {
            for severity in [2, 5] {
                var rng = SeededGenerator(seed: 7)
                let y = c.apply(x, size: 32, severity: severity, rng: &rng)
                #expect(y.count == x.count && y.allSatisfy { $0 >= 0 && $0 <= 1 && $0.isFinite }, "\(c.name)")
                let change = zip(x, y).map { abs($0 - $1) }.reduce(0, +) / Float(x.count)
                #expect(change > 0.003, "\(c.name) at severity \(severity) changed the image by only \(change)")
                var again = SeededGenerator(seed: 7)
                #expect(c.apply(x, size: 32, severity: severity, rng: &again) == y, "\(c.name) is not deterministic")
            }
        }
        // Contrast at severity 5 scales deviations from the channel mean by 0.15.
        var rng = SeededGenerator(seed: 1)
        let low = Corruption.contrast.apply(x, size: 32, severity: 5, rng: &rng)
        let mean = x[0..<1024].reduce(0, +) / 1024
        #expect(abs((low[5] - mean) - 0.15 * (x[5] - mean)) < 1e-5)
        // JPEG: quality 80 stays closer to the image than quality 40.
        let q80 = Corruption.jpeg.apply(x, size: 32, severity: 1, rng: &rng), q40 = Corruption.jpeg.apply(x, size: 32, severity: 5, rng: &rng)
        func err(_ y: [Float]) -> Float { zip(x, y).map { abs($0 - $1) }.reduce(0, +) }
        #expect(err(q80) < err(q40))
        // Pixelate at 0.65 (severity 5) makes 20-pixel blocks on 32: neighbouring pixels repeat.
        let pix = Corruption.pixelate.apply(x, size: 32, severity: 5, rng: &rng)
        var repeats = 0
        for c in 0..<31 where abs(pix[320 + c] - pix[320 + c + 1]) < 1e-6 { repeats += 1 }
        #expect(repeats >= 8)
    }

    @Test func ccifarAssignsCorruptionsByTheMilestones() throws {
        let cli = CLI()
        let r = try cli.run(
            "run", "ccifar10-dd", "batch", "--set", "rho=1", "--set", "per_class=20", "--set", "test_per_class=4", "--set", "count=200", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let dir = TempDir("ccifar")
        let out = try cli.run(
            "run", "ccifar10-dd", "batch", "--set", "rho=1", "--set", "per_class=20", "--set", "test_per_class=4", "--set", "count=200",
            "--out", dir.sub("b"))
        #expect(out.status == 0)
        let labels = try NPY.read(path: dir.sub("b") + "/labels.npy").integers(), attrs = try NPY.read(path: dir.sub("b") + "/corruptions.npy").integers()
        #expect(labels.count == 200 && labels == attrs)
        let test = try cli.run(
            "run", "ccifar10-dd", "batch", "--set", "split=test", "--set", "per_class=20", "--set", "test_per_class=4", "--set", "count=40",
            "--out", dir.sub("t"))
        #expect(test.status == 0)
        let tl = try NPY.read(path: dir.sub("t") + "/labels.npy").integers(), ta = try NPY.read(path: dir.sub("t") + "/corruptions.npy").integers()
        #expect(zip(tl, ta).allSatisfy { $0 != $1 })
    }

    /// Protocol 2 end to end on a tiny setting: a teacher trained and saved, then reused.
    @Test func softLabelProtocolTrainsAndReusesATeacher() throws {
        let dir = TempDir("soft")
        let cli = CLI()
        let made = try cli.run(
            "run", "random-selection", "distill", "--set", "ipc=2", "--set", "dataset_options=[\"per_class=12\",\"test_per_class=4\"]",
            "--out", dir.sub("r"))
        #expect(made.status == 0, "\(made.stderr)")
        let soft = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("r"))/distilled.safetensors", "--set", "protocol=soft",
            "--set", "nets=2", "--set", "epochs=2", "--set", "teacher_epochs=1", "--set", "width=16", "--out", dir.sub("s"), "--json")
        #expect(soft.status == 0, "\(soft.stderr)")
        #expect(try JSONValue.parse(soft.stdout)["result"]?["accuracies"]?.arrayValue?.count == 2)
        #expect(FileManager.default.fileExists(atPath: dir.sub("s") + "/teacher.safetensors"))
        let reuse = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("r"))/distilled.safetensors", "--set", "protocol=soft",
            "--set", "nets=1", "--set", "epochs=1", "--set", "width=16", "--set", "teacher=\(dir.sub("s"))/teacher.safetensors", "--json")
        #expect(reuse.status == 0, "\(reuse.stderr)")
        let wrong = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("r"))/distilled.safetensors", "--set", "protocol=soft",
            "--set", "nets=1", "--set", "epochs=1", "--set", "width=32", "--set", "teacher=\(dir.sub("s"))/teacher.safetensors")
        #expect(wrong.status != 0 && wrong.stderr.contains("does not fit"))
    }
}
