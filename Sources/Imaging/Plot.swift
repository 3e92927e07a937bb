import Foundation

/// A line chart on a `Canvas`: axes with tick labels, one polyline (with point markers) per series
/// and a legend. Enough for curves a method reports (AR vs AN, accuracy vs a parameter).
public struct LinePlot: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: (UInt8, UInt8, UInt8)
        public init(_ name: String, points: [(x: Double, y: Double)], color: (UInt8, UInt8, UInt8)) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// Axis ranges; nil: from the data.
    public var xRange: ClosedRange<Double>?
    public var yRange: ClosedRange<Double>?
    public var width = 640
    public var height = 420

    public init(title: String, xLabel: String, yLabel: String, series: [Series],
                xRange: ClosedRange<Double>? = nil, yRange: ClosedRange<Double>? = nil) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.xRange = xRange
        self.yRange = yRange
    }

    /// A palette of distinguishable colours, for series i.
    public static func color(_ i: Int) -> (UInt8, UInt8, UInt8) {
        let p: [(UInt8, UInt8, UInt8)] = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
                                          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
        return p[i % p.count]
    }

    public func render() -> Image {
        var c = Canvas(width: width, height: height)
        let left = 70, right = width - 20, top = 48, bottom = height - 60
        // Non-finite points (a diverged loss) are not drawn; lines break around them.
        let finite = series.flatMap { $0.points.filter { $0.x.isFinite && $0.y.isFinite } }
        let xs = finite.map(\.x), ys = finite.map(\.y)
        func range(_ given: ClosedRange<Double>?, _ v: [Double]) -> (Double, Double) {
            if let given { return (given.lowerBound, given.upperBound) }
            guard let lo = v.min(), let hi = v.max() else { return (0, 1) }
            return lo == hi ? (lo - 0.5, hi + 0.5) : (lo, hi)
        }
        let (x0, x1) = range(xRange, xs), (y0, y1) = range(yRange, ys)
        func px(_ x: Double) -> Int { left + Int((x - x0) / (x1 - x0) * Double(right - left)) }
        func py(_ y: Double) -> Int { bottom - Int((y - y0) / (y1 - y0) * Double(bottom - top)) }
        let axis: (UInt8, UInt8, UInt8) = (60, 60, 60), grid: (UInt8, UInt8, UInt8) = (225, 225, 225)
        for k in 0...4 {
            let fy = y0 + Double(k) / 4 * (y1 - y0), fx = x0 + Double(k) / 4 * (x1 - x0)
            c.line(left, py(fy), right, py(fy), grid)
            c.line(px(fx), top, px(fx), bottom, grid)
            c.text(Self.tick(fy), x: 4, y: py(fy) - 3, axis)
            let label = Self.tick(fx)
            c.text(label, x: px(fx) - label.count * 3, y: bottom + 8, axis)
        }
        c.line(left, bottom, right, bottom, axis)
        c.line(left, top, left, bottom, axis)
        c.text(title, x: left, y: 8, scale: 2, (20, 20, 20))
        c.text(xLabel, x: (left + right) / 2 - xLabel.count * 3, y: bottom + 24, axis)
        c.text(yLabel, x: 4, y: top - 12, axis)
        for s in series {
            let pts = s.points.map { $0.x.isFinite && $0.y.isFinite ? (px($0.x), py($0.y)) : nil }
            for k in pts.indices.dropFirst() {
                if let a = pts[k - 1], let b = pts[k] { c.line(a.0, a.1, b.0, b.1, s.color, thickness: 2) }
            }
            for case let p? in pts { c.fill(x0: p.0 - 2, y0: p.1 - 2, x1: p.0 + 3, y1: p.1 + 3, s.color) }
        }
        for (i, s) in series.enumerated() {
            let y = bottom + 38 + (i / 3) * 10, x = left + (i % 3) * ((right - left) / 3)
            c.fill(x0: x, y0: y, x1: x + 14, y1: y + 7, s.color)
            c.text(s.name, x: x + 18, y: y, axis)
        }
        return c.image
    }

    static func tick(_ v: Double) -> String {
        let a = abs(v)
        if a >= 1000 || (a > 0 && a < 0.01) { return String(format: "%.1e", v) }
        if a >= 100 { return String(format: "%.0f", v) }
        if a >= 10 { return String(format: "%.1f", v) }
        return String(format: "%.2f", v)
    }
}
