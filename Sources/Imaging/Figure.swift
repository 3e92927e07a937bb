import Formats
import Foundation

/// An sRGB colour.
public struct Color: Sendable, Equatable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { (self.r, self.g, self.b) = (r, g, b) }
    public init(_ t: (UInt8, UInt8, UInt8)) { (r, g, b) = t }
    public var tuple: (UInt8, UInt8, UInt8) { (r, g, b) }
    public var hex: String { String(format: "#%02x%02x%02x", r, g, b) }

    public static let black = Color(0, 0, 0), white = Color(255, 255, 255)
    public static let ink = Color(34, 34, 34), axis = Color(68, 68, 68), grid = Color(230, 230, 230), muted = Color(110, 110, 110)

    /// matplotlib's `tab10` palette, for series i.
    public static func series(_ i: Int) -> Color {
        let p: [(UInt8, UInt8, UInt8)] = [
            (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        ]
        return Color(p[((i % p.count) + p.count) % p.count])
    }

    /// viridis (perceptually uniform, readable in grey) at t in [0, 1]: the degree-6 polynomial fit
    /// of matplotlib's table (within 5/255 per channel).
    public static func viridis(_ t: Double) -> Color {
        let t = t.isFinite ? min(max(t, 0), 1) : 0
        let c: [(Double, Double, Double)] = [
            (0.2777273272234177, 0.005407344544966578, 0.3340998053353061),
            (0.1050930431085774, 1.404613529898575, 1.384590162594685),
            (-0.3308618287255563, 0.214847559468213, 0.09509516302823659),
            (-4.634230498983486, -5.799100973351585, -19.33244095627987),
            (6.228269936347081, 14.17993336680509, 56.69055260068105),
            (4.776384997670288, -13.74514537774601, -65.35303263337234),
            (-5.435455855934631, 4.645852612178535, 26.3124352495832),
        ]
        var r = 0.0, g = 0.0, b = 0.0
        for k in c.indices.reversed() { (r, g, b) = (c[k].0 + t * r, c[k].1 + t * g, c[k].2 + t * b) }
        func byte(_ v: Double) -> UInt8 { UInt8((min(max(v, 0), 1) * 255).rounded()) }
        return Color(byte(r), byte(g), byte(b))
    }

    /// JET (the CAM overlays' map) at t in [0, 1].
    public static func jet(_ t: Double) -> Color { Color(Overlay.jet(Float(t.isFinite ? t : 0))) }

    /// A lighter shade: `amount` 0 = self, 1 = white.
    public func tinted(_ amount: Double) -> Color {
        func mix(_ v: UInt8) -> UInt8 { UInt8((Double(v) + (255 - Double(v)) * min(max(amount, 0), 1)).rounded()) }
        return Color(mix(r), mix(g), mix(b))
    }
}

public struct Point: Sendable, Equatable {
    public var x: Double, y: Double
    public init(_ x: Double, _ y: Double) { (self.x, self.y) = (x, y) }
}

public struct Rect: Sendable, Equatable {
    public var x: Double, y: Double, width: Double, height: Double
    public init(x: Double, y: Double, width: Double, height: Double) { (self.x, self.y, self.width, self.height) = (x, y, width, height) }
    public var maxX: Double { x + width }
    public var maxY: Double { y + height }
    public func inset(left: Double = 0, top: Double = 0, right: Double = 0, bottom: Double = 0) -> Rect {
        Rect(x: x + left, y: y + top, width: max(width - left - right, 1), height: max(height - top - bottom, 1))
    }
}

/// A figure as vector marks, written twice: SVG (text stays text, DejaVu Sans) and a PNG rasterized
/// at 2× with anti-aliasing and FreeType glyphs. Coordinates are CSS pixels, origin top-left.
/// Texts carry a role (`title`, `xlabel`, `ylabel`, `legend`, `header`, …) kept as the SVG class,
/// so a test can check that every figure has its title, axis labels and legend.
public struct Figure: Sendable {
    public enum Kind: String, Sendable { case chart, grid, diagram }
    public enum Anchor: String, Sendable { case start, middle, end }

    enum Mark: Sendable {
        case polyline([Point], Color, width: Double, dash: [Double]?)
        case polygon([Point], Color, opacity: Double)
        case rect(Rect, fill: Color?, stroke: Color?, strokeWidth: Double)
        case circle(Point, radius: Double, fill: Color, stroke: Color?)
        case text(String, Point, size: Double, bold: Bool, Color, Anchor, vertical: Bool, role: String?)
        case image(Image, Rect, smooth: Bool)
        case begin(role: String, attributes: [String: String])
        case end
    }

    public let width: Double
    public let height: Double
    public var kind: Kind
    var marks: [Mark] = []

    public init(width: Double, height: Double, kind: Kind = .chart) {
        self.width = width
        self.height = height
        self.kind = kind
    }

    // MARK: marks

    public mutating func line(_ points: [Point], _ color: Color, width: Double = 1, dash: [Double]? = nil) {
        guard points.count >= 2 else { return }
        marks.append(.polyline(points, color, width: width, dash: dash))
    }

    public mutating func polygon(_ points: [Point], _ color: Color, opacity: Double = 1) {
        guard points.count >= 3 else { return }
        marks.append(.polygon(points, color, opacity: opacity))
    }

    public mutating func rect(_ r: Rect, fill: Color?, stroke: Color? = nil, strokeWidth: Double = 1) {
        marks.append(.rect(r, fill: fill, stroke: stroke, strokeWidth: strokeWidth))
    }

    public mutating func circle(_ center: Point, radius: Double, fill: Color, stroke: Color? = nil) {
        marks.append(.circle(center, radius: radius, fill: fill, stroke: stroke))
    }

    /// Text with its alphabetic baseline at `at.y`; `vertical` reads bottom to top (rotated −90°
    /// about `at`). `role` names what it is (`title`, `xlabel`, `ylabel`, `legend`, `header`, …).
    public mutating func text(
        _ s: String, at: Point, size: Double = 12, bold: Bool = false, color: Color = .ink,
        anchor: Anchor = .start, vertical: Bool = false, role: String? = nil
    ) {
        guard !s.isEmpty else { return }
        marks.append(.text(s, at, size: size, bold: bold, color, anchor, vertical: vertical, role: role))
    }

    /// A raster placed in `rect` (nearest-neighbour unless `smooth`: pixel maps stay crisp).
    public mutating func image(_ image: Image, in rect: Rect, smooth: Bool = false) {
        marks.append(.image(image, rect, smooth: smooth))
    }

    /// Marks drawn in `body` form one group with `role` (an SVG `<g class=…>`), e.g. one axes.
    public mutating func group(_ role: String, attributes: [String: String] = [:], _ body: (inout Figure) -> Void) {
        marks.append(.begin(role: role, attributes: attributes))
        body(&self)
        marks.append(.end)
    }

    /// The width of `text` at `size` px in this figure's typeface.
    public static func textWidth(_ text: String, size: Double = 12, bold: Bool = false) -> Double {
        Typeface.width(text, size: size, bold: bold)
    }

    /// The figure's title, centred at the top, `size` px bold (smaller when it would not fit).
    public mutating func title(_ s: String, size: Double = 15) {
        let natural = Figure.textWidth(s, size: size, bold: true), fitted = natural > width - 16 ? max(size * (width - 16) / natural, 9) : size
        text(s, at: Point(width / 2, 8 + size), size: fitted, bold: true, anchor: .middle, role: "title")
    }

    // MARK: files

    /// The files `write(to: png)` creates, as relative names for a response's artifacts.
    public static func files(_ png: String) -> [String] {
        [png, (png.hasSuffix(".png") ? String(png.dropLast(4)) : png) + ".svg"]
    }

    /// Writes `path` (a PNG at `scale`× the figure's size) and the SVG beside it (same name, .svg),
    /// each atomically. A figure's size follows its data (a grid's rows, a legend's entries), so it
    /// is checked first: beyond `Limits.maxImagePixels` at 1× it is refused with an error; when only
    /// the 2× PNG would be beyond it, the PNG is written at 1×.
    public func write(to path: String, scale: Int = 2) throws {
        guard width.isFinite, height.isFinite, width >= 1, height >= 1, width <= 1e6, height <= 1e6 else {
            throw FormatError(path: path, "a figure of \(width)×\(height) units cannot be drawn")
        }
        let w = Int(width.rounded(.up)), h = Int(height.rounded(.up)), limit = Limits.maxImagePixels
        guard w * h <= limit else {
            throw FormatError(
                path: path,
                "the figure would be \(w)×\(h) pixels, over the limit of \(limit): show fewer items "
                    + "(rows, images per row) or set MENAGERIE_MAX_PIXELS to raise it")
        }
        let s = w * h * scale * scale <= limit ? max(scale, 1) : 1
        _ = try Limits.allocation(count: w * h * s * s * 3, elementSize: MemoryLayout<Float>.size, what: "the figure's raster", source: path)
        try PNG.write(raster(scale: s), to: path)
        let svgPath = (path.hasSuffix(".png") ? String(path.dropLast(4)) : path) + ".svg"
        try Data(svg().utf8).write(to: URL(fileURLWithPath: svgPath), options: .atomic)
    }
}
