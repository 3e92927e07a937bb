import Foundation
import MenagerieKit
import Tensors

/// The ActivityNet-1.3 detection and proposal metrics, ported from the official
/// `Evaluation/eval_detection.py`, `eval_proposal.py` and `utils.py` step for step.
///
/// One deliberate difference: where scores (or tIoUs) tie, the official code follows numpy's
/// unstable `argsort()[::-1]`; here ties keep input order (file order of videos, then entries).
public enum ActivityNetEvaluation {
    /// `np.linspace(0.5, 0.95, 10)`, computed the way numpy does (start + i · step).
    public static let defaultThresholds: [Double] = linspace(0.5, 0.95, 10)

    static func linspace(_ a: Double, _ b: Double, _ n: Int) -> [Double] {
        guard n > 1 else { return [a] }
        let step = (b - a) / Double(n - 1)
        return (0..<n).map { $0 == n - 1 ? b : a + Double($0) * step }
    }

    /// `utils.segment_iou`: intersection clipped at 0 over the union. A zero union (two identical
    /// zero-length segments) gives 0 here; numpy gives NaN.
    @inline(__always)
    public static func tIoU(_ s0: Double, _ e0: Double, _ s1: Double, _ e1: Double) -> Double {
        let inter = max(0, min(e0, e1) - max(s0, s1))
        let union = (e1 - s1) + (e0 - s0) - inter
        return union > 0 ? inter / union : 0
    }

    /// `utils.interpolated_prec_rec` (VOC 2011).
    public static func interpolatedAP(precision: [Double], recall: [Double]) -> Double {
        var mprec = [0.0] + precision + [0.0]
        let mrec = [0.0] + recall + [1.0]
        for i in stride(from: mprec.count - 2, through: 0, by: -1) { mprec[i] = max(mprec[i], mprec[i + 1]) }
        var ap = 0.0
        for i in 1..<mrec.count where mrec[i] != mrec[i - 1] { ap += (mrec[i] - mrec[i - 1]) * mprec[i] }
        return ap
    }

    public struct DetectionResult: Sendable {
        public var thresholds: [Double]
        public var labels: [String]
        /// ap[threshold][class]
        public var ap: [[Double]]
        public var mAP: [Double]
        public var averageMAP: Double
        public var groundTruthCount: Int
        public var predictionCount: Int
        public var ignoredPredictions: Int
        public var classesWithoutPredictions: [String]
    }

    /// What to do with a prediction whose label is not a ground-truth class of the subset. The
    /// official code raises (KeyError); `ignore` drops them and reports how many.
    public enum UnknownLabels: String, Sendable { case error, ignore }

    public static func detection(
        groundTruth: ActivityNet.GroundTruth, predictions: ActivityNet.Predictions, subset: String = "validation",
        thresholds: [Double] = defaultThresholds, unknownLabels: UnknownLabels = .error
    ) throws -> DetectionResult {
        let videos = groundTruth.subset(subset)
        guard !videos.isEmpty else {
            let subsets = Set(groundTruth.videos.map(\.subset)).sorted()
            throw MenagerieError.invalidArgument(
                "the ground truth has no video in subset '\(subset)' (subsets present: \(subsets.joined(separator: ", "))); pass --set subset=NAME or subset=all"
            )
        }
        let labels = groundTruth.labels(subset: subset)
        guard !labels.isEmpty else { throw MenagerieError.invalidArgument("the ground truth has no annotation in subset '\(subset)'") }
        let labelIndex = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })

        // Videos numbered in ground-truth order, then prediction-only videos after them.
        var videoIndex: [String: Int] = [:]
        for v in videos where videoIndex[v.id] == nil { videoIndex[v.id] = videoIndex.count }
        // Ground truth per class and video: segments in frame order.
        var gtByClass = [[Int: [(Double, Double)]]](repeating: [:], count: labels.count)
        var npos = [Int](repeating: 0, count: labels.count)
        for v in videos {
            let vi = videoIndex[v.id]!
            for a in v.annotations {
                let c = labelIndex[a.label]!
                gtByClass[c][vi, default: []].append((a.start, a.end))
                npos[c] += 1
            }
        }
        // Predictions per class in input order.
        var predByClass = [[(video: Int, start: Double, end: Double, score: Double)]](repeating: [], count: labels.count)
        var ignored = 0
        for (id, dets) in predictions.videos {
            let vi: Int
            if let i = videoIndex[id] {
                vi = i
            } else {
                vi = videoIndex.count
                videoIndex[id] = vi
            }
            for (k, d) in dets.enumerated() {
                guard let c = labelIndex[d.label] else {
                    if unknownLabels == .ignore {
                        ignored += 1
                        continue
                    }
                    throw MenagerieError.invalidArgument(
                        "prediction \(k) of video '\(id)' has label '\(d.label)', which is not a ground-truth class of subset '\(subset)' (\(labels.count) classes: \(labels.prefix(8).joined(separator: ", "))\(labels.count > 8 ? ", …" : "")).\(didYouMean(d.label, in: labels)) The official evaluator raises here too; pass --set unknown_labels=ignore to drop such predictions."
                    )
                }
                predByClass[c].append((vi, d.start, d.end, d.score))
            }
        }

        let nt = thresholds.count
        var apByClass = [[Double]](repeating: [Double](repeating: 0, count: nt), count: labels.count)
        apByClass.withUnsafeMutableBufferPointer { out in
            let box = UncheckedBox(out.baseAddress!)
            Parallel.chunks(labels.count, grain: 1) { range in
                for c in range { box.value[c] = classAP(gt: gtByClass[c], npos: npos[c], predictions: predByClass[c], thresholds: thresholds) }
            }
        }
        var ap = [[Double]](repeating: [Double](repeating: 0, count: labels.count), count: nt)
        for t in 0..<nt { for c in 0..<labels.count { ap[t][c] = apByClass[c][t] } }
        let mAP = ap.map { $0.reduce(0, +) / Double(labels.count) }
        return DetectionResult(
            thresholds: thresholds, labels: labels, ap: ap, mAP: mAP, averageMAP: mAP.reduce(0, +) / Double(nt),
            groundTruthCount: npos.reduce(0, +), predictionCount: predByClass.reduce(0) { $0 + $1.count },
            ignoredPredictions: ignored,
            classesWithoutPredictions: labels.indices.filter { predByClass[$0].isEmpty }.map { labels[$0] })
    }

    /// `compute_average_precision_detection` for one class.
    static func classAP(
        gt: [Int: [(Double, Double)]], npos: Int, predictions: [(video: Int, start: Double, end: Double, score: Double)],
        thresholds: [Double]
    ) -> [Double] {
        let nt = thresholds.count, np = predictions.count
        guard np > 0 else { return [Double](repeating: 0, count: nt) }
        // Flat ids for the ground truth of this class, to lock per threshold.
        var gtOffset: [Int: Int] = [:], total = 0
        for (v, list) in gt.sorted(by: { $0.key < $1.key }) {
            gtOffset[v] = total
            total += list.count
        }
        var lock = [Bool](repeating: false, count: nt * max(total, 1))
        // Descending score; ties keep input order.
        let order = predictions.indices.sorted { a, b in
            predictions[a].score != predictions[b].score ? predictions[a].score > predictions[b].score : a < b
        }
        var tp = [[Double]](repeating: [Double](repeating: 0, count: np), count: nt)
        var fp = tp
        var tiou: [Double] = [], byTIoU: [Int] = []
        for (rank, pi) in order.enumerated() {
            let p = predictions[pi]
            guard let list = gt[p.video] else {
                for t in 0..<nt { fp[t][rank] = 1 }
                continue
            }
            let base = gtOffset[p.video]!
            tiou.removeAll(keepingCapacity: true)
            for g in list { tiou.append(tIoU(p.start, p.end, g.0, g.1)) }
            byTIoU = Array(list.indices)
            byTIoU.sort { tiou[$0] != tiou[$1] ? tiou[$0] > tiou[$1] : $0 < $1 }
            for t in 0..<nt {
                var matched = false
                for j in byTIoU {
                    if tiou[j] < thresholds[t] { break }
                    if lock[t * total + base + j] { continue }
                    lock[t * total + base + j] = true
                    matched = true
                    break
                }
                if matched { tp[t][rank] = 1 } else { fp[t][rank] = 1 }
            }
        }
        var ap = [Double](repeating: 0, count: nt)
        for t in 0..<nt {
            var ctp = 0.0, cfp = 0.0
            var precision = [Double](repeating: 0, count: np), recall = precision
            for i in 0..<np {
                ctp += tp[t][i]
                cfp += fp[t][i]
                recall[i] = ctp / Double(npos)
                precision[i] = ctp / (ctp + cfp)
            }
            ap[t] = interpolatedAP(precision: precision, recall: recall)
        }
        return ap
    }

    // MARK: Proposals

    public struct ProposalResult: Sendable {
        public var thresholds: [Double]
        /// recall[threshold][j] at proposalsPerVideo[j]
        public var recall: [[Double]]
        public var averageRecall: [Double]
        public var proposalsPerVideo: [Double]
        /// Area under the AR-vs-AN curve (trapezoids), and as a percentage of the largest AN.
        public var auc: Double
        public var aucPercent: Double
    }

    /// `average_recall_vs_avg_nr_proposals` (`maxAverageProposals` 0: all proposals, the official
    /// default None).
    public static func proposals(
        groundTruth: ActivityNet.GroundTruth, proposals: ActivityNet.Predictions, subset: String = "validation",
        thresholds: [Double] = defaultThresholds, maxAverageProposals: Double = 100
    ) throws -> ProposalResult {
        let videos = groundTruth.subset(subset).filter { !$0.annotations.isEmpty }
        guard !videos.isEmpty else { throw MenagerieError.invalidArgument("the ground truth has no annotated video in subset '\(subset)'") }
        // The official code lists videos from the ground-truth frame, so a video id appears once.
        var seen = Set<String>(), unique: [ActivityNet.Video] = []
        for v in videos where seen.insert(v.id).inserted { unique.append(v) }
        let totalProposals = proposals.count
        guard totalProposals > 0 else { throw MenagerieError.invalidArgument("the proposals file holds no proposal") }
        let nv = Double(unique.count)
        let maxAN = maxAverageProposals > 0 ? maxAverageProposals : Double(totalProposals) / nv
        let ratio = maxAN * nv / Double(totalProposals)
        var byVideo: [String: [ActivityNet.Detection]] = [:]
        for (id, d) in proposals.videos { byVideo[id, default: []] += d }

        // Per video: tIoU of every ground truth (rows) with the kept proposals (columns), best first.
        var scores: [(rows: Int, cols: Int, tiou: [Double])] = []
        var totalKept = 0
        for v in unique {
            let gts = v.annotations
            guard let list = byVideo[v.id], !list.isEmpty else {
                scores.append((gts.count, 1, [Double](repeating: 0, count: gts.count)))
                continue
            }
            let sorted = list.indices.sorted { list[$0].score != list[$1].score ? list[$0].score > list[$1].score : $0 < $1 }
            let kept = Limits.clampedCount(Double(list.count) * ratio, atMost: list.count)
            totalKept += kept
            var m = [Double](repeating: 0, count: gts.count * kept)
            for (r, g) in gts.enumerated() {
                for c in 0..<kept {
                    let p = list[sorted[c]]
                    m[r * kept + c] = tIoU(p.start, p.end, g.start, g.end)
                }
            }
            scores.append((gts.count, kept, m))
        }
        guard totalKept > 0 else {
            throw MenagerieError.invalidArgument("no proposal is kept at \(maxAN) proposals per video; raise max_proposals")
        }
        let scale = maxAN * nv / Double(totalKept)
        let pcn = (1...100).map { Double($0) / 100.0 * scale }
        let positives = Double(scores.reduce(0) { $0 + $1.rows })
        var recall = [[Double]](repeating: [Double](repeating: 0, count: 100), count: thresholds.count)
        for (ti, thr) in thresholds.enumerated() {
            var matches = [Double](repeating: 0, count: 100)
            for s in scores {
                // The first column at which each ground truth is matched (cols when never).
                var first = [Int](repeating: s.cols, count: s.rows)
                for r in 0..<s.rows {
                    for c in 0..<s.cols where s.tiou[r * s.cols + c] >= thr {
                        first[r] = c
                        break
                    }
                }
                for j in 0..<100 {
                    let n = Limits.clampedCount(Double(s.cols) * pcn[j], atMost: s.cols)
                    matches[j] += Double(first.filter { $0 < n }.count)
                }
            }
            for j in 0..<100 { recall[ti][j] = matches[j] / positives }
        }
        let avg = (0..<100).map { j in thresholds.indices.reduce(0.0) { $0 + recall[$1][j] } / Double(thresholds.count) }
        let perVideo = pcn.map { $0 * (Double(totalKept) / nv) }
        var auc = 0.0
        for j in 1..<100 { auc += (perVideo[j] - perVideo[j - 1]) * (avg[j] + avg[j - 1]) / 2 }
        return ProposalResult(
            thresholds: thresholds, recall: recall, averageRecall: avg, proposalsPerVideo: perVideo,
            auc: auc, aucPercent: 100 * auc / perVideo[99])
    }
}
