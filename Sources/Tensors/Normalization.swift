import Foundation

// Layer and group normalisation as fused kernels: one pass for the statistics and one for the
// output, and a fused backward for first-order gradients. When the backward itself is being
// recorded (`createGraph`, e.g. gradient matching), it is written with differentiable ops instead,
// so these stay differentiable to any order. Both paths compute the same formulas:
//   x̂ = (x − μ)/σ, σ = √(var + eps) ;  y = x̂·γ + β
//   ∂x = (∂x̂ − mean(∂x̂) − x̂·mean(∂x̂·x̂))/σ with ∂x̂ = ∂y·γ, means over each normalised group.

extension Variable {
    /// Layer normalisation over the last axis, with optional per-feature weight and bias.
    public func layerNorm(weight: Variable?, bias: Variable?, eps: Float = 1e-5) -> Variable {
        let d = shape.last ?? 1
        let rows = count / Swift.max(d, 1)
        precondition(weight.map { $0.count == d } ?? true, "layerNorm weight \(weight!.shape) does not match \(d) features")
        precondition(bias.map { $0.count == d } ?? true, "layerNorm bias \(bias!.shape) does not match \(d) features")
        return normalized(rows: rows, groupLength: d, channelLength: 1, channels: d, weight: weight, bias: bias, eps: eps)
    }

    /// Group normalisation of [N, C, …] over `groups` channel groups (C % groups == 0), with a
    /// per-channel affine; groups == C is instance normalisation.
    public func groupNorm(groups: Int, weight: Variable?, bias: Variable?, eps: Float = 1e-5) -> Variable {
        let n = shape[0], c = shape[1]
        precondition(groups > 0 && c % groups == 0, "channels \(c) are not divisible into \(groups) groups")
        precondition(weight.map { $0.count == c } ?? true, "groupNorm weight \(weight!.shape) does not match \(c) channels")
        precondition(bias.map { $0.count == c } ?? true, "groupNorm bias \(bias!.shape) does not match \(c) channels")
        let spatial = count / Swift.max(n * c, 1)
        return normalized(
            rows: n * groups, groupLength: (c / groups) * spatial, channelLength: spatial, channels: c,
            weight: weight, bias: bias, eps: eps)
    }

    /// The shared fused path. The tensor is `rows` groups of `groupLength` contiguous elements; the
    /// affine channel of element j of row r is ((r·groupLength + j) / channelLength) % channels.
    private func normalized(
        rows: Int, groupLength m: Int, channelLength s: Int, channels c: Int,
        weight: Variable?, bias: Variable?, eps: Float
    ) -> Variable {
        let x = value.fp
        let gamma = weight?.value.fp, beta = bias?.value.fp
        // mean and 1/σ per row.
        var stats = [Float](repeating: 0, count: 2 * rows)
        let out = stats.withUnsafeMutableBufferPointer { st in
            let st = st.baseAddress!
            return Tensor.makeUninitialized(shape) { o in
                Parallel.chunks(rows, grain: Swift.max(1, (1 << 15) / Swift.max(m, 1))) { range in
                    for r in range {
                        let row = x + r * m, orow = o + r * m
                        let mu = vectorSum(row, m) / Float(m)
                        let rs = 1 / (vectorCentredSquares(row, m, mu) / Float(m) + eps).squareRoot()
                        st[2 * r] = mu
                        st[2 * r + 1] = rs
                        normalizeRow(row, orow, m: m, s: s, c: c, firstChannel: (r * m / s) % c, mu: mu, rs: rs, gamma: gamma, beta: beta)
                    }
                }
            }
        }
        let inputs = [self] + [weight, bias].compactMap { $0 }
        let (hasWeight, hasBias) = (weight != nil, bias != nil)
        return record("norm", out, inputs) { g in
            if GradMode.enabled {
                // Recorded backward (createGraph): the same formulas in differentiable ops, with μ
                // and σ recomputed from x so that their own dependence on x is differentiated too.
                let grouped = self.reshaped([rows, m])
                let centred = grouped - grouped.mean(axis: -1, keepDims: true)
                let sd = ((centred * centred).mean(axis: -1, keepDims: true) + eps).sqrt()
                let xhat = centred / sd
                let affine = s == 1 ? [c] : [1, c] + [Int](repeating: 1, count: self.shape.count - 2)
                let dxhat = (weight.map { g * $0.reshaped(affine) } ?? g).reshaped([rows, m])
                let dx = (dxhat - dxhat.mean(axis: -1, keepDims: true) - xhat * (dxhat * xhat).mean(axis: -1, keepDims: true)) / sd
                var grads: [Variable?] = [dx.reshaped(self.shape)]
                if hasWeight { grads.append((g * xhat.reshaped(self.shape)).sumTo(affine).reshaped(weight!.shape)) }
                if hasBias { grads.append(g.sumTo(affine).reshaped(bias!.shape)) }
                return grads
            }
            // Frozen affine parameters (inputs 1, 2) need no gradient: skip their reductions.
            let wantAffine = (hasWeight && Autograd.needsGradient(1)) || (hasBias && Autograd.needsGradient(hasWeight ? 2 : 1))
            let (dx, dgamma, dbeta) = normBackwardKernel(
                g.value, x: self.value, stats: stats, rows: rows, m: m, s: s, c: c,
                gamma: weight?.value, wantAffine: wantAffine)
            var grads: [Variable?] = [Variable(dx)]
            if hasWeight { grads.append(wantAffine ? Variable(try! dgamma!.reshaped(weight!.shape)) : nil) }
            if hasBias { grads.append(wantAffine ? Variable(try! dbeta!.reshaped(bias!.shape)) : nil) }
            return grads
        }
    }
}

@inline(__always)
private func normalizeRow(
    _ x: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, m: Int, s: Int, c: Int, firstChannel: Int,
    mu: Float, rs: Float, gamma: UnsafePointer<Float>?, beta: UnsafePointer<Float>?
) {
    if s == 1 {
        // Layer norm: the channel is the position in the row.
        for j in 0..<m {
            let v = (x[j] - mu) * rs
            o[j] = v * (gamma?[j] ?? 1) + (beta?[j] ?? 0)
        }
        return
    }
    var ch = firstChannel
    for start in stride(from: 0, to: m, by: s) {
        let a = rs * (gamma?[ch] ?? 1), b = (beta?[ch] ?? 0) - mu * a
        for j in start..<(start + s) { o[j] = x[j] * a + b }
        ch = ch + 1 == c ? 0 : ch + 1
    }
}

/// First-order backward of the fused normalisation: ∂x, and ∂γ, ∂β per channel when wanted.
private func normBackwardKernel(
    _ g: Tensor, x: Tensor, stats: [Float], rows: Int, m: Int, s: Int, c: Int,
    gamma: Tensor?, wantAffine: Bool
) -> (Tensor, Tensor?, Tensor?) {
    let gp = g.fp, xp = x.fp, gam = gamma?.fp
    // Per-row partial sums of ∂y·x̂ and ∂y per channel: [rows, channels-in-row] so threads never share.
    let perRow = s == 1 ? m : m / s
    var partialG = wantAffine ? [Float](repeating: 0, count: rows * perRow) : []
    var partialB = wantAffine ? [Float](repeating: 0, count: rows * perRow) : []
    let dx = partialG.withUnsafeMutableBufferPointer { pgb in
        partialB.withUnsafeMutableBufferPointer { pbb in
            // Empty arrays can still hand out a (shared) base address: only write when asked.
            let pg = wantAffine ? pgb.baseAddress : nil, pb = wantAffine ? pbb.baseAddress : nil
            return Tensor.makeUninitialized(x.shape) { o in
                Parallel.chunks(rows, grain: Swift.max(1, (1 << 14) / Swift.max(m, 1))) { range in
                    for r in range {
                        let mu = stats[2 * r], rs = stats[2 * r + 1]
                        let xr = xp + r * m, gr = gp + r * m, orow = o + r * m
                        let first = (r * m / s) % c
                        // Σ ∂x̂ and Σ ∂x̂·x̂ over the row; ∂x̂ = ∂y·γ.
                        var a: Float = 0, b: Float = 0
                        if s == 1 {
                            for j in 0..<m {
                                let xh = (xr[j] - mu) * rs, dxh = gr[j] * (gam?[j] ?? 1)
                                a += dxh
                                b += dxh * xh
                                if let pg, let pb {
                                    pg[r * m + j] = gr[j] * xh
                                    pb[r * m + j] = gr[j]
                                }
                            }
                        } else {
                            var ch = first
                            for (k, start) in stride(from: 0, to: m, by: s).enumerated() {
                                let gc = gam?[ch] ?? 1
                                var sg: Float = 0, sgx: Float = 0
                                for j in start..<(start + s) {
                                    sg += gr[j]
                                    sgx += gr[j] * (xr[j] - mu)
                                }
                                sgx *= rs
                                a += gc * sg
                                b += gc * sgx
                                if let pg, let pb {
                                    pg[r * perRow + k] = sgx
                                    pb[r * perRow + k] = sg
                                }
                                ch = ch + 1 == c ? 0 : ch + 1
                            }
                        }
                        let meanA = a / Float(m), meanB = b / Float(m)
                        if s == 1 {
                            for j in 0..<m {
                                let xh = (xr[j] - mu) * rs
                                orow[j] = (gr[j] * (gam?[j] ?? 1) - meanA - xh * meanB) * rs
                            }
                        } else {
                            var ch = first
                            for start in stride(from: 0, to: m, by: s) {
                                let gc = gam?[ch] ?? 1
                                for j in start..<(start + s) {
                                    let xh = (xr[j] - mu) * rs
                                    orow[j] = (gr[j] * gc - meanA - xh * meanB) * rs
                                }
                                ch = ch + 1 == c ? 0 : ch + 1
                            }
                        }
                    }
                }
            }
        }
    }
    guard wantAffine else { return (dx, nil, nil) }
    // Reduce the partials to channels (in a fixed order, so results do not depend on threads).
    var dgamma = [Float](repeating: 0, count: c), dbeta = [Float](repeating: 0, count: c)
    for r in 0..<rows {
        let first = s == 1 ? 0 : (r * m / s) % c
        for k in 0..<perRow {
            let ch = s == 1 ? k : (first + k) % c
            dgamma[ch] += partialG[r * perRow + k]
            dbeta[ch] += partialB[r * perRow + k]
        }
    }
    return (dx, Tensor(dgamma), Tensor(dbeta))
}
