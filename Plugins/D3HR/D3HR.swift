import Foundation
import Tensors

/// D^3HR's representation of a class: a diagonal Gaussian over its training latents inverted to an
/// intermediate DDIM step, and the group sampling that picks the IPC latents whose statistics
/// match it best.
public struct ClassGaussian: Sendable, Equatable {
    public var mean: [Float]
    /// Unbiased per-dimension standard deviation.
    public var std: [Float]

    /// From latents [n, D] (n ≥ 2).
    public init(latents: [Float], dimension d: Int) {
        let (m, v) = Self.moments(latents: latents, dimension: d)
        mean = m.map(Float.init)
        std = v.map { Float($0.squareRoot()) }
    }

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }
}

/// How the skewness term of the group score is computed.
/// `acrossMembers` (the released `skewness_batch`, the default): every dimension d is standardised
/// across the group's k members by their mean m̄_d and unbiased std s_d, and member j's value is
/// γ_j = D/((D−1)(D−2)) · Σ_d ((z_jd − m̄_d)/s_d)³ with D the latent dimension (the released code's
/// `tensor.size(2)`, 4096 for DiT's 4×32×32). `withinLatent` (this plugin's earlier reading, kept as
/// a named option): each member standardised by its own mean and std over its D dimensions (G1).
public enum SkewnessMode: String, Sendable, CaseIterable {
    case acrossMembers = "across_members"
    case withinLatent = "within_latent"
}

/// The sample skewness of one latent across its own dimensions, with the small-sample correction
/// n/((n−1)(n−2)) Σ ((x − m)/s)³, s the unbiased standard deviation (pandas' / SciPy's bias=False G1
/// written as in D^3HR). Used by `SkewnessMode.withinLatent`.
public func latentSkewness(_ x: ArraySlice<Float>) -> Double {
    let n = Double(x.count)
    guard n > 2 else { return 0 }
    let m = x.reduce(0.0) { $0 + Double($1) } / n
    let s = (x.reduce(0.0) { $0 + (Double($1) - m) * (Double($1) - m) } / (n - 1)).squareRoot()
    guard s > 0 else { return 0 }
    let cubes = x.reduce(0.0) { $0 + pow((Double($1) - m) / s, 3) }
    return n / ((n - 1) * (n - 2)) * cubes
}

/// The released `skewness_batch` for one group [k, D]: γ_j = D/((D−1)(D−2)) Σ_d ((z_jd − m̄_d)/s_d)³,
/// m̄_d and s_d the mean and unbiased std of dimension d over the k members. Where the released code
/// divides by zero (k = 1, or a dimension identical across the members) the term is taken as 0 here;
/// with D ≤ 2 the correction is undefined and every γ is 0.
public func memberSkewness(_ group: [Float], dimension d: Int) -> [Double] {
    let k = group.count / max(d, 1)
    var gamma = [Double](repeating: 0, count: k)
    guard k > 1, d > 2 else { return gamma }
    let D = Double(d)
    let factor = D / ((D - 1) * (D - 2))
    for j in 0..<d {
        var m = 0.0
        for i in 0..<k { m += Double(group[i * d + j]) }
        m /= Double(k)
        var v = 0.0
        for i in 0..<k {
            let x = Double(group[i * d + j]) - m
            v += x * x
        }
        let s = (v / Double(k - 1)).squareRoot()
        guard s > 0 else { continue }
        for i in 0..<k {
            let z = (Double(group[i * d + j]) - m) / s
            gamma[i] += z * z * z
        }
    }
    return gamma.map { $0 * factor }
}

/// S(G) = ‖mean_k z_k − μ‖₂ + ‖std_k z_k − σ‖₂ + λ_γ·‖γ‖₂ for a group of latents [k, D] (the released
/// `evaluate_distribution_batch`): the group's per-dimension mean and unbiased std against the class
/// Gaussian's, γ the members' skewness (`SkewnessMode`). With one member there is no spread: the std
/// term is dropped (the released code would get NaN).
public func groupScore(
    _ group: [Float], dimension d: Int, gaussian g: ClassGaussian, skewWeight: Double = 0.1, skewness: SkewnessMode = .acrossMembers
) -> Double {
    let k = group.count / d
    var meanTerm = 0.0, stdTerm = 0.0
    for j in 0..<d {
        var m = 0.0
        for i in 0..<k { m += Double(group[i * d + j]) }
        m /= Double(k)
        meanTerm += (m - Double(g.mean[j])) * (m - Double(g.mean[j]))
        if k > 1 {
            var v = 0.0
            for i in 0..<k {
                let x = Double(group[i * d + j]) - m
                v += x * x
            }
            let s = (v / Double(k - 1)).squareRoot()
            stdTerm += (s - Double(g.std[j])) * (s - Double(g.std[j]))
        }
    }
    let gamma: [Double]
    switch skewness {
    case .acrossMembers: gamma = memberSkewness(group, dimension: d)
    case .withinLatent: gamma = (0..<k).map { latentSkewness(group[($0 * d)..<(($0 + 1) * d)]) }
    }
    let skew = gamma.reduce(0) { $0 + $1 * $1 }
    return meanTerm.squareRoot() + stdTerm.squareRoot() + skewWeight * skew.squareRoot()
}

/// Draws `candidates` groups of `size` latents from N(μ, diag σ²) and keeps the lowest-scoring one
/// (the released `select_algorithm_batch`: `torch.normal(μ, σ)` groups, `torch.min` of the scores;
/// the first of equal scores is kept). Returns the group [size, D] and its score. The released code
/// seeds every class's candidates with the same seeds; the caller does the same by passing a
/// generator seeded alike for every class.
public func sampleBestGroup(
    _ g: ClassGaussian, size: Int, candidates: Int, skewWeight: Double = 0.1, skewness: SkewnessMode = .acrossMembers,
    rng: inout SeededGenerator
) -> (group: [Float], score: Double) {
    let d = g.mean.count
    var best: [Float] = [], bestScore = Double.infinity
    var group = [Float](repeating: 0, count: size * d)
    for _ in 0..<max(1, candidates) {
        for i in 0..<size { for j in 0..<d { group[i * d + j] = g.mean[j] + g.std[j] * Float(rng.nextNormal()) } }
        let s = groupScore(group, dimension: d, gaussian: g, skewWeight: skewWeight, skewness: skewness)
        if s < bestScore || best.isEmpty {
            bestScore = s
            best = group
        }
    }
    return (best, bestScore)
}

extension ClassGaussian {
    /// Per-dimension mean and unbiased variance of latents [n, D] (n ≥ 2), in double precision.
    public static func moments(latents: [Float], dimension d: Int) -> (mean: [Double], variance: [Double]) {
        let n = latents.count / d
        var m = [Double](repeating: 0, count: d), v = m
        for i in 0..<n { for j in 0..<d { m[j] += Double(latents[i * d + j]) } }
        for j in 0..<d { m[j] /= Double(n) }
        for i in 0..<n {
            for j in 0..<d {
                let x = Double(latents[i * d + j]) - m[j]
                v[j] += x * x
            }
        }
        return (m, v.map { $0 / Double(max(n - 1, 1)) })
    }

    /// From stored moments: the same Float values `init(latents:dimension:)` gives for those latents.
    public init(mean: [Double], variance: [Double]) {
        self.init(mean: mean.map(Float.init), std: variance.map { Float($0.squareRoot()) })
    }
}
