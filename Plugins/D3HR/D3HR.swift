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
        mean = m.map(Float.init)
        std = v.map { Float(($0 / Double(max(n - 1, 1))).squareRoot()) }
    }

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }
}

/// The sample skewness of one latent across its own dimensions, with the small-sample correction
/// n/((n−1)(n−2)) Σ ((x − m)/s)³, s the unbiased standard deviation (pandas' / SciPy's bias=False G1
/// written as in D^3HR).
public func latentSkewness(_ x: ArraySlice<Float>) -> Double {
    let n = Double(x.count)
    guard n > 2 else { return 0 }
    let m = x.reduce(0.0) { $0 + Double($1) } / n
    let s = (x.reduce(0.0) { $0 + (Double($1) - m) * (Double($1) - m) } / (n - 1)).squareRoot()
    guard s > 0 else { return 0 }
    let cubes = x.reduce(0.0) { $0 + pow((Double($1) - m) / s, 3) }
    return n / ((n - 1) * (n - 2)) * cubes
}

/// S(G) = ‖mean_k z_k − μ‖₂ + ‖std_k z_k − σ‖₂ + λ_γ·‖γ‖₂ for a group of latents [k, D]: the group's
/// per-dimension mean and (unbiased) standard deviation against the class Gaussian's, and γ the
/// vector of the members' skewness across their own dimensions. With one member there is no spread:
/// the std term is dropped.
public func groupScore(_ group: [Float], dimension d: Int, gaussian g: ClassGaussian, skewWeight: Double = 0.1) -> Double {
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
    var skew = 0.0
    for i in 0..<k {
        let gamma = latentSkewness(group[(i * d)..<((i + 1) * d)])
        skew += gamma * gamma
    }
    return meanTerm.squareRoot() + stdTerm.squareRoot() + skewWeight * skew.squareRoot()
}

/// Draws `candidates` groups of `size` latents from N(μ, diag σ²) and keeps the lowest-scoring one.
/// Returns the group [size, D] and its score.
public func sampleBestGroup(
    _ g: ClassGaussian, size: Int, candidates: Int, skewWeight: Double = 0.1,
    rng: inout SeededGenerator
) -> (group: [Float], score: Double) {
    let d = g.mean.count
    var best: [Float] = [], bestScore = Double.infinity
    var group = [Float](repeating: 0, count: size * d)
    for _ in 0..<max(1, candidates) {
        for i in 0..<size { for j in 0..<d { group[i * d + j] = g.mean[j] + g.std[j] * Float(rng.nextNormal()) } }
        let s = groupScore(group, dimension: d, gaussian: g, skewWeight: skewWeight)
        if s < bestScore {
            bestScore = s
            best = group
        }
    }
    return (best, bestScore)
}
