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
}
