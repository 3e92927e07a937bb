import Formats
import Foundation
import Imaging
import NN
import SST
import Tensors
import TestSupport
import Testing

/// Cycle-consistent fine-tuning (gradients, the loss going down) and the `sst` pipeline on files
/// through the CLI: masks and overlays written at each query's size, truth scored, retrieval order,
/// bad input named.
@Suite struct SSTPipelineTests {
    // MARK: Fine-tuning

    /// Features [rows·cols, dim]: one direction per part plus noise; the unlabelled frame has the
    /// parts shifted by a column and its own noise.
    func partFeatures(rows: Int, cols: Int, dim: Int, parts: [Int], noise: Float, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        var base = SeededGenerator(seed: 99)
        let directions = (0..<4).map { _ in (0..<dim).map { _ in Float(base.nextNormal()) } }
        return parts.flatMap { k in directions[k].map { $0 + noise * Float(rng.nextNormal()) } }
    }

    func stripes(rows: Int, cols: Int, shift: Int) -> [Int] {
        (0..<(rows * cols)).map { p in ((p % cols + shift) / 2) % 3 }
    }

    @Test func softPropagationIsTheTrackersFirstStep() throws {
        let (rows, cols, dim) = (4, 5, 6)
        let f0 = partFeatures(rows: rows, cols: cols, dim: dim, parts: stripes(rows: rows, cols: cols, shift: 0), noise: 0.3, seed: 1)
        let f1 = partFeatures(rows: rows, cols: cols, dim: dim, parts: stripes(rows: rows, cols: cols, shift: 1), noise: 0.3, seed: 2)
        let labels = stripes(rows: rows, cols: cols, shift: 0).flatMap { k in (0..<3).map { Float($0 == k ? 1 : 0) } }
        var settings = PropagationSettings()
        settings.radius = 2
        settings.topK = 3
        let memory = SpaceTimeMemory(settings: settings, rows: rows, cols: cols, dim: dim, features: f0, labels: labels, channels: 3)
        let hard = memory.propagate(f1)
        let soft = softPropagate(
            query: l2Normalized(Variable(try Tensor(f1, shape: [rows * cols, dim]))),
            source: l2Normalized(Variable(try Tensor(f0, shape: [rows * cols, dim]))),
            labels: Variable(try Tensor(labels, shape: [rows * cols, 3])), rows: rows, cols: cols, settings: settings
        ).scalars
        #expect(zip(hard, soft).allSatisfy { abs($0 - $1) < 1e-5 })

        // A case where τ shows: a 1 × 3 grid, each query's top 2 sources carrying different labels.
        // Support (unit rows) s0 = (1, 0) labelled 0, s1 = (0, 1) and s2 = (0.6, 0.8) labelled 1; queries
        // q0 = 2·(0.8, 0.6) (normalised to (0.8, 0.6)), q1 = (1, 0), q2 = (0, 1); τ = 0.5, top 2, no radius.
        // By hand: q0·s = (0.8, 0.6, 0.96) → keeps s2, s0: P(label 0) = e^{0.8/τ}/(e^{0.8/τ} + e^{0.96/τ});
        // q1·s = (1, 0, 0.6) → keeps s0, s2: P(label 0) = e^{1/τ}/(e^{1/τ} + e^{0.6/τ});
        // q2·s = (0, 1, 0.8) → keeps s1, s2, both label 1: (0, 1).
        var tiny = PropagationSettings()
        tiny.radius = 0
        tiny.topK = 2
        tiny.temperature = 0.5
        let tau = 0.5
        func share(_ a: Double, _ b: Double) -> Double { exp(a / tau) / (exp(a / tau) + exp(b / tau)) }
        let p0 = share(0.8, 0.96), p1 = share(1, 0.6)
        let expected: [Double] = [p0, 1 - p0, p1, 1 - p1, 0, 1]
        let support: [Float] = [1, 0, 0, 1, 0.6, 0.8], query: [Float] = [1.6, 1.2, 1, 0, 0, 1], oneHot: [Float] = [1, 0, 0, 1, 0, 1]
        let tracker = SpaceTimeMemory(settings: tiny, rows: 1, cols: 3, dim: 2, features: support, labels: oneHot, channels: 2).propagate(query)
        let differentiable = softPropagate(
            query: l2Normalized(Variable(try Tensor(query, shape: [3, 2]))), source: l2Normalized(Variable(try Tensor(support, shape: [3, 2]))),
            labels: Variable(try Tensor(oneHot, shape: [3, 2])), rows: 1, cols: 3, settings: tiny
        ).scalars
        for (name, ours) in [("tracker", tracker), ("softPropagate", differentiable)] {
            let worst = zip(ours, expected).map { abs(Double($0) - $1) }.max()!
            #expect(worst < 1e-5, "\(name): \(ours) vs \(expected)")
        }
    }

    /// The cycle loss's BCE + Dice by hand on two patches, two channels: prediction (0.8, 0.2),
    /// (0.4, 0.6) against one-hot (1, 0), (0, 1). BCE = mean of −log 0.8, −log 0.8, −log 0.6, −log 0.6;
    /// Dice with OC-CCL's smoothing 1: channel 0 (2·0.8 + 1)/(1.2 + 1 + 1) = 2.6/3.2, channel 1
    /// (2·0.6 + 1)/(0.8 + 1 + 1) = 2.2/2.8, loss term 1 − their mean.
    @Test func bceDiceByHand() throws {
        let prediction = Variable(try Tensor([0.8, 0.2, 0.4, 0.6] as [Float], shape: [2, 2]))
        let target = try Tensor([1, 0, 0, 1] as [Float], shape: [2, 2])
        let bce = -(2 * log(0.8) + 2 * log(0.6)) / 4
        let dice = 1 - (2.6 / 3.2 + 2.2 / 2.8) / 2
        let ours = Double(bceDice(prediction, target).scalars[0])
        #expect(abs(ours - (bce + dice)) < 1e-5, "\(ours) vs \(bce + dice)")
    }

    @Test func cycleLossGradientMatchesFiniteDifferences() throws {
        let (rows, cols, dim) = (3, 3, 4)
        var settings = PropagationSettings()
        settings.topK = 9 // every source kept: the loss is smooth in the head's weights
        settings.radius = 0
        settings.temperature = 0.5
        let f0 = partFeatures(rows: rows, cols: cols, dim: dim, parts: stripes(rows: rows, cols: cols, shift: 0), noise: 0.5, seed: 3)
        let f1 = partFeatures(rows: rows, cols: cols, dim: dim, parts: stripes(rows: rows, cols: cols, shift: 1), noise: 0.5, seed: 4)
        let labels = try Tensor(stripes(rows: rows, cols: cols, shift: 0).flatMap { k in (0..<3).map { Float($0 == k ? 1 : 0) } }, shape: [9, 3])
        let head = ProjectionHead(inputs: dim, outputs: 3, seed: 5)
        func loss() -> Float {
            GradMode.disabled { cycleLoss(head: head, support: f0, labels: labels, unlabelled: f1, rows: rows, cols: cols, settings: settings, soft: true) }
                .scalars[0]
        }
        let l = cycleLoss(head: head, support: f0, labels: labels, unlabelled: f1, rows: rows, cols: cols, settings: settings, soft: true)
        let grad = Autograd.gradients(of: l, wrt: [head.linear.weight.variable])[0]!.scalars
        let w0 = try head.linear.weight.value.scalars(as: Float.self)
        let eps: Float = 1e-2
        var worst: Float = 0
        for i in [0, 3, 5, 10] {
            var plus = w0, minus = w0
            plus[i] += eps
            minus[i] -= eps
            head.linear.weight.assign(try Tensor(plus, shape: [3, dim]))
            let lp = loss()
            head.linear.weight.assign(try Tensor(minus, shape: [3, dim]))
            let lm = loss()
            head.linear.weight.assign(try Tensor(w0, shape: [3, dim]))
            let numeric = (lp - lm) / (2 * eps)
            worst = max(worst, abs(numeric - grad[i]) / max(abs(numeric), 1e-2))
        }
        #expect(worst < 0.03, "relative gradient error \(worst)")
    }

    @Test func fineTuningLowersTheCycleLoss() throws {
        let (rows, cols, dim) = (6, 6, 16)
        let parts0 = stripes(rows: rows, cols: cols, shift: 0)
        let support = partFeatures(rows: rows, cols: cols, dim: dim, parts: parts0, noise: 1.2, seed: 10)
        let unlabelled = (0..<4).map {
            partFeatures(rows: rows, cols: cols, dim: dim, parts: stripes(rows: rows, cols: cols, shift: $0 % 2), noise: 1.2, seed: 20 + UInt64($0))
        }
        let labels = parts0.flatMap { k in (0..<3).map { Float($0 == k ? 1 : 0) } }
        let head = ProjectionHead(inputs: dim, outputs: dim)
        var tuning = CycleTuning()
        tuning.steps = 40
        tuning.learningRate = 3e-2
        let losses = try tuning.run(
            head: head, support: support, labels: labels, channels: 3, unlabelled: unlabelled, rows: rows, cols: cols,
            settings: PropagationSettings())
        let early = losses.prefix(5).reduce(0, +) / 5, late = losses.suffix(5).reduce(0, +) / 5
        #expect(late < 0.8 * early, "cycle loss \(early) → \(late)")
    }

    // MARK: The pipeline on files

    /// A 64 × 64 scene: blue-grey background, a red block (trait 1) and a green block (trait 2) of
    /// 3 × 3 patches each, aligned to 8-pixel patches, moved by (dx, dy) pixels. (Regions of 2 × 2
    /// patches lose their corners to the bilinear upsampling: IoU ~0.7.)
    func scene(dx: Int = 0, dy: Int = 0) -> (Image, [Int]) {
        var px = [UInt8](repeating: 0, count: 64 * 64 * 3), mask = [Int](repeating: 0, count: 64 * 64)
        for y in 0..<64 {
            for x in 0..<64 {
                let (sx, sy) = (x - dx, y - dy)
                var label = 0
                if (8..<32).contains(sy) && (32..<56).contains(sx) { label = 1 }
                if (32..<56).contains(sy) && (0..<24).contains(sx) { label = 2 }
                let rgb: [UInt8] = label == 1 ? [220, 40, 40] : label == 2 ? [40, 200, 60] : [90, 100, 130]
                for c in 0..<3 { px[(y * 64 + x) * 3 + c] = rgb[c] }
                mask[y * 64 + x] = label
            }
        }
        return (Image(width: 64, height: 64, channels: 3, pixels: px), mask)
    }

    func writeMask(_ mask: [Int], width: Int, height: Int, to path: String) throws {
        try PNG.writeSamples(try Tensor(mask.map { UInt8($0) }, shape: [height, width]), to: path)
    }

    func upscaled(_ image: Image, _ mask: [Int], to s: Int) -> (Image, [Int]) {
        let source = (0..<(s * s)).map { i in ((i / s) * 64 / s) * 64 + (i % s) * 64 / s }
        let px = source.flatMap { p in (0..<3).map { image.pixels[p * 3 + $0] } }
        return (Image(width: s, height: s, channels: 3, pixels: px), source.map { mask[$0] })
    }

    @Test func segmentWritesMasksAtEachQuerysSizeAndScoresThem() throws {
        let dir = TempDir("sst")
        let (support, mask) = scene()
        for sub in ["q", "truth"] { try FileManager.default.createDirectory(atPath: dir.path + "/" + sub, withIntermediateDirectories: true) }
        try PNG.write(support, to: dir.path + "/support.png")
        try writeMask(mask, width: 64, height: 64, to: dir.path + "/mask.png")
        let (shifted, shiftedMask) = scene(dx: 8, dy: 8)
        try PNG.write(shifted, to: dir.path + "/q/a_shifted.png")
        try writeMask(shiftedMask, width: 64, height: 64, to: dir.path + "/truth/a_shifted.png")
        let (big, bigMask) = upscaled(support, mask, to: 96)
        try PNG.write(big, to: dir.path + "/q/b_big.png")
        try writeMask(bigMask, width: 96, height: 96, to: dir.path + "/truth/b_big.png")
        let cli = CLI()
        let out = dir.sub("out")
        let r = try cli.run(
            "run", "sst", "--set", "support=\(dir.path)/support.png", "--set", "mask=\(dir.path)/mask.png", "--set", "queries=\(dir.path)/q",
            "--set", "backbone=pixels", "--set", "size=64", "--set", "patch=8", "--set", "truth=\(dir.path)/truth",
            "--set", "parts=[\"red\",\"green\"]", "--out", out, "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let result = json?["result"] as? [String: Any]
        let miou = result?["mIoU_traits"] as? Double ?? 0
        #expect(miou > 0.85, "mIoU \(miou)")
        let a = try PNG.readSamples(path: out + "/masks/a_shifted.png").pixels, b = try PNG.readSamples(path: out + "/masks/b_big.png").pixels
        #expect(a.shape == [64, 64] && b.shape == [96, 96])
        #expect(Set(try b.integers()) == [0, 1, 2])
        #expect(FileManager.default.fileExists(atPath: out + "/overlays/b_big.png"))
        let iou = try String(contentsOfFile: out + "/iou.csv", encoding: .utf8)
        #expect(iou.contains("red") && iou.contains("green"))
        // TIFF output and fine-tuning on the same run.
        let tiff = try cli.run(
            "run", "sst", "--set", "support=\(dir.path)/support.png", "--set", "mask=\(dir.path)/mask.png", "--set", "queries=\(dir.path)/q",
            "--set", "backbone=pixels", "--set", "size=64", "--set", "format=tiff", "--set", "finetune_steps=5", "--out", dir.sub("tiff"))
        #expect(tiff.status == 0, "\(tiff.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.sub("tiff") + "/masks/b_big.tif"))
        #expect(FileManager.default.fileExists(atPath: dir.sub("tiff") + "/finetune.csv"))
    }

    @Test func retrievalRanksTheMatchingQueryFirstAndTheReleasedOrderReversesIt() throws {
        let dir = TempDir("sstr")
        let (support, mask) = scene()
        try FileManager.default.createDirectory(atPath: dir.path + "/q", withIntermediateDirectories: true)
        try PNG.write(support, to: dir.path + "/support.png")
        try writeMask(mask, width: 64, height: 64, to: dir.path + "/mask.png")
        try PNG.write(scene(dx: 8).0, to: dir.path + "/q/match.png")
        // No red or green anywhere: nothing of the traits to carry over and back.
        try PNG.write(Image(width: 64, height: 64, channels: 3, pixels: (0..<(64 * 64 * 3)).map { UInt8(($0 * 37) % 90) }), to: dir.path + "/q/noise.png")
        let cli = CLI()
        for ranking in ["paper", "released"] {
            let out = dir.sub(ranking)
            let r = try cli.run(
                "run", "sst", "retrieve", "--set", "support=\(dir.path)/support.png", "--set", "mask=\(dir.path)/mask.png",
                "--set", "queries=\(dir.path)/q", "--set", "backbone=pixels", "--set", "size=64", "--set", "ranking=\(ranking)", "--out", out)
            #expect(r.status == 0, "\(r.stderr)")
            let rows = try String(contentsOfFile: out + "/retrieval.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            #expect(rows.first?.contains(ranking == "paper" ? "match.png" : "noise.png") == true, "\(ranking): \(rows)")
        }
        // Fine-tuning before retrieval (that it lowers the loss is fineTuningLowersTheCycleLoss): the
        // head is trained and used, its curve written, and the matching query still comes first.
        let tuned = try cli.run(
            "run", "sst", "retrieve", "--set", "support=\(dir.path)/support.png", "--set", "mask=\(dir.path)/mask.png",
            "--set", "queries=\(dir.path)/q", "--set", "backbone=pixels", "--set", "size=64", "--set", "finetune_steps=20",
            "--out", dir.sub("tuned"), "--json")
        #expect(tuned.status == 0, "\(tuned.stderr)")
        let loss =
            ((try JSONSerialization.jsonObject(with: Data(tuned.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any])?["finetune_loss"] as? [Double]
        #expect(loss?.count == 2 && loss!.allSatisfy { $0.isFinite && $0 > 0 }, "\(String(describing: loss))")
        let rows = try String(contentsOfFile: dir.sub("tuned") + "/retrieval.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        #expect(rows.first?.contains("match.png") == true, "\(rows)")
        #expect(FileManager.default.fileExists(atPath: dir.sub("tuned") + "/finetune.png"))
    }

    @Test func badInputIsNamed() throws {
        let dir = TempDir("sstbad")
        let (support, mask) = scene()
        try FileManager.default.createDirectory(atPath: dir.path + "/q", withIntermediateDirectories: true)
        try PNG.write(support, to: dir.path + "/support.png")
        try PNG.write(support, to: dir.path + "/q/a.png")
        try writeMask(Array(mask.prefix(32 * 64)), width: 64, height: 32, to: dir.path + "/short.png")
        try writeMask([Int](repeating: 0, count: 64 * 64), width: 64, height: 64, to: dir.path + "/empty.png")
        try writeMask(mask.map { $0 == 2 ? 7 : $0 }, width: 64, height: 64, to: dir.path + "/seven.png")
        let cli = CLI()
        func run(_ maskFile: String, _ extra: String...) throws -> CommandResult {
            try cli.run(
                [
                    "run", "sst", "--set", "support=\(dir.path)/support.png", "--set", "mask=\(dir.path)/\(maskFile)", "--set", "queries=\(dir.path)/q",
                    "--set", "backbone=pixels", "--set", "size=64",
                ] + extra)
        }
        let short = try run("short.png")
        #expect(short.status != 0 && short.stderr.contains("short.png") && short.stderr.contains("64×32") && short.stderr.contains("pixel for pixel"))
        let empty = try run("empty.png")
        #expect(empty.status != 0 && empty.stderr.contains("empty.png") && empty.stderr.contains("no trait label"))
        let seven = try run("seven.png", "--set", "parts=[\"red\",\"green\"]")
        #expect(seven.status != 0 && seven.stderr.contains("label 7") && seven.stderr.contains("2 parts"))
        let noQueries = try cli.run("run", "sst", "--set", "support=\(dir.path)/support.png", "--set", "mask=\(dir.path)/empty.png")
        #expect(noQueries.status != 0)
        let badSize = try run("seven.png", "--set", "patch=7")
        #expect(badSize.status != 0 && badSize.stderr.contains("multiple of patch"))
    }
}
