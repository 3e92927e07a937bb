import Foundation
import Imaging

/// A PNG per video: the ground truth on top, detections below (one row each, best first, the bar's
/// shade following the score), both coloured by class, on a time axis in seconds.
enum Timeline {
    static func render(video: String, duration: Double, groundTruth: [ActivityNet.Annotation], detections: [ActivityNet.Detection],
                       classes: [String], rows: Int = 8) -> Image {
        let width = 760, left = 150, right = width - 20, rowHeight = 14
        let shown = Array(detections.sorted { $0.score > $1.score }.prefix(rows))
        let height = 70 + (1 + shown.count) * (rowHeight + 4) + 16 * min(classes.count, 8)
        var c = Canvas(width: width, height: height)
        let span = max(duration, groundTruth.map(\.end).max() ?? 0, shown.map(\.end).max() ?? 0, 1e-6)
        func x(_ t: Double) -> Int { left + Int(t / span * Double(right - left)) }
        func color(_ label: String) -> (UInt8, UInt8, UInt8) { LinePlot.color(classes.firstIndex(of: label) ?? classes.count) }
        c.text(video, x: 8, y: 8, scale: 2, (20, 20, 20))
        var y = 36
        c.text("GROUND TRUTH", x: 8, y: y + 3)
        c.fill(x0: left, y0: y + rowHeight / 2, x1: right, y1: y + rowHeight / 2 + 1, (200, 200, 200))
        for a in groundTruth { c.fill(x0: x(a.start), y0: y, x1: max(x(a.end), x(a.start) + 1), y1: y + rowHeight, color(a.label)) }
        y += rowHeight + 8
        for d in shown {
            c.text(String(format: "%.3f", d.score), x: 8, y: y + 3, (90, 90, 90))
            c.fill(x0: left, y0: y + rowHeight / 2, x1: right, y1: y + rowHeight / 2 + 1, (230, 230, 230))
            let base = color(d.label), s = min(max(d.score, 0.15), 1)
            let shade = (UInt8(255 - Double(255 - Int(base.0)) * s), UInt8(255 - Double(255 - Int(base.1)) * s), UInt8(255 - Double(255 - Int(base.2)) * s))
            c.fill(x0: x(d.start), y0: y, x1: max(x(d.end), x(d.start) + 1), y1: y + rowHeight, shade)
            y += rowHeight + 4
        }
        // Time axis.
        c.line(left, y + 2, right, y + 2, (60, 60, 60))
        for k in 0...4 {
            let t = span * Double(k) / 4
            c.line(x(t), y, x(t), y + 5, (60, 60, 60))
            c.text(String(format: "%.0fS", t), x: x(t) - 8, y: y + 8, (60, 60, 60))
        }
        y += 24
        for (i, name) in classes.prefix(8).enumerated() {
            c.fill(x0: 8 + (i % 2) * 370, y0: y + (i / 2) * 14, x1: 22 + (i % 2) * 370, y1: y + (i / 2) * 14 + 8, color(name))
            c.text(name, x: 28 + (i % 2) * 370, y: y + (i / 2) * 14)
        }
        return c.image
    }
}
