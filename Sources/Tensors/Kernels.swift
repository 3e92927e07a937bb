import Foundation

/// Forward kernels on contiguous float buffers: the building blocks of the layers (and, later, of the
/// autograd ops' forward passes). Each names the formula it computes.
public enum Kernels {
    /// y[r, :] = x[r, :] · Wᵀ + b for a weight stored [out, in] (PyTorch's nn.Linear layout).
    public static func linear(
        _ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        outFeatures: Int, into y: UnsafeMutablePointer<Float>
    ) {
        if let bias {
            for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
        }
        if rows == 1 {
            // One row (decoding): a matrix–vector product, memory-bound, through sgemv.
            GEMM.sgemv(m: outFeatures, n: inFeatures, a: weight, lda: inFeatures, x: x, beta: bias == nil ? 0 : 1, y: y)
            return
        }
        GEMM.sgemm(
            transposeB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: weight, ldb: inFeatures,
            beta: bias == nil ? 0 : 1, c: y, ldc: outFeatures)
    }

    /// Layer normalisation over the last dimension: y = (x − mean) / √(var + eps) · γ + β,
    /// with the biased variance (as torch.nn.LayerNorm). Accumulates in Double.
    public static func layerNorm(
        _ x: UnsafePointer<Float>, rows: Int, width: Int, gamma: UnsafePointer<Float>?, beta: UnsafePointer<Float>?,
        eps: Float, into y: UnsafeMutablePointer<Float>
    ) {
        Parallel.chunks(rows, grain: Swift.max(1, (1 << 14) / Swift.max(width, 1))) { range in
            for r in range {
                let xr = x + r * width, yr = y + r * width
                var sum = 0.0
                for i in 0..<width { sum += Double(xr[i]) }
                let mean = sum / Double(width)
                var sq = 0.0
                for i in 0..<width {
                    let d = Double(xr[i]) - mean
                    sq += d * d
                }
                let inv = 1 / (sq / Double(width) + Double(eps)).squareRoot()
                for i in 0..<width {
                    var v = Float((Double(xr[i]) - mean) * inv)
                    if let gamma { v *= gamma[i] }
                    if let beta { v += beta[i] }
                    yr[i] = v
                }
            }
        }
    }

    /// Row-wise softmax in place: x ← exp(x − max) / Σ exp(x − max).
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows {
            let xr = x + r * width
            // Four running maxima (compare-and-select; the generic SIMD16 max went through the stack).
            var (m0, m1, m2, m3) = (-Float.infinity, -Float.infinity, -Float.infinity, -Float.infinity)
            var i = 0
            while i + 4 <= width {
                m0 = xr[i] > m0 ? xr[i] : m0
                m1 = xr[i + 1] > m1 ? xr[i + 1] : m1
                m2 = xr[i + 2] > m2 ? xr[i + 2] : m2
                m3 = xr[i + 3] > m3 ? xr[i + 3] : m3
                i += 4
            }
            var m = max(max(m0, m1), max(m2, m3))
            while i < width {
                m = max(m, xr[i])
                i += 1
            }
            for i in 0..<width { xr[i] -= m }
            fastExp(xr, count: width)
            let inv = 1 / vectorSum(xr, width)
            for i in 0..<width { xr[i] *= inv }
        }
    }

    /// Exact GELU in place: x · Φ(x) = x/2 · (1 + erf(x/√2)) (torch.nn.GELU(), approximate='none'),
    /// with the vectorisable `fastErf`.
    public static func geluExact(_ x: UnsafeMutablePointer<Float>, count: Int) {
        throughVectorKernel(x, count: count, prepare: { $0 * 0.70710678118654752 }, fastErf, finish: { v, e in 0.5 * v * (1 + e) })
    }

    /// x[i] ← finish(x[i], k(prepare(x[i]))) for a vectorised kernel k (`fastExp`, `fastErf`) that runs
    /// on 1,024 prepared values at a time, the chunks shared out over the threads.
    @inline(__always)
    static func throughVectorKernel(
        _ x: UnsafeMutablePointer<Float>, count: Int, prepare: (Float) -> Float, _ kernel: (UnsafeMutablePointer<Float>, Int) -> Void,
        finish: (Float, Float) -> Float
    ) {
        Parallel.chunks(count) { range in
            let chunk = 1024
            let e = UnsafeMutablePointer<Float>.allocate(capacity: chunk)
            defer { e.deallocate() }
            var i = range.lowerBound
            while i < range.upperBound {
                let n = min(chunk, range.upperBound - i)
                for j in 0..<n { e[j] = prepare(x[i + j]) }
                kernel(e, n)
                for j in 0..<n { x[i + j] = finish(x[i + j], e[j]) }
                i += n
            }
        }
    }

    /// erf in place, as a rational function of x² on [−4, 4] (Eigen's `generic_fast_erf_float`,
    /// max error ~2e-7 against erff); a plain loop the compiler vectorises.
    public static func fastErf(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = min(max(x[i], -4), 4)
            let v2 = v * v
            var p: Float = -2.72614225801306e-10
            p = p * v2 + 2.77068142495902e-08
            p = p * v2 + -2.10102402082508e-06
            p = p * v2 + -5.69250639462346e-05
            p = p * v2 + -7.34990630326855e-04
            p = p * v2 + -2.95459980854025e-03
            p = p * v2 + -1.60960333262415e-02
            p *= v
            var q: Float = -1.45660718464996e-05
            q = q * v2 + -2.13374055278905e-04
            q = q * v2 + -1.68282697438203e-03
            q = q * v2 + -7.37332916720468e-03
            q = q * v2 + -1.42647390514189e-02
            x[i] = p / q
        }
    }

    /// exp in place: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n through the
    /// exponent bits (relative error ~2e-7 against expf on [−87, 88]; below −87 the result is 0).
    public static func fastExp(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = min(max(x[i], -87.3), 88.3)
            // n = round(v·log2 e) by the 1.5·2²³ trick: the sum's low mantissa bits hold n, so
            // both n and 2ⁿ come from wrapping integer ops and the loop vectorises.
            let t = v * 1.44269504088896341 + 12582912
            let n = t - 12582912
            let r = v - n * 0.693359375 + n * 2.12194440e-4
            var p: Float = 1.9875691500e-4
            p = p * r + 1.3981999507e-3
            p = p * r + 8.3334519073e-3
            p = p * r + 4.1665795894e-2
            p = p * r + 1.6666665459e-1
            p = p * r + 5.0000001201e-1
            let e = (p * r * r + r) + 1
            let bits = (t.bitPattern &- 0x4B40_0000 &+ 127) << 23
            x[i] = x[i] < -87.3 ? 0 : e * Float(bitPattern: bits)
        }
    }

    /// GELU, tanh form, in place: x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³))) (torch's
    /// approximate='tanh', DiT's MLP), computed as x · σ(2u) = x / (1 + e^(−2u)) — the same number,
    /// since (1 + tanh u)/2 = σ(2u) — with the vectorised `fastExp` (no cancellation near 0, and
    /// e^(−2u) → ∞ gives 0 for very negative x).
    public static func geluTanh(_ x: UnsafeMutablePointer<Float>, count: Int) {
        throughVectorKernel(x, count: count, prepare: { v in -1.5957691216057308 * (v + 0.044715 * v * v * v) }, fastExp, finish: { v, e in v / (1 + e) })
    }

    /// SiLU in place: x · σ(x) = x / (1 + e^(−x)), with the vectorised `fastExp`.
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        throughVectorKernel(x, count: count, prepare: { -$0 }, fastExp, finish: { v, e in v / (1 + e) })
    }

    /// QuickGELU in place: x · σ(1.702 x) (OpenAI CLIP).
    public static func quickGELU(_ x: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.chunks(count) { range in for i in range { x[i] = x[i] / (1 + expf(-1.702 * x[i])) } }
    }

    /// y += x, elementwise.
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}
