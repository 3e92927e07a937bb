import Foundation
import Tensors
import Testing

@Suite struct KernelTests {
    @Test func fastErfAndExpAgreeWithLibm() {
        var xs = (0..<20001).map { Float($0 - 10000) / 1250 } // −8 … 8
        var erfs = xs
        erfs.withUnsafeMutableBufferPointer { Kernels.fastErf($0.baseAddress!, count: $0.count) }
        let erfWorst = zip(xs, erfs).map { abs(erff($0) - $1) }.max()!
        #expect(erfWorst < 1e-6, "erf max abs error \(erfWorst)")
        xs = (0..<20001).map { Float($0 - 15000) / 200 } // −75 … 25
        var exps = xs
        exps.withUnsafeMutableBufferPointer { Kernels.fastExp($0.baseAddress!, count: $0.count) }
        let expWorst = zip(xs, exps).map { abs(expf($0) - $1) / expf($0) }.max()!
        #expect(expWorst < 1e-6, "exp max relative error \(expWorst)")
        var tiny: [Float] = [-100, -1000, -.infinity]
        tiny.withUnsafeMutableBufferPointer { Kernels.fastExp($0.baseAddress!, count: 3) }
        #expect(tiny == [0, 0, 0])
    }

    @Test func softmaxRowsSumToOneAndGELUMatchesTheFormula() {
        var x: [Float] = [1, 2, 3, -1000, 0, 1000]
        x.withUnsafeMutableBufferPointer { Kernels.softmaxRows($0.baseAddress!, rows: 2, width: 3) }
        #expect(abs(x[0...2].reduce(0, +) - 1) < 1e-6 && abs(x[5] - 1) < 1e-6 && x[3] == 0)
        var g: [Float] = [-3, -0.5, 0, 0.7, 2.5]
        let expected = g.map { 0.5 * $0 * (1 + erff($0 / Float(2).squareRoot())) }
        g.withUnsafeMutableBufferPointer { Kernels.geluExact($0.baseAddress!, count: $0.count) }
        #expect(zip(g, expected).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    /// GELU-tanh and SiLU as computed by the fused kernels against their textbook formulas in Double
    /// (0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) and x/(1 + e^(−x))), including the far tails where
    /// e^(−2u) overflows (GELU → 0 for very negative x, → x for large x).
    @Test func geluTanhAndSiLUMatchTheirFormulas() {
        let xs: [Float] = (0..<4001).map { Float($0 - 2000) / 100 } + [-200, -90, 90, 200]
        var g = xs, s = xs
        g.withUnsafeMutableBufferPointer { Kernels.geluTanh($0.baseAddress!, count: $0.count) }
        s.withUnsafeMutableBufferPointer { Kernels.silu($0.baseAddress!, count: $0.count) }
        for (i, v) in xs.enumerated() {
            let d = Double(v)
            let gelu = 0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d)))
            let silu = d / (1 + exp(-d))
            #expect(abs(Double(g[i]) - gelu) <= 1e-6 * max(1, abs(gelu)), "geluTanh(\(v)) = \(g[i]), formula \(gelu)")
            #expect(abs(Double(s[i]) - silu) <= 1e-6 * max(1, abs(silu)), "silu(\(v)) = \(s[i]), formula \(silu)")
        }
    }

    /// The inference convolution (`conv2dInference`: bias first, im2col in bands of output rows, one
    /// sgemm for a 1×1; and `conv3x3Winograd`, F(2×2, 3×3), on every 3×3 case) against the recorded
    /// unfold + product, over windows that reach every branch: padding on both sides, stride 2 (and a
    /// stride that skips the last column), dilation, rectangular kernels, 1×1 with and without stride,
    /// no bias, im2col bands smaller than the image (36 columns: 28 rows to a 1,024-column band, two
    /// bands), Winograd on odd sizes (edge tiles half outside) and in two bands of tile rows (256
    /// channels × 20 tiles across: 51 tile rows to a band, 55 needed).
    @Test func theInferenceConvolutionIsTheRecordedOne() throws {
        var rng = SeededGenerator(seed: 3)
        func random(_ shape: [Int]) -> Tensor { Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float(rng.nextNormal()) }) }
        let cases: [(x: [Int], w: [Int], stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), bias: Bool)] = [
            ([2, 3, 9, 11], [4, 3, 3, 3], (1, 1), (1, 1), (1, 1), true),
            ([1, 5, 10, 10], [6, 5, 3, 3], (2, 2), (1, 1), (1, 1), true),
            ([2, 2, 9, 8], [3, 2, 3, 2], (2, 3), (0, 2), (1, 1), false),
            ([1, 3, 12, 12], [2, 3, 3, 3], (1, 1), (2, 2), (2, 2), true),
            ([2, 7, 6, 5], [5, 7, 1, 1], (1, 1), (0, 0), (1, 1), true),
            ([1, 4, 7, 7], [3, 4, 1, 1], (2, 2), (0, 0), (1, 1), false),
            ([1, 130, 36, 36], [8, 130, 5, 5], (1, 1), (2, 2), (1, 1), true),
            ([2, 17, 9, 11], [20, 17, 3, 3], (1, 1), (1, 1), (1, 1), true),
            ([1, 32, 8, 8], [16, 32, 3, 3], (1, 1), (1, 1), (1, 1), false),
            ([1, 256, 110, 40], [256, 256, 3, 3], (1, 1), (1, 1), (1, 1), true),
        ]
        for c in cases {
            let x = Variable(random(c.x)), w = Variable(random(c.w)), b = c.bias ? Variable(random([c.w[0]])) : nil
            let graph = GradMode.with(true) { conv2d(x, weight: w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation) }
            let window = Window2D(kernel: (c.w[2], c.w[3]), stride: c.stride, padding: c.padding, dilation: c.dilation)
            var paths = [("inference", conv2dInference(x.value, weight: w.value, bias: b?.value, window))]
            if c.w[2] == 3 && c.w[3] == 3 && c.stride == (1, 1) && c.padding == (1, 1) && c.dilation == (1, 1) {
                paths.append(("winograd", conv3x3Winograd(x.value, weight: w.value, bias: b?.value)))
            }
            let scale = graph.scalars.map { abs($0) }.max() ?? 1
            for (name, fast) in paths {
                #expect(fast.shape == graph.shape, "\(name) \(c.x) * \(c.w): \(fast.shape) vs \(graph.shape)")
                let values: [Float] = try fast.scalars()
                let worst = zip(values, graph.scalars).map { abs($0 - $1) }.max() ?? 0
                #expect(worst <= 1e-5 * scale, "\(name) \(c.x) * \(c.w) stride \(c.stride) padding \(c.padding): max difference \(worst) of \(scale)")
            }
        }
    }
}
