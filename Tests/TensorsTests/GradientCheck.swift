import Tensors
import Testing

/// Finite-difference gradient checks: the analytic gradient of L = Σ f(x)·R (R random) against
/// central differences (L(x + ε) − L(x − ε)) / 2ε, ε = 1e-2, in float32.
struct GradientCheck {
    var rng = SeededGenerator(seed: 42)

    mutating func random(_ shape: [Int], scale: Float = 1, offset: Float = 0) -> Variable {
        let n = shape.reduce(1, *)
        return try! Variable((0..<n).map { _ in Float(rng.nextNormal()) * scale + offset }, shape: shape, requiresGrad: true)
    }

    /// Checks every input (at most `probes` elements each). Returns the worst relative error.
    @discardableResult
    mutating func check(
        _ name: String, _ inputs: [Variable], probes: Int = 24, tolerance: Float = 2e-2,
        sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Variable]) -> Variable
    ) -> Float {
        let probe = f(inputs)
        let weights = Variable(try! Tensor((0..<probe.count).map { _ in Float(rng.nextNormal()) }, shape: probe.shape))
        func loss(_ xs: [Variable]) -> Variable { (f(xs) * weights).sum() }
        let analytic = Autograd.gradients(of: loss(inputs), wrt: inputs)
        var worst: Float = 0
        for (k, input) in inputs.enumerated() {
            let base = input.scalars
            let picks = base.count <= probes ? Array(base.indices) : (0..<probes).map { _ in Int(rng.next() % UInt64(base.count)) }
            let grad = analytic[k]?.scalars ?? [Float](repeating: 0, count: base.count)
            for i in picks {
                func value(_ delta: Float) -> Float {
                    var moved = base
                    moved[i] += delta
                    var xs = inputs.map { $0.detached() }
                    xs[k] = try! Variable(moved, shape: input.shape)
                    return GradMode.disabled { loss(xs).scalars[0] }
                }
                let eps: Float = 1e-2
                let numeric = (value(eps) - value(-eps)) / (2 * eps)
                let err = abs(numeric - grad[i]) / max(1, abs(numeric))
                worst = max(worst, err)
            }
        }
        #expect(worst < tolerance, "\(name): worst relative error \(worst)", sourceLocation: sourceLocation)
        return worst
    }
}
