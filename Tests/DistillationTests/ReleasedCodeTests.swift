import Concord
import D3HR
import DatasetDistillation
import DistillationKit
import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// D^3HR's group score, CONCORD's negative draws and the soft-label protocol's pieces against the
/// released code (REFERENCES.md §5), on hand-made cases whose arithmetic is written out.
@Suite struct ReleasedCodeTests {
    // MARK: D^3HR

    /// Three members of D = 4 dimensions against μ = 1, σ = 1 (the released `evaluate_distribution_batch`).
    ///   z1 = (0, 1, 0, 2), z2 = (1, 1, 2, 0), z3 = (5, 4, 4, 1)
    /// Per dimension across the members: mean (2, 2, 2, 1); deviations d1 (−2, −1, 3), d2 (−1, −1, 2),
    /// d3 (−2, 0, 2), d4 (1, −1, 0); unbiased variance 14/2 = 7, 6/2 = 3, 8/2 = 4, 2/2 = 1.
    ///   mean term = ‖(2, 2, 2, 1) − 1‖ = ‖(1, 1, 1, 0)‖ = √3
    ///   std term  = ‖(√7 − 1, √3 − 1, 2 − 1, 1 − 1)‖
    ///   skewness (D/((D−1)(D−2)) = 4/6 = 2/3, cubes of the standardised deviations summed over d):
    ///     γ1 = 2/3 · (−8/(7√7) − 1/(3√3) − 1 + 1)
    ///     γ2 = 2/3 · (−1/(7√7) − 1/(3√3) + 0 − 1)
    ///     γ3 = 2/3 · (27/(7√7) + 8/(3√3) + 1 + 0)
    ///   score = √3 + std term + 0.1·‖(γ1, γ2, γ3)‖
    @Test func groupScoreIsTheReleasedFormulaOnAHandMadeGroup() {
        let group: [Float] = [0, 1, 0, 2, 1, 1, 2, 0, 5, 4, 4, 1]
        let g = ClassGaussian(mean: [1, 1, 1, 1], std: [1, 1, 1, 1])
        let r7 = 7.0.squareRoot(), r3 = 3.0.squareRoot()
        let gamma = [
            2.0 / 3 * (-8 / (7 * r7) - 1 / (3 * r3) - 1 + 1),
            2.0 / 3 * (-1 / (7 * r7) - 1 / (3 * r3) + 0 - 1),
            2.0 / 3 * (27 / (7 * r7) + 8 / (3 * r3) + 1 + 0),
        ]
        let skew = memberSkewness(group, dimension: 4)
        for j in 0..<3 { #expect(abs(skew[j] - gamma[j]) < 1e-12, "γ\(j + 1): \(skew[j]) vs \(gamma[j])") }
        let stdTerm = ((r7 - 1) * (r7 - 1) + (r3 - 1) * (r3 - 1) + 1).squareRoot()
        let expected = r3 + stdTerm + 0.1 * gamma.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(abs(groupScore(group, dimension: 4, gaussian: g) - expected) < 1e-12)
        #expect(abs(groupScore(group, dimension: 4, gaussian: g, skewWeight: 10) - (r3 + stdTerm + 10 * (expected - r3 - stdTerm) / 0.1)) < 1e-9)
        // The earlier reading (each member over its own dimensions) is a different number, kept as an option.
        let within = (0..<3).map { latentSkewness(group[($0 * 4)..<(($0 + 1) * 4)]) }
        let withinScore = r3 + stdTerm + 0.1 * within.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(abs(groupScore(group, dimension: 4, gaussian: g, skewness: .withinLatent) - withinScore) < 1e-12)
        #expect(abs(withinScore - expected) > 1e-3)
    }

    /// The correction factor is D/((D−1)(D−2)) with D the dimension passed (the latent size), not the
    /// group size: the same three members repeated over 8 dimensions double every cube sum and give
    /// the factor 8/(7·6) instead of 4/(3·2).
    @Test func theSkewnessFactorUsesTheLatentDimension() {
        let four: [Float] = [0, 1, 0, 2, 1, 1, 2, 0, 5, 4, 4, 1]
        var eight: [Float] = []
        for i in 0..<3 { eight += Array(four[(i * 4)..<((i + 1) * 4)]) + Array(four[(i * 4)..<((i + 1) * 4)]) }
        let a = memberSkewness(four, dimension: 4), b = memberSkewness(eight, dimension: 8)
        for j in 0..<3 {
            let sums = a[j] / (4.0 / 6)
            #expect(abs(b[j] - 8.0 / 42 * 2 * sums) < 1e-12)
        }
        // One member, or a dimension equal across the members: those terms are 0 (the released code divides by 0).
        #expect(memberSkewness([1, 2, 3, 4], dimension: 4) == [0])
        let flat = memberSkewness([1, 0, 1, 2, 1, 4], dimension: 2)
        #expect(flat == [0, 0, 0]) // three members of D = 2: the correction is undefined
    }

    @Test func scaledTimestepsMapTheReleasedScaleOntoTheBackbone() throws {
        let ddim = DDIM(schedule: NoiseSchedule(.linear, steps: 1000), steps: 50)
        // 600 and 620 of 1000 are grid levels 30 and 31 (stride 20); the released start_step 18 of the
        // descending list 980, 960, … is 980 − 18·20 = 620.
        #expect(try ddim.level(of: 600) == 30 && ddim.level(of: 620) == 31)
        #expect(ddim.timesteps.reversed()[18] == 620)
        // On DiT's 1000-step scale: a backbone of 1000 steps keeps t, one of 500 halves it, one of
        // 256 has no whole timestep for 600 (153.6) and is refused by option name.
        #expect(try scaledTimestep(600, key: "sampling_step", trainSteps: 1000) == 600)
        #expect(try scaledTimestep(620, key: "start_step", trainSteps: 500) == 310)
        do {
            _ = try scaledTimestep(600, key: "sampling_step", trainSteps: 256)
            Issue.record("a fractional timestep was accepted")
        } catch { #expect("\(error)".contains("sampling_step")) }
    }

    // MARK: CONCORD

    /// Chi-square goodness of fit, Σ (observed − expected)² / expected over the cells with expected > 0.
    func chiSquare(_ counts: [Int], _ probabilities: [Double]) -> Double {
        let total = Double(counts.reduce(0, +))
        return zip(counts, probabilities).filter { $0.1 > 0 }.reduce(0.0) { acc, cell in
            let e = total * cell.1
            return acc + (Double(cell.0) - e) * (Double(cell.0) - e) / e
        }
    }

    /// 20 000 calls of K = 5 draws (seed 11) for class 0 whose name similarities (unit embeddings,
    /// self 1) are 1, 0.1, 0.2, 0.3, 0.4: the released weights are these minus the identity,
    /// (0, 0.1, 0.2, 0.3, 0.4), so P(j) = j/10. Bounds: the chi-square critical values at p = 10⁻⁶
    /// (df 3: 30.66; df 4: 33.38; df 15: 56.49), so a correct sampler fails once in a million runs.
    @Test func negativeDrawsFollowTheReleasedDistribution() throws {
        let sim: [[Double]] = (0..<5).map { i in (0..<5).map { j in i == j ? 1 : Double(i + j) / 10 } }
        var rng = SeededGenerator(seed: 11)
        var counts = [Int](repeating: 0, count: 5), pairs = [Int](repeating: 0, count: 25), random = counts
        var calls = 0
        for _ in 0..<20000 {
            let k = try negativeClasses(for: 0, count: 5, policy: .weighted, similarity: sim, rng: &rng)
            #expect(k.count == 5)
            for c in k { counts[c] += 1 }
            pairs[k[0] * 5 + k[1]] += 1
            for c in try negativeClasses(for: 0, count: 5, policy: .random, similarity: sim, rng: &rng) { random[c] += 1 }
            calls += 1
        }
        let p = [0, 0.1, 0.2, 0.3, 0.4]
        #expect(counts[0] == 0) // weight 0: never the class itself
        #expect(chiSquare(counts, p) < 30.66, "weighted: \(counts), χ² \(chiSquare(counts, p))")
        // With replacement: the first two draws are independent, P(a, b) = p_a·p_b (16 cells, df 15).
        let joint = (0..<25).map { p[$0 / 5] * p[$0 % 5] }
        #expect(chiSquare(pairs, joint) < 56.49, "pairs χ² \(chiSquare(pairs, joint))")
        #expect(pairs[4 * 5 + 4] > 0) // the same class twice in one draw happens (P = 0.16)
        // random: uniform over all five classes, the class itself included (df 4).
        #expect(chiSquare(random, [Double](repeating: 0.2, count: 5)) < 33.38, "random: \(random)")
        // Negative similarities weigh 0 (row 1: 1, 1, −0.3, 0.2, −0.1 → weights 0, ·, 0, 0.2, 0 plus
        // class 0's 1: P = (1/1.2, 0, 0, 0.2/1.2, 0)); none positive → uniform over the others.
        var signed = sim
        signed[1] = [1, 1, -0.3, 0.2, -0.1]
        var clipped = [Int](repeating: 0, count: 5)
        for _ in 0..<4000 { for c in try negativeClasses(for: 1, count: 5, policy: .weighted, similarity: signed, rng: &rng) { clipped[c] += 1 } }
        #expect(clipped[1] == 0 && clipped[2] == 0 && clipped[4] == 0)
        #expect(chiSquare(clipped, [1 / 1.2, 0, 0, 0.2 / 1.2, 0]) < 23.93, "\(clipped)") // df 1
        signed[1] = [-0.2, 1, -0.3, -0.1, -0.1]
        var uniform = [Int](repeating: 0, count: 5)
        for _ in 0..<4000 { for c in try negativeClasses(for: 1, count: 5, policy: .weighted, similarity: signed, rng: &rng) { uniform[c] += 1 } }
        #expect(uniform[1] == 0 && chiSquare(uniform, [0.25, 0, 0.25, 0.25, 0.25]) < 30.66, "\(uniform)")
        // similar: np.argsort(neighbors)[-2:] = the two largest, in ascending order.
        #expect(try negativeClasses(for: 0, count: 2, policy: .similar, similarity: sim, rng: &rng) == [3, 4])
        // One description per drawn class, uniform over the first four (df 3); a class with two: 0 or 1.
        var descriptions = [Int](repeating: 0, count: 4)
        for _ in 0..<40000 { descriptions[negativeDescription(pool: 4, rng: &rng)] += 1 }
        #expect(chiSquare(descriptions, [0.25, 0.25, 0.25, 0.25]) < 30.66, "\(descriptions)")
        #expect((0..<1000).allSatisfy { _ in negativeDescription(pool: 2, rng: &rng) < 2 })
    }

    /// Python's random.choices bisects the cumulative weights: [1, −0.5, 1] → cumulative [1, 0.5, 1.5],
    /// x = u·1.5; bisect_right over the first two: x < 0.5 → 0, otherwise → 2 (1 is never drawn),
    /// so P = (1/3, 0, 2/3). A non-positive total is refused, as Python refuses it.
    @Test func pythonChoicesMatchesBisectOnOddWeights() throws {
        var rng = SeededGenerator(seed: 3)
        var counts = [0, 0, 0]
        for c in try pythonChoices(weights: [1, -0.5, 1], count: 30000, rng: &rng) { counts[c] += 1 }
        #expect(counts[1] == 0)
        #expect(chiSquare([counts[0], counts[2]], [1.0 / 3, 2.0 / 3]) < 23.93, "\(counts)") // df 1, p = 10⁻⁶
        #expect(throws: NegativeDrawError.self) { try pythonChoices(weights: [0, 0], count: 1, rng: &rng) }
        #expect(throws: NegativeDrawError.self) { try pythonChoices(weights: [-1, 0.5], count: 1, rng: &rng) }
    }

    @Test func negativePromptsUseTheFirstFourDescriptions() throws {
        let dir = TempDir("concepts-neg")
        try "{\"0\": [\"a\", [\"p\", \"q\", \"r\", \"s\", \"t\"]], \"1\": [\"b\", [\"x\", \"y\"]]}".write(
            toFile: dir.path + "/c.json", atomically: true, encoding: .utf8)
        let book = try ConceptBook.read(dir.path + "/c.json", classes: 2, positives: 2)
        #expect(book.prompts(0) == ["a with p", "a with q"])
        #expect(book.negativePrompts(0) == ["a with p", "a with q", "a with r", "a with s"])
        #expect(book.negativePrompts(1) == ["b with x", "b with y"])
    }

    // MARK: The soft-label protocol

    /// rand_bbox by hand (A = B = 32 unless said): λ = 0.75 → cut = 0.5, cutA = 16, centre (10, 30):
    /// A: [10 − 8, 10 + 8) = [2, 18); B: [30 − 8, min(38, 32)) = [22, 32). λ = 0 → the whole side
    /// 32, centre (0, 0): [0, 16). λ = 1 → an empty box [c, c). A = 7, λ = 0.5 → cutA = ⌊7·0.7071⌋ = 4,
    /// centre 3 → [1, 5).
    @Test func cutMixBoxArithmetic() {
        let a = ReleasedSoftLabel.cutMixBox(a: 32, b: 32, lambda: 0.75, ca: 10, cb: 30)
        #expect(a.a0 == 2 && a.a1 == 18 && a.b0 == 22 && a.b1 == 32)
        let b = ReleasedSoftLabel.cutMixBox(a: 32, b: 32, lambda: 0, ca: 0, cb: 0)
        #expect(b.a0 == 0 && b.a1 == 16 && b.b0 == 0 && b.b1 == 16)
        let c = ReleasedSoftLabel.cutMixBox(a: 32, b: 32, lambda: 1, ca: 5, cb: 9)
        #expect(c.a0 == 5 && c.a1 == 5 && c.b0 == 9 && c.b1 == 9)
        let d = ReleasedSoftLabel.cutMixBox(a: 7, b: 32, lambda: 0.5, ca: 3, cb: 16)
        #expect(d.a0 == 1 && d.a1 == 5)
        // A mixed batch: inside the box each image holds its partner's pixels, outside its own.
        var rng = SeededGenerator(seed: 2)
        let x = (0..<(4 * 2 * 6 * 6)).map { Float($0) }
        let (mixed, box, perm) = ReleasedSoftLabel.cutMix(x, shape: [4, 2, 6, 6], rng: &rng)
        #expect(perm.sorted() == [0, 1, 2, 3])
        for i in 0..<4 {
            for ch in 0..<2 {
                for r in 0..<6 {
                    for q in 0..<6 {
                        let inside = (box.0..<max(box.0, box.1)).contains(r) && (box.2..<max(box.2, box.3)).contains(q)
                        let source = inside ? perm[i] : i
                        #expect(mixed[((i * 2 + ch) * 6 + r) * 6 + q] == x[((source * 2 + ch) * 6 + r) * 6 + q])
                    }
                }
            }
        }
    }

    /// KL at T = 20 without T²: teacher logits (20·ln 3, 0) → p = (3/4, 1/4); student (0, 0) →
    /// q = (1/2, 1/2); KL = 3/4·ln(3/2) + 1/4·ln(1/2) = 0.1308121; a second row with teacher = student
    /// adds 0; batchmean halves: 0.0654061 (with T² it would be 400× that).
    @Test func klIsBatchmeanAtTemperatureWithoutTheSquare() throws {
        let t: Float = 20
        let teacher = Variable(Tensor(shape: [2, 2], scalars: [t * Float(log(3.0)), 0, 1, 2] as [Float]))
        let student = Variable(Tensor(shape: [2, 2], scalars: [0, 0, 1, 2] as [Float]), requiresGrad: true)
        let kl = ReleasedSoftLabel.klBatchmean(student: student, teacher: teacher, temperature: t).scalars[0]
        let expected = (0.75 * log(1.5) + 0.25 * log(0.5)) / 2
        #expect(abs(Double(kl) - expected) < 1e-6, "\(kl) vs \(expected)")
    }

    /// `get_parameters`: decay only for names holding "weight" with more than one dimension — the 20
    /// convolutions and fc.weight of a ResNet-18; no BatchNorm gain, no bias.
    @Test func weightDecaySkipsOneDimensionalParameters() throws {
        let net = ResNet18(classes: 5, stem: .small, seed: 1)
        let decaying = ReleasedSoftLabel.applyWeightDecaySet(net)
        #expect(decaying.count == 21 && decaying.contains("fc.weight") && decaying.contains("layer2.0.downsample.0.weight"))
        for (name, p) in net.namedParameters {
            #expect(p.decays == (p.shape.count > 1), "\(name) \(p.shape)")
        }
        let conv = ConvNet(channels: 3, classes: 4, width: 8, depth: 3, imageSize: 16, seed: 1)
        #expect(ReleasedSoftLabel.applyWeightDecaySet(conv) == ["features.0.weight", "features.4.weight", "features.8.weight", "classifier.weight"])
    }

    /// The per-epoch factor 0.5·(1 + cos(π·e/E/2)): 1 at e = 0, 0.5·(1 + cos(π/4)) = 0.8535534 at
    /// E/2, 0.5 at E. The released batch: IPC 1 of 10 classes → 15 capped at 10; IPC 10 → 50;
    /// IPC 50 → 100; 100 classes double it.
    @Test func scheduleAndBatchRule() {
        #expect(ReleasedSoftLabel.halfCosine(epoch: 0, epochs: 300) == 1)
        #expect(abs(ReleasedSoftLabel.halfCosine(epoch: 150, epochs: 300) - 0.8535534) < 1e-7)
        #expect(abs(ReleasedSoftLabel.halfCosine(epoch: 300, epochs: 300) - 0.5) < 1e-12)
        #expect(ReleasedSoftLabel.releasedBatch(ipc: 1, classes: 10) == 10)
        #expect(ReleasedSoftLabel.releasedBatch(ipc: 10, classes: 10) == 50)
        #expect(ReleasedSoftLabel.releasedBatch(ipc: 50, classes: 10) == 100)
        #expect(ReleasedSoftLabel.releasedBatch(ipc: 10, classes: 100) == 100)
    }

    /// RandomResizedCrop + flip keeps the shape and, for a constant image, every value.
    @Test func randomResizedCropKeepsAConstantImage() {
        var rng = SeededGenerator(seed: 9)
        let img = [Float](repeating: 0.25, count: 3 * 8 * 8)
        for _ in 0..<20 {
            let out = ReleasedSoftLabel.randomResizedCropFlip(img[...], channels: 3, size: 8, rng: &rng)
            #expect(out.count == img.count && out.allSatisfy { abs($0 - 0.25) < 1e-6 })
        }
    }

    /// The protocol end to end on cmnist-dd (IPC 2, one epoch): three students against a ConvNet-3
    /// teacher trained here → a cross-architecture table; then a ResNet-18-modified teacher from a
    /// checkpoint in torchvision's names, and the same file refused for the other stem.
    @Test func softLabelProtocolThroughTheCLI() throws {
        let dir = TempDir("soft-label")
        let cli = CLI()
        let made = try cli.run(
            "run", "random-selection", "distill", "--set", "ipc=2", "--set", "dataset_options=[\"per_class=12\",\"test_per_class=4\"]",
            "--out", dir.sub("r"))
        #expect(made.status == 0, "\(made.stderr)")
        let distilled = "distilled=\(dir.sub("r"))/distilled.safetensors"
        let r = try cli.run(
            "run", "distilled-eval", "--set", distilled, "--set", "protocol=soft_label", "--set", "students=[\"convnet3\",\"resnet18\",\"resnet18_modified\"]",
            "--set", "teacher_arch=convnet3", "--set", "teacher_epochs=1", "--set", "nets=1", "--set", "epochs=1", "--set", "width=16",
            "--out", dir.sub("s"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let result = try JSONValue.parse(r.stdout)["result"]
        #expect(result?["students"]?.objectValue?.keys.sorted() == ["convnet3", "resnet18", "resnet18_modified"])
        let csv = try String(contentsOfFile: dir.sub("s") + "/cross_architecture.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 4, "\(csv)")
        #expect(FileManager.default.fileExists(atPath: dir.sub("s") + "/teacher.safetensors"))

        try ResNet18(classes: 10, stem: .small, seed: 8).save(to: dir.path + "/teacher.safetensors")
        let loaded = try cli.run(
            "run", "distilled-eval", "--set", distilled, "--set", "protocol=soft_label", "--set", "student=resnet18_modified",
            "--set", "teacher=\(dir.path)/teacher.safetensors", "--set", "nets=1", "--set", "epochs=1", "--json")
        #expect(loaded.status == 0, "\(loaded.stderr)")
        let wrong = try cli.run(
            "run", "distilled-eval", "--set", distilled, "--set", "protocol=soft_label", "--set", "teacher_arch=resnet18",
            "--set", "teacher=\(dir.path)/teacher.safetensors", "--set", "nets=1", "--set", "epochs=1")
        #expect(wrong.status != 0 && wrong.stderr.contains("does not fit a resnet18") && wrong.stderr.contains("conv1.weight"), "\(wrong.stderr)")
        let student = try cli.run("run", "distilled-eval", "--set", distilled, "--set", "protocol=soft_label", "--set", "students=[\"vgg\"]")
        #expect(student.status != 0 && student.stderr.contains("vgg"))
    }
}
