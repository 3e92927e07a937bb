import Foundation

extension Figure {
    /// The figure as an 8-bit RGB image at `scale` pixels per figure unit: analytic coverage
    /// anti-aliasing for strokes, rectangles and discs, 4×4 supersampling for polygons, FreeType
    /// glyphs for text.
    public func raster(scale: Int = 2) -> Image {
        let s = Double(max(scale, 1))
        var r = Raster(width: max(1, Int((width * s).rounded())), height: max(1, Int((height * s).rounded())))
        for mark in marks {
            switch mark {
            case let .polyline(points, color, lineWidth, dash):
                let scaled = points.map { Point($0.x * s, $0.y * s) }
                for piece in dash.map({ Raster.dashed(scaled, pattern: $0.map { $0 * s }) }) ?? [scaled] {
                    r.stroke(piece, color, width: lineWidth * s)
                }
            case let .polygon(points, color, opacity):
                r.fill(points.map { Point($0.x * s, $0.y * s) }, color, opacity: opacity)
            case let .rect(rect, fill, stroke, strokeWidth):
                let q = Rect(x: rect.x * s, y: rect.y * s, width: rect.width * s, height: rect.height * s)
                if let fill { r.fill(q, fill) }
                if let stroke {
                    let w = strokeWidth * s
                    r.fill(Rect(x: q.x - w / 2, y: q.y - w / 2, width: q.width + w, height: w), stroke)
                    r.fill(Rect(x: q.x - w / 2, y: q.maxY - w / 2, width: q.width + w, height: w), stroke)
                    r.fill(Rect(x: q.x - w / 2, y: q.y + w / 2, width: w, height: max(q.height - w, 0)), stroke)
                    r.fill(Rect(x: q.maxX - w / 2, y: q.y + w / 2, width: w, height: max(q.height - w, 0)), stroke)
                }
            case let .circle(c, radius, fill, stroke):
                r.disc(Point(c.x * s, c.y * s), radius: radius * s, fill, stroke: stroke, strokeWidth: s)
            case let .text(str, at, size, bold, color, anchor, vertical, _):
                var mask = Typeface.render(str, size: size * s, bold: bold)
                let advance = Typeface.width(str, size: size * s, bold: bold)
                let shift = anchor == .start ? 0 : anchor == .middle ? advance / 2 : advance
                if vertical {
                    mask = mask.rotatedCounterClockwise()
                    // Text-local (u, v) ↦ (x + v, y − u): the mask's column `ascent` is the baseline.
                    r.blend(mask, x: Int((at.x * s).rounded()) - mask.ascent, y: Int((at.y * s + shift).rounded()) - mask.height, color)
                } else {
                    r.blend(mask, x: Int((at.x * s - shift).rounded()), y: Int((at.y * s).rounded()) - mask.ascent, color)
                }
            case let .image(image, rect, smooth):
                r.draw(image, in: Rect(x: rect.x * s, y: rect.y * s, width: rect.width * s, height: rect.height * s), smooth: smooth)
            case .begin, .end:
                break
            }
        }
        return r.image
    }
}

/// A linear-RGB-free float canvas (sRGB values blended directly, as browsers do) for `Figure`.
struct Raster {
    let width: Int, height: Int
    var pixels: [Float]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        pixels = [Float](repeating: 1, count: width * height * 3)
    }

    var image: Image {
        Image(width: width, height: height, channels: 3, pixels: pixels.map { UInt8((min(max($0, 0), 1) * 255).rounded()) })
    }

    @inline(__always)
    mutating func blend(_ x: Int, _ y: Int, _ c: Color, _ a: Float) {
        guard a > 0, x >= 0, y >= 0, x < width, y < height else { return }
        let i = 3 * (y * width + x), k = min(a, 1)
        pixels[i] += (Float(c.r) / 255 - pixels[i]) * k
        pixels[i + 1] += (Float(c.g) / 255 - pixels[i + 1]) * k
        pixels[i + 2] += (Float(c.b) / 255 - pixels[i + 2]) * k
    }

    /// An axis-aligned rectangle with exact pixel-area coverage at its edges.
    mutating func fill(_ r: Rect, _ c: Color, opacity: Float = 1) {
        guard r.width > 0, r.height > 0, r.x.isFinite, r.y.isFinite else { return }
        let x0 = max(Int(r.x.rounded(.down)), 0), x1 = min(Int(r.maxX.rounded(.up)), width)
        let y0 = max(Int(r.y.rounded(.down)), 0), y1 = min(Int(r.maxY.rounded(.up)), height)
        guard x0 < x1, y0 < y1 else { return }
        for y in y0..<y1 {
            let cy = min(Double(y + 1), r.maxY) - max(Double(y), r.y)
            for x in x0..<x1 {
                let cx = min(Double(x + 1), r.maxX) - max(Double(x), r.x)
                blend(x, y, c, Float(cx * cy) * opacity)
            }
        }
    }

    /// A polyline `width` wide with round joins and caps: coverage is the distance to the nearest
    /// segment, so overlapping segments never darken their joints.
    mutating func stroke(_ points: [Point], _ c: Color, width w: Double) {
        let pts = points.filter { $0.x.isFinite && $0.y.isFinite }
        guard pts.count >= 2 else { return }
        let half = max(w, 0.8) / 2, pad = half + 1
        let minX = max(Int((pts.map(\.x).min()! - pad).rounded(.down)), 0), maxX = min(Int((pts.map(\.x).max()! + pad).rounded(.up)), width)
        let minY = max(Int((pts.map(\.y).min()! - pad).rounded(.down)), 0), maxY = min(Int((pts.map(\.y).max()! + pad).rounded(.up)), height)
        guard minX < maxX, minY < maxY else { return }
        let bw = maxX - minX
        var cover = [Float](repeating: 0, count: bw * (maxY - minY))
        for k in 1..<pts.count {
            let a = pts[k - 1], b = pts[k]
            let sx0 = max(Int((min(a.x, b.x) - pad).rounded(.down)), minX), sx1 = min(Int((max(a.x, b.x) + pad).rounded(.up)), maxX)
            let sy0 = max(Int((min(a.y, b.y) - pad).rounded(.down)), minY), sy1 = min(Int((max(a.y, b.y) + pad).rounded(.up)), maxY)
            guard sx0 < sx1, sy0 < sy1 else { continue }
            let dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy
            for y in sy0..<sy1 {
                let py = Double(y) + 0.5
                for x in sx0..<sx1 {
                    let px = Double(x) + 0.5
                    let t = len2 > 0 ? min(max(((px - a.x) * dx + (py - a.y) * dy) / len2, 0), 1) : 0
                    let ex = px - (a.x + t * dx), ey = py - (a.y + t * dy)
                    let v = Float(min(max(half + 0.5 - (ex * ex + ey * ey).squareRoot(), 0), 1))
                    let i = (y - minY) * bw + (x - minX)
                    if v > cover[i] { cover[i] = v }
                }
            }
        }
        for y in minY..<maxY { for x in minX..<maxX { blend(x, y, c, cover[(y - minY) * bw + (x - minX)]) } }
    }

    /// A disc with a 1-pixel anti-aliased edge, optionally ringed.
    mutating func disc(_ c: Point, radius: Double, _ fill: Color, stroke: Color?, strokeWidth: Double) {
        guard c.x.isFinite, c.y.isFinite, radius > 0 else { return }
        let x0 = max(Int(c.x - radius - 2), 0), x1 = min(Int(c.x + radius + 2), width)
        let y0 = max(Int(c.y - radius - 2), 0), y1 = min(Int(c.y + radius + 2), height)
        guard x0 < x1, y0 < y1 else { return }
        for y in y0..<y1 {
            for x in x0..<x1 {
                let d = ((Double(x) + 0.5 - c.x) * (Double(x) + 0.5 - c.x) + (Double(y) + 0.5 - c.y) * (Double(y) + 0.5 - c.y)).squareRoot()
                blend(x, y, fill, Float(min(max(radius + 0.5 - d, 0), 1)))
                if let stroke { blend(x, y, stroke, Float(min(max(strokeWidth / 2 + 0.5 - abs(d - radius), 0), 1))) }
            }
        }
    }

    /// A polygon (even–odd rule) by 4×4 supersampling over its bounding box.
    mutating func fill(_ poly: [Point], _ c: Color, opacity: Double) {
        guard poly.count >= 3, poly.allSatisfy({ $0.x.isFinite && $0.y.isFinite }) else { return }
        let x0 = max(Int(poly.map(\.x).min()!.rounded(.down)), 0), x1 = min(Int(poly.map(\.x).max()!.rounded(.up)), width)
        let y0 = max(Int(poly.map(\.y).min()!.rounded(.down)), 0), y1 = min(Int(poly.map(\.y).max()!.rounded(.up)), height)
        guard x0 < x1, y0 < y1 else { return }
        func inside(_ px: Double, _ py: Double) -> Bool {
            var hit = false
            var j = poly.count - 1
            for i in poly.indices {
                let a = poly[i], b = poly[j]
                if (a.y > py) != (b.y > py), px < (b.x - a.x) * (py - a.y) / (b.y - a.y) + a.x { hit.toggle() }
                j = i
            }
            return hit
        }
        for y in y0..<y1 {
            for x in x0..<x1 {
                var n = 0
                for sy in 0..<4 { for sx in 0..<4 where inside(Double(x) + (Double(sx) + 0.5) / 4, Double(y) + (Double(sy) + 0.5) / 4) { n += 1 } }
                blend(x, y, c, Float(n) / 16 * Float(opacity))
            }
        }
    }

    /// Text: `mask` with its top-left at (x, y).
    mutating func blend(_ mask: TextMask, x: Int, y: Int, _ c: Color) {
        for row in 0..<mask.height { for col in 0..<mask.width { blend(x + col, y + row, c, mask.alpha[row * mask.width + col]) } }
    }

    /// `image` scaled into `r`: nearest neighbour, or bilinear when `smooth`.
    mutating func draw(_ image: Image, in r: Rect, smooth: Bool) {
        guard image.width > 0, image.height > 0, r.width > 0, r.height > 0 else { return }
        let x0 = max(Int(r.x.rounded()), 0), x1 = min(Int(r.maxX.rounded()), width)
        let y0 = max(Int(r.y.rounded()), 0), y1 = min(Int(r.maxY.rounded()), height)
        guard x0 < x1, y0 < y1 else { return }
        let ch = image.channels, sx = Double(image.width) / r.width, sy = Double(image.height) / r.height
        func sample(_ u: Int, _ v: Int, _ k: Int) -> Float {
            Float(image.pixels[(v * image.width + u) * ch + (ch >= 3 ? k : 0)]) / 255
        }
        for y in y0..<y1 {
            let fy = (Double(y) + 0.5 - r.y) * sy - 0.5
            for x in x0..<x1 {
                let fx = (Double(x) + 0.5 - r.x) * sx - 0.5
                let i = 3 * (y * width + x)
                for k in 0..<3 {
                    if smooth {
                        let u0 = min(max(Int(fx.rounded(.down)), 0), image.width - 1), v0 = min(max(Int(fy.rounded(.down)), 0), image.height - 1)
                        let u1 = min(u0 + 1, image.width - 1), v1 = min(v0 + 1, image.height - 1)
                        let ax = Float(min(max(fx - Double(u0), 0), 1)), ay = Float(min(max(fy - Double(v0), 0), 1))
                        let top = sample(u0, v0, k) * (1 - ax) + sample(u1, v0, k) * ax
                        let bottom = sample(u0, v1, k) * (1 - ax) + sample(u1, v1, k) * ax
                        pixels[i + k] = top * (1 - ay) + bottom * ay
                    } else {
                        let u = min(max(Int((fx + 0.5).rounded(.down)), 0), image.width - 1)
                        let v = min(max(Int((fy + 0.5).rounded(.down)), 0), image.height - 1)
                        pixels[i + k] = sample(u, v, k)
                    }
                }
            }
        }
    }

    /// `points` cut into the "on" pieces of a dash `pattern` (lengths along the line).
    static func dashed(_ points: [Point], pattern: [Double]) -> [[Point]] {
        let pattern = pattern.filter { $0 > 0 && $0.isFinite }
        guard pattern.count >= 2 else { return [points] }
        var pieces: [[Point]] = [], current: [Point] = [], k = 0, left = pattern[0], on = true
        if let first = points.first { current = [first] }
        for i in points.indices.dropFirst() {
            var a = points[i - 1]
            let b = points[i]
            var remaining = ((b.x - a.x) * (b.x - a.x) + (b.y - a.y) * (b.y - a.y)).squareRoot()
            while remaining > left {
                let t = left / remaining
                let p = Point(a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t)
                if on {
                    current.append(p)
                    pieces.append(current)
                }
                current = [p]
                remaining -= left
                a = p
                on.toggle()
                k = (k + 1) % pattern.count
                left = pattern[k]
            }
            left -= remaining
            if on { current.append(b) } else { current = [b] }
        }
        if on, current.count >= 2 { pieces.append(current) }
        return pieces
    }
}
