import Foundation
import Tensors

// SAM 2's inference path (GradMode disabled): the same formulas as the differentiable modules, on
// the projections' contiguous [B, N, H·hd] buffers — heads addressed by stride instead of split by
// permutes, RoPE applied in one pass, attention through `Kernels.attention` (blocked, online softmax:
// no full score matrix). With recording on, the modules take their differentiable path unchanged.

extension Tensor {
    /// The float32 elements (the tensor must outlive the pointer's use).
    var floats: UnsafePointer<Float> { UnsafePointer(storage.bytes.assumingMemoryBound(to: Float.self)) }
}

/// softmax(scale · q kᵀ) v for every head of projections q [B, Nq, H·hd], k [B, Nk, H·hd] and
/// v [B, Nk, H·dv] (head h is channels h·hd..<(h+1)·hd) → [B, Nq, H·dv]; scale 1/√hd unless given.
/// Computed by `Kernels.attention` (inference only: not differentiable).
public func fusedAttention(q: Tensor, k: Tensor, v: Tensor, heads: Int, scale: Float? = nil) -> Tensor {
    let (b, nq, c) = (q.shape[0], q.shape[1], q.shape[2])
    let (nk, cv) = (k.shape[1], v.shape[2])
    precondition(
        q.rank == 3 && k.rank == 3 && v.rank == 3 && k.shape[0] == b && v.shape[0] == b && v.shape[1] == nk && k.shape[2] == c
            && c % heads == 0 && cv % heads == 0, "fusedAttention: q \(q.shape), k \(k.shape), v \(v.shape) with \(heads) heads")
    let (hd, dv) = (c / heads, cv / heads)
    return Tensor.makeUninitialized([b, nq, cv]) { o in
        Kernels.attention(
            batch: b, heads: heads, queries: nq, keys: nk, headDim: hd, valueDim: dv, scale: scale ?? 1 / Float(hd).squareRoot(),
            q: AttentionOperand(q.floats, batchStride: nq * c, rowStride: c, headStride: hd),
            k: AttentionOperand(k.floats, batchStride: nk * c, rowStride: c, headStride: hd),
            v: AttentionOperand(v.floats, batchStride: nk * cv, rowStride: cv, headStride: dv),
            out: o, outBatchStride: nq * cv, outRowStride: cv, outHeadStride: dv)
    }
}

extension SAMAttention {
    /// The inference path of `callAsFunction(q:k:v:)`.
    func fused(q x: Variable, k y: Variable, v z: Variable) -> Variable {
        out(Variable(fusedAttention(q: q(x).value, k: k(y).value, v: v(z).value, heads: heads)))
    }
}

extension SAM2MemoryAttention {
    /// The inference path of `ropeAttention`: projections, RoPE on [B, N, H·hd] in one pass, fused attention.
    func fusedRopeAttention(_ a: SAMAttention, q x: Variable, k y: Variable, v z: Variable, excluded: Int) -> Variable {
        let q = a.q(x).value, k = a.k(y).value, v = a.v(z).value
        let (t, c) = (q.shape[1], q.shape[2])
        let hd = c / a.heads
        let side = Int(Double(t).squareRoot().rounded())
        let (cosT, sinT) = axialRotation(headDim: hd, side: side, theta: config.ropeTheta)
        let qr = rotated(q, cos: cosT, sin: sinT, tokens: t, heads: a.heads, count: t)
        let kr = rotated(k, cos: cosT, sin: sinT, tokens: t, heads: a.heads, count: k.shape[1] - excluded)
        return a.out(Variable(fusedAttention(q: qr, k: kr, v: v, heads: a.heads)))
    }

    /// x [B, N, H·hd]: in every head the pairs (x₂ᵢ, x₂ᵢ₊₁) of the first `count` tokens rotated by the
    /// angles of token n mod `tokens` (as `rotate`), the other tokens copied.
    func rotated(_ x: Tensor, cos: [Float], sin: [Float], tokens t: Int, heads: Int, count: Int) -> Tensor {
        let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
        let hd = c / heads, half = hd / 2
        let src = x.floats
        return Tensor.makeUninitialized([b, n, c]) { o in
            cos.withUnsafeBufferPointer { cp in
                sin.withUnsafeBufferPointer { sp in
                    let box = UncheckedBox((src, o, cp.baseAddress!, sp.baseAddress!))
                    Parallel.chunks(b * n, grain: max(1, (1 << 14) / max(c, 1))) { rows in
                        let (src, o, cp, sp) = box.value
                        for row in rows {
                            let token = row % n
                            let (xr, orow) = (src + row * c, o + row * c)
                            guard token < count else {
                                orow.update(from: xr, count: c)
                                continue
                            }
                            let (cr, sr) = (cp + (token % t) * half, sp + (token % t) * half)
                            for h in 0..<heads {
                                let (xh, oh) = (xr + h * hd, orow + h * hd)
                                for j in 0..<half {
                                    let (re, im) = (xh[2 * j], xh[2 * j + 1])
                                    oh[2 * j] = re * cr[j] - im * sr[j]
                                    oh[2 * j + 1] = re * sr[j] + im * cr[j]
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

extension HieraBlock {
    /// The inference path of `attention`: the packed qkv [B, h·w, 3·C] read in place (q, k, v and the
    /// heads by stride), q max-pooled over qStride × qStride cells when pooling, fused attention.
    func fusedWindowAttention(_ x: Variable) -> Variable {
        let (b, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let hd = dimOut / heads, c3 = 3 * dimOut
        let packed = qkv(x).value // [B, h, w, 3·C]: per token q (heads × hd), then k, then v
        let base = packed.floats
        var (oh, ow) = (h, w)
        var pooled: Tensor? = nil
        if let s = qStride {
            (oh, ow) = (h / s, w / s)
            pooled = maxPoolRows(base, batch: b, height: h, width: w, channels: dimOut, rowStride: c3, stride: s)
        }
        let nq = oh * ow, nk = h * w
        let q =
            pooled.map { AttentionOperand($0.floats, batchStride: nq * dimOut, rowStride: dimOut, headStride: hd) }
            ?? AttentionOperand(base, batchStride: nk * c3, rowStride: c3, headStride: hd)
        let mixed = Tensor.makeUninitialized([b, oh, ow, dimOut]) { o in
            withExtendedLifetime(pooled) {
                Kernels.attention(
                    batch: b, heads: heads, queries: nq, keys: nk, headDim: hd, valueDim: hd, scale: 1 / Float(hd).squareRoot(), q: q,
                    k: AttentionOperand(base + dimOut, batchStride: nk * c3, rowStride: c3, headStride: hd),
                    v: AttentionOperand(base + 2 * dimOut, batchStride: nk * c3, rowStride: c3, headStride: hd),
                    out: o, outBatchStride: nq * dimOut, outRowStride: dimOut, outHeadStride: hd)
            }
        }
        return withExtendedLifetime(packed) { attnProj(Variable(mixed)) }
    }
}

/// nn.MaxPool2d(s, s) (floor) on an NHWC map [N, H, W, C] → [N, H/s, W/s, C], without permutes.
func maxPoolNHWC(_ x: Tensor, _ s: Int) -> Tensor {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    return withExtendedLifetime(x) { maxPoolRows(x.floats, batch: n, height: h, width: w, channels: c, rowStride: c, stride: s) }
}

/// Max pooling of s × s cells of rows laid out [N, H, W] with `channels` floats each at `rowStride`
/// apart → [N, H/s, W/s, channels] contiguous.
func maxPoolRows(_ base: UnsafePointer<Float>, batch n: Int, height h: Int, width w: Int, channels c: Int, rowStride: Int, stride s: Int) -> Tensor {
    let (ph, pw) = (h / s, w / s)
    return Tensor.makeUninitialized([n, ph, pw, c]) { o in
        let box = UncheckedBox((base, o))
        Parallel.chunks(n * ph, grain: 1) { rows in
            let (base, o) = box.value
            for r in rows {
                let (b, y) = (r / ph, r % ph)
                for xx in 0..<pw {
                    let orow = o + ((b * ph + y) * pw + xx) * c
                    orow.update(repeating: -Float.infinity, count: c)
                    for dy in 0..<s {
                        for dx in 0..<s {
                            let src = base + ((b * h + y * s + dy) * w + xx * s + dx) * rowStride
                            for d in 0..<c where src[d] > orow[d] { orow[d] = src[d] }
                        }
                    }
                }
            }
        }
    }
}
