import Foundation
import NN
import Tensors

/// Faithfulness and localisation of class-activation maps.
///
/// - Relative confidence drop (Finer-CAM's metric): RD = (p_c − p_c*) − (p_d − p_d*), p before and p*
///   after masking the top `fraction` of map pixels; c the target, d its most similar class (closest
///   logit). Masked pixels are set to 0 in normalised input space (the dataset mean colour) — the
///   fill is not specified by the paper; this is the reproduction's choice, documented.
/// - Deletion / insertion (Petsiuk et al. 2018): pixels removed from (or inserted into a zero image)
///   most-important first in `steps` equal steps; the curve is p_c after each step; AUC by the
///   trapezoid rule over [0, 1]. Lower deletion and higher insertion AUC are better.
/// - Pointing game: whether the map's peak lies inside a given part mask; energy: the share of the
///   map's mass inside it.
public struct CAMMetrics: Sendable {
    public var relativeDrop: [Double]
    public var deletionAUC: [Double]
    public var insertionAUC: [Double]
}

public func faithfulness(
    _ classifier: ViTClassifier, images: Tensor, maps: Tensor, targets: [Int], similar: [Int],
    fraction: Double = 0.05, steps: Int = 16
) throws -> CAMMetrics {
    try faithfulness(
        images: images, maps: maps, targets: targets, similar: similar, classes: classifier.config.numClasses,
        fraction: fraction, steps: steps
    ) { batch in
        GradMode.disabled { classifier.model.forward(Variable(batch)).logits }
    }
}

/// The same metrics for any model given as `logits(images [B, 3, S, S]) → [B, classes]` (e.g. Prompt-CAM).
public func faithfulness(
    images: Tensor, maps: Tensor, targets: [Int], similar: [Int], classes: Int,
    fraction: Double = 0.05, steps: Int = 16, logits: (Tensor) throws -> Variable
) throws -> CAMMetrics {
    let n = images.shape[0], s = images.shape[2], plane = s * s
    guard maps.shape == [n, s, s] else { throw CAMError("maps \(maps.shape) do not match images \(images.shape)") }
    let pixels = try images.scalars(as: Float.self), m = try maps.scalars(as: Float.self)
    // Pixel order per image: most important first (ties to the lower index).
    let orders: [[Int]] = (0..<n).map { i in
        (0..<plane).sorted { a, b in m[i * plane + a] > m[i * plane + b] || (m[i * plane + a] == m[i * plane + b] && a < b) }
    }
    func probabilities(_ batch: [Float]) throws -> [Float] {
        let z = try logits(try Tensor(batch, shape: [batch.count / (3 * plane), 3, s, s]))
        return try GradMode.disabled { z.softmax() }.value.scalars(as: Float.self)
    }
    let before = try probabilities(pixels)
    // Relative drop: one masked copy per image.
    var masked = pixels
    let k = Int((Double(plane) * fraction).rounded())
    for i in 0..<n { for p in orders[i].prefix(k) { for c in 0..<3 { masked[(i * 3 + c) * plane + p] = 0 } } }
    let after = try probabilities(masked)
    let rd = (0..<n).map { i in
        Double(before[i * classes + targets[i]] - after[i * classes + targets[i]]) - Double(before[i * classes + similar[i]] - after[i * classes + similar[i]])
    }
    // Deletion and insertion curves.
    var deletion = [[Double]](repeating: [], count: n), insertion = [[Double]](repeating: [], count: n)
    for step in 0...steps {
        let cut = plane * step / steps
        var del = pixels, ins = [Float](repeating: 0, count: pixels.count)
        for i in 0..<n {
            for p in orders[i].prefix(cut) {
                for c in 0..<3 {
                    let j = (i * 3 + c) * plane + p
                    del[j] = 0
                    ins[j] = pixels[j]
                }
            }
        }
        let pd = try probabilities(del), pi = try probabilities(ins)
        for i in 0..<n {
            deletion[i].append(Double(pd[i * classes + targets[i]]))
            insertion[i].append(Double(pi[i * classes + targets[i]]))
        }
    }
    func auc(_ curve: [Double]) -> Double {
        guard curve.count > 1 else { return curve.first ?? 0 }
        var a = 0.0
        for j in 1..<curve.count { a += (curve[j] + curve[j - 1]) / 2 }
        return a / Double(curve.count - 1)
    }
    return CAMMetrics(relativeDrop: rd, deletionAUC: deletion.map(auc), insertionAUC: insertion.map(auc))
}

/// Whether each map's peak (first maximum) lies in its mask, and the share of its mass there.
public func pointingGame(maps: Tensor, masks: [[Bool]]) throws -> (hits: [Bool], energy: [Double]) {
    let n = maps.shape[0], plane = maps.shape[1] * maps.shape[2]
    let m = try maps.scalars(as: Float.self)
    var hits: [Bool] = [], energy: [Double] = []
    for i in 0..<n {
        let row = m[(i * plane)..<((i + 1) * plane)]
        let peak = row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }! - i * plane
        hits.append(masks[i][peak])
        let total = row.reduce(0.0) { $0 + Double($1) }
        let inside = zip(row, masks[i]).reduce(0.0) { $0 + ($1.1 ? Double($1.0) : 0) }
        energy.append(total > 0 ? inside / total : 0)
    }
    return (hits, energy)
}
