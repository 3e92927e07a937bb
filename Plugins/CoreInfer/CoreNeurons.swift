import Formats
import Foundation

/// CoreInfer's stability-guided sentence core neurons (Wang et al. 2024) of one layer from its FFN
/// activations X [tokens, dff] during prefill, by the released rule (convert_opt_model.py L28–36):
///   k = int(α · count(X > 0) / tokens); each token's core set = its top-k neurons by activation
///   (ties to the lower index); count how often each neuron is in a token core set; the candidates are
///   the neurons counted at least once; the sentence core set = the first min(#candidates, int(β · dff))
///   candidates by count, descending (ties to the lower index — the reference's torch sort is unstable
///   there). A short prompt can therefore keep fewer than int(β · dff) neurons. `padded` restores the
///   earlier rule that filled the set up to int(β · dff) with uncounted neurons (lowest index first).
///   Returned sorted ascending.
public func sentenceCoreNeurons(_ x: [Float], tokens: Int, dff: Int, alpha: Double, beta: Double, padded: Bool = false) -> [Int] {
    precondition(x.count == tokens * dff, "activations \(x.count) ≠ \(tokens) × \(dff)")
    guard tokens > 0, dff > 0 else { return [] }
    let counts = tokenCoreCounts(x, tokens: tokens, dff: dff, alpha: alpha)
    let keep = Limits.clampedCount(beta * Double(dff), atMost: dff)
    let candidates = padded ? Array(0..<dff) : (0..<dff).filter { counts[$0] > 0 }
    let ranked = candidates.sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }
    return ranked.prefix(keep).sorted()
}

/// How often each neuron is in a token's core set (its top k = int(α · count(X > 0)/tokens) neurons,
/// ties to the lower index): the frequency behind sentence core sets and cluster signatures.
public func tokenCoreCounts(_ x: [Float], tokens: Int, dff: Int, alpha: Double) -> [Int] {
    var counts = [Int](repeating: 0, count: dff)
    guard tokens > 0, dff > 0 else { return counts }
    let positive = x.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
    let k = Limits.clampedCount(alpha * Double(positive) / Double(tokens), atMost: dff)
    guard k > 0 else { return counts }
    for t in 0..<tokens {
        let row = t * dff
        let order = (0..<dff).sorted { x[row + $0] > x[row + $1] || (x[row + $0] == x[row + $1] && $0 < $1) }
        for n in order.prefix(k) { counts[n] += 1 }
    }
    return counts
}

/// The layers CoreInfer converts: start < l < end. The reference uses 5 and 27 of 32 layers
/// (LLaMA-7B, OPT-6.7B); for other depths the same fractions are scaled and rounded:
/// start = round(5/32 · L), end = round(27/32 · L). Explicit values win.
public func convertedLayers(total: Int, start: Int?, end: Int?) -> Range<Int> {
    let s = start ?? Int((5.0 / 32.0 * Double(total)).rounded())
    let e = end ?? Int((27.0 / 32.0 * Double(total)).rounded())
    let lower = max(s + 1, 0), upper = min(e, total)
    return lower < upper ? lower..<upper : 0..<0
}
