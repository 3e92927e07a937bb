import Foundation
import Tensors

// DiT's inference path (GradMode disabled): the same formulas as `callAsFunction`'s differentiable
// graph, on contiguous [N·T, D] buffers — layer norm and the adaLN modulation in one pass per row,
// attention through `Kernels.attention` reading the heads of the q/k/v projections by stride (no
// permutes, no [H, T, T] score tensor), the gated residuals in one pass, GELU-tanh in place. The
// projections are the same `Linear` modules (bias folded into the sgemm), so an optimizer step is
// seen here too.

extension DiTTransformer2DModel {
    /// The model output [N, out, S, S] without recording: `callAsFunction` with GradMode disabled.
    func inferenceForward(_ x: Variable, timesteps t: [Int], classes y: [Int]) -> Variable {
        let c = config, n = x.shape[0], d = c.width, g = c.grid, p = c.patch, hd = c.headDim
        let tokens = g * g, rows = n * tokens
        var hs = (patchEmbed(x).reshaped([n, d, tokens]).permuted([0, 2, 1]) + Variable(positions)).value
        let features = Variable(Self.timestepFeatures(t, shift: c.frequencyShift))
        let onehot = Variable(try! Tensor.oneHot(y, classes: c.classes + 1))
        // Blocks that share an embedding (the original layout) compute it once.
        let activated = embeddings.map { condition($0, features, onehot).silu() }
        for b in blocks {
            let m = b.modulation(activated[b.embedding]).value // [N, 6D]: shift, scale, gate (attention), then (MLP)
            let normed = modulatedLayerNorm(hs, modulation: m, shift: 0, scale: 1, parts: 6, tokens: tokens, eps: 1e-6)
            let attended: Tensor
            if let qkv = b.qkv {
                let all = qkv(Variable(normed)).value // [N, T, 3D]: q, k, v
                attended = Tensor.makeUninitialized([n, tokens, d]) { o in
                    let base = all.floats
                    Kernels.attention(
                        batch: n, heads: c.heads, queries: tokens, keys: tokens, headDim: hd, valueDim: hd, scale: 1 / Float(hd).squareRoot(),
                        q: AttentionOperand(base, batchStride: tokens * 3 * d, rowStride: 3 * d, headStride: hd),
                        k: AttentionOperand(base + d, batchStride: tokens * 3 * d, rowStride: 3 * d, headStride: hd),
                        v: AttentionOperand(base + 2 * d, batchStride: tokens * 3 * d, rowStride: 3 * d, headStride: hd),
                        out: o, outBatchStride: tokens * d, outRowStride: d, outHeadStride: hd)
                }
            } else {
                let v = Variable(normed.reshaped3(n, tokens, d))
                attended = fusedAttention(
                    q: b.q!(v).value, k: b.k!(v).value, v: b.v!(v).value, heads: c.heads)
            }
            let projected = b.out(Variable(attended)).value
            hs = gatedResidual(hs, projected, modulation: m, gate: 2, parts: 6, tokens: tokens)
            let normed2 = modulatedLayerNorm(hs, modulation: m, shift: 3, scale: 4, parts: 6, tokens: tokens, eps: c.mlpNormEps)
            let hidden = b.fc1(Variable(normed2.reshaped3(n, tokens, d))).value
            let activatedHidden = Tensor.makeUninitialized(hidden.shape) { o in
                o.update(from: hidden.floats, count: hidden.count)
                Kernels.geluTanh(o, count: hidden.count)
            }
            let mlp = b.fc2(Variable(activatedHidden)).value
            hs = gatedResidual(hs, mlp, modulation: m, gate: 5, parts: 6, tokens: tokens)
        }
        let fm = finalModulation(activated[0]).value // [N, 2D]: shift, scale
        let normed = modulatedLayerNorm(hs, modulation: fm, shift: 0, scale: 1, parts: 2, tokens: tokens, eps: 1e-6)
        let out = finalLinear(Variable(normed.reshaped3(n, tokens, d)))
        precondition(out.count == rows * p * p * c.outChannels)
        return out.reshaped([n, g, g, p, p, c.outChannels]).permuted([0, 5, 1, 3, 2, 4]).reshaped([n, c.outChannels, g * p, g * p])
    }

    /// LayerNorm without affine over the D channels of every token row of x [N·T, D] (or [N, T, D]),
    /// then adaLN: y = norm(x) · (1 + scale) + shift, with sample n's shift and scale the D-wide parts
    /// `shift` and `scale` of modulation row n ([N, parts·D]). Float accumulation, two passes (mean,
    /// then the centred squares: the biased variance of torch.nn.LayerNorm).
    func modulatedLayerNorm(_ x: Tensor, modulation m: Tensor, shift: Int, scale: Int, parts: Int, tokens: Int, eps: Float) -> Tensor {
        let d = config.width, rows = x.count / d
        let xp = x.floats, mp = m.floats
        return Tensor.makeUninitialized([rows / tokens, tokens, d]) { o in
            Parallel.chunks(rows, grain: max(1, (1 << 14) / max(d, 1))) { range in
                for r in range {
                    let xr = xp + r * d, orow = o + r * d
                    let mr = mp + (r / tokens) * parts * d
                    let sh = mr + shift * d, sc = mr + scale * d
                    let mean = vectorSum(xr, d) / Float(d)
                    var sq: Float = 0
                    for i in 0..<d {
                        let v = xr[i] - mean
                        sq += v * v
                    }
                    let inv = 1 / (sq / Float(d) + eps).squareRoot()
                    for i in 0..<d { orow[i] = (xr[i] - mean) * inv * (1 + sc[i]) + sh[i] }
                }
            }
        }
    }

    /// x + gate ⊙ y for x, y [N·T, D], with sample n's gate the D-wide part `gate` of modulation row n.
    func gatedResidual(_ x: Tensor, _ y: Tensor, modulation m: Tensor, gate: Int, parts: Int, tokens: Int) -> Tensor {
        let d = config.width, rows = x.count / d
        let xp = x.floats, yp = y.floats, mp = m.floats
        return Tensor.makeUninitialized([rows / tokens, tokens, d]) { o in
            Parallel.chunks(rows, grain: max(1, (1 << 14) / max(d, 1))) { range in
                for r in range {
                    let gr = mp + (r / tokens) * parts * d + gate * d
                    let xr = xp + r * d, yr = yp + r * d, orow = o + r * d
                    for i in 0..<d { orow[i] = xr[i] + gr[i] * yr[i] }
                }
            }
        }
    }
}

extension Tensor {
    /// This [N·T, D] or [N, T, D] tensor viewed as [n, t, d] (same storage).
    fileprivate func reshaped3(_ n: Int, _ t: Int, _ d: Int) -> Tensor { (try? reshaped([n, t, d])) ?? self }
}
