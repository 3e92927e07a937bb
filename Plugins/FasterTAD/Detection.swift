import Foundation
import MenagerieKit
import NN
import Tensors

/// The parts of Faster-TAD around the network: proposal candidates from boundary probabilities,
/// fake proposals, label assignment, the losses, and decoding detections.
public enum TAD {
    /// Snippet i's boundary position in normalised time.
    @inline(__always) static func position(_ i: Int, _ t: Int) -> Double { (Double(i) + 0.5) / Double(t) }

    /// Start / end candidates (BSN's rule: a local peak, or above half the video's maximum), paired
    /// into proposals no longer than `maxDuration`, scored p_start · p_end, best `top` kept.
    static func candidates(start: ArraySlice<Float>, end: ArraySlice<Float>, maxDuration: Double, top: Int) -> [(s: Double, e: Double, score: Double)] {
        let ps = Array(start), pe = Array(end), t = ps.count
        func peaks(_ p: [Float]) -> [Int] {
            let m = p.max() ?? 0
            return (0..<t).filter { i in
                p[i] > 0.5 * m || ((i == 0 || p[i] > p[i - 1]) && (i == t - 1 || p[i] > p[i + 1]))
            }
        }
        let starts = peaks(ps), ends = peaks(pe)
        var out: [(Double, Double, Double)] = []
        for i in starts {
            for j in ends where j > i && Double(j - i) / Double(t) <= maxDuration + 1e-9 {
                out.append((position(i, t), position(j, t), Double(ps[i] * pe[j])))
            }
        }
        out.sort { $0.2 > $1.2 }
        return Array(out.prefix(top))
    }

    /// BMN's boundary labels: for each snippet, the largest share of it covered by a region of
    /// three snippets centred on a ground-truth start (row 0) or end (row 1).
    public static func boundaryTargets(_ segments: [(start: Double, end: Double, label: Int)], snippets t: Int) -> [Float] {
        var out = [Float](repeating: 0, count: 2 * t)
        let half = 1.5 / Double(t), gap = 1 / Double(t)
        for (row, points) in [segments.map(\.start), segments.map(\.end)].enumerated() {
            for i in 0..<t {
                let a = Double(i) * gap, b = a + gap
                var best = 0.0
                for p in points { best = max(best, max(0, min(b, p + half) - max(a, p - half)) / gap) }
                out[row * t + i] = Float(best)
            }
        }
        return out
    }

    /// BMN's balanced binary logistic loss on probabilities: positives are labels > 0.5, each side
    /// weighted so positives and negatives count equally.
    static func balancedBCE(_ p: Variable, labels: [Float]) -> Variable {
        let pos = labels.map { $0 > 0.5 ? Float(1) : 0 }
        let n = Float(labels.count), np = max(pos.reduce(0, +), 1)
        let ratio = n / np
        let c1 = 0.5 * ratio, c0 = ratio > 1 ? 0.5 * ratio / (ratio - 1) : 0.5
        let mask = Variable(Tensor(shape: p.shape, scalars: pos))
        let eps: Float = 1e-6
        let term = c1 * mask * (p + eps).log() + c0 * (1 - mask) * ((1 - p) + eps).log()
        return -term.mean()
    }

    /// Smooth-L1 (Huber with transition β), summed over elements.
    static func smoothL1(_ d: Variable, beta: Float) -> Variable {
        let v = d.value
        let values: [Float] = try! v.scalars()
        let small = Variable(Tensor(shape: v.shape, scalars: values.map { abs($0) < beta ? Float(1) : 0 }))
        let sign = Variable(Tensor(shape: v.shape, scalars: values.map { $0 >= 0 ? Float(1) : -1 }))
        return (small * (d * d) * (0.5 / beta) + (1 - small) * (sign * d - 0.5 * beta)).sum()
    }

    struct Assignment {
        var proposals: [(Double, Double)]
        /// 0 background, k + 1 class k.
        var labels: [Int]
        /// Regression targets (positives only; zeros for background).
        var targets: [Float]
    }

    struct TrainingOptions {
        var boundaryProposals = 32
        var fakePerGroundTruth = 4
        var fakeJitter = 0.1
        var randomProposals = 16
        var roisPerVideo = 64
        var positiveFraction = 0.5
        var positiveIoU = 0.5
        var fakeProposals = true
    }

    /// The second stage's training RoIs of one video: the network's own proposals, fake proposals
    /// (ground truth and jittered copies — the Fake-Proposal Generation Block), random segments;
    /// labelled by their best-overlapping ground truth, positives capped at a fraction.
    static func assign(
        _ video: TADVideo, boundary: ArraySlice<Float>, config: FasterTADConfig, options o: TrainingOptions,
        rng: inout SeededGenerator
    ) -> Assignment {
        let t = config.snippets
        var pool: [(Double, Double)] = candidates(
            start: boundary.prefix(t), end: boundary.suffix(t), maxDuration: config.max_duration,
            top: o.boundaryProposals
        ).map { ($0.s, $0.e) }
        if o.fakeProposals {
            for g in video.segments {
                pool.append((g.start, g.end))
                let len = g.end - g.start
                for _ in 0..<o.fakePerGroundTruth {
                    let s = g.start + o.fakeJitter * len * rng.nextNormal(), e = g.end + o.fakeJitter * len * rng.nextNormal()
                    let a = min(max(s, 0), 1), b = min(max(e, 0), 1)
                    if b - a > 0.5 / Double(t) { pool.append((a, b)) }
                }
            }
        }
        for _ in 0..<o.randomProposals {
            let a = rng.nextUniform(), b = rng.nextUniform()
            if abs(a - b) > 0.5 / Double(t) { pool.append((min(a, b), max(a, b))) }
        }
        var positives: [(Int, Int)] = [], negatives: [Int] = []
        for (i, p) in pool.enumerated() {
            var best = -1, bestIoU = 0.0
            for (k, g) in video.segments.enumerated() {
                let iou = ActivityNetEvaluation.tIoU(p.0, p.1, g.start, g.end)
                if iou > bestIoU {
                    bestIoU = iou
                    best = k
                }
            }
            if best >= 0 && bestIoU >= o.positiveIoU { positives.append((i, best)) } else { negatives.append(i) }
        }
        positives.shuffle(using: &rng)
        negatives.shuffle(using: &rng)
        let np = min(positives.count, Int(Double(o.roisPerVideo) * o.positiveFraction))
        let nn = min(negatives.count, o.roisPerVideo - np)
        var out = Assignment(proposals: [], labels: [], targets: [])
        let scale = config.regression_scale
        for (i, k) in positives.prefix(np) {
            let p = pool[i], g = video.segments[k], len = max(p.1 - p.0, 1e-6)
            out.proposals.append(p)
            out.labels.append(g.label + 1)
            out.targets += [Float((g.start - p.0) / len / scale), Float((g.end - p.1) / len / scale)]
        }
        for i in negatives.prefix(nn) {
            out.proposals.append(pool[i])
            out.labels.append(0)
            out.targets += [0, 0]
        }
        return out
    }

    struct Losses {
        var total: Variable
        var boundary: Float
        var classification: Float
        var regression: Float
    }

    /// One batch's loss: balanced boundary BCE + RoI cross-entropy + smooth-L1 offsets on positives.
    static func loss(
        _ net: FasterTADNet, videos: [TADVideo], options: TrainingOptions, boundaryWeight: Float, regressionWeight: Float,
        rng: inout SeededGenerator
    ) -> Losses {
        let c = net.config, t = c.snippets
        let (x, a) = packFeatures(videos, channels: c.input_channels, auxChannels: c.aux_channels, snippets: t)
        let trunk = net.trunk(Variable(x), aux: a.map { Variable($0) })
        let probs: [Float] = trunk.boundary.scalars
        let targets = videos.flatMap { boundaryTargets($0.segments, snippets: t) }
        let starts = trunk.boundary.slice(axis: 1, 0..<1), ends = trunk.boundary.slice(axis: 1, 1..<2)
        var startLabels: [Float] = [], endLabels: [Float] = []
        for b in 0..<videos.count {
            let base = 2 * b * t
            startLabels += targets[base..<(base + t)]
            endLabels += targets[(base + t)..<(base + 2 * t)]
        }
        let lb = balancedBCE(starts, labels: startLabels) + balancedBCE(ends, labels: endLabels)

        var assignments: [Assignment] = []
        for (k, v) in videos.enumerated() {
            assignments.append(assign(v, boundary: probs[(k * 2 * t)..<((k + 1) * 2 * t)], config: c, options: options, rng: &rng))
        }
        let (logits, offsets) = net.head(trunk, proposals: assignments.map(\.proposals))
        let labels = assignments.flatMap(\.labels)
        let lc = crossEntropy(logits, labels: labels)
        let positive = labels.map { $0 > 0 ? Float(1) : 0 }
        let np = max(positive.reduce(0, +), 1)
        let mask = Variable(Tensor(shape: [labels.count, 2], scalars: positive.flatMap { [$0, $0] }))
        let target = Variable(Tensor(shape: [labels.count, 2], scalars: assignments.flatMap(\.targets)))
        let lr = smoothL1((offsets - target) * mask, beta: 1.0 / 9) / np
        let total = boundaryWeight * lb + lc + regressionWeight * lr
        return Losses(total: total, boundary: lb.scalars[0], classification: lc.scalars[0], regression: lr.scalars[0])
    }

    struct InferenceOptions {
        var proposals = 200
        var labelsPerProposal = 2
        /// score = p(class) · (p_start · p_end)^boundaryPower
        var boundaryPower = 0.5
        var nms = SoftNMS(sigma: 0.4, method: .gaussian, threshold: 0, topN: 100, minScore: 0, perLabel: true)
    }

    /// Detections of each video, in normalised time, after Soft-NMS.
    static func detect(_ net: FasterTADNet, videos: [TADVideo], options o: InferenceOptions) -> [[ScoredSegment]] {
        let c = net.config, t = c.snippets, k = c.classes.count
        return GradMode.disabled {
            let (x, a) = packFeatures(videos, channels: c.input_channels, auxChannels: c.aux_channels, snippets: t)
            let trunk = net.trunk(Variable(x), aux: a.map { Variable($0) })
            let probs: [Float] = trunk.boundary.scalars
            let cands = videos.indices.map { b in
                candidates(
                    start: probs[(b * 2 * t)..<(b * 2 * t + t)], end: probs[(b * 2 * t + t)..<((b + 1) * 2 * t)],
                    maxDuration: c.max_duration, top: o.proposals)
            }
            guard cands.contains(where: { !$0.isEmpty }) else { return videos.map { _ in [] } }
            let (logits, offsets) = net.head(trunk, proposals: cands.map { $0.map { ($0.s, $0.e) } })
            let p: [Float] = logits.softmax().scalars, d: [Float] = offsets.scalars
            var row = 0
            return cands.map { list in
                var dets: [ScoredSegment] = []
                for prop in list {
                    let len = prop.e - prop.s
                    var s = prop.s + Double(d[row * 2]) * c.regression_scale * len
                    var e = prop.e + Double(d[row * 2 + 1]) * c.regression_scale * len
                    s = min(max(s, 0), 1)
                    e = min(max(e, 0), 1)
                    if e <= s {
                        s = prop.s
                        e = prop.e
                    }
                    let fg = (0..<k).sorted { p[row * (k + 1) + $0 + 1] > p[row * (k + 1) + $1 + 1] }
                    let boundary = pow(max(prop.score, 1e-12), o.boundaryPower)
                    for cls in fg.prefix(o.labelsPerProposal) {
                        dets.append(ScoredSegment(start: s, end: e, score: Double(p[row * (k + 1) + cls + 1]) * boundary, label: cls))
                    }
                    row += 1
                }
                return o.nms(dets)
            }
        }
    }
}
