import Foundation
import Imaging

/// A figure per video: the ground truth on the top row, detections below (one row each, best first,
/// the bar's shade following the score), both coloured by class, on a time axis in seconds, with a
/// legend of the classes present.
enum Timeline {
    static func figure(
        video: String, duration: Double, groundTruth: [ActivityNet.Annotation], detections: [ActivityNet.Detection],
        classes: [String], rows: Int = 8
    ) -> Figure {
        let shown = Array(detections.sorted { $0.score > $1.score }.prefix(rows))
        let present = classes.filter { c in groundTruth.contains { $0.label == c } || shown.contains { $0.label == c } }
        let rowCount = 1 + shown.count, legendColumns = 3
        let legendHeight = Double((present.count + legendColumns - 1) / legendColumns) * 16 + 10
        let width = 760.0, height = 90 + Double(rowCount) * 22 + legendHeight
        var f = Figure(width: width, height: height)
        f.title("\(video): ground truth and top \(shown.count) detections")
        let span = max(duration, groundTruth.map(\.end).max() ?? 0, shown.map(\.end).max() ?? 0, 1e-6)
        func color(_ label: String) -> Color { LinePlot.color(classes.firstIndex(of: label) ?? classes.count) }
        let yTicks =
            [(Double(rowCount - 1), "ground truth")]
            + shown.enumerated().map { (Double(rowCount - 2 - $0.offset), String(format: "score %.3f", $0.element.score)) }
        let axes = f.axes(
            in: Rect(x: 0, y: 30, width: width, height: height - 30 - legendHeight), title: nil, xLabel: "time (s)", yLabel: "segment",
            x: 0...span, y: -0.5...(Double(rowCount) - 0.5), yTicks: yTicks, grid: false, series: present.count)
        func bar(_ start: Double, _ end: Double, row: Int, _ c: Color) {
            let x0 = axes.px(max(start, 0)), x1 = max(axes.px(min(end, span)), x0 + 1)
            let yc = axes.py(Double(rowCount - 1 - row))
            f.rect(Rect(x: x0, y: yc - 7, width: x1 - x0, height: 14), fill: c)
        }
        for a in groundTruth { bar(a.start, a.end, row: 0, color(a.label)) }
        for (k, d) in shown.enumerated() { bar(d.start, d.end, row: k + 1, color(d.label).tinted(1 - min(max(d.score, 0.15), 1))) }
        f.legend(present.map { ($0, .box(color($0))) }, at: Point(axes.frame.x, height - legendHeight + 2), columns: legendColumns)
        f.endAxes()
        return f
    }
}
