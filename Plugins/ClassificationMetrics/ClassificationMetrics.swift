import Foundation
import Tensors

/// Classification scores computed from per-class scores and integer labels.
///
/// - Top-k accuracy: a sample counts when its true class ranks among the k highest scores;
///   ties are broken by lower class index (as a stable descending sort would).
/// - Confusion matrix: rows are true classes, columns predicted classes (argmax, ties → lower index).
/// - Per-class recall: diagonal / row sum; `nil` for a class with no samples.
/// - Expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks", Eq. 3):
///   ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)| over `bins` equal-width confidence bins
///   (b/B, (b+1)/B], confidence = max softmax probability.
public struct ClassificationReport: Codable, Sendable, Equatable {
    public struct Bin: Codable, Sendable, Equatable {
        public var lower: Double
        public var upper: Double
        public var count: Int
        public var accuracy: Double?
        public var confidence: Double?
    }
    public var samples: Int
    public var classes: Int
    public var accuracy: Double
    public var topK: [String: Double]
    public var perClassRecall: [Double?]
    public var balancedAccuracy: Double
    public var ece: Double
    public var reliability: [Bin]
    public var confusion: [[Int]]

    enum CodingKeys: String, CodingKey {
        case samples, classes, accuracy, ece, reliability, confusion
        case topK = "top_k", perClassRecall = "per_class_recall", balancedAccuracy = "balanced_accuracy"
    }
}

public enum ClassificationMetricsError: Error, CustomStringConvertible {
    case shape(String)
    public var description: String {
        switch self {
        case .shape(let s): s
        }
    }
}

/// The largest number of calibration bins (the bins are arrays sized by an option).
public let maxBins = 1_000_000

/// Computes the report. `scores` is N×C row-major; `probabilities` says whether the rows are already
/// probabilities (otherwise a softmax is applied per row).
public func classificationReport(
    scores: [Double], samples n: Int, classes c: Int, labels: [Int],
    topK: [Int], bins: Int, probabilities: Bool
) throws -> ClassificationReport {
    guard n > 0, c > 0, !n.multipliedReportingOverflow(by: c).overflow, scores.count == n * c else {
        throw ClassificationMetricsError.shape("scores must be N×C with N, C > 0; got \(scores.count) values for N=\(n), C=\(c)")
    }
    guard labels.count == n else {
        throw ClassificationMetricsError.shape("labels has \(labels.count) entries but scores has \(n) rows")
    }
    if let bad = labels.firstIndex(where: { $0 < 0 || $0 >= c }) {
        throw ClassificationMetricsError.shape("label \(labels[bad]) at index \(bad) is outside 0..<\(c)")
    }
    guard bins > 0, bins <= maxBins else { throw ClassificationMetricsError.shape("bins must lie in 1…\(maxBins), got \(bins)") }
    // NaN or ±inf would poison every comparison and the bin index (an Int conversion that traps).
    if let bad = scores.firstIndex(where: { !$0.isFinite }) {
        throw ClassificationMetricsError.shape(
            "scores[\(bad / c), \(bad % c)] (flat index \(bad)) = \(scores[bad]) is not a finite number: "
                + "every score must be finite")
    }
    if probabilities, let bad = scores.firstIndex(where: { $0 < 0 || $0 > 1 }) {
        throw ClassificationMetricsError.shape(
            "scores[\(bad / c), \(bad % c)] (flat index \(bad)) = \(scores[bad]) is not a probability in 0…1 "
                + "(scores=probabilities); pass scores=logits for unnormalised scores")
    }

    var confusion = [[Int]](repeating: [Int](repeating: 0, count: c), count: c)
    var topHits = [Int](repeating: 0, count: topK.count)
    var binCount = [Int](repeating: 0, count: bins)
    var binCorrect = [Int](repeating: 0, count: bins)
    var binConfidence = [Double](repeating: 0, count: bins)
    var row = [Double](repeating: 0, count: c)

    for i in 0..<n {
        for j in 0..<c { row[j] = scores[i * c + j] }
        let y = labels[i]
        // Rank of the true class under a stable descending order.
        var rank = 0
        for j in 0..<c where row[j] > row[y] || (row[j] == row[y] && j < y) { rank += 1 }
        for (t, k) in topK.enumerated() where rank < k { topHits[t] += 1 }
        var pred = 0
        for j in 1..<max(c, 1) where row[j] > row[pred] { pred = j }
        confusion[y][pred] += 1
        // Confidence = the predicted class's probability.
        let confidence: Double
        if probabilities {
            confidence = row[pred]
        } else {
            var sum = 0.0
            for j in 0..<c { sum += Foundation.exp(row[j] - row[pred]) }
            confidence = 1 / sum
        }
        var b = Int((min(max(confidence, 0), 1) * Double(bins)).rounded(.up)) - 1
        b = min(max(b, 0), bins - 1)
        binCount[b] += 1
        binConfidence[b] += confidence
        if pred == y { binCorrect[b] += 1 }
    }

    var recall: [Double?] = []
    for k in 0..<c {
        let total = confusion[k].reduce(0, +)
        recall.append(total == 0 ? nil : Double(confusion[k][k]) / Double(total))
    }
    let present = recall.compactMap { $0 }
    let correct = (0..<c).reduce(0) { $0 + confusion[$1][$1] }
    var ece = 0.0
    var reliability: [ClassificationReport.Bin] = []
    for b in 0..<bins {
        let count = binCount[b]
        let acc = count > 0 ? Double(binCorrect[b]) / Double(count) : nil
        let conf = count > 0 ? binConfidence[b] / Double(count) : nil
        if let acc, let conf { ece += Double(count) / Double(n) * abs(acc - conf) }
        reliability.append(
            .init(
                lower: Double(b) / Double(bins), upper: Double(b + 1) / Double(bins),
                count: count, accuracy: acc, confidence: conf))
    }
    var top: [String: Double] = [:]
    for (t, k) in topK.enumerated() { top["\(k)"] = Double(topHits[t]) / Double(n) }
    return ClassificationReport(
        samples: n, classes: c, accuracy: Double(correct) / Double(n), topK: top,
        perClassRecall: recall, balancedAccuracy: present.reduce(0, +) / Double(present.count),
        ece: ece, reliability: reliability, confusion: confusion)
}
