import Foundation

// Differentiable ops on `Variable`. Each backward is written with these same ops, so gradients
// of gradients work. Shapes follow numpy broadcasting.

// MARK: - Elementwise arithmetic

// Backwards compute only the gradients asked for (`Autograd.needsGradient`).
public func + (a: Variable, b: Variable) -> Variable {
    record("add", broadcastBinary(a.value, b.value, +), [a, b]) { g in
        [Autograd.needsGradient(0) ? g.sumTo(a.shape) : nil, Autograd.needsGradient(1) ? g.sumTo(b.shape) : nil]
    }
}

public func - (a: Variable, b: Variable) -> Variable {
    record("sub", broadcastBinary(a.value, b.value, -), [a, b]) { g in
        [Autograd.needsGradient(0) ? g.sumTo(a.shape) : nil, Autograd.needsGradient(1) ? (-g).sumTo(b.shape) : nil]
    }
}

public func * (a: Variable, b: Variable) -> Variable {
    record("mul", broadcastBinary(a.value, b.value, *), [a, b]) { g in
        [Autograd.needsGradient(0) ? (g * b).sumTo(a.shape) : nil, Autograd.needsGradient(1) ? (g * a).sumTo(b.shape) : nil]
    }
}

public func / (a: Variable, b: Variable) -> Variable {
    record("div", broadcastBinary(a.value, b.value, /), [a, b]) { g in
        [(g / b).sumTo(a.shape), (-(g * a) / (b * b)).sumTo(b.shape)]
    }
}

public prefix func - (a: Variable) -> Variable {
    record("neg", a.value.mapFloats { -$0 }, [a]) { g in [-g] }
}

public func + (a: Variable, s: Float) -> Variable { record("adds", a.value.mapFloats { $0 + s }, [a]) { g in [g] } }
public func - (a: Variable, s: Float) -> Variable { a + (-s) }
public func * (a: Variable, s: Float) -> Variable { record("muls", a.value.mapFloats { $0 * s }, [a]) { g in [g * s] } }
public func / (a: Variable, s: Float) -> Variable { a * (1 / s) }
public func + (s: Float, a: Variable) -> Variable { a + s }
public func * (s: Float, a: Variable) -> Variable { a * s }
public func - (s: Float, a: Variable) -> Variable { -a + s }

extension Tensor {
    @inline(__always)
    func mapFloats(_ f: (Float) -> Float) -> Tensor {
        let p = fp
        return Tensor.makeUninitialized(shape) { o in Parallel.chunks(count) { r in for i in r { o[i] = f(p[i]) } } }
    }
}

extension Variable {
    /// A constant (no gradient) of the same shape.
    func constant(_ t: Tensor) -> Variable { Variable(t) }

    // MARK: Unary functions

    public func exp() -> Variable { record("exp", value.mapFloats { Foundation.exp($0) }, [self]) { g in [g * self.exp()] } }
    public func log() -> Variable { record("log", value.mapFloats { Foundation.log($0) }, [self]) { g in [g / self] } }
    public func sqrt() -> Variable { record("sqrt", value.mapFloats { $0.squareRoot() }, [self]) { g in [g / (self.sqrt() * 2)] } }
    public func square() -> Variable { self * self }

    public func tanh() -> Variable {
        record("tanh", value.mapFloats { Foundation.tanh($0) }, [self]) { g in
            let t = self.tanh()
            return [g * (1 - t * t)]
        }
    }

    public func sigmoid() -> Variable {
        record("sigmoid", value.mapFloats { 1 / (1 + Foundation.exp(-$0)) }, [self]) { g in
            let s = self.sigmoid()
            return [g * s * (1 - s)]
        }
    }

    /// The error function; d erf(x)/dx = 2/√π · exp(−x²).
    public func erf() -> Variable {
        record("erf", value.mapFloats { erff($0) }, [self]) { g in [g * (self * self * -1).exp() * Float(2 / Double.pi.squareRoot())] }
    }

    /// max(x, 0); the derivative uses a constant mask (1 where x > 0).
    public func relu() -> Variable {
        record("relu", value.mapFloats { Swift.max($0, 0) }, [self]) { g in
            if !GradMode.enabled {
                // First order: one fused pass, g where x > 0.
                let gp = g.value.fp, xp = self.value.fp
                return [
                    Variable(
                        Tensor.makeUninitialized(self.shape) { o in
                            Parallel.chunks(self.count) { r in for i in r { o[i] = xp[i] > 0 ? gp[i] : 0 } }
                        })
                ]
            }
            return [g * Variable(self.value.mapFloats { $0 > 0 ? 1 : 0 })]
        }
    }

    /// GELU with the tanh approximation: x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³))).
    public func geluTanh() -> Variable {
        let out = Tensor.makeUninitialized(shape) { o in
            o.update(from: value.fp, count: count)
            Kernels.geluTanh(o, count: count)
        }
        return record("gelu_tanh", out, [self]) { g in
            // y = x·σ(2u), u = c(x + a x³): y' = σ + x·σ(1 − σ)·2c(1 + 3a x²). Recorded backward
            // (createGraph) is written with differentiable ops, so it differentiates again.
            let c = Float((2 / Double.pi).squareRoot()), a: Float = 0.044715
            if GradMode.enabled {
                let s = ((self + self * self * self * a) * (2 * c)).sigmoid()
                return [g * (s + self * s * (1 - s) * (self * self * (3 * a) + 1) * (2 * c))]
            }
            let xp = self.value.fp, gp = g.value.fp
            return [
                Variable(
                    Tensor.makeUninitialized(self.shape) { o in
                        for i in 0..<self.count {
                            let v = xp[i]
                            let s = 1 / (1 + expf(-2 * c * (v + a * v * v * v)))
                            o[i] = gp[i] * (s + v * s * (1 - s) * 2 * c * (1 + 3 * a * v * v))
                        }
                    })
            ]
        }
    }

    /// x · σ(x).
    public func silu() -> Variable {
        let out = Tensor.makeUninitialized(shape) { o in
            o.update(from: value.fp, count: count)
            Kernels.silu(o, count: count)
        }
        return record("silu", out, [self]) { g in
            // (x·σ)' = σ + x·σ(1 − σ); recorded with differentiable ops under createGraph.
            if GradMode.enabled {
                let s = self.sigmoid()
                return [g * (s + self * s * (1 - s))]
            }
            let xp = self.value.fp, gp = g.value.fp
            return [
                Variable(
                    Tensor.makeUninitialized(self.shape) { o in
                        for i in 0..<self.count {
                            let s = 1 / (1 + expf(-xp[i]))
                            o[i] = gp[i] * (s + xp[i] * s * (1 - s))
                        }
                    })
            ]
        }
    }

    // MARK: Shape

    public func reshaped(_ shape: [Int]) -> Variable {
        var shape = shape
        if let i = shape.firstIndex(of: -1) {
            let known = shape.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            shape[i] = known == 0 ? 0 : count / known
        }
        precondition(shape.reduce(1, *) == count, "cannot reshape \(self.shape) to \(shape)")
        let original = self.shape
        return record("reshape", try! value.reshaped(shape), [self]) { g in [g.reshaped(original)] }
    }

    /// Reorders the axes: result axis i is input axis `order[i]`.
    public func permuted(_ order: [Int]) -> Variable {
        precondition(order.sorted() == Array(0..<shape.count), "permutation \(order) does not fit rank \(shape.count)")
        let out = permuteTensor(value, order)
        var inverse = [Int](repeating: 0, count: order.count)
        for (i, o) in order.enumerated() { inverse[o] = i }
        return record("permute", out, [self]) { g in [g.permuted(inverse)] }
    }

    /// Swaps the last two axes.
    public func transposed() -> Variable {
        let r = shape.count
        precondition(r >= 2, "transposed() needs rank ≥ 2")
        return permuted(Array(0..<(r - 2)) + [r - 1, r - 2])
    }

    /// Repeats along dimensions of size 1 up to `shape`.
    public func broadcast(to shape: [Int]) -> Variable {
        if self.shape == shape { return self }
        let original = self.shape
        return record("broadcast", expandTo(value, shape), [self]) { g in [g.sumTo(original)] }
    }

    /// Sums the broadcast dimensions away (the adjoint of `broadcast(to:)`).
    public func sumTo(_ shape: [Int]) -> Variable {
        if self.shape == shape { return self }
        let original = self.shape
        return record("sumTo", reduceTo(value, shape), [self]) { g in [g.broadcast(to: original)] }
    }

    // MARK: Reductions

    /// The sum of every element (a scalar, shape []).
    public func sum() -> Variable { sumTo([]).reshaped([]) }

    /// Sums along `axis` (negative counts from the end).
    public func sum(axis: Int, keepDims: Bool = false) -> Variable {
        let a = axis < 0 ? shape.count + axis : axis
        var kept = shape
        kept[a] = 1
        let s = sumTo(kept)
        return keepDims ? s : s.reshaped(shape.enumerated().filter { $0.offset != a }.map(\.element))
    }

    public func mean() -> Variable { sum() / Float(Swift.max(count, 1)) }
    public func mean(axis: Int, keepDims: Bool = false) -> Variable {
        let a = axis < 0 ? shape.count + axis : axis
        return sum(axis: axis, keepDims: keepDims) / Float(shape[a])
    }

    /// The largest element along `axis`; the gradient goes to the first maximum (a constant one-hot
    /// selection, so the op stays differentiable to any order).
    public func max(axis: Int, keepDims: Bool = false) -> Variable {
        let a = axis < 0 ? shape.count + axis : axis
        let mask = argmaxMask(value, axis: a)
        return (self * Variable(mask)).sum(axis: a, keepDims: keepDims)
    }

    // MARK: Normalisation and probabilities

    /// RMSNorm over the last axis: x / √(mean(x²) + eps) · weight.
    public func rmsNorm(weight: Variable?, eps: Float = 1e-6) -> Variable {
        var y = self / ((self * self).mean(axis: -1, keepDims: true) + eps).sqrt()
        if let weight { y = y * weight }
        return y
    }
}

// MARK: - Matrix products

/// op(A) · op(B), op = transpose of the last two axes when its flag is set (no copy: the flags go
/// to the GEMM). Shapes: [..., m, k] × [..., k, n] with the same leading axes, or [..., m, k] × [k, n]
/// (B shared; A's leading axes are folded into its rows, so A cannot be transposed then unless it
/// is a matrix). The backward is written with the same products, so it is differentiable again:
///   C = A·B:   ∂A = g·Bᵀ,  ∂B = Aᵀ·g      C = A·Bᵀ:  ∂A = g·B,   ∂B = gᵀ·A
///   C = Aᵀ·B:  ∂A = B·gᵀ,  ∂B = A·g       C = Aᵀ·Bᵀ: ∂A = Bᵀ·gᵀ, ∂B = gᵀ·Aᵀ
public func matmul(_ a: Variable, _ b: Variable, transposeA: Bool = false, transposeB: Bool = false) -> Variable {
    let ar = a.shape.count, br = b.shape.count
    precondition(ar >= 2 && br >= 2, "matmul needs rank ≥ 2, got \(a.shape) and \(b.shape)")
    let (aRows, aCols, bRows, bCols) = (a.shape[ar - 2], a.shape[ar - 1], b.shape[br - 2], b.shape[br - 1])
    let (m, k) = transposeA ? (aCols, aRows) : (aRows, aCols)
    let (kb, n) = transposeB ? (bCols, bRows) : (bRows, bCols)
    precondition(k == kb, "matmul: inner dimensions differ in \(a.shape)\(transposeA ? "ᵀ" : "") × \(b.shape)\(transposeB ? "ᵀ" : "")")
    let lead = Array(a.shape.dropLast(2))
    if br == 2 {
        precondition(ar == 2 || !transposeA, "matmul: a transposed A with leading axes needs a B with the same leading axes")
        let rows = lead.reduce(1, *) * m
        let out = Tensor.makeUninitialized(lead + [m, n]) { o in
            GEMM.sgemm(
                transposeA: transposeA, transposeB: transposeB, m: rows, n: n, k: k,
                a: a.value.fp, lda: aCols, b: b.value.fp, ldb: bCols, c: o, ldc: n)
        }
        return record("matmul", out, [a, b]) { g in
            let g2 = g.reshaped([rows, n]), a2 = transposeA ? a : a.reshaped([rows, k])
            let (wantA, wantB) = (Autograd.needsGradient(0), Autograd.needsGradient(1))
            switch (transposeA, transposeB) {
            case (false, false): return [wantA ? matmul(g, b, transposeB: true) : nil, wantB ? matmul(a2, g2, transposeA: true) : nil]
            case (false, true): return [wantA ? matmul(g, b) : nil, wantB ? matmul(g2, a2, transposeA: true) : nil]
            case (true, false): return [wantA ? matmul(b, g, transposeB: true) : nil, wantB ? matmul(a, g) : nil]
            case (true, true):
                return [
                    wantA ? matmul(b, g, transposeA: true, transposeB: true) : nil,
                    wantB ? matmul(g, a, transposeA: true, transposeB: true) : nil,
                ]
            }
        }
    }
    precondition(lead == Array(b.shape.dropLast(2)), "matmul: batch dimensions differ in \(a.shape) × \(b.shape)")
    let batch = lead.reduce(1, *)
    let out = Tensor.makeUninitialized(lead + [m, n]) { o in
        GEMM.batched(
            transposeA: transposeA, transposeB: transposeB, batch: batch, m: m, n: n, k: k,
            a: a.value.fp, lda: aCols, strideA: m * k, b: b.value.fp, ldb: bCols, strideB: k * n, c: o, ldc: n, strideC: m * n)
    }
    return record("bmm", out, [a, b]) { g in
        let (wantA, wantB) = (Autograd.needsGradient(0), Autograd.needsGradient(1))
        switch (transposeA, transposeB) {
        case (false, false): return [wantA ? matmul(g, b, transposeB: true) : nil, wantB ? matmul(a, g, transposeA: true) : nil]
        case (false, true): return [wantA ? matmul(g, b) : nil, wantB ? matmul(g, a, transposeA: true) : nil]
        case (true, false): return [wantA ? matmul(b, g, transposeB: true) : nil, wantB ? matmul(a, g) : nil]
        case (true, true):
            return [
                wantA ? matmul(b, g, transposeA: true, transposeB: true) : nil,
                wantB ? matmul(g, a, transposeA: true, transposeB: true) : nil,
            ]
        }
    }
}

/// x · Wᵀ + b with W stored [out, in] (nn.Linear).
/// One pass: the bias copied into the output, the product added by sgemm (β = 1) — recorded as one
/// op whose backward is dx = g·W, dW = gᵀ·x, db = Σ_rows g (each differentiable again), instead of a
/// product and a broadcast sum over a second output.
public func linear(_ x: Variable, weight: Variable, bias: Variable?) -> Variable {
    if let bias, weight.shape.count == 2, x.shape.count >= 2, x.shape.last == weight.shape[1], bias.shape == [weight.shape[0]],
        x.value.dtype == .float32, weight.value.dtype == .float32, bias.value.dtype == .float32
    {
        let (inF, outF) = (weight.shape[1], weight.shape[0])
        let rows = x.count / max(inF, 1)
        let out = Tensor.makeUninitialized(Array(x.shape.dropLast()) + [outF]) { o in
            Kernels.linear(x.value.fp, rows: rows, inFeatures: inF, weight: weight.value.fp, bias: bias.value.fp, outFeatures: outF, into: o)
        }
        return record("linear", out, [x, weight, bias]) { g in
            let g2 = g.reshaped([rows, outF])
            return [
                Autograd.needsGradient(0) ? matmul(g, weight) : nil,
                Autograd.needsGradient(1) ? matmul(g2, x.reshaped([rows, inF]), transposeA: true) : nil,
                Autograd.needsGradient(2) ? g2.sumTo([outF]) : nil,
            ]
        }
    }
    let y = matmul(x, weight, transposeB: true)
    return bias.map { y + $0 } ?? y
}

// MARK: - Losses

/// Mean cross-entropy of logits [N, C] against class indices.
public func crossEntropy(_ logits: Variable, labels: [Int]) -> Variable {
    let n = logits.shape[0], c = logits.shape[1]
    precondition(labels.count == n && labels.allSatisfy { (0..<c).contains($0) }, "labels must hold \(n) indices in 0..<\(c)")
    let onehot = Tensor.make([n, c]) { o in for (i, y) in labels.enumerated() { o[i * c + y] = 1 } }
    return -(logits.logSoftmax() * Variable(onehot)).sum() / Float(n)
}

/// Mean binary cross-entropy of targets in [0, 1] (soft targets allowed) under logits, as torch's
/// `binary_cross_entropy_with_logits`: softplus(z) − x·z with softplus(z) = relu(z) + log(1 + e^(−|z|)),
/// stable for any z; its gradient σ(z) − x does not vanish where a sigmoid saturates.
public func binaryCrossEntropy(logits z: Variable, targets x: Variable) -> Variable {
    let absolute = z.relu() + (-z).relu()
    return (z.relu() + ((-absolute).exp() + 1).log() - x * z).mean()
}

/// KL(p_teacher ‖ softmax(student/T)) · T², batch mean, with p_teacher = softmax(teacher/T)
/// (Hinton et al.'s distillation loss as RDED/SRe2L use it).
public func distillationKL(student: Variable, teacher: Variable, temperature t: Float) -> Variable {
    let p = (teacher / t).softmax().detached()
    let logQ = (student / t).logSoftmax()
    let logP = Variable(p.value.mapFloats { $0 > 0 ? Foundation.log($0) : 0 })
    return (p * (logP - logQ)).sum() * (t * t) / Float(student.shape[0])
}

// MARK: - Helpers (not differentiable)

func permuteTensor(_ t: Tensor, _ order: [Int]) -> Tensor {
    let shape = order.map { t.shape[$0] }
    let src = Shapes.strides(t.shape)
    let strides = order.map { src[$0] }
    let zero = [Int](repeating: 0, count: shape.count)
    let p = t.fp
    return Tensor.make(shape) { o in
        Shapes.forEachRow(shape, strides, zero) { off, _, start, n, d, _ in
            for i in 0..<n { o[start + i] = p[off + i * d] }
        }
    }
}

/// The maximum along the last axis, keeping it as size 1.
func maxAlongLast(_ t: Tensor) -> Tensor {
    let w = t.shape.last ?? 1, rows = t.count / Swift.max(w, 1)
    let p = t.fp
    var shape = t.shape
    if !shape.isEmpty { shape[shape.count - 1] = 1 }
    return Tensor.make(shape) { o in
        for r in 0..<rows {
            var m = -Float.infinity
            for i in 0..<w { m = Swift.max(m, p[r * w + i]) }
            o[r] = m
        }
    }
}

/// 1 at the first maximum along `axis`, 0 elsewhere.
func argmaxMask(_ t: Tensor, axis: Int) -> Tensor {
    let outer = t.shape[..<axis].reduce(1, *), len = t.shape[axis], inner = t.shape[(axis + 1)...].reduce(1, *)
    let p = t.fp
    return Tensor.make(t.shape) { o in
        for a in 0..<outer {
            for c in 0..<inner {
                var best = 0
                for i in 1..<Swift.max(len, 1) where p[(a * len + i) * inner + c] > p[(a * len + best) * inner + c] { best = i }
                o[(a * len + best) * inner + c] = 1
            }
        }
    }
}
