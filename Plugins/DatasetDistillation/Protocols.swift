import DistillationKit
import Foundation
import MenagerieKit
import NN
import Tensors

/// The two evaluation protocols of distilled sets. Both train ConvNet-3 from scratch on the
/// distilled images (normalised with the training data's statistics) and report top-1 accuracy on
/// the real test split, one number per randomly initialised network.
public enum Protocols {
    public struct Settings: Sendable {
        public var nets = 5
        public var epochs = 300
        public var batch = 256
        public var lr = 0.01
        public var momentum = 0.9
        public var weightDecay = 5e-4
        /// DSA augmentation of every training batch (as the DSA/DM evaluation); nil: none.
        public var dsa: DSA? = DSA()
        public var width = 128
        public var depth = 3
        public var seed: UInt64 = 0
        // Soft-label protocol
        public var temperature = 4.0
        public var softLR = 1e-3
        public var softWeightDecay = 0.01
        public init() {}
    }

    static func checkShape(_ set: DistilledSet, _ test: RealData) throws {
        guard set.channels == test.channels, set.size == test.size else {
            throw MenagerieError.invalidArgument(
                "the distilled set holds \(set.channels)×\(set.size)×\(set.size) images; the evaluation network for '\(test.dataset)' expects \(test.channels)×\(test.size)×\(test.size)"
            )
        }
        guard set.classes.count == test.classes.count else {
            throw MenagerieError.invalidArgument("the distilled set has \(set.classes.count) classes; '\(test.dataset)' has \(test.classes.count)")
        }
    }

    /// Top-1 accuracy of `net` on the (normalised) test images.
    static func accuracy(_ net: ConvNet, test: RealData, normalized: [Float]) -> Double {
        accuracy({ net($0) }, test: test, normalized: normalized)
    }

    /// Top-1 accuracy of a network (its forward pass) on the (normalised) test images.
    static func accuracy(_ net: (Variable) -> Variable, test: RealData, normalized: [Float]) -> Double {
        var correct = 0
        let plane = test.plane
        GradMode.disabled {
            for start in stride(from: 0, to: test.count, by: 500) {
                let n = min(500, test.count - start)
                let x = Tensor.make([n, test.channels, test.size, test.size]) { o in
                    normalized.withUnsafeBufferPointer { src in (o).update(from: src.baseAddress! + start * plane, count: n * plane) }
                }
                let logits: [Float] = net(Variable(x)).scalars
                let k = test.classes.count
                for i in 0..<n {
                    var best = 0
                    for j in 1..<k where logits[i * k + j] > logits[i * k + best] { best = j }
                    if best == test.labels[start + i] { correct += 1 }
                }
            }
        }
        return Double(correct) / Double(max(test.count, 1))
    }

    /// Trains a fresh ConvNet-3 on (images, labels) with the hard-label schedule (SGD, lr × 0.1 at
    /// half the epochs) and returns it. Progress: `done` of `total` epochs counted from `offset`
    /// (one bar over several nets, or one per net when each is a part).
    static func trainHard(
        images: Tensor, labels: [Int], classes: Int, settings s: Settings, seed: UInt64, host: PluginHost,
        label: String, offset: Int = 0, total: Int? = nil, netNumber: Int? = nil
    ) throws -> ConvNet {
        let (c, size) = (images.shape[1], images.shape[2])
        let net = try checkedConvNet(channels: c, classes: classes, width: s.width, depth: s.depth, imageSize: size, seed: seed)
        try fitHard(
            EvalNet(convNet: net), images: images, labels: labels, settings: s, seed: seed, host: host, label: label, offset: offset, total: total,
            netNumber: netNumber)
        return net
    }

    /// Trains `net` on (images, labels) with the hard-label schedule (SGD, lr × 0.1 at half the
    /// epochs, DSA when set) and leaves it in evaluation mode.
    static func fitHard(
        _ net: EvalNet, images: Tensor, labels: [Int], settings s: Settings, seed: UInt64, host: PluginHost,
        label: String, offset: Int = 0, total: Int? = nil, netNumber: Int? = nil
    ) throws {
        let (n, size) = (images.shape[0], images.shape[2])
        let optimizer = SGD(net.module.parameters, learningRate: Float(s.lr), momentum: Float(s.momentum), weightDecay: Float(s.weightDecay))
        net.isTraining = true
        var rng = SeededGenerator(seed: seed &+ 99)
        var lossSum = 0.0, seen = 0
        for epoch in 0..<s.epochs {
            try host.checkCancelled()
            optimizer.learningRate = Schedule.step(milestones: [s.epochs / 2], gamma: 0.1).rate(base: Float(s.lr), step: epoch, total: s.epochs)
            var order = Array(0..<n)
            order.shuffle(using: &rng)
            for start in stride(from: 0, to: n, by: s.batch) {
                let idx = Array(order[start..<min(n, start + s.batch)])
                var x = Variable(gatherImages(images, idx))
                if let dsa = s.dsa { x = DSA.apply(dsa.draw(size: size, rng: &rng), x) }
                let loss = crossEntropy(net(x), labels: idx.map { labels[$0] })
                optimizer.minimize(loss)
                lossSum += Double(loss.scalars[0]) * Double(idx.count)
                seen += idx.count
            }
            // Every epoch of a short run, else the mean of every 10 epochs (300 lines per net would bury the screen).
            if s.epochs <= 50 || epoch % 10 == 9 || epoch == s.epochs - 1 {
                let mean = lossSum / Double(max(seen, 1))
                if let netNumber {
                    host.record(epoch: epoch + 1, ["net": Double(netNumber), "train_loss": mean])
                } else {
                    host.record(epoch: epoch + 1, ["train_loss": mean])
                }
                lossSum = 0
                seen = 0
            }
            if epoch % 10 == 9 || epoch == s.epochs - 1 { host.progress(offset + epoch + 1, of: total ?? s.epochs, label) }
        }
        net.isTraining = false
    }

    /// Protocol 1 (DC/DSA/DM, the bias study): hard labels; accuracy of `nets` networks. With
    /// `parts`, each net is a part of the run (`host.phase`); a study that has parts of its own passes
    /// false and gets one bar over the nets.
    public static func hardLabel(
        _ set: DistilledSet, normalizer: Normalizer, test: RealData, settings s: Settings, host: PluginHost,
        parts: Bool = true
    ) throws -> [Double] {
        try checkShape(set, test)
        let x = try Tensor(
            normalizer.normalize(try set.images.scalars(as: Float.self), channels: set.channels, plane: set.channels * set.size * set.size),
            shape: set.images.shape)
        let testNormalized = normalizer.normalize(test.images, channels: test.channels, plane: test.plane)
        return try (0..<s.nets).map { k in
            if parts { host.phase(k + 1, of: s.nets, "net \(k + 1)") }
            let net = try trainHard(
                images: x, labels: set.labels, classes: set.classes.count, settings: s, seed: s.seed &+ UInt64(k) &* 1_000_003,
                host: host, label: parts ? "training" : "evaluating net \(k + 1)/\(s.nets)",
                offset: parts ? 0 : k * s.epochs, total: parts ? s.epochs : s.nets * s.epochs, netNumber: parts ? nil : k + 1)
            return accuracy(net, test: test, normalized: testNormalized)
        }
    }

    /// Protocol 2 (RDED-style soft labels): the teacher's logits on each (augmented) batch of the
    /// distilled images are the targets; KL at temperature T, AdamW with cosine decay.
    public static func softLabel(
        _ set: DistilledSet, teacher: ConvNet, normalizer: Normalizer, test: RealData, settings s: Settings,
        host: PluginHost, parts: Bool = true
    ) throws -> [Double] {
        try checkShape(set, test)
        let (n, c, size) = (set.count, set.channels, set.size)
        let x = try Tensor(normalizer.normalize(try set.images.scalars(as: Float.self), channels: c, plane: c * size * size), shape: set.images.shape)
        let testNormalized = normalizer.normalize(test.images, channels: test.channels, plane: test.plane)
        teacher.isTraining = false
        return try (0..<s.nets).map { k in
            if parts { host.phase(k + 1, of: s.nets, "soft-label net \(k + 1)") }
            let seed = s.seed &+ UInt64(k) &* 1_000_003
            let net = try checkedConvNet(channels: c, classes: set.classes.count, width: s.width, depth: s.depth, imageSize: size, seed: seed)
            let optimizer = AdamW(net.parameters, learningRate: Float(s.softLR), weightDecay: Float(s.softWeightDecay))
            var rng = SeededGenerator(seed: seed &+ 99)
            let steps = s.epochs * ((n + s.batch - 1) / s.batch)
            var step = 0
            var lossSum = 0.0, seen = 0
            for epoch in 0..<s.epochs {
                try host.checkCancelled()
                var order = Array(0..<n)
                order.shuffle(using: &rng)
                for start in stride(from: 0, to: n, by: s.batch) {
                    let idx = Array(order[start..<min(n, start + s.batch)])
                    var xb = Variable(gatherImages(x, idx))
                    if let dsa = s.dsa { xb = DSA.apply(dsa.draw(size: size, rng: &rng), xb) }
                    let targets = GradMode.disabled { teacher(xb) }.detached()
                    optimizer.learningRate = Schedule.cosine(warmup: 0, floor: 0).rate(base: Float(s.softLR), step: step, total: steps)
                    let loss = distillationKL(student: net(xb), teacher: targets, temperature: Float(s.temperature))
                    optimizer.minimize(loss)
                    lossSum += Double(loss.scalars[0]) * Double(idx.count)
                    seen += idx.count
                    step += 1
                }
                if s.epochs <= 50 || epoch % 10 == 9 || epoch == s.epochs - 1 {
                    let mean = lossSum / Double(max(seen, 1))
                    if parts {
                        host.record(epoch: epoch + 1, ["kd_loss": mean])
                    } else {
                        host.record(epoch: epoch + 1, ["net": Double(k + 1), "kd_loss": mean])
                    }
                    lossSum = 0
                    seen = 0
                }
                if epoch % 10 == 9 || epoch == s.epochs - 1 {
                    host.progress(
                        parts ? epoch + 1 : k * s.epochs + epoch + 1, of: parts ? s.epochs : s.nets * s.epochs,
                        parts ? "training" : "soft-label net \(k + 1)/\(s.nets)")
                }
            }
            net.isTraining = false
            return accuracy(net, test: test, normalized: testNormalized)
        }
    }
}
