import Foundation
import MenagerieKit
import Tensors

/// The bias study's colour assignment (LfF's `make_attr_labels`, used by Biased-DD): for class c
/// with n samples, colour j has probability ρ when j = c and (1 − ρ)/(K − 1) otherwise; the
/// milestones round(n · cumsum(p)) (numpy's half-to-even rounding) are assigned in sample order —
/// sample k of the class gets the first colour whose milestone exceeds k.
public func biasedAttributes(labels: [Int], classes k: Int, rho: Double) -> [Int] {
    var counts = [Int](repeating: 0, count: k)
    for y in labels { counts[y] += 1 }
    var milestones = [[Double]](repeating: [], count: k)
    for c in 0..<k {
        var cum = 0.0
        milestones[c] = (0..<k).map { j in
            cum += j == c ? rho : (1 - rho) / Double(k - 1)
            return (Double(counts[c]) * cum).rounded(.toNearestOrEven)
        }
    }
    var seen = [Int](repeating: 0, count: k)
    return labels.map { y in
        let idx = seen[y]
        seen[y] += 1
        return milestones[y].firstIndex { $0 > Double(idx) } ?? (k - 1)
    }
}

/// The bias datasets' shared checks: ρ in [0, 1], severity 1…4.
func validateBias(rho: Double, severity: Int, component: String) throws {
    guard (0...1).contains(rho) else { throw MenagerieError.invalidArgument("option 'rho' of '\(component)' must lie in [0, 1], got \(rho)") }
    guard (1...4).contains(severity) else { throw MenagerieError.invalidArgument("option 'severity' of '\(component)' must be 1, 2, 3 or 4, got \(severity)") }
}

/// The ten colours of the Biased-MNIST / CMNIST-DD protocol (RGB in [0, 1]).
public let biasColours: [[Float]] = [
    [0.984, 0.313, 0.169], [0.991, 0.916, 0.352], [0.673, 0.461, 0.580], [0.783, 0.832, 0.601], [0.088, 0.778, 0.982],
    [0.321, 0.961, 0.446], [0.025, 0.236, 0.759], [0.555, 0.102, 0.762], [0.208, 0.393, 0.019], [0.834, 0.202, 0.267],
]

/// Colour noise std by severity 1…4.
public let colourNoise: [Float] = [0.05, 0.02, 0.01, 0.005]

/// image = clamp(colour + N(0, std²) per channel, 0, 1) × digit (one colour per image).
public func colourise(_ digit: [Float], size: Int, colour: Int, severity: Int, rng: inout SeededGenerator) -> [Float] {
    let hw = size * size
    var out = [Float](repeating: 0, count: 3 * hw)
    for ch in 0..<3 {
        let v = min(1, max(0, biasColours[colour][ch] + colourNoise[severity - 1] * Float(rng.nextNormal())))
        for p in 0..<hw { out[ch * hw + p] = v * digit[p] }
    }
    return out
}

/// Handwritten-like digits when no MNIST files are given: each digit a set of strokes (polylines
/// on the unit square) with per-sample point jitter, slant, scale, offset and pen thickness,
/// rasterised with anti-aliased edges.
public enum DigitRenderer {
    static func ellipse(_ cx: Double, _ cy: Double, _ rx: Double, _ ry: Double, from a0: Double = 0, to a1: Double = 2 * .pi, n: Int = 18) -> [(Double, Double)]
    {
        (0...n).map { i in
            let a = a0 + (a1 - a0) * Double(i) / Double(n)
            return (cx + rx * sin(a), cy - ry * cos(a))
        }
    }

    static let strokes: [[[(Double, Double)]]] = [
        [ellipse(0.5, 0.5, 0.24, 0.38)],
        [[(0.36, 0.24), (0.52, 0.1), (0.52, 0.9)]],
        [[(0.26, 0.3), (0.36, 0.15), (0.55, 0.1), (0.72, 0.2), (0.72, 0.38), (0.26, 0.9), (0.78, 0.9)]],
        [[(0.26, 0.15), (0.7, 0.15), (0.45, 0.45), (0.68, 0.58), (0.72, 0.78), (0.52, 0.9), (0.26, 0.83)]],
        [[(0.64, 0.9), (0.64, 0.1), (0.2, 0.65), (0.8, 0.65)]],
        [[(0.75, 0.1), (0.32, 0.1), (0.29, 0.45), (0.55, 0.4), (0.72, 0.55), (0.7, 0.8), (0.5, 0.9), (0.26, 0.84)]],
        [[(0.7, 0.12), (0.46, 0.2), (0.31, 0.45), (0.29, 0.7), (0.41, 0.88), (0.61, 0.88), (0.72, 0.7), (0.61, 0.53), (0.41, 0.53), (0.3, 0.63)]],
        [[(0.22, 0.1), (0.78, 0.1), (0.44, 0.9)]],
        [ellipse(0.5, 0.3, 0.19, 0.19), ellipse(0.5, 0.7, 0.23, 0.21)],
        [ellipse(0.5, 0.32, 0.2, 0.21), [(0.7, 0.32), (0.66, 0.6), (0.58, 0.9)]],
    ]

    /// A `size` × `size` grey digit in [0, 1]: per sample, control points jittered, the whole digit
    /// slanted, rotated (±12°), scaled per axis and offset, a random pen width, each stroke segment
    /// dropped with probability 0.06 (broken strokes), and a few speckles of clutter.
    public static func render(_ digit: Int, size: Int, rng: inout SeededGenerator) -> [Float] {
        let slant = (rng.nextUniform() - 0.5) * 0.7, angle = (rng.nextUniform() - 0.5) * 24 * Double.pi / 180
        let scaleX = 0.68 + 0.3 * rng.nextUniform(), scaleY = 0.78 + 0.2 * rng.nextUniform()
        let ox = (rng.nextUniform() - 0.5) * 0.14, oy = (rng.nextUniform() - 0.5) * 0.12
        let pen = (1.0 + 1.8 * rng.nextUniform()) * Double(size) / 28
        let lines = strokes[digit].map { line in
            line.map { p -> (Double, Double) in
                let x = p.0 + 0.055 * rng.nextNormal(), y = p.1 + 0.055 * rng.nextNormal()
                let u = (x - 0.5 + slant * (0.5 - y)) * scaleX, v = (y - 0.5) * scaleY
                let sx = 0.5 + u * cos(angle) - v * sin(angle) + ox, sy = 0.5 + u * sin(angle) + v * cos(angle) + oy
                return (sx * Double(size), sy * Double(size))
            }
        }
        let dropped = lines.map { line in (1..<line.count).map { _ in rng.nextUniform() < 0.06 } }
        var out = [Float](repeating: 0, count: size * size)
        for py in 0..<size {
            for px in 0..<size {
                let x = Double(px) + 0.5, y = Double(py) + 0.5
                var best = Double.infinity
                for (l, line) in lines.enumerated() {
                    for k in 1..<line.count where !dropped[l][k - 1] {
                        let (ax, ay) = line[k - 1], (bx, by) = line[k]
                        let dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy
                        let t = len2 > 0 ? max(0, min(1, ((x - ax) * dx + (y - ay) * dy) / len2)) : 0
                        let ex = ax + t * dx - x, ey = ay + t * dy - y
                        best = min(best, (ex * ex + ey * ey).squareRoot())
                    }
                }
                out[py * size + px] = Float(max(0, min(1, pen / 2 + 0.5 - best)))
            }
        }
        for _ in 0..<Int(rng.next() % 6) {
            let p = Int(rng.next() % UInt64(size * size))
            out[p] = max(out[p], Float(0.3 + 0.5 * rng.nextUniform()))
        }
        return out
    }
}
