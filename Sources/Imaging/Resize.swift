import Foundation

/// Resampling exactly as Pillow's `Image.resize` (libImaging/Resample.c) does for 8-bit images:
/// separable, horizontal pass then vertical, a filter whose support widens by the scale factor when
/// shrinking (antialiasing), coefficients normalised and rounded to 22-bit fixed point, an 8-bit
/// intermediate. torchvision's `Resize` on PIL images and pybioclip's preprocessing go through it.
public enum Resample: String, Sendable, CaseIterable {
    case bilinear, bicubic

    var support: Double { self == .bilinear ? 1 : 2 }

    func weight(_ x: Double) -> Double {
        let x = abs(x)
        switch self {
        case .bilinear: return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }
}

extension Image {
    /// The image resized to `width` × `height` (no crop: a squash when the aspect ratio changes).
    public func resized(width outW: Int, height outH: Int, filter: Resample = .bicubic) -> Image {
        precondition(outW > 0 && outH > 0, "resize to \(outW)×\(outH)")
        if outW == width && outH == height { return self }
        var current = self
        if outW != width { current = current.resampleHorizontal(to: outW, filter) }
        if outH != height { current = current.resampleVertical(to: outH, filter) }
        return current
    }

    /// The largest centred crop of `size` × `size` after scaling the shorter side to `size`
    /// (torchvision Resize(size) + CenterCrop(size)).
    public func resizedShorterSideAndCropped(to size: Int, filter: Resample = .bicubic) -> Image {
        let scale = Double(size) / Double(min(width, height))
        // torchvision rounds the longer side down (int()) as Resize does.
        let w = width <= height ? size : Int(Double(width) * scale), h = height <= width ? size : Int(Double(height) * scale)
        return resized(width: w, height: h, filter: filter).centerCropped(width: size, height: size)
    }

    /// The centred crop (torchvision CenterCrop: top = round((H − h)/2), left = round((W − w)/2), with
    /// Python's round, which sends halves to the even neighbour).
    public func centerCropped(width w: Int, height h: Int) -> Image {
        precondition(w <= width && h <= height, "crop \(w)×\(h) of a \(width)×\(height) image")
        let top = Int((Double(height - h) / 2).rounded(.toNearestOrEven)), left = Int((Double(width - w) / 2).rounded(.toNearestOrEven))
        var out = [UInt8](repeating: 0, count: w * h * channels)
        for y in 0..<h {
            for x in 0..<w { for c in 0..<channels { out[(y * w + x) * channels + c] = pixels[((top + y) * width + left + x) * channels + c] } }
        }
        return Image(width: w, height: h, channels: channels, pixels: out)
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output index, the first input
    /// index and fixed-point weights.
    static func coefficients(input: Int, output: Int, _ filter: Resample) -> (bounds: [(Int, Int)], weights: [[Int32]]) {
        let (bounds, weights) = normalizedWeights(input: input, output: output, filter)
        let precision = 22
        return (bounds, weights.map { k in k.map { Int32($0 < 0 ? ($0 * Double(1 << precision) - 0.5) : ($0 * Double(1 << precision) + 0.5)) } })
    }

    /// Pillow's `precompute_coeffs`: per output index, the first input index, the count, and the
    /// filter weights normalised to sum 1 (the support widens by the scale when shrinking).
    static func normalizedWeights(input: Int, output: Int, _ filter: Resample) -> (bounds: [(Int, Int)], weights: [[Double]]) {
        let scale = Double(input) / Double(output)
        let filterScale = max(scale, 1)
        let support = filter.support * filterScale
        var bounds: [(Int, Int)] = [], weights: [[Double]] = []
        for xx in 0..<output {
            let center = (Double(xx) + 0.5) * scale
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), input) - xmin
            var k = (0..<xmax).map { filter.weight((Double($0 + xmin) - center + 0.5) / filterScale) }
            let total = k.reduce(0, +)
            if total != 0 { k = k.map { $0 / total } }
            weights.append(k)
            bounds.append((xmin, xmax))
        }
        return (bounds, weights)
    }

    func resampleHorizontal(to outW: Int, _ filter: Resample) -> Image {
        let (bounds, weights) = Image.coefficients(input: width, output: outW, filter)
        var out = [UInt8](repeating: 0, count: outW * height * channels)
        for y in 0..<height {
            for xx in 0..<outW {
                let (xmin, n) = bounds[xx]
                for c in 0..<channels {
                    var ss = Int64(1 << 21)
                    for x in 0..<n { ss += Int64(pixels[(y * width + x + xmin) * channels + c]) * Int64(weights[xx][x]) }
                    out[(y * outW + xx) * channels + c] = Image.clip8(ss)
                }
            }
        }
        return Image(width: outW, height: height, channels: channels, pixels: out)
    }

    func resampleVertical(to outH: Int, _ filter: Resample) -> Image {
        let (bounds, weights) = Image.coefficients(input: height, output: outH, filter)
        var out = [UInt8](repeating: 0, count: width * outH * channels)
        for yy in 0..<outH {
            let (ymin, n) = bounds[yy]
            for x in 0..<width {
                for c in 0..<channels {
                    var ss = Int64(1 << 21)
                    for y in 0..<n { ss += Int64(pixels[((y + ymin) * width + x) * channels + c]) * Int64(weights[yy][y]) }
                    out[(yy * width + x) * channels + c] = Image.clip8(ss)
                }
            }
        }
        return Image(width: width, height: outH, channels: channels, pixels: out)
    }

    static func clip8(_ ss: Int64) -> UInt8 {
        let v = ss >> 22
        return v < 0 ? 0 : v > 255 ? 255 : UInt8(v)
    }
}

extension Image {
    /// The same coefficients kept in floating point (torchvision's antialiased resize of tensors).
    static func floatCoefficients(input: Int, output: Int, _ filter: Resample) -> (bounds: [(Int, Int)], weights: [[Float]]) {
        let (bounds, weights) = normalizedWeights(input: input, output: output, filter)
        return (bounds, weights.map { $0.map(Float.init) })
    }

    /// `ToTensor` then an antialiased tensor `Resize((height, width))` (torchvision on float data, as
    /// pybioclip preprocesses): pixels to [0, 1] first, resampled in float (horizontal pass, then
    /// vertical), no 8-bit rounding. Returns C×H×W floats; gray images give one channel.
    public func resizedFloatCHW(width outW: Int, height outH: Int, filter: Resample = .bilinear) -> [Float] {
        precondition(outW > 0 && outH > 0, "resize to \(outW)×\(outH)")
        let c = channels
        var plane = [Float](repeating: 0, count: c * width * height)
        for y in 0..<height { for x in 0..<width { for ch in 0..<c { plane[(ch * height + y) * width + x] = Float(pixels[(y * width + x) * c + ch]) / 255 } } }
        var w = width
        if outW != width {
            let (bounds, weights) = Image.floatCoefficients(input: width, output: outW, filter)
            var next = [Float](repeating: 0, count: c * height * outW)
            for row in 0..<(c * height) {
                for xx in 0..<outW {
                    let (xmin, n) = bounds[xx]
                    var s: Float = 0
                    for x in 0..<n { s += plane[row * w + xmin + x] * weights[xx][x] }
                    next[row * outW + xx] = s
                }
            }
            plane = next
            w = outW
        }
        if outH != height {
            let (bounds, weights) = Image.floatCoefficients(input: height, output: outH, filter)
            var next = [Float](repeating: 0, count: c * outH * w)
            for ch in 0..<c {
                for yy in 0..<outH {
                    let (ymin, n) = bounds[yy]
                    for x in 0..<w {
                        var s: Float = 0
                        for y in 0..<n { s += plane[(ch * height + ymin + y) * w + x] * weights[yy][y] }
                        next[(ch * outH + yy) * w + x] = s
                    }
                }
            }
            plane = next
        }
        return plane
    }
}
