import DistillationKit
import Foundation
import MenagerieKit
import NN
import Tensors

/// What every distiller takes beyond the data.
public struct DistillSettings: Sendable {
    public var ipc = 10
    public var iterations = 1000
    public var batchReal = 256
    public var lrImage = 1.0
    public var momentumImage = 0.5
    /// "real" (random real images of the class) or "noise" (N(0, 1) in normalised space).
    public var initialisation = "real"
    public var dsa: DSA? = DSA()
    public var seed: UInt64 = 0
    public var width = 128
    public var depth = 3
    /// DC: outer and inner loops (0: the reference's per-IPC schedule), the network's SGD rate and batch.
    public var outerLoop = 0
    public var innerLoop = 0
    public var lrNet = 0.01
    public var batchTrain = 256
    /// Task-specific distillation: a weight per real image (the target distribution over the
    /// training distribution), nil for the plain objective.
    public var weights: [Float]? = nil
    public init() {}
}

/// The reference DC schedule: IPC → (outer_loop, inner_loop).
public func dcLoops(ipc: Int) -> (Int, Int)? {
    [1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)][ipc]
}

/// The baselines: random selection, herding, DC / DSA (gradient matching), DM (distribution matching).
public enum Distillers {
    /// `ipc` images of every class: uniformly, or (with weights) without replacement in proportion
    /// to the weights (Efraimidis–Spirakis keys u^(1/w)).
    public static func randomSelection(_ data: RealData, ipc: Int, weights: [Float]?, rng: inout SeededGenerator) -> [Int] {
        data.byClass.flatMap { members -> [Int] in
            if let weights {
                let keyed = members.map { i in (i, pow(rng.nextUniform(), 1 / Double(max(weights[i], 1e-12)))) }
                return keyed.sorted { $0.1 > $1.1 }.prefix(ipc).map(\.0)
            }
            var m = members
            m.shuffle(using: &rng)
            return Array(m.prefix(ipc))
        }
    }

    /// Herding on a network's features: per class, greedily add the image that brings the running
    /// mean of the selected features closest to the class mean (weighted mean with weights).
    public static func herding(_ data: RealData, features: [Float], dim: Int, ipc: Int, weights: [Float]?) -> [Int] {
        data.byClass.flatMap { members -> [Int] in
            var mu = [Double](repeating: 0, count: dim)
            var total = 0.0
            for i in members {
                let w = Double(weights?[i] ?? 1)
                total += w
                for d in 0..<dim { mu[d] += w * Double(features[i * dim + d]) }
            }
            for d in 0..<dim { mu[d] /= max(total, 1e-12) }
            var chosen: [Int] = [], used = Set<Int>()
            var sum = [Double](repeating: 0, count: dim)
            for k in 1...min(ipc, members.count) {
                var best = -1, bestDistance = Double.infinity
                for i in members where !used.contains(i) {
                    var dist = 0.0
                    for d in 0..<dim {
                        let e = mu[d] - (sum[d] + Double(features[i * dim + d])) / Double(k)
                        dist += e * e
                    }
                    if dist < bestDistance {
                        bestDistance = dist
                        best = i
                    }
                }
                chosen.append(best)
                used.insert(best)
                for d in 0..<dim { sum[d] += Double(features[best * dim + d]) }
            }
            return chosen
        }
    }

    /// A random batch of class `c` (the reference's `get_images`: a permutation's first n), with
    /// the batch's normalised weights when distilling toward a target distribution.
    static func classBatch(_ data: RealData, normalized: [Float], class c: Int, count n: Int, weights: [Float]?, rng: inout SeededGenerator)
        -> (Tensor, [Float]?)
    {
        var members = data.byClass[c]
        members.shuffle(using: &rng)
        let picked = Array(members.prefix(n))
        let x = gatherRows(normalized, picked, shape: [data.channels, data.size, data.size])
        guard let weights else { return (x, nil) }
        let w = picked.map { weights[$0] }, total = max(w.reduce(0, +), 1e-12)
        return (x, w.map { $0 / total })
    }

    /// Class `c`'s real batch and synthetic images, both through the same DSA draw when augmenting
    /// (the synthetic slice stays differentiable), with the real batch's target weights.
    static func matchedBatches(
        _ data: RealData, normalized: [Float], synthetic: Variable, class c: Int, settings s: DistillSettings,
        rng: inout SeededGenerator
    ) -> (real: Variable, synthetic: Variable, weights: [Float]?) {
        let (real, w) = classBatch(data, normalized: normalized, class: c, count: s.batchReal, weights: s.weights, rng: &rng)
        var syn = synthetic.slice(axis: 0, (c * s.ipc)..<((c + 1) * s.ipc))
        var realX = Variable(real)
        if let dsa = s.dsa {
            let draw = dsa.draw(size: data.size, rng: &rng)
            realX = DSA.apply(draw, realX)
            syn = DSA.apply(draw, syn)
        }
        return (realX, syn, w)
    }

    /// The synthetic set's starting point (normalised space): real images of each class, or noise.
    static func initialise(_ data: RealData, normalized: [Float], settings s: DistillSettings, rng: inout SeededGenerator) -> [Float] {
        let plane = data.plane
        if s.initialisation == "noise" { return (0..<(data.classes.count * s.ipc * plane)).map { _ in Float(rng.nextNormal()) } }
        let picked = randomSelection(data, ipc: s.ipc, weights: s.weights, rng: &rng)
        var out = [Float](repeating: 0, count: picked.count * plane)
        for (k, i) in picked.enumerated() { for p in 0..<plane { out[k * plane + p] = normalized[i * plane + p] } }
        return out
    }

    /// DM: every iteration a fresh randomly initialised ConvNet (frozen); per class, the squared
    /// distance between the mean embeddings of a real batch and the class's synthetic images (both
    /// through the same DSA draw); SGD on the images (lr 1, momentum 0.5 by default).
    public static func distributionMatching(
        _ data: RealData, normalized: [Float], settings s: DistillSettings, host: PluginHost,
        log: (Int, Double) -> Void
    ) throws -> [Float] {
        var rng = SeededGenerator(seed: s.seed)
        let k = data.classes.count, plane = data.plane
        let image = Parameter(
            try Tensor(initialise(data, normalized: normalized, settings: s, rng: &rng), shape: [k * s.ipc, data.channels, data.size, data.size]))
        let optimizer = SGD([image], learningRate: Float(s.lrImage), momentum: Float(s.momentumImage))
        for it in 0..<s.iterations {
            try host.checkCancelled()
            let net = try checkedConvNet(
                channels: data.channels, classes: k, width: s.width, depth: s.depth, imageSize: data.size, seed: s.seed &+ UInt64(it) &* 7919 &+ 1)
            var loss: Variable? = nil
            for c in 0..<k {
                let (realX, syn, w) = matchedBatches(data, normalized: normalized, synthetic: image.variable, class: c, settings: s, rng: &rng)
                let realEmbedding = GradMode.disabled { net.embed(realX) }.detached()
                let l = Matching.meanEmbeddingDistance(real: realEmbedding, synthetic: net.embed(syn), weights: w)
                loss = loss.map { $0 + l } ?? l
            }
            let g = Autograd.gradients(of: loss!, wrt: [image.variable])
            optimizer.step(g)
            log(it, Double(loss!.scalars[0]))
            host.progress(it + 1, of: s.iterations, "DM")
        }
        _ = plane
        return try image.value.scalars(as: Float.self)
    }

    /// DC (and DSA with `settings.dsa`): per iteration a fresh ConvNet; `outer` times: per class the
    /// gradient distance between cross-entropy gradients on a real batch and on the class's
    /// synthetic images (second order through the synthetic gradients), one SGD step on the images
    /// (lr 0.1, momentum 0.5), then `inner` epochs of the network on the synthetic set.
    public static func gradientMatching(
        _ data: RealData, normalized: [Float], settings s: DistillSettings, host: PluginHost,
        log: (Int, Double) -> Void
    ) throws -> [Float] {
        var rng = SeededGenerator(seed: s.seed)
        let k = data.classes.count
        guard let loops = s.outerLoop > 0 ? (s.outerLoop, max(s.innerLoop, 0)) : dcLoops(ipc: s.ipc) else {
            throw MenagerieError.invalidArgument("DC has no reference loop schedule for ipc \(s.ipc) (1, 10, 20, 30, 40, 50); give outer_loop and inner_loop")
        }
        let image = Parameter(
            try Tensor(initialise(data, normalized: normalized, settings: s, rng: &rng), shape: [k * s.ipc, data.channels, data.size, data.size]))
        let optimizer = SGD([image], learningRate: Float(s.lrImage), momentum: Float(s.momentumImage))
        let synLabels = (0..<k).flatMap { [Int](repeating: $0, count: s.ipc) }
        for it in 0..<s.iterations {
            try host.checkCancelled()
            let net = try checkedConvNet(
                channels: data.channels, classes: k, width: s.width, depth: s.depth, imageSize: data.size, seed: s.seed &+ UInt64(it) &* 7919 &+ 1)
            let netOptimizer = SGD(net.parameters, learningRate: Float(s.lrNet))
            var lastLoss = 0.0
            for ol in 0..<loops.0 {
                var loss: Variable? = nil
                for c in 0..<k {
                    let (realX, syn, w) = matchedBatches(data, normalized: normalized, synthetic: image.variable, class: c, settings: s, rng: &rng)
                    let gReal = Matching.gradients(net, images: realX, labels: [Int](repeating: c, count: realX.shape[0]), weights: w, createGraph: false).map {
                        $0.detached()
                    }
                    let gSyn = Matching.gradients(net, images: syn, labels: [Int](repeating: c, count: s.ipc), createGraph: true)
                    let d = Matching.gradientDistance(real: gReal, synthetic: gSyn)
                    loss = loss.map { $0 + d } ?? d
                }
                optimizer.step(Autograd.gradients(of: loss!, wrt: [image.variable]))
                lastLoss = Double(loss!.scalars[0])
                if ol == loops.0 - 1 { break }
                // The network learns on the current synthetic set.
                let fixed = image.value
                for _ in 0..<loops.1 {
                    var order = Array(0..<(k * s.ipc))
                    order.shuffle(using: &rng)
                    for start in stride(from: 0, to: order.count, by: s.batchTrain) {
                        let idx = Array(order[start..<min(order.count, start + s.batchTrain)])
                        var x = Variable(gatherImages(fixed, idx))
                        if let dsa = s.dsa { x = DSA.apply(dsa.draw(size: data.size, rng: &rng), x) }
                        netOptimizer.minimize(crossEntropy(net(x), labels: idx.map { synLabels[$0] }))
                    }
                }
            }
            log(it, lastLoss)
            host.progress(it + 1, of: s.iterations, s.dsa == nil ? "DC" : "DSA")
        }
        return try image.value.scalars(as: Float.self)
    }
}

/// Rows `indices` of an image batch [N, C, H, W].
func gatherImages(_ t: Tensor, _ indices: [Int]) -> Tensor {
    gatherRows(try! t.scalars(as: Float.self), indices, shape: Array(t.shape.dropFirst()))
}
