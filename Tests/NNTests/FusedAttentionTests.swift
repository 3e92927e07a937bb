import NN
import Tensors
import Testing

/// `Kernels.attention` (blocked over queries and keys, online softmax; SAM 2's inference path)
/// against the plain attention softmax(q kᵀ/√hd) v written with matmul and softmax — the
/// differentiable path that SAM2HeadsTests / SAM2MemoryTests / SAM2EncoderTests anchor to sam2 with
/// the tape on. Random inputs whose query and key counts are not multiples of the blocks, head widths
/// that differ between keys and values, and sharp scores (q scaled ×8) so that the running maximum
/// changes from one key block to the next. Tolerance 2e-5 absolute: outputs are convex combinations
/// of standard-normal values (|out| < 5), float32 sums over ≤ 1,037 keys in another order.
@Suite struct FusedAttentionTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var batch: Int, heads: Int, queries: Int, keys: Int, headDim: Int, valueDim: Int
        var queryBlock: Int, keyBlock: Int, sharpness: Float
        var testDescription: String { "B\(batch) H\(heads) \(queries)×\(keys) hd \(headDim)/\(valueDim) blocks \(queryBlock)×\(keyBlock) ×\(sharpness)" }
    }

    static let cases = [
        Case(batch: 2, heads: 3, queries: 133, keys: 1037, headDim: 20, valueDim: 12, queryBlock: 128, keyBlock: 512, sharpness: 1),
        Case(batch: 2, heads: 3, queries: 133, keys: 1037, headDim: 20, valueDim: 12, queryBlock: 128, keyBlock: 512, sharpness: 8),
        Case(batch: 1, heads: 2, queries: 61, keys: 45, headDim: 16, valueDim: 16, queryBlock: 7, keyBlock: 11, sharpness: 8),
        Case(batch: 3, heads: 1, queries: 1, keys: 1, headDim: 8, valueDim: 5, queryBlock: 128, keyBlock: 512, sharpness: 1),
        Case(batch: 1, heads: 8, queries: 7, keys: 300, headDim: 16, valueDim: 16, queryBlock: 128, keyBlock: 64, sharpness: 1),
    ]

    /// softmax(q kᵀ · scale) v per head, plain: q [B, Nq, H·hd] etc. → [B, Nq, H·dv].
    static func plain(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int) -> Tensor {
        func split(_ x: Tensor) -> Variable {
            Variable(x).reshaped([x.shape[0], x.shape[1], heads, x.shape[2] / heads]).permuted([0, 2, 1, 3])
        }
        let hd = q.shape[2] / heads
        let mixed = matmul(matmul(split(q) * (1 / Float(hd).squareRoot()), split(k), transposeB: true).softmax(), split(v))
        return mixed.permuted([0, 2, 1, 3]).reshaped([q.shape[0], q.shape[1], v.shape[2]]).value
    }

    @Test(arguments: cases) func blockedAttentionEqualsThePlainSoftmax(_ c: Case) throws {
        var rng = SeededGenerator(seed: UInt64(c.queries * 31 + c.keys))
        func random(_ shape: [Int], _ scale: Float = 1) -> Tensor {
            Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float(rng.nextNormal()) * scale })
        }
        let (hd, dv) = (c.headDim, c.valueDim)
        let q = random([c.batch, c.queries, c.heads * hd], c.sharpness), k = random([c.batch, c.keys, c.heads * hd])
        let v = random([c.batch, c.keys, c.heads * dv])
        let want = try Self.plain(q, k, v, heads: c.heads).scalars(as: Float.self)
        // The kernel with the case's blocks, on the [B, N, H·hd] layouts.
        let got = try Tensor.makeUninitialized([c.batch, c.queries, c.heads * dv]) { o in
            try! q.withFloats { qp in
                try! k.withFloats { kp in
                    try! v.withFloats { vp in
                        Kernels.attention(
                            batch: c.batch, heads: c.heads, queries: c.queries, keys: c.keys, headDim: hd, valueDim: dv,
                            scale: 1 / Float(hd).squareRoot(),
                            q: AttentionOperand(qp, batchStride: c.queries * c.heads * hd, rowStride: c.heads * hd, headStride: hd),
                            k: AttentionOperand(kp, batchStride: c.keys * c.heads * hd, rowStride: c.heads * hd, headStride: hd),
                            v: AttentionOperand(vp, batchStride: c.keys * c.heads * dv, rowStride: c.heads * dv, headStride: dv),
                            out: o, outBatchStride: c.queries * c.heads * dv, outRowStride: c.heads * dv, outHeadStride: dv,
                            queryBlock: c.queryBlock, keyBlock: c.keyBlock)
                    }
                }
            }
        }.scalars(as: Float.self)
        let e = zip(got, want).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
        #expect(e < 2e-5, "max error \(e)")
        // The NN wrapper (default blocks) on the same inputs.
        let wrapped = try fusedAttention(q: q, k: k, v: v, heads: c.heads).scalars(as: Float.self)
        let ew = zip(wrapped, want).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
        #expect(ew < 2e-5, "fusedAttention: max error \(ew)")
    }
}
