import Foundation
import Tensors

/// The ten corruptions of CIFAR-10-C (Hendrycks & Dietterich 2019) that CCIFAR10-DD uses as the bias
/// attribute, on CHW images in [0, 1], severity 1…5 with the parameters of `make_cifar_c.py`.
///
/// Implemented as there: brightness and saturate (in HSV), contrast, pixelate (Pillow's BOX down- and
/// up-sampling), JPEG (the lossy part of baseline JPEG: 8×8 DCT of YCbCr, the standard
/// quantisation tables scaled by quality, inverse DCT; no chroma subsampling), fog (a plasma fractal
/// by diamond-square), elastic (a smoothed random displacement field, bilinear resampling).
/// Approximated, since their inputs are not available here: snow (random flakes blurred along a
/// direction, with the image brightened and greyed as there, but no motion-blur library), frost
/// (fractal ice texture instead of the frost photographs), spatter (random smoothed blobs of mud
/// colour instead of the liquid/mud simulation).
public enum Corruption: Int, CaseIterable, Sendable {
    case snow, frost, fog, brightness, contrast, spatter, elastic, jpeg, pixelate, saturate

    public var name: String { ["snow", "frost", "fog", "brightness", "contrast", "spatter", "elastic", "jpeg", "pixelate", "saturate"][rawValue] }
    public var faithful: Bool { ![.snow, .frost, .spatter].contains(self) }

    public func apply(_ x: [Float], size s: Int, severity: Int, rng: inout SeededGenerator) -> [Float] {
        let k = max(1, min(5, severity)) - 1
        switch self {
        case .brightness:
            let c = [0.05, 0.1, 0.15, 0.2, 0.3][k]
            return Self.hsv(x, size: s) { h, sat, v in (h, sat, min(1, max(0, v + Float(c)))) }
        case .saturate:
            let c = [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)][k]
            return Self.hsv(x, size: s) { h, sat, v in (h, min(1, max(0, sat * Float(c.0) + Float(c.1))), v) }
        case .contrast:
            let c = Float([0.75, 0.5, 0.4, 0.3, 0.15][k])
            var out = x
            let hw = s * s
            for ch in 0..<3 {
                let mean = x[(ch * hw)..<((ch + 1) * hw)].reduce(0, +) / Float(hw)
                for p in 0..<hw { out[ch * hw + p] = min(1, max(0, (x[ch * hw + p] - mean) * c + mean)) }
            }
            return out
        case .pixelate:
            let c = [0.95, 0.9, 0.85, 0.75, 0.65][k]
            let small = max(1, Int(Double(s) * c))
            return Self.boxResize(Self.boxResize(x, from: s, to: small), from: small, to: s)
        case .jpeg:
            return JPEGQuantizer.roundTrip(x, size: s, quality: [80, 65, 58, 50, 40][k])
        case .fog:
            let c = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][k]
            let fractal = Self.plasma(size: s, decay: c.1, rng: &rng)
            let maxValue = x.max() ?? 1
            var out = x
            let hw = s * s
            for ch in 0..<3 {
                for p in 0..<hw {
                    let v = x[ch * hw + p] + Float(c.0) * fractal[p]
                    out[ch * hw + p] = min(1, max(0, v * maxValue / (maxValue + Float(c.0))))
                }
            }
            return out
        case .elastic:
            // (alpha, sigma) in pixels of a 32-pixel image, scaled to the size.
            let c = [(0.0, 0.0), (1.6, 1.5), (2.6, 1.4), (3.2, 1.2), (3.8, 1.0)][k]
            guard c.0 > 0 else { return x }
            let scale = Double(s) / 32
            let dx = Self.smoothNoise(size: s, sigma: c.1 * scale, rng: &rng).map { $0 * Float(c.0 * scale) }
            let dy = Self.smoothNoise(size: s, sigma: c.1 * scale, rng: &rng).map { $0 * Float(c.0 * scale) }
            return Self.resample(x, size: s) { px, py in (Double(px) + Double(dx[py * s + px]), Double(py) + Double(dy[py * s + px])) }
        case .snow:
            let c = [
                (0.1, 0.3, 3.0, 0.5, 10.0, 4.0, 0.8), (0.2, 0.3, 2.0, 0.5, 12.0, 4.0, 0.7), (0.55, 0.3, 4.0, 0.9, 12.0, 8.0, 0.7),
                (0.55, 0.3, 4.5, 0.85, 12.0, 8.0, 0.65), (0.55, 0.3, 2.5, 0.85, 12.0, 12.0, 0.55),
            ][k]
            let hw = s * s
            // Flakes: thresholded noise, smeared along one random direction.
            // (The reference zooms the flake layer by c[2]; at this size that is sparser, larger flakes.)
            var flakes = (0..<hw).map { _ in Float(rng.nextNormal() * c.1 + c.0 - 0.25) }
            flakes = flakes.map { $0 < Float(c.3) ? 0 : $0 }
            let angle = rng.nextUniform() * Double.pi, length = Int(c.4 * Double(s) / 32)
            var smeared = [Float](repeating: 0, count: hw)
            for y in 0..<s {
                for x0 in 0..<s where flakes[y * s + x0] > 0 {
                    for t in 0..<max(1, length) {
                        let px = x0 + Int(Double(t) * cos(angle)), py = y + Int(Double(t) * sin(angle))
                        let fade = 1 - Float(t) / Float(max(1, length))
                        if px >= 0 && px < s && py >= 0 && py < s { smeared[py * s + px] = max(smeared[py * s + px], fade * flakes[y * s + x0]) }
                    }
                }
            }
            var out = x
            for p in 0..<hw {
                let grey = (0.299 * x[p] + 0.587 * x[hw + p] + 0.114 * x[2 * hw + p]) * 1.5 + 0.5
                for ch in 0..<3 {
                    let base = Float(c.6) * x[ch * hw + p] + Float(1 - c.6) * max(x[ch * hw + p], grey)
                    out[ch * hw + p] = min(1, max(0, base + smeared[p]))
                }
            }
            return out
        case .frost:
            let c = [(1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][k]
            let ice = Self.plasma(size: s, decay: 1.5, rng: &rng)
            var out = x
            let hw = s * s
            let tint: [Float] = [0.85, 0.92, 1.0]
            for ch in 0..<3 { for p in 0..<hw { out[ch * hw + p] = min(1, max(0, Float(c.0) * x[ch * hw + p] + Float(c.1) * ice[p] * tint[ch] * 1.4)) } }
            return out
        case .spatter:
            let c = [(0.65, 0.3), (0.65, 0.3), (0.65, 0.3), (0.65, 0.3), (0.67, 0.4)][k]
            let blobs = Self.smoothNoise(size: s, sigma: 1.5 * Double(s) / 32, rng: &rng)
            let hi = blobs.max() ?? 1
            var out = x
            let hw = s * s
            let mud: [Float] = [63 / 255, 42 / 255, 20 / 255]
            for p in 0..<hw {
                let m = blobs[p] / max(hi, 1e-6) > Float(c.0 - 0.3) ? Float(c.1 + 0.4) : 0
                for ch in 0..<3 { out[ch * hw + p] = (1 - m) * x[ch * hw + p] + m * mud[ch] }
            }
            return out
        }
    }

    static func hsv(_ x: [Float], size s: Int, _ f: (Float, Float, Float) -> (Float, Float, Float)) -> [Float] {
        let hw = s * s
        var out = x
        for p in 0..<hw {
            let r = x[p], g = x[hw + p], b = x[2 * hw + p]
            let mx = max(r, g, b), mn = min(r, g, b), d = mx - mn
            var h: Float = 0
            if d > 0 {
                if mx == r { h = ((g - b) / d).truncatingRemainder(dividingBy: 6) } else if mx == g { h = (b - r) / d + 2 } else { h = (r - g) / d + 4 }
                h /= 6
                if h < 0 { h += 1 }
            }
            let sat: Float = mx > 0 ? d / mx : 0
            let (h2, s2, v2) = f(h, sat, mx)
            let i = Int(h2 * 6) % 6, fr = h2 * 6 - Float(Int(h2 * 6))
            let pp = v2 * (1 - s2), q = v2 * (1 - fr * s2), t = v2 * (1 - (1 - fr) * s2)
            let (r2, g2, b2): (Float, Float, Float) = [(v2, t, pp), (q, v2, pp), (pp, v2, t), (pp, q, v2), (t, pp, v2), (v2, pp, q)][i]
            out[p] = r2
            out[hw + p] = g2
            out[2 * hw + p] = b2
        }
        return out
    }

    /// Pillow's BOX resampling, separable, per channel: output pixel i covers source positions
    /// within ±support of its centre (i + ½)·in/out, support = ½·max(1, in/out); each source pixel j
    /// weighs 1 when −½ ≤ (j + ½ − centre)/max(1, in/out) < ½ (so upscaling is nearest-neighbour).
    static func boxResize(_ x: [Float], from a: Int, to b: Int) -> [Float] {
        let channels = x.count / (a * a)
        let scale = Double(a) / Double(b), fs = max(1, scale), support = 0.5 * fs
        let taps: [[(Int, Float)]] = (0..<b).map { i in
            let center = (Double(i) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0), hi = min(Int(center + support + 0.5), a)
            var w: [(Int, Float)] = []
            for j in lo..<max(hi, lo) {
                let u = (Double(j) - center + 0.5) / fs
                if u >= -0.5 && u < 0.5 { w.append((j, 1)) }
            }
            if w.isEmpty { w = [(min(max(Int(center), 0), a - 1), 1)] }
            let total = Float(w.count)
            return w.map { ($0.0, $0.1 / total) }
        }
        var out = [Float](repeating: 0, count: channels * b * b)
        var rows = [Float](repeating: 0, count: b * a)
        for ch in 0..<channels {
            let src = ch * a * a
            for y in 0..<a { for i in 0..<b { rows[i * a + y] = taps[i].reduce(Float(0)) { $0 + $1.1 * x[src + y * a + $1.0] } } }
            for yy in 0..<b { for i in 0..<b { out[ch * b * b + yy * b + i] = taps[yy].reduce(Float(0)) { $0 + $1.1 * rows[i * a + $1.0] } } }
        }
        return out
    }

    /// Diamond-square plasma fractal in [0, 1], cropped to s × s.
    static func plasma(size s: Int, decay: Double, rng: inout SeededGenerator) -> [Float] {
        var n = 1
        while n < s { n *= 2 }
        var m = [Double](repeating: 0, count: n * n)
        var step = n, wibble = 100.0
        func at(_ y: Int, _ x: Int) -> Double { m[((y % n + n) % n) * n + ((x % n + n) % n)] }
        while step >= 2 {
            let half = step / 2
            wibble /= decay
            for y in stride(from: 0, to: n, by: step) {
                for x in stride(from: 0, to: n, by: step) {
                    let avg = (at(y, x) + at(y, x + step) + at(y + step, x) + at(y + step, x + step)) / 4
                    m[(y + half) * n + x + half] = avg + wibble * (rng.nextUniform() * 2 - 1)
                }
            }
            for y in stride(from: 0, to: n, by: half) {
                for x in stride(from: (y / half) % 2 == 0 ? half : 0, to: n, by: step) {
                    let avg = (at(y - half, x) + at(y + half, x) + at(y, x - half) + at(y, x + half)) / 4
                    m[y * n + x] = avg + wibble * (rng.nextUniform() * 2 - 1)
                }
            }
            step = half
        }
        let lo = m.min()!, hi = m.max()!
        var out = [Float](repeating: 0, count: s * s)
        for y in 0..<s { for x in 0..<s { out[y * s + x] = Float((m[y * n + x] - lo) / max(hi - lo, 1e-12)) } }
        return out
    }

    /// Uniform(−1, 1) noise smoothed by a Gaussian of `sigma` pixels (separable).
    static func smoothNoise(size s: Int, sigma: Double, rng: inout SeededGenerator) -> [Float] {
        let raw = (0..<(s * s)).map { _ in Float(rng.nextUniform() * 2 - 1) }
        guard sigma > 0 else { return raw }
        let r = max(1, Int(3 * sigma)), kernel = (-r...r).map { Float(exp(-Double($0 * $0) / (2 * sigma * sigma))) }
        let total = kernel.reduce(0, +)
        var tmp = raw, out = raw
        for y in 0..<s {
            for x in 0..<s {
                var v: Float = 0
                for (i, w) in kernel.enumerated() {
                    let xx = min(max(x + i - r, 0), s - 1)
                    v += w * raw[y * s + xx]
                }
                tmp[y * s + x] = v / total
            }
        }
        for y in 0..<s {
            for x in 0..<s {
                var v: Float = 0
                for (i, w) in kernel.enumerated() {
                    let yy = min(max(y + i - r, 0), s - 1)
                    v += w * tmp[yy * s + x]
                }
                out[y * s + x] = v / total
            }
        }
        return out
    }

    /// Bilinear resampling with edge clamping, per channel.
    static func resample(_ x: [Float], size s: Int, _ source: (Int, Int) -> (Double, Double)) -> [Float] {
        let hw = s * s, channels = x.count / hw
        var out = x
        for py in 0..<s {
            for px in 0..<s {
                let (fx, fy) = source(px, py)
                let cx = min(max(fx, 0), Double(s - 1)), cy = min(max(fy, 0), Double(s - 1))
                let x0 = Int(cx), y0 = Int(cy), x1 = min(x0 + 1, s - 1), y1 = min(y0 + 1, s - 1)
                let wx = Float(cx - Double(x0)), wy = Float(cy - Double(y0))
                for ch in 0..<channels {
                    let b = ch * hw
                    let top = (1 - wx) * x[b + y0 * s + x0] + wx * x[b + y0 * s + x1]
                    let bottom = (1 - wx) * x[b + y1 * s + x0] + wx * x[b + y1 * s + x1]
                    out[b + py * s + px] = (1 - wy) * top + wy * bottom
                }
            }
        }
        return out
    }
}

/// The lossy half of baseline JPEG: RGB → YCbCr, level shift, 8×8 DCT-II, quantisation by the
/// standard luminance/chrominance tables scaled by quality (libjpeg's rule), dequantisation, inverse
/// DCT, back to RGB. (Entropy coding is lossless and changes nothing.)
enum JPEGQuantizer {
    static let luma: [Int] = [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ]
    static let chroma: [Int] =
        [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
        + [Int](repeating: 99, count: 32)

    static func table(_ base: [Int], quality q: Int) -> [Double] {
        let scale = q < 50 ? 5000 / q : 200 - 2 * q
        return base.map { Double(max(1, min(255, ($0 * scale + 50) / 100))) }
    }

    static func roundTrip(_ x: [Float], size s: Int, quality: Int) -> [Float] {
        let hw = s * s
        var ycc = [[Double]](repeating: [Double](repeating: 0, count: hw), count: 3)
        for p in 0..<hw {
            let r = Double(x[p]) * 255, g = Double(x[hw + p]) * 255, b = Double(x[2 * hw + p]) * 255
            ycc[0][p] = 0.299 * r + 0.587 * g + 0.114 * b
            ycc[1][p] = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
            ycc[2][p] = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
        }
        let tables = [table(luma, quality: quality), table(chroma, quality: quality), table(chroma, quality: quality)]
        var cosine = [Double](repeating: 0, count: 64)
        for u in 0..<8 { for i in 0..<8 { cosine[u * 8 + i] = cos(Double(2 * i + 1) * Double(u) * Double.pi / 16) * (u == 0 ? (0.125).squareRoot() : 0.5) } }
        for c in 0..<3 {
            for by in stride(from: 0, to: s, by: 8) {
                for bx in stride(from: 0, to: s, by: 8) {
                    var block = [Double](repeating: 0, count: 64)
                    for i in 0..<8 { for j in 0..<8 { block[i * 8 + j] = ycc[c][min(by + i, s - 1) * s + min(bx + j, s - 1)] - 128 } }
                    var coef = [Double](repeating: 0, count: 64)
                    for u in 0..<8 {
                        for v in 0..<8 {
                            var sum = 0.0
                            for i in 0..<8 { for j in 0..<8 { sum += cosine[u * 8 + i] * cosine[v * 8 + j] * block[i * 8 + j] } }
                            coef[u * 8 + v] = (sum / tables[c][u * 8 + v]).rounded() * tables[c][u * 8 + v]
                        }
                    }
                    for i in 0..<8 {
                        for j in 0..<8 where by + i < s && bx + j < s {
                            var sum = 0.0
                            for u in 0..<8 { for v in 0..<8 { sum += cosine[u * 8 + i] * cosine[v * 8 + j] * coef[u * 8 + v] } }
                            ycc[c][(by + i) * s + bx + j] = sum + 128
                        }
                    }
                }
            }
        }
        var out = x
        for p in 0..<hw {
            let y = ycc[0][p], cb = ycc[1][p] - 128, cr = ycc[2][p] - 128
            out[p] = Float(min(255, max(0, y + 1.402 * cr)) / 255)
            out[hw + p] = Float(min(255, max(0, y - 0.344136 * cb - 0.714136 * cr)) / 255)
            out[2 * hw + p] = Float(min(255, max(0, y + 1.772 * cb)) / 255)
        }
        return out
    }
}
