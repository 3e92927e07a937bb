import Foundation

/// One panel's coordinate system: a data range on each axis mapped onto `frame` (figure units).
/// `Figure.axes(…)` draws the frame, grid, ticks, tick labels, axis labels and panel title and
/// returns it; marks are then placed with `point(x, y)`.
public struct Axes: Sendable {
    public let frame: Rect
    public let x: ClosedRange<Double>
    public let y: ClosedRange<Double>

    public func px(_ v: Double) -> Double { frame.x + (v - x.lowerBound) / (x.upperBound - x.lowerBound) * frame.width }
    public func py(_ v: Double) -> Double { frame.maxY - (v - y.lowerBound) / (y.upperBound - y.lowerBound) * frame.height }
    public func point(_ vx: Double, _ vy: Double) -> Point { Point(px(vx), py(vy)) }

    /// A data range padded by `margin` of its span (a single value gets ±0.5; nothing finite, 0…1).
    public static func range(_ values: [Double], margin: Double = 0.05, including: [Double] = []) -> ClosedRange<Double> {
        let v = (values + including).filter(\.isFinite)
        guard let lo = v.min(), let hi = v.max() else { return 0...1 }
        if lo == hi { return (lo - 0.5)...(hi + 0.5) }
        let pad = (hi - lo) * margin
        return (including.contains(lo) ? lo : lo - pad)...(including.contains(hi) ? hi : hi + pad)
    }

    /// Ticks at 1, 2 or 5 × 10^k inside `range`, about `target` of them (Heckbert's nice numbers).
    public static func ticks(_ range: ClosedRange<Double>, target: Int = 5) -> [Double] {
        let span = range.upperBound - range.lowerBound
        guard span > 0, span.isFinite else { return [range.lowerBound] }
        let raw = span / Double(max(target, 1)), magnitude = pow(10, (log10(raw)).rounded(.down))
        // The 1-2-5 step nearest to the raw step (on a log scale).
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.min { abs(log($0 / raw)) < abs(log($1 / raw)) }!
        var out: [Double] = []
        var k = (range.lowerBound / step - 1e-9).rounded(.up)
        while k * step <= range.upperBound + step * 1e-9, out.count < 50 {
            let v = k * step
            out.append(abs(v) < step * 1e-9 ? 0 : v)
            k += 1
        }
        // A short range between two nice numbers: ask for finer ticks rather than show one.
        if out.count < 3, target < 40 { return ticks(range, target: target * 2) }
        return out
    }

    /// Tick labels with as many decimals as the step needs, scientific beyond 10^5 or below 10^-3.
    public static func labels(_ ticks: [Double]) -> [String] {
        guard ticks.count > 1 else { return ticks.map { String(format: "%g", $0) } }
        let step = abs(ticks[1] - ticks[0]), big = ticks.map(abs).max() ?? 0
        if big >= 1e5 || (step < 1e-3 && step > 0) { return ticks.map { String(format: "%.1e", $0) } }
        let decimals = max(0, Int((-log10(step)).rounded(.up)))
        return ticks.map { String(format: "%.\(decimals)f", $0) }
    }
}

extension Figure {
    /// Draws a panel in `box` — title, axis labels, ticks (nice numbers, or `xTicks`/`yTicks` as
    /// (value, label)), light grid and frame — and returns its axes. Series count goes in the group's
    /// `data-series` so the legend check knows when one is required.
    public mutating func axes(
        in box: Rect, title: String?, xLabel: String, yLabel: String,
        x: ClosedRange<Double>, y: ClosedRange<Double>,
        xTicks: [(Double, String)]? = nil, yTicks: [(Double, String)]? = nil,
        grid: Bool = true, series: Int = 1
    ) -> Axes {
        let tickSize = 11.0, labelSize = 12.5
        let yt = yTicks ?? zip(Axes.ticks(y), Axes.labels(Axes.ticks(y))).map { ($0, $1) }
        let xt = xTicks ?? zip(Axes.ticks(x), Axes.labels(Axes.ticks(x))).map { ($0, $1) }
        let yTickWidth = yt.map { Figure.textWidth($0.1, size: tickSize) }.max() ?? 0
        let top = (title == nil ? 8.0 : 30.0), left = 8 + labelSize + 8 + yTickWidth + 6, bottom = 8 + labelSize + 8 + tickSize + 8
        // The last x tick label is centred on the frame's right edge: leave room for its half.
        let right = max(12, (xt.last.map { Figure.textWidth($0.1, size: tickSize) } ?? 0) / 2 + 4)
        let frame = box.inset(left: left, top: top, right: right, bottom: bottom)
        let axes = Axes(frame: frame, x: x, y: y)
        marks.append(.begin(role: "axes", attributes: ["data-series": String(series)]))
        if let title { text(title, at: Point(frame.x + frame.width / 2, box.y + 20), size: 13, bold: true, anchor: .middle, role: "panel-title") }
        for (v, label) in yt where y.contains(v) {
            let p = axes.py(v)
            if grid { line([Point(frame.x, p), Point(frame.maxX, p)], .grid, width: 0.8) }
            line([Point(frame.x - 4, p), Point(frame.x, p)], .axis, width: 1)
            text(label, at: Point(frame.x - 6, p + tickSize * 0.36), size: tickSize, color: .axis, anchor: .end, role: "ytick")
        }
        for (v, label) in xt where x.contains(v) {
            let p = axes.px(v)
            if grid { line([Point(p, frame.y), Point(p, frame.maxY)], .grid, width: 0.8) }
            line([Point(p, frame.maxY), Point(p, frame.maxY + 4)], .axis, width: 1)
            text(label, at: Point(p, frame.maxY + 6 + tickSize), size: tickSize, color: .axis, anchor: .middle, role: "xtick")
        }
        rect(frame, fill: nil, stroke: .axis, strokeWidth: 1)
        text(xLabel, at: Point(frame.x + frame.width / 2, box.maxY - 8), size: labelSize, anchor: .middle, role: "xlabel")
        text(yLabel, at: Point(box.x + 8 + labelSize, frame.y + frame.height / 2), size: labelSize, anchor: .middle, vertical: true, role: "ylabel")
        return axes
    }

    /// Closes the group `axes(…)` opened (call after the panel's marks and legend).
    public mutating func endAxes() { marks.append(.end) }

    /// A legend box inside `axes`, in the corner covering the fewest of `avoid` points (matplotlib's
    /// "best"). Entries: a swatch (`line`, `marker` or `box`) and a name.
    public enum Swatch: Sendable { case line(Color, dashed: Bool), marker(Color), box(Color) }
    public mutating func legend(_ entries: [(String, Swatch)], in axes: Axes, avoid: [Point] = []) {
        guard !entries.isEmpty else { return }
        let size = 11.0, row = 16.0
        let w = 30 + (entries.map { Figure.textWidth($0.0, size: size) }.max() ?? 0) + 8, h = Double(entries.count) * row + 8
        let f = axes.frame
        let corners = [Point(f.maxX - w - 6, f.y + 6), Point(f.x + 6, f.y + 6), Point(f.maxX - w - 6, f.maxY - h - 6), Point(f.x + 6, f.maxY - h - 6)]
        let best = corners.min { a, b in
            func covered(_ c: Point) -> Int { avoid.filter { $0.x >= c.x - 4 && $0.x <= c.x + w + 4 && $0.y >= c.y - 4 && $0.y <= c.y + h + 4 }.count }
            return covered(a) < covered(b)
        }!
        legend(entries, at: best, columns: 1, frame: true)
    }

    /// A legend with its top-left at `at`, entries in `columns` columns (row by row).
    public mutating func legend(_ entries: [(String, Swatch)], at: Point, columns: Int, frame: Bool = false) {
        let size = 11.0, row = 16.0, cols = max(columns, 1)
        let colWidth = 30 + (entries.map { Figure.textWidth($0.0, size: size) }.max() ?? 0) + 12
        let rows = (entries.count + cols - 1) / cols
        group("legend") { fig in
            if frame {
                fig.rect(
                    Rect(x: at.x, y: at.y, width: Double(cols) * colWidth - 4, height: Double(rows) * row + 8), fill: .white,
                    stroke: Color(200, 200, 200), strokeWidth: 0.8)
            }
            for (i, (name, swatch)) in entries.enumerated() {
                let x = at.x + Double(i % cols) * colWidth, cy = at.y + 4 + row * (Double(i / cols) + 0.5)
                switch swatch {
                case let .line(c, dashed): fig.line([Point(x + 6, cy), Point(x + 24, cy)], c, width: 2, dash: dashed ? [4, 3] : nil)
                case let .marker(c): fig.circle(Point(x + 15, cy), radius: 3.5, fill: c)
                case let .box(c): fig.rect(Rect(x: x + 8, y: cy - 5, width: 14, height: 10), fill: c)
                }
                fig.text(name, at: Point(x + 30, cy + size * 0.36), size: size, role: "legend")
            }
        }
    }

    /// A vertical colour bar in `box` mapping `range` through `colormap`, with ticks and a label.
    public mutating func colorBar(in box: Rect, range: ClosedRange<Double>, label: String, colormap: (Double) -> Color) {
        let bar = Rect(x: box.x, y: box.y, width: 14, height: box.height)
        group("colorbar") { fig in
            let steps = 64
            for k in 0..<steps {
                let t = (Double(k) + 0.5) / Double(steps)
                fig.rect(
                    Rect(x: bar.x, y: bar.maxY - Double(k + 1) * bar.height / Double(steps), width: bar.width, height: bar.height / Double(steps) + 0.3),
                    fill: colormap(t))
            }
            fig.rect(bar, fill: nil, stroke: .axis, strokeWidth: 0.8)
            let ticks = Axes.ticks(range, target: 4)
            for (v, s) in zip(ticks, Axes.labels(ticks)) {
                let y = bar.maxY - (v - range.lowerBound) / max(range.upperBound - range.lowerBound, 1e-300) * bar.height
                fig.line([Point(bar.maxX, y), Point(bar.maxX + 3, y)], .axis)
                fig.text(s, at: Point(bar.maxX + 5, y + 4), size: 10, color: .axis, role: "colorbar-tick")
            }
            fig.text(label, at: Point(box.maxX - 2, bar.y + bar.height / 2), size: 11.5, anchor: .middle, vertical: true, role: "colorbar-label")
        }
    }
}
