import Foundation

/// A line chart: one polyline (with markers) per series, nice-number axes, a legend when there are
/// several series. `write(to:)` gives the PNG (2×) and the SVG.
public struct LinePlot: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: Color
        public var dashed: Bool
        public var markers: Bool
        public init(_ name: String, points: [(x: Double, y: Double)], color: Color, dashed: Bool = false, markers: Bool = true) {
            self.name = name
            self.points = points
            self.color = color
            self.dashed = dashed
            self.markers = markers
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// Axis ranges; nil: from the data with a 5 % margin.
    public var xRange: ClosedRange<Double>?
    public var yRange: ClosedRange<Double>?
    /// Explicit x ticks (value, label), e.g. the data sizes of a scale study.
    public var xTicks: [(Double, String)]?
    public var width = 640.0
    public var height = 420.0

    public init(
        title: String, xLabel: String, yLabel: String, series: [Series],
        xRange: ClosedRange<Double>? = nil, yRange: ClosedRange<Double>? = nil
    ) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.xRange = xRange
        self.yRange = yRange
    }

    /// Three or more series get their legend under the axes (it would hide data inside them).
    var legendBelow: Bool { series.count >= 3 }
    var legendRows: Int { legendBelow ? (series.count + 1) / 2 : 0 }

    public func figure() -> Figure {
        var f = Figure(width: width, height: height + Double(legendRows) * 16)
        f.title(title)
        draw(into: &f, box: Rect(x: 0, y: 30, width: width, height: f.height - 30), panelTitle: nil)
        return f
    }

    /// Draws the chart as one panel of a larger figure.
    public func draw(into f: inout Figure, box: Rect, panelTitle: String?) {
        // Non-finite points (a diverged loss) are not drawn; lines break around them.
        let finite = series.flatMap { $0.points.filter { $0.x.isFinite && $0.y.isFinite } }
        let legendHeight = legendBelow ? Double(legendRows) * 16 + 10 : 0
        let axes = f.axes(
            in: box.inset(bottom: legendHeight), title: panelTitle, xLabel: xLabel, yLabel: yLabel,
            x: xRange ?? Axes.range(finite.map(\.x), margin: 0.03), y: yRange ?? Axes.range(finite.map(\.y)),
            xTicks: xTicks, series: series.count)
        var drawn: [Point] = []
        // Earlier series are drawn wider, so a later one lying exactly on top leaves the earlier
        // one visible as a border around it.
        let n = series.count
        for (i, s) in series.enumerated() {
            let width = n > 1 ? 1.8 + 1.5 * Double(n - 1 - i) / Double(n - 1) : 2, radius = width / 2 + 2
            var run: [Point] = []
            for p in s.points {
                if p.x.isFinite && p.y.isFinite {
                    run.append(axes.point(p.x, p.y))
                } else {
                    f.line(run, s.color, width: width, dash: s.dashed ? [6, 4] : nil)
                    run = []
                }
            }
            f.line(run, s.color, width: width, dash: s.dashed ? [6, 4] : nil)
            let pts = s.points.filter { $0.x.isFinite && $0.y.isFinite }.map { axes.point($0.x, $0.y) }
            if s.markers && pts.count <= 60 { for p in pts { f.circle(p, radius: radius, fill: s.color) } }
            drawn += pts
        }
        let entries: [(String, Figure.Swatch)] = series.map { ($0.name, .line($0.color, dashed: $0.dashed)) }
        if legendBelow {
            f.legend(entries, at: Point(axes.frame.x, box.maxY - legendHeight + 4), columns: 2)
        } else if n > 1 {
            f.legend(entries, in: axes, avoid: drawn)
        }
        f.endAxes()
    }

    public func write(to path: String) throws { try figure().write(to: path) }

    /// Series i's colour (matplotlib's tab10).
    public static func color(_ i: Int) -> Color { Color.series(i) }
}

/// A scatter plot: points in named groups (a legend), or coloured by a value (a colour bar), with
/// optional segments between pairs of points (e.g. from one mean to another).
public struct ScatterPlot: Sendable {
    public struct Group: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: Color
        public init(_ name: String, points: [(x: Double, y: Double)], color: Color) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var groups: [Group] = []
    /// Points coloured by `values` through viridis, explained by a colour bar labelled `valueLabel`.
    public var valued: (points: [(x: Double, y: Double)], values: [Double], valueLabel: String)?
    /// Segments drawn under the points, with their legend entry.
    public var segments: (name: String, pairs: [((Double, Double), (Double, Double))], color: Color)?
    public var width = 560.0
    public var height = 460.0

    public init(title: String, xLabel: String, yLabel: String) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    public func figure() -> Figure {
        var f = Figure(width: width, height: height)
        f.title(title)
        var all = groups.flatMap(\.points) + (valued?.points ?? [])
        all += (segments?.pairs ?? []).flatMap { [(x: $0.0.0, y: $0.0.1), (x: $0.1.0, y: $0.1.1)] }
        let right = valued == nil ? 0.0 : 70
        let axes = f.axes(
            in: Rect(x: 0, y: 30, width: width - right, height: height - 30), title: nil, xLabel: xLabel, yLabel: yLabel,
            x: Axes.range(all.map(\.x)), y: Axes.range(all.map(\.y)),
            series: groups.count + (segments == nil ? 0 : 1) + (valued == nil ? 0 : 1))
        var drawn: [Point] = []
        if let segments {
            for (a, b) in segments.pairs { f.line([axes.point(a.0, a.1), axes.point(b.0, b.1)], segments.color, width: 1.5) }
        }
        var range: ClosedRange<Double> = 0...1
        if let valued {
            let finite = valued.values.filter(\.isFinite)
            range = Axes.range(finite, margin: 0)
            for (p, v) in zip(valued.points, valued.values) where p.x.isFinite && p.y.isFinite {
                let q = axes.point(p.x, p.y)
                f.circle(q, radius: 4.5, fill: Color.viridis((v - range.lowerBound) / (range.upperBound - range.lowerBound)), stroke: Color(60, 60, 60))
                drawn.append(q)
            }
        }
        for g in groups {
            for p in g.points where p.x.isFinite && p.y.isFinite {
                let q = axes.point(p.x, p.y)
                f.circle(q, radius: 4, fill: g.color)
                drawn.append(q)
            }
        }
        var entries: [(String, Figure.Swatch)] = groups.map { ($0.name, .marker($0.color)) }
        if let segments { entries.append((segments.name, .line(segments.color, dashed: false))) }
        if entries.count > 1 || (entries.count == 1 && valued != nil) { f.legend(entries, in: axes, avoid: drawn) }
        f.endAxes()
        if let valued {
            f.colorBar(
                in: Rect(x: width - right + 8, y: axes.frame.y, width: right - 14, height: axes.frame.height), range: range,
                label: valued.valueLabel, colormap: Color.viridis)
        }
        return f
    }

    public func write(to path: String) throws { try figure().write(to: path) }
}

/// Bars: one group per category, one bar per series in each group, values printed above the bars,
/// an optional horizontal reference line (chance level).
public struct BarChart: Sendable {
    public var title: String
    public var yLabel: String
    public var xLabel: String
    public var categories: [String]
    /// (series name, one value per category).
    public var series: [(name: String, values: [Double])]
    public var yRange: ClosedRange<Double>?
    public var reference: (value: Double, label: String)?
    public var valueFormat = "%.3f"
    public var width = 560.0
    public var height = 400.0

    public init(title: String, xLabel: String, yLabel: String, categories: [String], series: [(name: String, values: [Double])]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.categories = categories
        self.series = series
    }

    public func figure() -> Figure {
        var f = Figure(width: width, height: height)
        f.title(title)
        let values = series.flatMap(\.values) + [reference?.value].compactMap { $0 }
        let y = yRange ?? Axes.range(values, margin: 0.12, including: [0])
        let n = Double(categories.count)
        let axes = f.axes(
            in: Rect(x: 0, y: 30, width: width, height: height - 30), title: nil, xLabel: xLabel, yLabel: yLabel,
            x: -0.5...(n - 0.5), y: y, xTicks: categories.enumerated().map { (Double($0.offset), $0.element) },
            series: series.count)
        let groupWidth = 0.75, barWidth = groupWidth / Double(max(series.count, 1))
        for (s, entry) in series.enumerated() {
            for (c, v) in entry.values.enumerated() where v.isFinite && c < categories.count {
                let x0 = Double(c) - groupWidth / 2 + Double(s) * barWidth
                let top = axes.py(max(v, 0)), base = axes.py(min(v, 0))
                f.rect(
                    Rect(x: axes.px(x0), y: top, width: axes.px(x0 + barWidth) - axes.px(x0) - 1, height: max(base - top, 0.5)),
                    fill: series.count == 1 ? Color.series(c) : Color.series(s))
                f.text(String(format: valueFormat, v), at: Point(axes.px(x0 + barWidth / 2), top - 4), size: 10, color: .axis, anchor: .middle, role: "value")
            }
        }
        var entries: [(String, Figure.Swatch)] = series.count > 1 ? series.enumerated().map { ($0.element.name, .box(Color.series($0.offset))) } : []
        if let reference {
            let p = axes.py(reference.value)
            f.line([Point(axes.frame.x, p), Point(axes.frame.maxX, p)], Color(120, 120, 120), width: 1.2, dash: [5, 4])
            entries.append((reference.label, .line(Color(120, 120, 120), dashed: true)))
        }
        // The legend avoids the bars' tops (and their value labels).
        let tops = series.flatMap { s in s.values.enumerated().filter { $0.element.isFinite }.map { axes.point(Double($0.offset), $0.element) } }
        if !entries.isEmpty { f.legend(entries, in: axes, avoid: tops + tops.map { Point($0.x, $0.y - 12) }) }
        f.endAxes()
        return f
    }

    public func write(to path: String) throws { try figure().write(to: path) }
}

extension LinePlot {
    /// A training run's curves: the loss per epoch, and beside it the metrics (accuracies) per epoch
    /// when there are any.
    public static func trainingCurves(
        title: String, epochs: [Double], loss: [Double], lossLabel: String = "training loss",
        metrics: [(name: String, values: [Double])] = [], metricLabel: String = "accuracy"
    ) -> Figure {
        let panels = metrics.isEmpty ? 1 : 2, panelWidth = 440.0
        var f = Figure(width: panelWidth * Double(panels), height: 360)
        f.title(title)
        var lossPlot = LinePlot(
            title: "", xLabel: "epoch", yLabel: lossLabel, series: [.init(lossLabel, points: zip(epochs, loss).map { ($0, $1) }, color: .series(0))])
        if epochs.count <= 12 { lossPlot.xTicks = epochs.map { ($0, String(format: "%g", $0)) } }
        lossPlot.draw(into: &f, box: Rect(x: 0, y: 30, width: panelWidth, height: 330), panelTitle: "loss")
        if !metrics.isEmpty {
            var m = LinePlot(
                title: "", xLabel: "epoch", yLabel: metricLabel,
                series: metrics.enumerated().map {
                    .init($0.element.name, points: zip(epochs, $0.element.values).map { ($0, $1) }, color: .series($0.offset + 1))
                })
            m.xTicks = lossPlot.xTicks
            m.draw(into: &f, box: Rect(x: panelWidth, y: 30, width: panelWidth, height: 330), panelTitle: metricLabel)
        }
        return f
    }
}
