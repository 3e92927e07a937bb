import Foundation
import Tensors

/// Per-image variation: where and how large the organism is, and which way it faces.
public struct Pose: Sendable, Equatable {
    public var dx = 0.0, dy = 0.0, scale = 1.0
    public var flipped = false
    public init(dx: Double = 0, dy: Double = 0, scale: Double = 1, flipped: Bool = false) {
        (self.dx, self.dy, self.scale, self.flipped) = (dx, dy, scale, flipped)
    }
}

/// Intra-species variation, labelled per image.
public struct Variant: Sendable, Equatable {
    /// 0 female (a paler, hue-shifted colouring), 1 male.
    public var sex: Int
    /// 0 juvenile (smaller, faint spots instead of the adult pattern), 1 adult.
    public var stage: Int
    public init(sex: Int, stage: Int) { (self.sex, self.stage) = (sex, stage) }
    public var name: String { (stage == 0 ? "juvenile" : "adult") + " " + (sex == 0 ? "female" : "male") }
}

/// One rendered image: RGB bytes (interleaved, rows top to bottom) and the part label per pixel.
public struct Rendering: Sendable, Equatable {
    public var size: Int
    public var rgb: [UInt8]
    public var mask: [UInt8]
}

/// Draws an organism by painting its parts back to front; each painted pixel takes the part's
/// label in the mask, so the mask is exactly what is visible. No anti-aliasing: masks and images
/// agree pixel for pixel. Pure: the same arguments give the same bytes.
public func renderOrganism(_ species: Species, variant: Variant, pose: Pose, size: Int, textureSeed: UInt64) -> Rendering {
    var r = Painter(size: size, flipped: pose.flipped, textureSeed: textureSeed)
    let a = species.appearance
    r.paintBackground(habitat: a.habitat)

    let s = Double(size)
    let stageScale = variant.stage == 0 ? 0.75 : 1.0
    let u = s * pose.scale * stageScale // the organism's unit, in pixels
    r.centre = ((0.5 + pose.dx) * s, (0.55 + pose.dy) * s)
    let rx = a.bodySize * a.elongation.squareRoot() * u, ry = a.bodySize / a.elongation.squareRoot() * u
    let saturation = variant.sex == 1 ? 0.78 : 0.45
    let hue = variant.sex == 1 ? a.hue : (a.hue + 0.04).truncatingRemainder(dividingBy: 1)
    let bodyColour = hsv(hue, saturation, 0.85)
    let darker = hsv(hue, saturation, 0.6)
    let accent = hsv(a.patternHue, 0.7, variant.sex == 1 ? 0.9 : 0.7)

    // Tail: a fan behind the body.
    // The tail always reaches past the body's edge (it is drawn behind the body), so even the
    // shortest tail is visible and can be pointed at.
    let tailLength = 0.3 * rx + a.tailLength * 0.3 * u, tailSpread = (0.05 + a.tailLength * 0.12) * u * (a.winged ? 0.8 : 1.3)
    r.triangle((-rx * 0.75, 0), (-rx * 0.75 - tailLength, -tailSpread), (-rx * 0.75 - tailLength, tailSpread), part: .tail) { _, _ in darker }

    // Body, with shading and the pattern.
    let pattern = variant.stage == 0 ? 3 : a.pattern
    r.ellipse(centre: (0, 0), radii: (rx, ry), angle: 0, part: .body) { lx, ly in
        let shade = 1 - 0.25 * (ly / ry)
        var c = bodyColour
        switch pattern {
        case 1 where sin(lx / rx * .pi * 3.5) > 0.35: c = accent
        case 2 where inSpot(lx / rx * 2.4, ly / ry * 1.6): c = accent
        case 3 where inSpot(lx / rx * 3.0, ly / ry * 2.2): c = mix(bodyColour, accent, 0.35)
        default: break
        }
        return scale(c, shade)
    }

    // Wings (an ellipse over the body) or fins (dorsal and ventral triangles).
    if a.winged {
        r.ellipse(centre: (-0.15 * rx, -0.3 * ry), radii: (a.limbSize * 0.85 * rx, a.limbSize * 0.55 * ry), angle: -0.35, part: .limbs) { _, _ in accent }
    } else {
        let h = a.limbSize * 1.1 * ry
        r.triangle((-0.45 * rx, -0.75 * ry), (0.2 * rx, -0.75 * ry), (-0.5 * rx, -0.75 * ry - h), part: .limbs) { _, _ in accent }
        r.triangle((-0.3 * rx, 0.8 * ry), (0.05 * rx, 0.8 * ry), (-0.35 * rx, 0.8 * ry + 0.6 * h), part: .limbs) { _, _ in accent }
    }

    // Head with an eye, and the beak/snout appendage in front of it.
    let hr = a.headSize * 0.95 * ry
    let hc = (rx * 0.85, a.winged ? -ry * 0.45 : -ry * 0.05)
    r.ellipse(centre: hc, radii: (hr, hr), angle: 0, part: .head) { _, _ in darker }
    let eye = max(0.9, 0.2 * hr)
    r.ellipse(centre: (hc.0 + 0.35 * hr, hc.1 - 0.2 * hr), radii: (eye, eye), angle: 0, part: .head) { _, _ in (20, 20, 24) }
    // The appendage's geometry depends on its own trait and the body's frame only (not on the
    // head's size), so siblings that differ in the head do not differ in the appendage.
    let beak = a.beakLength * 0.17 * u, anchor = hc.0 + 0.4 * ry, half = 0.045 * u
    r.triangle(
        (anchor, hc.1 - half), (anchor, hc.1 + half), (anchor + 0.1 * ry + beak, hc.1 + 0.2 * half),
        part: .appendage
    ) { _, _ in a.winged ? (235, 170, 40) : (150, 140, 130) }
    return Rendering(size: size, rgb: r.rgb, mask: r.mask)
}

typealias RGB = (Double, Double, Double)

func hsv(_ h: Double, _ s: Double, _ v: Double) -> RGB {
    let i = Int(h * 6) % 6, f = h * 6 - Double(Int(h * 6))
    let p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s)
    let (r, g, b): RGB = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (r * 255, g * 255, b * 255)
}

func mix(_ a: RGB, _ b: RGB, _ t: Double) -> RGB { (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, a.2 + (b.2 - a.2) * t) }
func scale(_ a: RGB, _ k: Double) -> RGB { (a.0 * k, a.1 * k, a.2 * k) }

/// A 64-bit mix (SplitMix64's finaliser) for per-pixel texture.
@inline(__always) func hash64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

struct Painter {
    let size: Int
    let flipped: Bool
    let textureSeed: UInt64
    var centre = (0.0, 0.0)
    var rgb: [UInt8]
    var mask: [UInt8]

    init(size: Int, flipped: Bool, textureSeed: UInt64) {
        self.size = size
        self.flipped = flipped
        self.textureSeed = textureSeed
        rgb = [UInt8](repeating: 0, count: size * size * 3)
        mask = [UInt8](repeating: 0, count: size * size)
    }

    /// A uniform number in [0, 1) fixed by a grid cell and the image's texture seed.
    func noise(_ x: Int, _ y: Int, _ salt: UInt64 = 0) -> Double {
        Double(hash64(textureSeed ^ UInt64(bitPattern: Int64(x &* 73_856_093 ^ y &* 19_349_663)) &+ salt) >> 11) / Double(1 << 53)
    }

    /// Habitat: open water (blue, long waves) through reef and forest to sand (pale, grainy).
    mutating func paintBackground(habitat h: Double) {
        let base = hsv((0.6 - 0.5 * h + 1).truncatingRemainder(dividingBy: 1), 0.35 + 0.15 * h, 0.5 + 0.35 * h)
        let waves = (1 - h) * 0.12, grain = h * 0.14
        for y in 0..<size {
            let wave = waves * sin(Double(y) / Double(size) * 18 + noise(0, 0) * 6)
            for x in 0..<size {
                let blotch = noise(x / 4, y / 4, 1) - 0.5, speck = noise(x, y, 2) - 0.5
                let k = 1 + wave + grain * blotch + 0.04 * speck
                let i = 3 * (y * size + x)
                rgb[i] = clampByte(base.0 * k)
                rgb[i + 1] = clampByte(base.1 * k)
                rgb[i + 2] = clampByte(base.2 * k)
            }
        }
    }

    /// Pixel (x, y)'s centre in the organism's local frame (+x = the way it faces).
    @inline(__always) func local(_ x: Int, _ y: Int) -> (Double, Double) {
        let px = Double(x) + 0.5 - centre.0, py = Double(y) + 0.5 - centre.1
        return (flipped ? -px : px, py)
    }

    /// Pixel bounds of a local-frame box, clipped to the image.
    func bounds(_ lx0: Double, _ ly0: Double, _ lx1: Double, _ ly1: Double) -> (Range<Int>, Range<Int>) {
        let xs = flipped ? [centre.0 - lx1, centre.0 - lx0] : [centre.0 + lx0, centre.0 + lx1]
        let x0 = max(0, Int(xs[0].rounded(.down)) - 1), x1 = min(size, Int(xs[1].rounded(.up)) + 1)
        let y0 = max(0, Int((centre.1 + ly0).rounded(.down)) - 1), y1 = min(size, Int((centre.1 + ly1).rounded(.up)) + 1)
        return (x0..<max(x0, x1), y0..<max(y0, y1))
    }

    mutating func put(_ x: Int, _ y: Int, _ c: RGB, _ part: Part) {
        let i = y * size + x
        mask[i] = UInt8(part.rawValue)
        rgb[3 * i] = clampByte(c.0)
        rgb[3 * i + 1] = clampByte(c.1)
        rgb[3 * i + 2] = clampByte(c.2)
    }

    mutating func ellipse(centre c: (Double, Double), radii: (Double, Double), angle: Double, part: Part, colour: (Double, Double) -> RGB) {
        let reach = max(radii.0, radii.1)
        let (xs, ys) = bounds(c.0 - reach, c.1 - reach, c.0 + reach, c.1 + reach)
        let (ca, sa) = (cos(angle), sin(angle))
        for y in ys {
            for x in xs {
                let (lx, ly) = local(x, y)
                let dx = lx - c.0, dy = ly - c.1
                let u = (dx * ca + dy * sa) / radii.0, v = (-dx * sa + dy * ca) / radii.1
                if u * u + v * v <= 1 { put(x, y, colour(lx, ly), part) }
            }
        }
    }

    mutating func triangle(_ a: (Double, Double), _ b: (Double, Double), _ c: (Double, Double), part: Part, colour: (Double, Double) -> RGB) {
        let (xs, ys) = bounds(min(a.0, b.0, c.0), min(a.1, b.1, c.1), max(a.0, b.0, c.0), max(a.1, b.1, c.1))
        func edge(_ p: (Double, Double), _ q: (Double, Double), _ x: Double, _ y: Double) -> Double { (q.0 - p.0) * (y - p.1) - (q.1 - p.1) * (x - p.0) }
        for y in ys {
            for x in xs {
                let (lx, ly) = local(x, y)
                let e0 = edge(a, b, lx, ly), e1 = edge(b, c, lx, ly), e2 = edge(c, a, lx, ly)
                if (e0 >= 0 && e1 >= 0 && e2 >= 0) || (e0 <= 0 && e1 <= 0 && e2 <= 0) { put(x, y, colour(lx, ly), part) }
            }
        }
    }
}

/// Whether a point (in pattern units) falls in a spot of a regular grid.
func inSpot(_ x: Double, _ y: Double) -> Bool {
    let fx = x + 100 - (x + 100).rounded(.down) - 0.5, fy = y + 100 - (y + 100).rounded(.down) - 0.5
    return fx * fx + fy * fy < 0.09
}

@inline(__always) func clampByte(_ v: Double) -> UInt8 { UInt8(max(0, min(255, v.rounded()))) }
