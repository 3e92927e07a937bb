import Foundation

/// Where one operand of `Kernels.attention` lives: element (b, h, n, d) of batch b, head h, token n,
/// channel d at `base + b·batchStride + n·rowStride + h·headStride + d` (channels contiguous). The
/// output of a projection [B, N, H·hd] is batchStride N·H·hd, rowStride H·hd, headStride hd; a packed
/// qkv [B, N, 3·H·hd] gives k at `base + H·hd` with rowStride 3·H·hd.
public struct AttentionOperand {
    public var base: UnsafePointer<Float>
    public var batchStride: Int, rowStride: Int, headStride: Int
    public init(_ base: UnsafePointer<Float>, batchStride: Int, rowStride: Int, headStride: Int) {
        (self.base, self.batchStride, self.rowStride, self.headStride) = (base, batchStride, rowStride, headStride)
    }
}

extension Kernels {
    /// Fused multi-head attention for inference, out = softmax(scale · q kᵀ) v per batch and head,
    /// computed flash-style: queries in blocks of `queryBlock` (the blocks shared out over the
    /// threads), keys in blocks of `keyBlock` with an online softmax — per query row a running maximum
    /// m and sum l; each key block's scores s = scale · q kᵀ (one sgemm) give m' = max(m, max s),
    /// the accumulator and l are rescaled by exp(m − m'), p = exp(s − m') is added to l and p·v to the
    /// accumulator (one sgemm); at the end out = accumulator / l. The score matrix never exists in full:
    /// each thread holds queryBlock × keyBlock scores and queryBlock × valueDim sums. Equal to the plain
    /// softmax(q kᵀ) v up to float rounding (the exponentials are split as exp(s − m')·exp(m' − m″)).
    /// Shapes: q [B, H, Nq, hd], k [B, H, Nk, hd], v [B, H, Nk, dv], out [B, H, Nq, dv] in the layouts
    /// the operands describe. Nk = 0 gives zeros. Blocks of 256 queries × 512 keys (ATen's CPU flash
    /// attention splits long sequences the same way): measured here, 256 query rows instead of 128
    /// raised SAM 2's global attention (4096 tokens, 4 heads × 96) from 101 to 151 GFLOP/s and its
    /// memory cross-attention (4096 × 28,736 keys × 256) from 169 to 172.
    public static func attention(
        batch: Int, heads: Int, queries nq: Int, keys nk: Int, headDim hd: Int, valueDim dv: Int, scale: Float,
        q: AttentionOperand, k: AttentionOperand, v: AttentionOperand,
        out: UnsafeMutablePointer<Float>, outBatchStride: Int, outRowStride: Int, outHeadStride: Int,
        queryBlock: Int = 256, keyBlock: Int = 512
    ) {
        guard batch > 0, heads > 0, nq > 0, dv > 0 else { return }
        let bq = max(1, min(queryBlock, nq)), bk = max(1, min(keyBlock, max(nk, 1)))
        let blocksPerHead = (nq + bq - 1) / bq
        let tasks = batch * heads * blocksPerHead
        let threads = min(GEMM.threads, tasks)
        let perThread = bq * bk + bq * dv + 2 * bq
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(threads, 1) * perThread)
        defer { scratch.deallocate() }
        let box = UncheckedBox((q, k, v, out, scratch))
        func run(_ thread: Int, _ items: Range<Int>) {
            let (q, k, v, out, scratch) = box.value
            let s = scratch + thread * perThread
            let acc = s + bq * bk, rowMax = acc + bq * dv, rowSum = rowMax + bq
            for task in items {
                let block = task % blocksPerHead, bh = task / blocksPerHead
                let (b, h) = (bh / heads, bh % heads)
                let i0 = block * bq, rows = min(bq, nq - i0)
                let qp = q.base + b * q.batchStride + h * q.headStride + i0 * q.rowStride
                let kp = k.base + b * k.batchStride + h * k.headStride
                let vp = v.base + b * v.batchStride + h * v.headStride
                acc.update(repeating: 0, count: rows * dv)
                rowMax.update(repeating: -Float.infinity, count: rows)
                rowSum.update(repeating: 0, count: rows)
                var j0 = 0
                while j0 < nk {
                    let cols = min(bk, nk - j0)
                    GEMM.sgemm(
                        transposeB: true, m: rows, n: cols, k: hd, alpha: scale, a: qp, lda: q.rowStride, b: kp + j0 * k.rowStride,
                        ldb: k.rowStride, c: s, ldc: cols)
                    for i in 0..<rows {
                        let sr = s + i * cols
                        var m = rowMax[i]
                        for j in 0..<cols { m = sr[j] > m ? sr[j] : m }
                        let correction = rowMax[i] == -Float.infinity ? 0 : expf(rowMax[i] - m)
                        rowMax[i] = m
                        for j in 0..<cols { sr[j] -= m }
                        fastExp(sr, count: cols)
                        rowSum[i] = rowSum[i] * correction + vectorSum(sr, cols)
                        if correction != 1 {
                            let ar = acc + i * dv
                            for d in 0..<dv { ar[d] *= correction }
                        }
                    }
                    GEMM.sgemm(
                        m: rows, n: dv, k: cols, a: s, lda: cols, b: vp + j0 * v.rowStride, ldb: v.rowStride, beta: 1, c: acc, ldc: dv)
                    j0 += cols
                }
                let op = out + b * outBatchStride + h * outHeadStride + i0 * outRowStride
                for i in 0..<rows {
                    let inv = rowSum[i] > 0 ? 1 / rowSum[i] : 0
                    let ar = acc + i * dv, orow = op + i * outRowStride
                    for d in 0..<dv { orow[d] = ar[d] * inv }
                }
            }
        }
        if threads <= 1 {
            run(0, 0..<tasks)
        } else {
            GEMM.concurrently(tasks, threads: threads) { t, items in run(t, items) }
        }
    }
}
