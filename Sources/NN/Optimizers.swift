import Foundation
import Tensors

/// What every optimizer does: one update of its parameters from their gradients.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    var learningRate: Float { get set }
    /// Applies one update; `gradients[i]` belongs to `parameters[i]` (nil: no update).
    func step(_ gradients: [Variable?])
}

extension Optimizer {
    /// Gradients of `loss` for every parameter, then one step.
    public func minimize(_ loss: Variable) {
        step(Autograd.gradients(of: loss, wrt: parameters.map(\.variable)))
    }
}

/// SGD with momentum, Nesterov and (coupled, L2) weight decay, as torch.optim.SGD:
/// g ← g + wd·θ ; b ← μ·b + g ; θ ← θ − lr·(nesterov ? g + μ·b : b).
/// Parameters are updated in place (`Parameter.update`: copy on write, so a memory-mapped value is
/// copied once, on its first update); momentum buffers belong to the optimizer.
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float, weightDecay: Float, nesterov: Bool
    var buffers: [[Float]?]

    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        buffers = Array(repeating: nil, count: parameters.count)
    }

    public func step(_ gradients: [Variable?]) {
        let lr = learningRate, mu = momentum, nesterov = nesterov
        for (i, p) in parameters.enumerated() {
            guard let g = gradients[i] else { continue }
            let wd = p.decays ? weightDecay : 0
            let gradient = g.value
            precondition(gradient.count == p.value.count, "gradient \(gradient.shape) for parameter \(p.shape)")
            let first = buffers[i] == nil
            var buffer = mu != 0 ? (buffers[i] ?? [Float](repeating: 0, count: gradient.count)) : []
            buffers[i] = nil // keeps `buffer` uniquely referenced: no copy
            gradient.withUnsafeBytes { graw in
                let grad = graw.bindMemory(to: Float.self)
                buffer.withUnsafeMutableBufferPointer { b in
                    let grad = UncheckedBox(grad), b = UncheckedBox(b)
                    p.update { dst, src in
                        let io = UncheckedBox((dst, src))
                        Parallel.chunks(dst.count, grain: 1 << 18) { range in
                            let (dst, src) = io.value, grad = grad.value, b = b.value
                            for j in range {
                                var d = grad[j]
                                if wd != 0 { d += wd * src[j] }
                                if mu != 0 {
                                    b[j] = first ? d : mu * b[j] + d
                                    if nesterov { d += mu * b[j] } else { d = b[j] }
                                }
                                dst[j] = src[j] - lr * d
                            }
                        }
                    }
                }
            }
            if mu != 0 { buffers[i] = buffer }
        }
    }
}

/// AdamW (Loshchilov & Hutter), as torch.optim.AdamW: θ ← θ·(1 − lr·wd) ; m, v moments with bias
/// correction ; θ ← θ − lr·m̂/(√v̂ + eps). Weight decay skips parameters with `decays == false`.
/// Parameters are updated in place, as `SGD` does.
public final class AdamW: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    var m: [[Float]], v: [[Float]]
    var t = 0

    public init(
        _ parameters: [Parameter], learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
        weightDecay: Float = 0.01
    ) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        m = parameters.map { [Float](repeating: 0, count: $0.value.count) }
        v = m
    }

    public func step(_ gradients: [Variable?]) {
        t += 1
        let c1 = 1 - powf(beta1, Float(t)), c2 = 1 - powf(beta2, Float(t))
        let lr = learningRate, beta1 = beta1, beta2 = beta2, eps = eps
        for (i, p) in parameters.enumerated() {
            guard let g = gradients[i] else { continue }
            let gradient = g.value
            precondition(gradient.count == m[i].count, "gradient \(gradient.shape) for parameter \(p.shape)")
            let decay = p.decays ? 1 - learningRate * weightDecay : 1
            gradient.withUnsafeBytes { graw in
                m[i].withUnsafeMutableBufferPointer { mb in
                    v[i].withUnsafeMutableBufferPointer { vb in
                        let box = UncheckedBox((graw.bindMemory(to: Float.self), mb, vb))
                        p.update { dst, src in
                            let io = UncheckedBox((dst, src))
                            Parallel.chunks(dst.count, grain: 1 << 18) { range in
                                let (dst, src) = io.value, (grad, m, v) = box.value
                                for j in range {
                                    var theta = src[j]
                                    theta *= decay
                                    m[j] = beta1 * m[j] + (1 - beta1) * grad[j]
                                    v[j] = beta2 * v[j] + (1 - beta2) * grad[j] * grad[j]
                                    theta -= lr * (m[j] / c1) / ((v[j] / c2).squareRoot() + eps)
                                    dst[j] = theta
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Learning-rate schedules: the rate for step `step` (0-based) of `total`.
public enum Schedule: Sendable {
    /// Linear warm-up from 0 over `warmup` steps, then half a cosine down to `floor`·base.
    case cosine(warmup: Int, floor: Float)
    /// Multiplies by `gamma` at each milestone (e.g. ×0.1 at half the steps).
    case step(milestones: [Int], gamma: Float)
    case constant

    public func rate(base: Float, step: Int, total: Int) -> Float {
        switch self {
        case .cosine(let warmup, let floor):
            if step < warmup { return base * Float(step + 1) / Float(warmup) }
            let progress = Float(step - warmup) / Float(max(total - warmup, 1))
            return base * (floor + (1 - floor) * 0.5 * (1 + cosf(Float.pi * min(progress, 1))))
        case .step(let milestones, let gamma):
            return base * powf(gamma, Float(milestones.filter { step >= $0 }.count))
        case .constant:
            return base
        }
    }
}

/// Scales the gradients so that their global L2 norm is at most `maxNorm`; returns the norm before.
@discardableResult
public func clipGradients(_ gradients: inout [Variable?], maxNorm: Float) -> Float {
    let norm = gradients.compactMap { $0?.scalars.reduce(0) { $0 + $1 * $1 } }.reduce(0, +).squareRoot()
    if norm > maxNorm {
        let scale = maxNorm / (norm + 1e-6)
        gradients = gradients.map { g in g.map { v in GradMode.disabled { v * scale } } }
    }
    return norm
}
