import Concord
import D3HR
import DatasetDistillation
import DistillationKit
import Formats
import Foundation
import LatentDiffusion
import NN
import Tensors
import TestSupport
import Testing

/// The diffusion distillers' mathematics: schedules, DDIM sampling and inversion, D^3HR's group
/// score and skewness, CONCORD's concept loss and negative sampling.
@Suite struct DiffusionTests {
    @Test func schedulesMatchTheirDefinitions() {
        let linear = NoiseSchedule(.linear)
        #expect(abs(linear.alphaBar[0] - (1 - 1e-4)) < 1e-12)
        // ᾱ_T−1 = Π (1 − β_t): recompute directly.
        var p = 1.0
        for t in 0..<1000 { p *= 1 - (1e-4 + (0.02 - 1e-4) * Double(t) / 999) }
        #expect(abs(linear.alphaBar[999] - p) < 1e-12)
        let cosine = NoiseSchedule(.cosine)
        func f(_ t: Double) -> Double {
            let x = (t / 1000 + 0.008) / 1.008 * Double.pi / 2
            return cos(x) * cos(x)
        }
        #expect(abs(cosine.alphaBar[499] - f(500) / f(0)) < 1e-9)
        #expect(DDIM(schedule: linear, steps: 50).timesteps == Array(stride(from: 0, to: 1000, by: 20)))
    }

    /// With ε independent of x, DDIM inversion and sampling are exact inverses: the latent comes back
    /// to float precision. (With a learned ε they differ by ε's change between neighbouring steps;
    /// the embedded model's figure is in the CLI test and on the method page.)
    @Test func inversionThenSamplingIsExactForAStateIndependentPredictor() throws {
        let ddim = DDIM(schedule: NoiseSchedule(.linear), steps: 50)
        let predict: NoisePredictor = { x, t, _ in x.indices.map { Float(sin(Double($0) * 0.7 + Double(t) * 0.01)) } }
        var rng = SeededGenerator(seed: 1)
        let clean = (0..<64).map { _ in Float(rng.nextNormal()) }
        let level = try ddim.level(of: 760)
        let z = try ddim.invert(clean, to: level, classes: [0], predict: predict)
        let back = try ddim.sample(z, from: level, classes: [0], predict: predict)
        let worst = zip(back, clean).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-4, "max |Δ| \(worst)")
        #expect(throws: (any Error).self) { try ddim.level(of: 770) }
    }

    /// One DDIM step and one inversion step against the formula evaluated by hand on a schedule given
    /// by its ᾱ (0.64 and 0.36 on a two-level grid, so every square root is exact): an error made the
    /// same way in `step` and `invert` cancels in the round trip above, not here.
    /// step at level 1 (ᾱ = 0.36, ᾱ_prev = 0.64): x̂0 = (x − 0.8·ε)/0.6, next = 0.8·x̂0 + 0.6·ε.
    /// x = 1.5, ε = 0.5: x̂0 = (1.5 − 0.4)/0.6 = 11/6, next = 0.8·11/6 + 0.3 = 1.7666…
    /// step at level 0 (ᾱ_prev = 1, the clean latent): x̂0 = (x − 0.6·ε)/0.8 and next = x̂0.
    /// invert level 0 → 1 from z = 2, ε = 0.5: level 0 gives (2 − 0·ε)·√0.64 + 0.6·0.5 = 1.9;
    /// level 1 gives (1.9 − 0.6·0.5)·√(0.36/0.64) + 0.8·0.5 = 1.6·0.75 + 0.4 = 1.6.
    @Test func oneStepAndOneInversionStepMatchTheFormulaByHand() throws {
        let ddim = DDIM(schedule: try NoiseSchedule(alphaBar: [0.64, 0.36]), steps: 2)
        #expect(ddim.timesteps == [0, 1])
        let one = ddim.step([1.5, -1], epsilon: [0.5, 2], level: 1)
        // Second element: x̂0 = (−1 − 1.6)/0.6 = −13/3, next = 0.8·(−13/3) + 1.2 = −2.2666…
        let x0: [Double] = [11.0 / 6, -13.0 / 3], next: [Double] = [0.8 * 11 / 6 + 0.3, 0.8 * -13 / 3 + 1.2]
        for k in 0..<2 {
            #expect(abs(Double(one.x0[k]) - x0[k]) < 1e-5, "x̂0[\(k)] \(one.x0[k]) vs \(x0[k])")
            #expect(abs(Double(one.next[k]) - next[k]) < 1e-5, "next[\(k)] \(one.next[k]) vs \(next[k])")
        }
        let last = ddim.step([1.5], epsilon: [0.5], level: 0)
        #expect(abs(Double(last.next[0]) - 1.2 / 0.8) < 1e-5 && abs(Double(last.x0[0]) - 1.5) < 1e-5)
        var seen: [Float] = []
        let z = try ddim.invert([2], to: 1, classes: [0], predict: { x, _, _ in [Float](repeating: 0.5, count: x.count) }, record: { seen.append($1[0]) })
        #expect(abs(Double(seen[0]) - 1.9) < 1e-5 && abs(Double(z[0]) - 1.6) < 1e-5, "\(seen)")
    }

    /// Forward noising x_t = √ᾱ·x0 + √(1−ᾱ)·ε: by hand at ᾱ = 0.36 (√ = 0.6, √(1−ᾱ) = 0.8), and over
    /// many standard-normal draws with x0 = 0 the variance is 1 − ᾱ (0.64; with 1 − ᾱ in place of
    /// its root it would be 0.4096) and with x0 = 1 the mean is √ᾱ.
    @Test func forwardNoisingHasTheSchedulesMeanAndVariance() throws {
        let ddim = DDIM(schedule: try NoiseSchedule(alphaBar: [0.9, 0.36]), steps: 2)
        let byHand = ddim.noised([2, -1], noise: [1, 0.5], timestep: 1)
        #expect(abs(byHand[0] - (0.6 * 2 + 0.8 * 1)) < 1e-6 && abs(byHand[1] - (0.6 * -1 + 0.8 * 0.5)) < 1e-6, "\(byHand)")
        var rng = SeededGenerator(seed: 5)
        let n = 20000
        let noise = (0..<n).map { _ in Float(rng.nextNormal()) }
        let fromZero = ddim.noised([Float](repeating: 0, count: n), noise: noise, timestep: 1).map(Double.init)
        let fromOne = ddim.noised([Float](repeating: 1, count: n), noise: noise, timestep: 1).map(Double.init)
        // The draws' own second moment, so the check does not depend on the generator's luck.
        let e2 = noise.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n)
        let variance = fromZero.reduce(0.0) { $0 + $1 * $1 } / Double(n)
        #expect(abs(variance - 0.64 * e2) < 1e-4, "variance \(variance), expected \(0.64 * e2)")
        #expect(abs(variance - 0.64) < 0.03)
        let mean = fromOne.reduce(0, +) / Double(n), noiseMean = noise.reduce(0.0) { $0 + Double($1) } / Double(n)
        #expect(abs(mean - (0.6 + 0.8 * noiseMean)) < 1e-4, "mean \(mean)")
    }

    @Test func guidanceCombinesTheBranches() throws {
        let predict: NoisePredictor = { x, _, classes in x.indices.map { i in Float(classes[i / 2] == 9 ? 1 : 3) } }
        let guided = DDIM.guided(predict, scale: 4, nullClass: 9)
        let e = try guided([0, 0, 0, 0], 0, [1, 2])
        #expect(e == [9, 9, 9, 9]) // 1 + 4·(3 − 1)
    }

    @Test func skewnessMatchesADirectComputation() {
        let x: [Float] = [0.5, -1.2, 3.3, 0.1, 2.2, -0.7, 1.9]
        let n = Double(x.count), m = x.map(Double.init).reduce(0, +) / n
        let m2 = x.map { pow(Double($0) - m, 2) }.reduce(0, +) / n, m3 = x.map { pow(Double($0) - m, 3) }.reduce(0, +) / n
        // Fisher–Pearson G1 = √(n(n−1))/(n−2) · m3/m2^1.5, algebraically the same as D^3HR's form.
        let g1 = (n * (n - 1)).squareRoot() / (n - 2) * m3 / pow(m2, 1.5)
        #expect(abs(latentSkewness(x[...]) - g1) < 1e-9)
        #expect(abs(latentSkewness([1, 2, 3, 4, 5][...])) < 1e-12)
    }

    @Test func groupScoreOnHandMadeGroups() {
        let g = ClassGaussian(mean: [0, 0, 0], std: [1, 1, 1])
        // Members (1, −1, 0) and (−1, 1, 0): mean 0, unbiased std (√2, √2, 0), skewness 0 each.
        let group: [Float] = [1, -1, 0, -1, 1, 0]
        let expected = 0 + (2 * pow(2.0.squareRoot() - 1, 2) + 1).squareRoot() + 0
        #expect(abs(groupScore(group, dimension: 3, gaussian: g) - expected) < 1e-9)
        // One member: its own mean, no spread term; under the earlier within-latent reading a skewed
        // member adds 0.1·|γ|, under the released across-members one a lone member has no skewness.
        let skewed: [Float] = [0, 0, 3]
        let gamma = latentSkewness(skewed[...])
        #expect(gamma > 0)
        #expect(abs(groupScore(skewed, dimension: 3, gaussian: g, skewness: .withinLatent) - (3.0 + 0.1 * gamma)) < 1e-9)
        #expect(abs(groupScore(skewed, dimension: 3, gaussian: g) - 3.0) < 1e-9)
        // The best of many candidate groups scores below a typical one.
        var rng = SeededGenerator(seed: 3)
        let best = sampleBestGroup(
            ClassGaussian(mean: [Float](repeating: 0.5, count: 16), std: [Float](repeating: 2, count: 16)), size: 10, candidates: 200, rng: &rng)
        let one = sampleBestGroup(
            ClassGaussian(mean: [Float](repeating: 0.5, count: 16), std: [Float](repeating: 2, count: 16)), size: 10, candidates: 1, rng: &rng)
        #expect(best.score < one.score)
    }

    @Test func classGaussianIsTheUnbiasedEstimate() {
        let g = ClassGaussian(latents: [1, 10, 3, 14, 5, 12], dimension: 2)
        #expect(g.mean == [3, 12])
        #expect(abs(g.std[0] - 2) < 1e-6 && abs(g.std[1] - 2) < 1e-6)
    }

    @Test func conceptLossGradientMatchesFiniteDifferences() {
        var rng = SeededGenerator(seed: 7)
        func unit(_ d: Int) -> [Float] {
            let v = (0..<d).map { _ in Float(rng.nextNormal()) }
            let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return v.map { $0 / n }
        }
        let e = (0..<12).map { _ in Float(rng.nextNormal()) }
        let positives = (0..<3).map { _ in unit(12) }, negatives = (0..<5).map { _ in unit(12) }
        let (loss, gradient) = conceptLoss(embedding: e, positives: positives, negatives: negatives, temperature: 0.05)
        // The definition, directly.
        let f = e.map { Double($0) / e.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot() }
        func s(_ t: [Float]) -> Double { zip(f, t).reduce(0.0) { $0 + $1.0 * Double($1.1) } }
        let denominator = log(negatives.reduce(0.0) { $0 + exp(s($1) / 0.05) })
        let direct = -positives.reduce(0.0) { $0 + s($1) / 0.05 - denominator } / 3
        #expect(abs(loss - direct) < 1e-10 * max(1, abs(direct)) + 1e-9, "\(loss) vs \(direct)")
        var worst = 0.0
        for j in 0..<12 {
            var plus = e, minus = e
            plus[j] += 1e-3
            minus[j] -= 1e-3
            let numeric =
                (conceptLoss(embedding: plus, positives: positives, negatives: negatives, temperature: 0.05).loss
                    - conceptLoss(embedding: minus, positives: positives, negatives: negatives, temperature: 0.05).loss) / 2e-3
            worst = max(worst, abs(numeric - Double(gradient[j])) / max(abs(numeric), 1e-2))
        }
        #expect(worst < 1e-2, "relative error \(worst)")
    }

    @Test func aConceptsFileMissingAClassOrDescriptionsIsNamed() throws {
        let dir = TempDir("concepts")
        try "{\"0\": [\"a\", [\"x\", \"y\"]]}".write(toFile: dir.path + "/c.json", atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try ConceptBook.read(dir.path + "/c.json", classes: 2, positives: 1) }
        do {
            _ = try ConceptBook.read(dir.path + "/c.json", classes: 1, positives: 5)
            Issue.record("too few descriptions accepted")
        } catch { #expect("\(error)".contains("2 descriptions, 5 asked")) }
        do {
            _ = try ConceptBook.read(dir.path + "/c.json", classes: 2, positives: 1)
        } catch { #expect("\(error)".contains("no entry \"1\"")) }
        let book = try ConceptBook.read(dir.path + "/c.json", classes: 1, positives: 2)
        #expect(book.prompts(0) == ["a with x", "a with y"])
    }
}
