import Foundation
import Tensors

/// Space-time-memory label propagation over patch features (DINO's `eval_video_segmentation.py`,
/// as SST uses it without SAM 2): every query patch takes the labels of its most similar patches in
/// the context frames — the first (labelled) frame always, plus a queue of the last `queue` soft
/// predictions.
public struct PropagationSettings: Sendable, Equatable {
    /// Softmax-like temperature of exp(⟨f_q, f_s⟩ / τ).
    public var temperature = 0.1
    /// Sources kept per query, jointly across context frames (ties at the k-th value are kept).
    public var topK = 5
    /// Only sources with |Δrow| ≤ radius and |Δcol| ≤ radius count (0: no restriction).
    public var radius = 12
    /// Soft predictions kept besides the first frame.
    public var queue = 7
    public init() {}
}

/// The tracker's state for one pseudo-video (support image, then queries).
public final class SpaceTimeMemory {
    public let settings: PropagationSettings
    public let rows: Int, cols: Int, dim: Int, channels: Int
    var firstFeatures: [Float]
    var firstLabels: [Float]
    var recent: [(features: [Float], labels: [Float])] = []

    /// `features` [rows·cols, dim] of the support frame (normalised here), `labels` [rows·cols,
    /// channels] (one-hot or soft) at the same patch resolution.
    public init(settings: PropagationSettings, rows: Int, cols: Int, dim: Int, features: [Float], labels: [Float], channels: Int) {
        precondition(features.count == rows * cols * dim && labels.count == rows * cols * channels, "support features/labels do not match the grid")
        self.settings = settings
        self.rows = rows
        self.cols = cols
        self.dim = dim
        self.channels = channels
        firstFeatures = Self.normalized(features, dim: dim)
        firstLabels = labels
    }

    static func normalized(_ f: [Float], dim: Int) -> [Float] {
        var out = f
        for r in 0..<(f.count / dim) {
            var n: Float = 0
            for k in 0..<dim { n += f[r * dim + k] * f[r * dim + k] }
            let inv = 1 / max(n.squareRoot(), 1e-12)
            for k in 0..<dim { out[r * dim + k] *= inv }
        }
        return out
    }

    /// Forgets the queue (the first frame stays).
    public func reset() { recent.removeAll() }

    /// The affinity of one query frame to the context: A[s, q] = exp(⟨f_q, f_s⟩/τ) within the
    /// neighbourhood, only each query's top-k kept, columns normalised to sum 1 — [S, P] with S the
    /// context's patches (first frame first, then the queue oldest first) and P the query's.
    public func affinity(query: [Float]) -> [Float] {
        let p = rows * cols
        let q = Self.normalized(query, dim: dim)
        let sources = [firstFeatures] + recent.map(\.features)
        let s = sources.count * p
        var a = [Float](repeating: 0, count: s * p)
        // Dot products: sources [S, D] · queryᵀ [D, P] through sgemm.
        let stacked = sources.flatMap { $0 }
        stacked.withUnsafeBufferPointer { sp in
            q.withUnsafeBufferPointer { qp in
                a.withUnsafeMutableBufferPointer { ap in
                    GEMM.sgemm(
                        transposeA: false, transposeB: true, m: s, n: p, k: dim, alpha: 1, a: sp.baseAddress!, lda: dim,
                        b: qp.baseAddress!, ldb: dim, beta: 0, c: ap.baseAddress!, ldc: p)
                }
            }
        }
        let invT = Float(1 / settings.temperature), r = settings.radius
        for src in 0..<s {
            let sp = src % p, si = sp / cols, sj = sp % cols
            for qi in 0..<p {
                let i = qi / cols, j = qi % cols
                if r > 0 && (abs(i - si) > r || abs(j - sj) > r) { a[src * p + qi] = 0 } else { a[src * p + qi] = exp(a[src * p + qi] * invT) }
            }
        }
        // Per query (column): keep values ≥ the k-th largest, normalise.
        let k = min(settings.topK, s)
        var column = [Float](repeating: 0, count: s)
        for qi in 0..<p {
            for src in 0..<s { column[src] = a[src * p + qi] }
            var top = Array(column.prefix(k)).sorted()
            for v in column.dropFirst(k) where v > top[0] {
                top[0] = v
                top.sort()
            }
            let threshold = top[0]
            var total: Float = 0
            for src in 0..<s {
                if a[src * p + qi] < threshold { a[src * p + qi] = 0 } else { total += a[src * p + qi] }
            }
            if total > 0 { for src in 0..<s { a[src * p + qi] /= total } }
        }
        return a
    }

    /// Propagates the context's labels to a query frame ([rows·cols, dim] features) and pushes the
    /// soft prediction into the queue: returns [rows·cols, channels].
    public func propagate(_ query: [Float]) -> [Float] {
        let p = rows * cols, c = channels
        let a = affinity(query: query)
        let labels = ([firstLabels] + recent.map(\.labels)).flatMap { $0 } // [S, C]
        var seg = [Float](repeating: 0, count: p * c)
        // seg [P, C] = Aᵀ [P, S] · labels [S, C]
        a.withUnsafeBufferPointer { ap in
            labels.withUnsafeBufferPointer { lp in
                seg.withUnsafeMutableBufferPointer { out in
                    GEMM.sgemm(
                        transposeA: true, transposeB: false, m: p, n: c, k: labels.count / c, alpha: 1, a: ap.baseAddress!, lda: p,
                        b: lp.baseAddress!, ldb: c, beta: 0, c: out.baseAddress!, ldc: c)
                }
            }
        }
        if settings.queue > 0 {
            if recent.count == settings.queue { recent.removeFirst() }
            recent.append((Self.normalized(query, dim: dim), seg))
        }
        return seg
    }
}

/// From patch-resolution soft labels to a label image: bilinear upsampling (align_corners=False) to
/// height × width, per-channel min-max normalisation (DINO's `norm_mask`), argmax.
public func labelImage(_ seg: [Float], rows: Int, cols: Int, channels c: Int, height: Int, width: Int) -> [Int] {
    var up = [Float](repeating: 0, count: height * width * c)
    for y in 0..<height {
        let sy = max(0, (Double(y) + 0.5) * Double(rows) / Double(height) - 0.5)
        let y0 = min(Int(sy), rows - 1), y1 = min(y0 + 1, rows - 1), wy = Float(sy - Double(y0))
        for x in 0..<width {
            let sx = max(0, (Double(x) + 0.5) * Double(cols) / Double(width) - 0.5)
            let x0 = min(Int(sx), cols - 1), x1 = min(x0 + 1, cols - 1), wx = Float(sx - Double(x0))
            for k in 0..<c {
                let top = (1 - wx) * seg[(y0 * cols + x0) * c + k] + wx * seg[(y0 * cols + x1) * c + k]
                let bottom = (1 - wx) * seg[(y1 * cols + x0) * c + k] + wx * seg[(y1 * cols + x1) * c + k]
                up[(y * width + x) * c + k] = (1 - wy) * top + wy * bottom
            }
        }
    }
    for k in 0..<c {
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<(height * width) {
            lo = min(lo, up[i * c + k])
            hi = max(hi, up[i * c + k])
        }
        guard hi > 0 else { continue }
        for i in 0..<(height * width) { up[i * c + k] = (up[i * c + k] - lo) / max(hi - lo, 1e-12) }
    }
    return (0..<(height * width)).map { i in
        var best = 0
        for k in 1..<c where up[i * c + k] > up[i * c + best] { best = k }
        return best
    }
}

/// A label image [height × width] to one-hot labels at patch resolution (the label at each patch's
/// centre pixel, as DINO's nearest downsampling of the first mask).
public func patchLabels(_ mask: [Int], height: Int, width: Int, rows: Int, cols: Int, channels c: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols * c)
    for i in 0..<rows {
        for j in 0..<cols {
            let y = min(height - 1, Int((Double(i) + 0.5) * Double(height) / Double(rows)))
            let x = min(width - 1, Int((Double(j) + 0.5) * Double(width) / Double(cols)))
            out[(i * cols + j) * c + mask[y * width + x]] = 1
        }
    }
    return out
}
