import Foundation

/// Forward kernels on contiguous float buffers: the building blocks of the layers (and, later, of the
/// autograd ops' forward passes). Each names the formula it computes.
public enum Kernels {
    /// y[r, :] = x[r, :] · Wᵀ + b for a weight stored [out, in] (PyTorch's nn.Linear layout).
    public static func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                              outFeatures: Int, into y: UnsafeMutablePointer<Float>) {
        if let bias {
            for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
        }
        GEMM.sgemm(transposeB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: weight, ldb: inFeatures,
                   beta: bias == nil ? 0 : 1, c: y, ldc: outFeatures)
    }

    /// Layer normalisation over the last dimension: y = (x − mean) / √(var + eps) · γ + β,
    /// with the biased variance (as torch.nn.LayerNorm). Accumulates in Double.
    public static func layerNorm(_ x: UnsafePointer<Float>, rows: Int, width: Int, gamma: UnsafePointer<Float>?, beta: UnsafePointer<Float>?,
                                 eps: Float, into y: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let xr = x + r * width, yr = y + r * width
            var sum = 0.0
            for i in 0..<width { sum += Double(xr[i]) }
            let mean = sum / Double(width)
            var sq = 0.0
            for i in 0..<width { let d = Double(xr[i]) - mean; sq += d * d }
            let inv = 1 / (sq / Double(width) + Double(eps)).squareRoot()
            for i in 0..<width {
                var v = Float((Double(xr[i]) - mean) * inv)
                if let gamma { v *= gamma[i] }
                if let beta { v += beta[i] }
                yr[i] = v
            }
        }
    }

    /// Row-wise softmax in place: x ← exp(x − max) / Σ exp(x − max).
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows {
            let xr = x + r * width
            var m = -Float.infinity
            for i in 0..<width { m = max(m, xr[i]) }
            var s: Float = 0
            for i in 0..<width { let e = expf(xr[i] - m); xr[i] = e; s += e }
            let inv = 1 / s
            for i in 0..<width { xr[i] *= inv }
        }
    }

    /// Exact GELU in place: x · Φ(x) = x/2 · (1 + erf(x/√2)) (torch.nn.GELU(), approximate='none').
    public static func geluExact(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { x[i] = 0.5 * x[i] * (1 + erff(x[i] * 0.70710678118654752)) }
    }

    /// QuickGELU in place: x · σ(1.702 x) (OpenAI CLIP).
    public static func quickGELU(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { x[i] = x[i] / (1 + expf(-1.702 * x[i])) }
    }

    /// y += x, elementwise.
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}
