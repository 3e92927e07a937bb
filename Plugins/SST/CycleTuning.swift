import Foundation
import NN
import Tensors

/// A linear projection of patch features, the small head SST's one-shot fine-tuning tunes while
/// the backbone stays frozen. Initialised to the identity when it keeps the width (the tuned
/// tracker starts as the untuned one), else randomly (torch `nn.Linear`'s initialisation).
public final class ProjectionHead: Module {
    public let linear: Linear
    public var isTraining = true

    public init(inputs: Int, outputs: Int, seed: UInt64 = 0) {
        var rng = SeededGenerator(seed: seed)
        linear = Linear(inputs, outputs, rng: &rng)
        if inputs == outputs {
            linear.weight.assign(
                Tensor.make([outputs, inputs]) { p in
                    for i in 0..<(inputs * outputs) { p[i] = 0 }
                    for i in 0..<inputs { p[i * inputs + i] = 1 }
                })
            linear.bias?.assign(Tensor.filled(0, shape: [outputs]))
        }
    }

    public var namedParameters: [(String, Parameter)] { prefixed("proj.", linear.namedParameters) }
    public var inputs: Int { linear.weight.shape[1] }
    public var outputs: Int { linear.weight.shape[0] }

    public func callAsFunction(_ x: Variable) -> Variable { linear(x) }

    /// Projects a frame's features [P, D] (no gradient).
    public func project(_ features: [Float], patches: Int) -> [Float] {
        GradMode.disabled { self(Variable(Tensor(shape: [patches, inputs], scalars: features))) }.scalars
    }
}

/// Rows scaled to unit L2 norm (recorded for gradients).
public func l2Normalized(_ x: Variable) -> Variable {
    x / ((x * x).sum(axis: 1, keepDims: true) + 1e-12).sqrt()
}

/// Propagation from one context frame to a query with gradients through the affinity: the
/// tracker's formula (exp(⟨z_q, z_s⟩/τ) within the radius, each query's top-k, rows normalised),
/// the neighbourhood and top-k masks fixed from the forward values.
/// `query` [P, D'], `source` [P, D'] unit rows; `labels` [P, C] → [P, C].
public func softPropagate(query: Variable, source: Variable, labels: Variable, rows: Int, cols: Int, settings: PropagationSettings) -> Variable {
    let p = rows * cols
    let similarity = matmul(query, source, transposeB: true) // [P, P]
    let values = similarity.scalars
    let k = min(settings.topK, p), r = settings.radius
    var keep = [Float](repeating: 0, count: p * p)
    var allowed = [Float]()
    allowed.reserveCapacity(p)
    for q in 0..<p {
        let (qi, qj) = (q / cols, q % cols)
        allowed.removeAll(keepingCapacity: true)
        for s in 0..<p where r == 0 || (abs(s / cols - qi) <= r && abs(s % cols - qj) <= r) { allowed.append(values[q * p + s]) }
        guard !allowed.isEmpty else { continue }
        let threshold = allowed.count <= k ? allowed.min()! : allowed.sorted(by: >)[k - 1]
        for s in 0..<p where r == 0 || (abs(s / cols - qi) <= r && abs(s % cols - qj) <= r) {
            if values[q * p + s] >= threshold { keep[q * p + s] = 1 }
        }
    }
    let mask = Variable(Tensor(shape: [p, p], scalars: keep))
    let a = (similarity * Float(1 / settings.temperature)).exp() * mask
    let weights = a / a.sum(axis: 1, keepDims: true)
    return matmul(weights, labels)
}

/// BCE + Dice between a soft mask and the one-hot target, both [P, C]: the mean binary cross-entropy
/// over every patch and channel (the prediction clamped into [ε, 1 − ε], as torch's BCE clamps its
/// logarithms: a propagated mask may exceed 1 by rounding), plus 1 − (2·Σ p·y + 1)/(Σ p + Σ y + 1)
/// averaged over channels (OC-CCL's smoothing of 1).
public func bceDice(_ prediction: Variable, _ target: Tensor) -> Variable {
    let y = Variable(target)
    let eps: Float = 1e-6
    // clamp(p, ε, 1 − ε) = p − relu(p − (1 − ε)) + relu(ε − p)
    let p = prediction - (prediction - (1 - eps)).relu() + (eps - prediction).relu()
    let bce = -((y * p.log()) + ((1 - y) * (1 - p).log())).mean()
    let intersection = (prediction * y).sum(axis: 0)
    let total = prediction.sum(axis: 0) + y.sum(axis: 0)
    let dice = 1 - ((intersection * 2 + 1) / (total + 1)).mean()
    return bce + dice
}

/// The palindrome x0 → x1 → x0: the support's labels propagated to an unlabelled frame, the memory
/// reset, that prediction propagated back, compared with the support's labels. `soft` keeps the
/// intermediate prediction differentiable (METHODS.md); false thresholds it as the released OC-CCL
/// does (`pred > 0` on SAM 2's logits; here the argmax one-hot).
public func cycleLoss(
    head: ProjectionHead, support: [Float], labels: Tensor, unlabelled: [Float], rows: Int, cols: Int,
    settings: PropagationSettings, soft: Bool
) -> Variable {
    let p = rows * cols
    let z0 = l2Normalized(head(Variable(Tensor(shape: [p, head.inputs], scalars: support))))
    let z1 = l2Normalized(head(Variable(Tensor(shape: [p, head.inputs], scalars: unlabelled))))
    var forward = softPropagate(query: z1, source: z0, labels: Variable(labels), rows: rows, cols: cols, settings: settings)
    if !soft {
        let c = labels.shape[1], v = forward.scalars
        forward = Variable(
            Tensor.make([p, c]) { o in
                for i in 0..<p {
                    var best = 0
                    for k in 1..<c where v[i * c + k] > v[i * c + best] { best = k }
                    for k in 0..<c { o[i * c + k] = k == best ? 1 : 0 }
                }
            })
    }
    let back = softPropagate(query: z0, source: z1, labels: forward, rows: rows, cols: cols, settings: settings)
    return bceDice(back, labels)
}

/// One-shot cycle-consistent fine-tuning of `head` (OC-CCL's recipe on a linear head): AdamW
/// (weight decay 0.01), cosine decay to 1 % of the rate, gradient norm clipped at 1, `pairs`
/// palindromes (support, a random unlabelled frame) averaged per step. Returns the loss per step.
public struct CycleTuning: Sendable {
    public var steps = 100
    public var learningRate: Float = 1e-3
    public var pairs = 4
    public var soft = true
    public var seed: UInt64 = 0
    public init() {}

    public func run(
        head: ProjectionHead, support: [Float], labels: [Float], channels: Int, unlabelled: [[Float]], rows: Int, cols: Int,
        settings: PropagationSettings, cancelled: () throws -> Void = {}
    ) rethrows -> [Float] {
        precondition(!unlabelled.isEmpty, "cycle tuning needs unlabelled frames")
        let target = Tensor(shape: [rows * cols, channels], scalars: labels)
        let optimizer = AdamW(head.parameters, learningRate: learningRate, weightDecay: 0.01)
        let schedule = Schedule.cosine(warmup: 0, floor: 0.01)
        var rng = SeededGenerator(seed: seed)
        var losses: [Float] = []
        for step in 0..<steps {
            try cancelled()
            optimizer.learningRate = schedule.rate(base: learningRate, step: step, total: steps)
            var total: Variable?
            for _ in 0..<max(1, pairs) {
                let frame = unlabelled[Int(rng.next() % UInt64(unlabelled.count))]
                let loss = cycleLoss(head: head, support: support, labels: target, unlabelled: frame, rows: rows, cols: cols, settings: settings, soft: soft)
                total = total.map { $0 + loss } ?? loss
            }
            let loss = total! * (1 / Float(max(1, pairs)))
            var gradients = Autograd.gradients(of: loss, wrt: head.parameters.map(\.variable))
            clipGradients(&gradients, maxNorm: 1)
            optimizer.step(gradients)
            losses.append(loss.scalars[0])
        }
        return losses
    }
}
