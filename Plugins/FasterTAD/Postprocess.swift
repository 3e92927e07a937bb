import Foundation
import MenagerieKit

/// A scored, labelled temporal segment (seconds or normalised time; Soft-NMS does not care).
public struct ScoredSegment: Equatable, Sendable {
    public var start: Double
    public var end: Double
    public var score: Double
    public var label: Int
    public init(start: Double, end: Double, score: Double, label: Int) {
        self.start = start
        self.end = end
        self.score = score
        self.label = label
    }
}

/// Soft-NMS (Bodla et al. 2017) on 1-D segments, as the BMN/G-TAD/challenge pipelines run it:
/// repeatedly keep the highest-scoring segment and decay every other segment's score by its tIoU
/// with the kept one, until `topN` are kept.
public struct SoftNMS: Sendable {
    public enum Method: String, Sendable { case gaussian, linear, hard }
    /// Gaussian: score · exp(−tIoU² / σ).
    public var sigma = 0.4
    public var method = Method.gaussian
    /// Only segments overlapping the kept one by more than this are decayed (linear and hard use it
    /// as the NMS threshold; 0 with gaussian decays everything that overlaps).
    public var threshold = 0.0
    public var topN = 100
    /// Segments whose decayed score falls below this are dropped.
    public var minScore = 0.0
    /// Run per label (true) or across labels (false, proposals / class-agnostic).
    public var perLabel = false

    public init(sigma: Double = 0.4, method: Method = .gaussian, threshold: Double = 0, topN: Int = 100, minScore: Double = 0, perLabel: Bool = false) {
        self.sigma = sigma
        self.method = method
        self.threshold = threshold
        self.topN = topN
        self.minScore = minScore
        self.perLabel = perLabel
    }

    public func callAsFunction(_ input: [ScoredSegment]) -> [ScoredSegment] {
        guard perLabel else { return run(input) }
        var groups: [Int: [ScoredSegment]] = [:]
        for s in input { groups[s.label, default: []].append(s) }
        let kept = groups.keys.sorted().flatMap { run(groups[$0]!) }
        // Merge the labels' survivors, best first, ties by label then order.
        return Array(
            kept.enumerated().sorted { $0.element.score != $1.element.score ? $0.element.score > $1.element.score : $0.offset < $1.offset }
                .prefix(topN).map(\.element))
    }

    private func run(_ input: [ScoredSegment]) -> [ScoredSegment] {
        var pool = input
        var kept: [ScoredSegment] = []
        kept.reserveCapacity(min(topN, pool.count))
        while !pool.isEmpty && kept.count < topN {
            // The best remaining; ties keep input order.
            var best = 0
            for i in 1..<pool.count where pool[i].score > pool[best].score { best = i }
            let top = pool.remove(at: best)
            guard top.score >= minScore else { break }
            kept.append(top)
            var w = 0
            for i in 0..<pool.count {
                var s = pool[i]
                let iou = ActivityNetEvaluation.tIoU(top.start, top.end, s.start, s.end)
                if iou > threshold {
                    switch method {
                    case .gaussian: s.score *= exp(-(iou * iou) / sigma)
                    case .linear: s.score *= 1 - iou
                    case .hard: continue // suppressed outright
                    }
                }
                pool[w] = s
                w += 1
            }
            pool.removeLast(pool.count - w)
        }
        return kept
    }
}

/// Combines several detectors' outputs for one video.
public enum Ensemble {
    public enum Mode: String, Sendable { case merge, fusion }

    /// `merge`: pool every detector's segments (scores × the detector's weight) and re-run Soft-NMS.
    /// `fusion`: weighted segment fusion, 1-D WBF (Solovyev et al. 2021): segments of one label,
    /// best first, join the first cluster whose fused segment overlaps them by ≥ `fusionIoU`; a
    /// cluster's segment is the score-weighted mean of its members' bounds, its score the mean member
    /// score × min(members, detectors) / detectors (agreement rewarded, a lone detector damped);
    /// Soft-NMS then orders and trims the fused list.
    public static func combine(_ lists: [[ScoredSegment]], weights: [Double], mode: Mode, fusionIoU: Double, nms: SoftNMS) -> [ScoredSegment] {
        let pooled = zip(lists, weights).flatMap { list, w in list.map { ScoredSegment(start: $0.start, end: $0.end, score: $0.score * w, label: $0.label) } }
        switch mode {
        case .merge: return nms(pooled)
        case .fusion:
            let order = pooled.indices.sorted { pooled[$0].score != pooled[$1].score ? pooled[$0].score > pooled[$1].score : $0 < $1 }
            var clusters: [(fused: ScoredSegment, members: [ScoredSegment])] = []
            for i in order {
                let s = pooled[i]
                if let c = clusters.firstIndex(where: {
                    $0.fused.label == s.label && ActivityNetEvaluation.tIoU($0.fused.start, $0.fused.end, s.start, s.end) >= fusionIoU
                }) {
                    clusters[c].members.append(s)
                    let m = clusters[c].members
                    let wsum = m.reduce(0) { $0 + $1.score }
                    clusters[c].fused.start = wsum > 0 ? m.reduce(0) { $0 + $1.start * $1.score } / wsum : s.start
                    clusters[c].fused.end = wsum > 0 ? m.reduce(0) { $0 + $1.end * $1.score } / wsum : s.end
                } else {
                    clusters.append((s, [s]))
                }
            }
            let k = Double(max(lists.count, 1))
            let fused = clusters.map { c -> ScoredSegment in
                var f = c.fused
                f.score = c.members.reduce(0) { $0 + $1.score } / Double(c.members.count) * min(Double(c.members.count), k) / k
                return f
            }
            return nms(fused)
        }
    }
}
