import Foundation

// GELU and QuickGELU as fused kernels with a fused first-order backward. As for the norms, when
// the backward is itself being recorded (`createGraph`), it is written with differentiable ops, so
// both stay differentiable to any order:
//   gelu(x)  = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2)),   gelu'(x)  = Φ(x) + x·φ(x),  φ(x) = e^{−x²/2}/√(2π)
//   qgelu(x) = x·σ(ax), a = 1.702,                 qgelu'(x) = σ(ax) + a·x·σ(ax)(1 − σ(ax))

extension Variable {
    /// GELU, exact (erf) form: x/2 · (1 + erf(x/√2)).
    public func gelu() -> Variable {
        let out = Tensor.makeUninitialized(shape) { o in
            o.update(from: value.fp, count: count)
            Kernels.geluExact(o, count: count)
        }
        return record("gelu", out, [self]) { g in
            if GradMode.enabled {
                let cdf = (self * Float(0.5.squareRoot())).erf() * 0.5 + 0.5
                let pdf = (self * self * -0.5).exp() * Float(1 / (2 * Double.pi).squareRoot())
                return [g * (cdf + self * pdf)]
            }
            return [Variable(geluBackward(g.value, x: self.value))]
        }
    }

    /// x · σ(1.702 x) (OpenAI CLIP).
    public func quickGELU() -> Variable {
        let out = Tensor.makeUninitialized(shape) { o in
            o.update(from: value.fp, count: count)
            Kernels.quickGELU(o, count: count)
        }
        return record("quick_gelu", out, [self]) { g in
            if GradMode.enabled {
                let s = (self * 1.702).sigmoid()
                return [g * (s + self * 1.702 * s * (1 - s))]
            }
            return [Variable(quickGELUBackward(g.value, x: self.value))]
        }
    }
}

/// ∂x = ∂y · (Φ(x) + x·φ(x)), in chunks with the vectorised erf and exp kernels.
private func geluBackward(_ g: Tensor, x: Tensor) -> Tensor {
    let gp = g.fp, xp = x.fp
    return Tensor.makeUninitialized(x.shape) { o in
        Parallel.chunks(x.count) { range in
            let chunk = 1024
            let e = UnsafeMutablePointer<Float>.allocate(capacity: 2 * chunk)
            defer { e.deallocate() }
            let f = e + chunk
            var i = range.lowerBound
            while i < range.upperBound {
                let n = min(chunk, range.upperBound - i)
                for j in 0..<n {
                    let v = xp[i + j]
                    e[j] = v * 0.70710678118654752
                    f[j] = -0.5 * v * v
                }
                Kernels.fastErf(e, count: n)
                Kernels.fastExp(f, count: n)
                for j in 0..<n {
                    let v = xp[i + j]
                    o[i + j] = gp[i + j] * (0.5 * (1 + e[j]) + v * f[j] * 0.39894228040143268)
                }
                i += n
            }
        }
    }
}

/// ∂x = ∂y · (σ + a·x·σ(1 − σ)), σ = σ(a·x), a = 1.702.
private func quickGELUBackward(_ g: Tensor, x: Tensor) -> Tensor {
    let gp = g.fp, xp = x.fp
    return Tensor.makeUninitialized(x.shape) { o in
        Parallel.chunks(x.count) { range in
            for i in range {
                let v = xp[i]
                let s = 1 / (1 + expf(-1.702 * v))
                o[i] = gp[i] * (s + 1.702 * v * s * (1 - s))
            }
        }
    }
}

// Softmax and log-softmax over the last axis, fused the same way:
//   s = softmax(x):      ∂x = s ⊙ (g − Σ g⊙s)
//   y = logSoftmax(x):   ∂x = g − softmax(x) · Σ g
extension Variable {
    public func softmax() -> Variable {
        let w = shape.last ?? 1, rows = count / Swift.max(w, 1)
        let out = Tensor.makeUninitialized(shape) { o in
            o.update(from: value.fp, count: count)
            Parallel.chunks(rows, grain: Swift.max(1, (1 << 14) / Swift.max(w, 1))) { range in
                Kernels.softmaxRows(o + range.lowerBound * w, rows: range.count, width: w)
            }
        }
        let result = Variable(out)
        return record("softmax", out, [self]) { g in
            if GradMode.enabled {
                let s = self.softmax()
                return [s * (g - (g * s).sum(axis: -1, keepDims: true))]
            }
            let gp = g.value.fp, sp = result.value.fp
            return [
                Variable(
                    Tensor.makeUninitialized(self.shape) { o in
                        Parallel.chunks(rows, grain: Swift.max(1, (1 << 14) / Swift.max(w, 1))) { range in
                            for r in range {
                                let (gr, sr, orow) = (gp + r * w, sp + r * w, o + r * w)
                                var dot: Float = 0
                                for i in 0..<w { dot += gr[i] * sr[i] }
                                for i in 0..<w { orow[i] = sr[i] * (gr[i] - dot) }
                            }
                        }
                    })
            ]
        }
    }

    public func logSoftmax() -> Variable {
        let w = shape.last ?? 1, rows = count / Swift.max(w, 1)
        let x = value.fp
        let out = Tensor.makeUninitialized(shape) { o in
            Parallel.chunks(rows, grain: Swift.max(1, (1 << 14) / Swift.max(w, 1))) { range in
                for r in range {
                    let (xr, orow) = (x + r * w, o + r * w)
                    var m = -Float.infinity
                    for i in 0..<w { m = Swift.max(m, xr[i]) }
                    for i in 0..<w { orow[i] = xr[i] - m }
                    // Σ exp through the vectorised kernel on a scratch copy of the row.
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: w)
                    defer { scratch.deallocate() }
                    scratch.update(from: orow, count: w)
                    Kernels.fastExp(scratch, count: w)
                    var z: Float = 0
                    for i in 0..<w { z += scratch[i] }
                    let lz = Foundation.log(z)
                    for i in 0..<w { orow[i] -= lz }
                }
            }
        }
        let result = Variable(out)
        return record("log_softmax", out, [self]) { g in
            if GradMode.enabled {
                return [g - self.softmax() * g.sum(axis: -1, keepDims: true)]
            }
            let gp = g.value.fp, yp = result.value.fp
            return [
                Variable(
                    Tensor.makeUninitialized(self.shape) { o in
                        Parallel.chunks(rows, grain: Swift.max(1, (1 << 14) / Swift.max(w, 1))) { range in
                            for r in range {
                                let (gr, yr, orow) = (gp + r * w, yp + r * w, o + r * w)
                                var total: Float = 0
                                for i in 0..<w { total += gr[i] }
                                for i in 0..<w { orow[i] = gr[i] - Foundation.exp(yr[i]) * total }
                            }
                        }
                    })
            ]
        }
    }
}
