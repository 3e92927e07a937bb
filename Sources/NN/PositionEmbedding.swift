import Foundation
import Tensors

/// Resamples a ViT's absolute position embedding [1, prefix + g0², D] to a g × g grid, as timm's
/// `resample_abs_pos_embed` does: the class-token rows stay, the grid part is resized with
/// PyTorch's bicubic interpolation (A = −0.75, align_corners = False, no antialias, border indices
/// clamped).
public func resamplePositionEmbedding(_ pos: Tensor, prefixTokens prefix: Int, to g: Int) throws -> Tensor {
    guard pos.dtype == .float32, pos.rank == 3, pos.shape[0] == 1 else {
        throw TensorError("a position embedding is f32 [1, T, D], got \(pos.dtype.name) \(pos.shape)")
    }
    let d = pos.shape[2], gridTokens = pos.shape[1] - prefix
    let g0 = Int(Double(gridTokens).squareRoot().rounded())
    guard g0 * g0 == gridTokens else {
        throw TensorError("the position embedding has \(gridTokens) grid tokens, not a square grid (prefix \(prefix))")
    }
    if g0 == g { return pos }
    let m = bicubicMatrix(from: g0, to: g) // [g, g0]
    let p: [Float] = try pos.scalars()
    var out = [Float](repeating: 0, count: (prefix + g * g) * d)
    for t in 0..<(prefix * d) { out[t] = p[t] }
    // out[y, x, :] = Σ_{i, j} M[y, i] · M[x, j] · in[i, j, :]
    for y in 0..<g {
        for x in 0..<g {
            let dst = (prefix + y * g + x) * d
            for i in 0..<g0 where m[y * g0 + i] != 0 {
                for j in 0..<g0 where m[x * g0 + j] != 0 {
                    let w = m[y * g0 + i] * m[x * g0 + j], src = (prefix + i * g0 + j) * d
                    for c in 0..<d { out[dst + c] += w * p[src + c] }
                }
            }
        }
    }
    return try Tensor(out, shape: [1, prefix + g * g, d])
}

/// PyTorch's 1-D bicubic interpolation weights [out, in] (upsample_bicubic2d, align_corners=False).
func bicubicMatrix(from n: Int, to m: Int) -> [Float] {
    let a = -0.75
    func cubic1(_ x: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 } // |x| ≤ 1
    func cubic2(_ x: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a } // 1 < |x| < 2
    var w = [Float](repeating: 0, count: m * n)
    let scale = Double(n) / Double(m)
    for i in 0..<m {
        let src = (Double(i) + 0.5) * scale - 0.5
        let f = Int(src.rounded(.down))
        let t = src - Double(f)
        let coeffs = [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)]
        for (k, c) in coeffs.enumerated() {
            let idx = min(max(f - 1 + k, 0), n - 1)
            w[i * n + idx] += Float(c)
        }
    }
    return w
}
