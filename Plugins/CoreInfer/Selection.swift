import Foundation

// CoreInfer's similarity-guided selection rules, as the released code computes them (cluster.py,
// convert/convert_*_sim.py; REFERENCES.md §4.2), with the released bugs not copied. Ties — equal
// activations within a token, equal counts — go to the lower neuron index everywhere (torch's sort and
// argsort are not stable there). The signal is OPT's fc1 pre-activation and LLaMA's gate_proj output
// (the SiLU's input), [rows, d_ff] row-major.

/// The released signature layer, 25 of 32, scaled to other depths: round(25/32 · L).
public func defaultSignatureLayer(total: Int) -> Int { min(max(Int((25.0 / 32.0 * Double(total)).rounded()), 0), max(total - 1, 0)) }

/// The released signature size, 3000 neurons (of 11008…16384), scaled down for narrower FFNs as the
/// fraction 3000/11008 (LLaMA-2-7B's width, the smallest the paper uses): min(3000, round(d_ff · 3000/11008)).
public func defaultSignatureSize(dff: Int) -> Int { min(3000, Int((Double(dff) * 3000.0 / 11008.0).rounded())) }

/// Counted neurons by count, descending, ties to the lower index (never-counted neurons are not ranked).
public func rankedCounted(_ counts: [Int]) -> [Int] {
    (0..<counts.count).filter { counts[$0] > 0 }.sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }
}

/// How often each neuron is among its row's top k(row) activations (ties to the lower index).
public func topKCounts(_ x: [Float], rows: Int, dff: Int, k: (Int) -> Int, into counts: inout [Int]) {
    precondition(x.count == rows * dff && counts.count == dff, "activations \(x.count) ≠ \(rows) × \(dff)")
    var order = [Int](repeating: 0, count: dff)
    for r in 0..<rows {
        let kr = min(max(k(r), 0), dff)
        guard kr > 0 else { continue }
        let row = r * dff
        for j in 0..<dff { order[j] = j }
        order.sort { x[row + $0] > x[row + $1] || (x[row + $0] == x[row + $1] && $0 < $1) }
        for n in order.prefix(kr) { counts[n] += 1 }
    }
}

func positiveCount(_ x: ArraySlice<Float>) -> Int { x.reduce(0) { $0 + ($1 > 0 ? 1 : 0) } }

/// The offline signature of one text (cluster.py L118–137): each token keeps its top
/// round(α · #positive of that token) neurons (per token; torch.round, half to even), the counts over
/// the text's tokens rank the counted neurons, and the first `size` are the signature (ranked order).
public func offlineSignature(_ x: [Float], tokens: Int, dff: Int, alpha: Double, size: Int) -> [Int] {
    var counts = [Int](repeating: 0, count: dff)
    topKCounts(
        x, rows: tokens, dff: dff,
        k: { r in
            Int((alpha * Double(positiveCount(x[(r * dff)..<((r + 1) * dff)]))).rounded(.toNearestOrEven))
        }, into: &counts)
    return Array(rankedCounted(counts).prefix(max(size, 0)))
}

/// The online signature of a prompt (convert_opt_model_sim.py L40–48): one k = int(α · #positive /
/// tokens) for every token, counts, the first `size` counted neurons by count.
public func onlineSignature(_ x: [Float], tokens: Int, dff: Int, alpha: Double, size: Int) -> [Int] {
    guard tokens > 0 else { return [] }
    let k = Int(alpha * Double(positiveCount(x[...])) / Double(tokens))
    var counts = [Int](repeating: 0, count: dff)
    topKCounts(x, rows: tokens, dff: dff, k: { _ in k }, into: &counts)
    return Array(rankedCounted(counts).prefix(max(size, 0)))
}

/// MultiLabelBinarizer(classes=range(0, width)).transform([signature]): ids ≥ width are ignored, as
/// scikit-learn does with unknown classes (the release's OPT binarizer has width d_ff − 1).
public func binarize(_ signature: [Int], width: Int) -> [Double] {
    var v = [Double](repeating: 0, count: width)
    for n in signature where (0..<width).contains(n) { v[n] = 1 }
    return v
}

/// KMeans.predict: the centroid at the least squared Euclidean distance, the first on a tie.
public func nearestCentroid(_ v: [Double], _ centroids: [[Double]]) -> Int {
    var best = 0, bestDistance = Double.infinity
    for (c, centroid) in centroids.enumerated() {
        let d = squaredDistance(v, centroid)
        if d < bestDistance { (best, bestDistance) = (c, d) }
    }
    return best
}

func squaredDistance(_ a: [Double], _ b: [Double]) -> Double {
    var s = 0.0
    for i in 0..<min(a.count, b.count) { s += (a[i] - b[i]) * (a[i] - b[i]) }
    return s
}

/// One cluster's neuron list at one layer (cluster.py L276–291, statistics fresh for the cluster):
/// its members' tokens concatenated; k = int(α · #positive / rows) for every row; counts; the first
/// int(#distinct · β) counted neurons by count (ranked order). Built in two passes over the members
/// (`observe` all, then `count` all with `k(alpha:)`), so no activations need to be kept.
public struct ClusterNeuronCounter: Sendable {
    public private(set) var positives = 0, rows = 0
    public private(set) var counts: [Int]
    let dff: Int
    public init(dff: Int) {
        self.dff = dff
        counts = [Int](repeating: 0, count: dff)
    }
    public mutating func observe(_ x: [Float], rows r: Int) {
        positives += positiveCount(x[...])
        rows += r
    }
    public mutating func observe(positives p: Int, rows r: Int) {
        positives += p
        rows += r
    }
    public func k(alpha: Double) -> Int { rows > 0 ? Int(alpha * Double(positives) / Double(rows)) : 0 }
    public mutating func count(_ x: [Float], rows r: Int, k: Int) { topKCounts(x, rows: r, dff: dff, k: { _ in k }, into: &counts) }
    public func list(beta: Double) -> [Int] {
        let ranked = rankedCounted(counts)
        return Array(ranked.prefix(Int(Double(ranked.count) * beta)))
    }
}

/// `ClusterNeuronCounter` over activations already concatenated ([rows, d_ff]).
public func clusterNeuronList(_ x: [Float], rows: Int, dff: Int, alpha: Double, beta: Double) -> [Int] {
    var c = ClusterNeuronCounter(dff: dff)
    c.observe(x, rows: rows)
    c.count(x, rows: rows, k: c.k(alpha: alpha))
    return c.list(beta: beta)
}
