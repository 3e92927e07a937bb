import DistillationKit
import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// The networks the evaluation protocols train or use as teachers: ConvNet-3 (this project's, with
/// instance norm), torchvision's ResNet-18, and `resnet18_modified` (3×3 stem, no max-pool).
public enum EvalArch: String, Sendable, CaseIterable {
    case convnet3, resnet18, resnet18_modified
}

/// One evaluation network behind one interface: its module (names, buffers, train/eval mode) and
/// its forward pass.
public final class EvalNet {
    public let arch: EvalArch
    public let module: any Module
    let forward: (Variable) -> Variable

    /// A fresh, seeded network for `channels`×`imageSize`² images of `classes` classes (sizes checked).
    public init(_ arch: EvalArch, channels: Int, classes: Int, imageSize: Int, width: Int = 128, depth: Int = 3, seed: UInt64) throws {
        self.arch = arch
        switch arch {
        case .convnet3:
            let net = try checkedConvNet(channels: channels, classes: classes, width: width, depth: depth, imageSize: imageSize, seed: seed)
            module = net
            forward = { net($0) }
        case .resnet18, .resnet18_modified:
            let stem: ResNet18.Stem = arch == .resnet18 ? .imagenet : .small
            do { try ResNet18.validate(channels: channels, classes: classes, imageSize: imageSize, stem: stem, source: arch.rawValue) } catch {
                throw MenagerieError.invalidArgument("\(error)")
            }
            let net = ResNet18(channels: channels, classes: classes, stem: stem, seed: seed)
            module = net
            forward = { net($0) }
        }
    }

    public init(convNet: ConvNet) {
        arch = .convnet3
        module = convNet
        forward = { convNet($0) }
    }

    public func callAsFunction(_ x: Variable) -> Variable { forward(x) }

    public var isTraining: Bool {
        get { module.isTraining }
        set { module.isTraining = newValue }
    }
}

/// The soft-label evaluation protocol as D^3HR's released `validation/validate.py` runs it (RDED's
/// protocol; REFERENCES.md §5.3): a frozen teacher in eval mode; each epoch the distilled images are
/// shuffled, augmented per image (RandomResizedCrop scale 0.08–1, horizontal flip), batched, and each
/// batch CutMixed (λ ~ Beta(1, 1), one box, a random permutation); the loss is
/// KLDiv(log_softmax(student/T), softmax(teacher/T)) with reduction "batchmean" and no T² factor,
/// T = 20; AdamW (0.9, 0.999) lr 1e-3 with weight decay 0.01 on the parameters whose name holds
/// "weight" and that have more than one dimension (`get_parameters`), the rest without; the rate
/// multiplied per epoch by 0.5·(1 + cos(π·e/E/2)) (it ends at half).
public enum ReleasedSoftLabel {
    public struct Settings: Sendable {
        public var nets = 5
        public var epochs = 300
        /// 0: the released rule (`releasedBatch`).
        public var batch = 0
        public var lr = 1e-3
        public var weightDecay = 0.01
        public var temperature = 20.0
        public var seed: UInt64 = 0
        public init() {}
    }

    /// The released batch size: 100 at IPC ≥ 50, 50 at IPC ≥ 10, else 15; doubled for 100 classes;
    /// at most IPC·classes (`argument.py`).
    public static func releasedBatch(ipc: Int, classes: Int) -> Int {
        var b = ipc >= 50 ? 100 : ipc >= 10 ? 50 : 15
        if classes == 100 { b *= 2 }
        return max(1, min(b, ipc * classes))
    }

    /// The released rate factor at epoch e of E: 0.5·(1 + cos(π·e/E/2)).
    public static func halfCosine(epoch e: Int, epochs: Int) -> Double {
        0.5 * (1 + cos(Double.pi * Double(e) / Double(max(epochs, 1)) / 2))
    }

    /// Marks which parameters decay as `get_parameters` does: name contains "weight" and rank > 1.
    /// Returns the names that decay.
    @discardableResult
    public static func applyWeightDecaySet(_ module: any Module) -> [String] {
        var decaying: [String] = []
        for (name, p) in module.namedParameters {
            p.decays = name.contains("weight") && p.shape.count > 1
            if p.decays { decaying.append(name) }
        }
        return decaying
    }

    /// KLDivLoss(reduction="batchmean")(log_softmax(student/T), softmax(teacher/T)) =
    /// (1/N) Σ_i Σ_c p_ic (log p_ic − log q_ic), the terms with p = 0 taken as 0 (torch's xlogy); no T².
    public static func klBatchmean(student: Variable, teacher: Variable, temperature t: Float) -> Variable {
        let p = (teacher / t).softmax().detached()
        let logQ = (student / t).logSoftmax()
        let probabilities: [Float] = p.scalars
        let logP = Variable(Tensor(shape: p.shape, scalars: probabilities.map { $0 > 0 ? Foundation.log($0) : 0 }))
        return (p * (logP - logQ)).sum() / Float(student.shape[0])
    }

    /// The released `rand_bbox` for an image batch [N, C, A, B] (the code calls A "W" and B "H"):
    /// cut = √(1 − λ); cutA = ⌊A·cut⌋, cutB = ⌊B·cut⌋; the box is [clip(ca − cutA//2), clip(ca + cutA//2))
    /// along A and likewise along B, clipped to [0, A] and [0, B]; (ca, cb) is the uniformly drawn centre.
    public static func cutMixBox(a: Int, b: Int, lambda: Double, ca: Int, cb: Int) -> (a0: Int, a1: Int, b0: Int, b1: Int) {
        let cut = (1 - lambda).squareRoot()
        let cutA = Int(Double(a) * cut), cutB = Int(Double(b) * cut)
        func clip(_ v: Int, _ hi: Int) -> Int { min(max(v, 0), hi) }
        return (clip(ca - cutA / 2, a), clip(ca + cutA / 2, a), clip(cb - cutB / 2, b), clip(cb + cutB / 2, b))
    }

    /// CutMix of a batch [N, C, S, S] in place of the released `cutmix`: λ ~ Beta(1, 1) (uniform), the
    /// box's centre uniform over the pixels, a random permutation; inside the box every image takes
    /// the pixels of its permuted partner (`images[:, :, a0:a1, b0:b1] = images[perm, :, a0:a1, b0:b1]`).
    public static func cutMix(_ x: [Float], shape: [Int], rng: inout SeededGenerator) -> (mixed: [Float], box: (Int, Int, Int, Int), permutation: [Int]) {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        var perm = Array(0..<n)
        perm.shuffle(using: &rng)
        let lambda = rng.nextUniform()
        let ca = Int(rng.next() % UInt64(h)), cb = Int(rng.next() % UInt64(w))
        let box = cutMixBox(a: h, b: w, lambda: lambda, ca: ca, cb: cb)
        var out = x
        let plane = h * w
        for i in 0..<n {
            for ch in 0..<c {
                let dst = (i * c + ch) * plane, src = (perm[i] * c + ch) * plane
                for r in box.a0..<max(box.a0, box.a1) {
                    for q in box.b0..<max(box.b0, box.b1) { out[dst + r * w + q] = x[src + r * w + q] }
                }
            }
        }
        return (out, (box.a0, box.a1, box.b0, box.b1), perm)
    }

    /// torchvision's RandomResizedCrop(S, scale (0.08, 1), ratio (3/4, 4/3)) followed by
    /// RandomHorizontalFlip(0.5) on one image [C, S, S]: up to 10 tries of a crop of that area and
    /// aspect, else the centre crop; bilinear resize back to S×S (half-pixel centres; a crop is never
    /// larger than the image, so this is an upscale and antialiasing changes nothing).
    public static func randomResizedCropFlip(_ img: ArraySlice<Float>, channels c: Int, size s: Int, rng: inout SeededGenerator) -> [Float] {
        let area = Double(s * s)
        var crop: (i: Int, j: Int, h: Int, w: Int)? = nil
        for _ in 0..<10 {
            let target = area * (0.08 + (1 - 0.08) * rng.nextUniform())
            let logLow = log(3.0 / 4.0), logHigh = log(4.0 / 3.0)
            let ratio = exp(logLow + (logHigh - logLow) * rng.nextUniform())
            let w = Int((target * ratio).squareRoot().rounded(.toNearestOrEven)), h = Int((target / ratio).squareRoot().rounded(.toNearestOrEven))
            if w > 0, w <= s, h > 0, h <= s {
                let i = Int(rng.next() % UInt64(s - h + 1)), j = Int(rng.next() % UInt64(s - w + 1))
                crop = (i, j, h, w)
                break
            }
        }
        let (ci, cj, ch, cw) = crop ?? (0, 0, s, s) // a square image is within the ratio range: the centre crop is the whole image
        let flip = rng.nextUniform() < 0.5
        func taps(_ n: Int) -> [(Int, Int, Float)] {
            let scale = Double(n) / Double(s)
            return (0..<s).map { o in
                let src = max((Double(o) + 0.5) * scale - 0.5, 0)
                let i0 = min(Int(src), n - 1), i1 = min(i0 + 1, n - 1)
                return (i0, i1, Float(src - Double(i0)))
            }
        }
        let rows = taps(ch), cols = taps(cw)
        var out = [Float](repeating: 0, count: c * s * s)
        let base = img.startIndex
        for k in 0..<c {
            for y in 0..<s {
                let (r0, r1, fr) = rows[y]
                let row0 = base + k * s * s + (ci + r0) * s + cj, row1 = base + k * s * s + (ci + r1) * s + cj
                for x in 0..<s {
                    let (q0, q1, fq) = cols[x]
                    let top = img[row0 + q0] * (1 - fq) + img[row0 + q1] * fq
                    let bottom = img[row1 + q0] * (1 - fq) + img[row1 + q1] * fq
                    out[k * s * s + y * s + (flip ? s - 1 - x : x)] = top * (1 - fr) + bottom * fr
                }
            }
        }
        return out
    }

    /// Trains `nets` fresh students of `student` on the distilled set against the frozen teacher and
    /// returns each one's top-1 accuracy on the test split after the last epoch.
    public static func evaluate(
        _ set: DistilledSet, teacher: EvalNet, student: EvalArch, normalizer: Normalizer, test: RealData, settings s: Settings,
        host: PluginHost, width: Int = 128, depth: Int = 3, progressLabel: String = "soft-label"
    ) throws -> [Double] {
        try Protocols.checkShape(set, test)
        let (n, c, size) = (set.count, set.channels, set.size)
        let plane = c * size * size
        let x = normalizer.normalize(try set.images.scalars(as: Float.self), channels: c, plane: plane)
        let testNormalized = normalizer.normalize(test.images, channels: test.channels, plane: test.plane)
        let batch = s.batch > 0 ? s.batch : releasedBatch(ipc: set.ipc, classes: set.classes.count)
        teacher.isTraining = false
        return try (0..<s.nets).map { k in
            let seed = s.seed &+ UInt64(k) &* 1_000_003
            let net = try EvalNet(student, channels: c, classes: set.classes.count, imageSize: size, width: width, depth: depth, seed: seed)
            applyWeightDecaySet(net.module)
            let optimizer = AdamW(net.module.parameters, learningRate: Float(s.lr), weightDecay: Float(s.weightDecay))
            var rng = SeededGenerator(seed: seed &+ 99)
            for epoch in 0..<s.epochs {
                try host.checkCancelled()
                optimizer.learningRate = Float(s.lr * halfCosine(epoch: epoch, epochs: s.epochs))
                net.isTraining = true
                var order = Array(0..<n)
                order.shuffle(using: &rng)
                var lossSum = 0.0, seen = 0
                for start in stride(from: 0, to: n, by: batch) {
                    let idx = Array(order[start..<min(n, start + batch)])
                    var augmented: [Float] = []
                    augmented.reserveCapacity(idx.count * plane)
                    for i in idx { augmented += randomResizedCropFlip(x[(i * plane)..<((i + 1) * plane)], channels: c, size: size, rng: &rng) }
                    let mixed = cutMix(augmented, shape: [idx.count, c, size, size], rng: &rng).mixed
                    let xb = Variable(try Tensor(mixed, shape: [idx.count, c, size, size]))
                    let targets = GradMode.disabled { teacher(xb) }.detached()
                    // The released loop also runs the student (train mode, no gradient) on the
                    // mixed batch for its train accuracy: BatchNorm's running statistics see it twice.
                    if student != .convnet3 { _ = GradMode.disabled { net(xb) } }
                    let loss = klBatchmean(student: net(xb), teacher: targets, temperature: Float(s.temperature))
                    optimizer.minimize(loss)
                    lossSum += Double(loss.scalars[0]) * Double(idx.count)
                    seen += idx.count
                }
                host.record(epoch: epoch + 1, ["net": Double(k + 1), "kd_loss": lossSum / Double(max(seen, 1))])
                host.progress(k * s.epochs + epoch + 1, of: s.nets * s.epochs, "\(progressLabel) \(student.rawValue) net \(k + 1)/\(s.nets)")
            }
            net.isTraining = false
            return Protocols.accuracy({ net($0) }, test: test, normalized: testNormalized)
        }
    }
}
