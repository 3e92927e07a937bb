import Foundation
import Tensors

/// How Finer-CAM compares the target with its most similar classes.
public struct FinerOptions: Sendable {
    /// α: the weight of the comparison classes (0 gives the base CAM).
    public var alpha: Float = 1
    /// Positions in the order of closeness of logits (0 is the target itself); clamped to C − 1.
    public var ranks: [Int] = [1, 2, 3]
    /// "code": S = Σ_i p_i·(y_t − α·y_i) / (Σ_i p_i + 1e-9) with p = softmax(y), not detached (the
    /// released code and pytorch-grad-cam); "paper": S = (1/T) Σ_i (y_t − α·y_i), uniform weights.
    public var weighting = "code"
    public init(alpha: Float = 1, ranks: [Int] = [1, 2, 3], weighting: String = "code") {
        (self.alpha, self.ranks, self.weighting) = (alpha, ranks, weighting)
    }

    /// The comparison classes of target `t` in one row of logits: classes by closeness of logit to
    /// the target's (stable: ties to the lower index), at the positions `ranks`.
    public func comparisons(_ row: [Float], target t: Int) -> [Int] {
        let order = row.indices.sorted { a, b in
            let da = abs(row[a] - row[t]), db = abs(row[b] - row[t])
            return da < db || (da == db && a < b)
        }
        return ranks.map { order[min(max($0, 0), row.count - 1)] }
    }

    /// Finer-CAM's score of one output row with comparison classes chosen beforehand (from the
    /// unmasked output; softmax weights from this row, as pytorch-grad-cam's target does).
    public func score(_ logits: [Float], target t: Int, comparisons: [Int]) -> Float {
        guard !comparisons.isEmpty else { return logits[t] }
        let m = logits.max()!
        let e = logits.map { Foundation.exp($0 - m) }
        let z = e.reduce(0, +)
        var numerator: Float = 0, denominator: Float = 0
        for j in comparisons {
            let w: Float = weighting == "paper" ? 1 : e[j] / z
            numerator += w * (logits[t] - alpha * logits[j])
            denominator += w
        }
        return numerator / (denominator + 1e-9)
    }

    /// S of each row of `logits` [M, C] and ∂S/∂y [M, C], the comparison classes of row i taken from
    /// `reference` row i and `targets[i]`. The gradient is the autograd of the same expression
    /// (softmax weights not detached).
    public func scoreAndGradients(logits: Tensor, reference: Tensor, targets: [Int]) throws -> (scores: [Float], gradients: [Float]) {
        let m = logits.shape[0], c = logits.shape[1]
        let y = try logits.scalars(as: Float.self), ref = try reference.scalars(as: Float.self)
        let comparisons = (0..<m).map { i in self.comparisons(Array(ref[(i * c)..<((i + 1) * c)]), target: targets[i]) }
        let scores = (0..<m).map { i in score(Array(y[(i * c)..<((i + 1) * c)]), target: targets[i], comparisons: comparisons[i]) }
        let gradients: [Float] = try GradMode.with(true) {
            let leaf = Variable(logits, requiresGrad: true)
            let probabilities = leaf.softmax()
            var total: Variable? = nil
            for i in 0..<m {
                let yi = leaf.slice(axis: 0, i..<(i + 1)).reshaped([c])
                let yt = yi.slice(axis: 0, targets[i]..<(targets[i] + 1))
                var s = yt
                if !comparisons[i].isEmpty {
                    let pi = probabilities.slice(axis: 0, i..<(i + 1)).reshaped([c])
                    var numerator: Variable? = nil, denominator: Variable? = nil
                    for j in comparisons[i] {
                        let term = yt - yi.slice(axis: 0, j..<(j + 1)) * alpha
                        let w = weighting == "paper" ? Variable(Tensor.filled(1, shape: [1])) : pi.slice(axis: 0, j..<(j + 1))
                        numerator = numerator.map { $0 + w * term } ?? w * term
                        denominator = denominator.map { $0 + w } ?? w
                    }
                    s = numerator! / (denominator! + 1e-9)
                }
                total = total.map { $0 + s } ?? s
            }
            let g = Autograd.gradients(of: total!.sum(), wrt: [leaf])[0]
            return try g.map { try $0.value.scalars(as: Float.self) } ?? [Float](repeating: 0, count: m * c)
        }
        return (scores, gradients)
    }
}
