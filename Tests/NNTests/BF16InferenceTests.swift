import Foundation
import NN
import Tensors
import Testing

/// The bf16 copy of a parameter follows its value (an optimizer step or a replacement makes a new
/// one), and a linear layer in bf16 equals the fp32 product of the bf16-rounded weight and input.
@Suite struct BF16InferenceTests {
    func bits(_ t: Tensor) -> [UInt16] { t.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) } }

    @Test func bf16CopyFollowsUpdates() throws {
        let p = Parameter(try Tensor([1, 2.5, -3, 1e-3] as [Float], shape: [2, 2]))
        // bf16 of 1.0 is 0x3F80, 2.5 is 0x4020, −3 is 0xC040; 1e-3 (0x3A83126F) rounds to 0x3A83.
        #expect(bits(try p.bf16Value()) == [0x3F80, 0x4020, 0xC040, 0x3A83])
        p.update { dst, src in for i in 0..<dst.count { dst[i] = src[i] * 2 } }
        #expect(bits(try p.bf16Value()) == [0x4000, 0x40A0, 0xC0C0, 0x3B03])
        p.assign(try Tensor([0.5, 0, 0, 0] as [Float], shape: [2, 2]))
        #expect(bits(try p.bf16Value()) == [0x3F00, 0, 0, 0])
    }

    /// Rounding to nearest with ties to even, on exact ties: 0x3F80_8000 lies halfway between
    /// 0x3F80 and 0x3F81 and goes to the even 0x3F80; 0x3F81_8000 goes up to the even 0x3F82; a NaN
    /// stays a NaN (its payload is not rounded into infinity).
    @Test func roundingTiesGoToEven() throws {
        let values = [Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_8001), .nan]
        let b = bits(try Tensor(values, shape: [4]).converted(to: .bfloat16))
        #expect(Array(b.prefix(3)) == [0x3F80, 0x3F82, 0x3F81])
        #expect(b[3] & 0x7F80 == 0x7F80 && b[3] & 0x007F != 0)
    }

    /// y = round(x)·round(W)ᵀ + b exactly in fp32 arithmetic (bf16 products are exact in fp32 and
    /// 24 terms of them sum with fp32 accumulation): compared within fp32 summation error.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func linearInBF16IsTheRoundedProduct() throws {
        var rng = SeededGenerator(seed: 5)
        let layer = Linear(24, 40, rng: &rng)
        let x = (0..<(48 * 24)).map { _ in Float.random(in: -2...2, using: &rng) }
        var y = [Float](repeating: 0, count: 48 * 40)
        try GEMM.withPrecision(.bf16) { try layer.inference(x, rows: 48, into: &y) }
        func round(_ v: Float) -> Float { Float(bitPattern: (v.bitPattern &+ 0x7FFF &+ ((v.bitPattern >> 16) & 1)) & 0xFFFF_0000) }
        let w = try layer.weight.value.scalars(as: Float.self), b = try layer.bias!.value.scalars(as: Float.self)
        var worst: Float = 0
        for r in 0..<48 {
            for j in 0..<40 {
                var sum = Double(b[j])
                for i in 0..<24 { sum += Double(round(x[r * 24 + i])) * Double(round(w[j * 24 + i])) }
                worst = max(worst, abs(y[r * 40 + j] - Float(sum)))
            }
        }
        #expect(worst < 1e-5, "\(worst)")
        // And fp32 differs from it (the input and weights were really rounded).
        var y32 = [Float](repeating: 0, count: 48 * 40)
        try layer.inference(x, rows: 48, into: &y32)
        #expect(zip(y, y32).map { abs($0 - $1) }.max()! > 1e-3)
    }

    /// One row (a decode step) goes through our AVX-512 BF16 matrix–vector kernel: the same rounded
    /// product within fp32 summation error, for a width that is not a multiple of 32 (the masked
    /// tail) and a row count that is not a multiple of 4, with and without accumulation.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func oneRowInBF16IsTheRoundedProduct() throws {
        var rng = SeededGenerator(seed: 9)
        let (k, n) = (70, 37)
        let layer = Linear(k, n, rng: &rng)
        let x = (0..<k).map { _ in Float.random(in: -2...2, using: &rng) }
        let start = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) }
        var y = [Float](repeating: 0, count: n), acc = start
        try GEMM.withPrecision(.bf16) {
            try layer.inference(x, rows: 1, into: &y)
            try layer.inference(x, rows: 1, accumulate: true, into: &acc)
        }
        func round(_ v: Float) -> Float { Float(bitPattern: (v.bitPattern &+ 0x7FFF &+ ((v.bitPattern >> 16) & 1)) & 0xFFFF_0000) }
        let w = try layer.weight.value.scalars(as: Float.self), b = try layer.bias!.value.scalars(as: Float.self)
        var worst: Float = 0, worstAcc: Float = 0
        for j in 0..<n {
            var sum = Double(b[j])
            for i in 0..<k { sum += Double(round(x[i])) * Double(round(w[j * k + i])) }
            worst = max(worst, abs(y[j] - Float(sum)))
            worstAcc = max(worstAcc, abs(acc[j] - (start[j] + Float(sum))))
        }
        #expect(worst < 1e-5 && worstAcc < 1e-5, "\(worst), \(worstAcc)")
        var y32 = [Float](repeating: 0, count: n)
        try layer.inference(x, rows: 1, into: &y32)
        #expect(zip(y, y32).map { abs($0 - $1) }.max()! > 1e-3)
    }

    static func round(_ v: Float) -> Float { Float(bitPattern: (v.bitPattern &+ 0x7FFF &+ ((v.bitPattern >> 16) & 1)) & 0xFFFF_0000) }

    /// The fused products of the bf16 transformer path (`Kernels.linearBF16` with post-operations)
    /// equal act(round(x)·round(W)ᵀ + b) computed here in double: GELU (erf), quick GELU, a bfloat16
    /// input given as such, a bfloat16 output (within half a bf16 step of the rounded reference: one
    /// rounding), and accumulation into y.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func fusedProductsAreTheRoundedProducts() throws {
        var rng = SeededGenerator(seed: 11)
        let (rows, k, n) = (33, 40, 72)
        let layer = Linear(k, n, rng: &rng)
        let x = (0..<(rows * k)).map { _ in Float.random(in: -2...2, using: &rng) }
        let start = (0..<(rows * n)).map { _ in Float.random(in: -1...1, using: &rng) }
        let w = try layer.weight.value.scalars(as: Float.self), b = try layer.bias!.value.scalars(as: Float.self)
        func reference(_ act: (Double) -> Double) -> [Float] {
            (0..<(rows * n)).map { e in
                let (r, j) = e.quotientAndRemainder(dividingBy: n)
                var sum = Double(b[j])
                for i in 0..<k { sum += Double(Self.round(x[r * k + i])) * Double(Self.round(w[j * k + i])) }
                return Float(act(sum))
            }
        }
        func erf(_ v: Double) -> Double { Foundation.erf(v) }
        let gelu = reference { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }
        let quick = reference { $0 / (1 + exp(-1.702 * $0)) }
        let plain = reference { $0 }
        let x16 = Kernels.roundedBF16(x)
        func run(_ act: Kernels.FusedActivation, sourceBF16: Bool = false, accumulate: Bool = false, outputBF16: Bool = false) throws -> [Float] {
            var y = accumulate ? start : [Float](repeating: 0, count: rows * n)
            var y16 = [UInt16](repeating: 0, count: rows * n)
            let ran = try x.withUnsafeBufferPointer { xp in
                try x16.withUnsafeBufferPointer { xp16 in
                    try y.withUnsafeMutableBufferPointer { yp in
                        try y16.withUnsafeMutableBufferPointer { yp16 in
                            try layer.fused(
                                sourceBF16 ? UnsafeRawPointer(xp16.baseAddress!) : UnsafeRawPointer(xp.baseAddress!), bf16: true, sourceBF16: sourceBF16,
                                rows: rows, activation: act, accumulate: accumulate, outputBF16: outputBF16,
                                into: outputBF16 ? UnsafeMutableRawPointer(yp16.baseAddress!) : UnsafeMutableRawPointer(yp.baseAddress!))
                        }
                    }
                }
            }
            #expect(ran, "the fused product did not run")
            return outputBF16 ? y16.map { Float(bitPattern: UInt32($0) << 16) } : y
        }
        func worst(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }
        #expect(worst(try run(.gelu), gelu) < 2e-5, "gelu")
        #expect(worst(try run(.quickGELU), quick) < 2e-5, "quick gelu")
        #expect(worst(try run(.gelu, sourceBF16: true), gelu) < 2e-5, "gelu from a bf16 input")
        #expect(worst(try run(.none, accumulate: true), zip(start, plain).map { $0 + $1 }) < 2e-5, "accumulate")
        // A bfloat16 output: one rounding of the fp32 result (half a step, 2⁻⁹ relative).
        let out16 = try run(.gelu, outputBF16: true)
        let halfStep = zip(out16, gelu).map { abs($0 - $1) / max(abs($1), 1e-30) }.max()!
        #expect(halfStep <= 1.0 / 256 && out16 != gelu, "bf16 output relative error \(halfStep)")
        // Activations really differ from one another here (the test would notice a missing post-op).
        #expect(worst(gelu, quick) > 1e-2 && worst(gelu, plain) > 1e-1)
        // fp32 (the oneDNN backend's fused path): act(x·Wᵀ + b) unrounded, within fp32 summation error.
        var y32 = start
        let ran = try x.withUnsafeBufferPointer { xp in
            try y32.withUnsafeMutableBufferPointer { yp in
                try layer.fused(
                    UnsafeRawPointer(xp.baseAddress!), bf16: false, rows: rows, activation: .gelu, accumulate: true,
                    into: UnsafeMutableRawPointer(yp.baseAddress!))
            }
        }
        let exact: [Float] = (0..<(rows * n)).map { e in
            let (r, j) = e.quotientAndRemainder(dividingBy: n)
            var sum = Double(b[j])
            for i in 0..<k { sum += Double(x[r * k + i]) * Double(w[j * k + i]) }
            return start[e] + Float(0.5 * sum * (1 + erf(sum / 2.0.squareRoot())))
        }
        #expect(ran && worst(y32, exact) < 2e-5, "fp32 fused: \(worst(y32, exact))")
    }

    /// A batched strided product (`Kernels.stridedProduct`) as the bf16 attention uses it: Q·Kᵀ of
    /// every (image, head) pair read in place from packed qkv rows, equal to the rounded product in
    /// double; and a product written into the heads' columns of a [t, d] output.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func stridedHeadsProduct() throws {
        var rng = SeededGenerator(seed: 12)
        let (n, heads, t, hd) = (2, 3, 7, 8)
        let d = heads * hd
        let qkv = (0..<(n * t * 3 * d)).map { _ in Float.random(in: -1...1, using: &rng) }
        let q16 = Kernels.roundedBF16(qkv)
        var scores = [Float](repeating: .nan, count: n * heads * t * t)
        let ok = q16.withUnsafeBufferPointer { qp in
            scores.withUnsafeMutableBufferPointer { sp in
                Kernels.stridedProduct(
                    .init(dims: [n, heads, t, hd], strides: [t * 3 * d, hd, 3 * d, 1], bf16: true), UnsafeRawPointer(qp.baseAddress!),
                    .init(dims: [n, heads, hd, t], strides: [t * 3 * d, hd, 1, 3 * d], bf16: true), UnsafeRawPointer(qp.baseAddress! + d),
                    .init(dims: [n, heads, t, t], strides: [heads * t * t, t * t, t, 1], bf16: false), UnsafeMutableRawPointer(sp.baseAddress!),
                    alpha: 0.5)
            }
        }
        #expect(ok)
        var worst: Double = 0
        for b in 0..<n {
            for h in 0..<heads {
                for i in 0..<t {
                    for j in 0..<t {
                        var sum = 0.0
                        for c in 0..<hd {
                            sum += Double(Self.round(qkv[(b * t + i) * 3 * d + h * hd + c])) * Double(Self.round(qkv[(b * t + j) * 3 * d + d + h * hd + c]))
                        }
                        worst = max(worst, abs(0.5 * sum - Double(scores[((b * heads + h) * t + i) * t + j])))
                    }
                }
            }
        }
        #expect(worst < 1e-5, "\(worst)")
    }

    /// The transformer stack's bf16 path (and, asked for, its fp32 oneDNN path) fuses: per block one product for qkv (bfloat16 out), one
    /// batched product each for the scores and for probabilities × values, one each for the output
    /// projection, fc1 (+ GELU, bfloat16 out) and fc2 — 6 oneDNN calls a block — for a causal and a
    /// bidirectional stack with layer scales; the outputs stay within 2e-2 of their range of fp32's
    /// (measured ≈ 3e-3) but are not equal to them.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil), arguments: [false, true]) func stackFusesInBF16(causal: Bool) throws {
        var rng = SeededGenerator(seed: 13)
        let blocks = (0..<2).map { _ in TransformerBlock(width: 48, heads: 4, hidden: 136, layerScale: true, rng: &rng) }
        for bk in blocks {
            for gain in [bk.layerScale1!, bk.layerScale2!] {
                gain.assign(try Tensor((0..<48).map { _ in Float.random(in: 0.5...1.5, using: &rng) }, shape: [48]))
            }
        }
        let stack = TransformerStack(blocks)
        let (n, t) = (3, 19)
        let input = (0..<(n * t * 48)).map { _ in Float.random(in: -2...2, using: &rng) }
        var fp32 = input, bf16 = input
        try stack.forward(&fp32, batch: n, tokens: t, causal: causal, oneDNN: false)
        let before = OneDNNBackend.threadExecuted
        try GEMM.withPrecision(.bf16) { try stack.forward(&bf16, batch: n, tokens: t, causal: causal) }
        let calls = OneDNNBackend.threadExecuted - before
        #expect(calls == 6 * blocks.count, "oneDNN calls: \(calls)")
        let delta = zip(fp32, bf16).map { abs($0 - $1) }.max()!, spread = fp32.max()! - fp32.min()!
        #expect(delta > 0 && delta <= 2e-2 * spread, "max |Δ| \(delta) over a range \(spread)")
        // fp32 through the same fused oneDNN calls (what the oneDNN backend runs): fp32's result to
        // float precision (1e-4 of the range; measured ≈ 1e-6).
        var fused32 = input
        let fp32Before = OneDNNBackend.threadExecuted
        try stack.forward(&fused32, batch: n, tokens: t, causal: causal, oneDNN: true)
        #expect(OneDNNBackend.threadExecuted - fp32Before == 6 * blocks.count)
        let delta32 = zip(fp32, fused32).map { abs($0 - $1) }.max()!
        #expect(delta32 <= 1e-4 * spread, "fp32 fused max |Δ| \(delta32)")
        // Causality holds in bf16 too: changing the last token leaves every earlier one unchanged.
        if causal {
            var changed = input
            for j in 0..<48 { changed[((n - 1) * t + t - 1) * 48 + j] += 1 }
            try GEMM.withPrecision(.bf16) { try stack.forward(&changed, batch: n, tokens: t, causal: true) }
            let earlier = ((n - 1) * t * 48)..<(((n - 1) * t + t - 1) * 48)
            #expect(Array(changed[earlier]) == Array(bf16[earlier]))
        }
    }
}
