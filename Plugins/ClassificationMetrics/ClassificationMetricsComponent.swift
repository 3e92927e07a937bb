import Foundation
import Imaging
import MenagerieKit
import Tensors

/// The `classification-metrics` component: top-k accuracy, confusion matrix, per-class recall, ECE.
struct ClassificationMetricsComponent: Metric {
    struct Options: ComponentOptions {
        var topK: [Int] = [1, 5]
        var bins = 15
        var scores = "logits"
        static let help = [
            "topK": "the k values of top-k accuracy (k larger than the class count counts every sample)",
            "bins": "equal-width confidence bins of the expected calibration error",
            "scores": "whether the 'scores' rows are logits (softmax applied) or probabilities",
        ]
        static let choices = ["scores": ["logits", "probabilities"]]
        static let ranges: [String: ClosedRange<Double>] = ["topK": 1...1e9, "bins": 1...Double(maxBins)]
    }

    static let id = "classification-metrics"
    public static let summary = "Top-k accuracy, confusion matrix, per-class recall and expected calibration error"
    static let inTour = true
    static let operations = [
        OperationSpec(
            "evaluate", summary: "score class predictions against integer labels",
            inputs: [
                TensorSpec("scores", dtypes: ["f32", "f64"], shape: "N×C", summary: "logits or probabilities per class"),
                TensorSpec("labels", dtypes: ["i32", "i64", "u8"], shape: "N", summary: "true class index per sample"),
            ],
            outputs: [TensorSpec("confusion", dtypes: ["i64"], shape: "C×C", summary: "rows: true class, columns: predicted class")])
    ]

    func evaluate(_ request: Request<Options>) throws -> Response {
        let scores = try request.inputs.require("scores", dtypes: [.float32, .float64], rank: 2)
        let labels = try request.inputs.require("labels", dtypes: [.int32, .int64, .uint8], rank: 1)
        let o = request.options
        guard o.topK.allSatisfy({ $0 > 0 }) else {
            throw MenagerieError.invalidArgument("option 'topK' of '\(Self.id)' must hold positive integers, got \(o.topK)")
        }
        guard o.bins > 0 else { throw MenagerieError.invalidArgument("option 'bins' of '\(Self.id)' must be positive, got \(o.bins)") }
        let report: ClassificationReport
        do {
            report = try classificationReport(
                scores: try scores.doubles(), samples: scores.shape[0], classes: scores.shape[1],
                labels: try labels.integers(), topK: o.topK, bins: o.bins,
                probabilities: o.scores == "probabilities")
        } catch let e as ClassificationMetricsError {
            throw MenagerieError.invalidArgument("\(e)") // the host names the component and operation
        }
        let c = report.classes
        let confusion = try Tensor(report.confusion.flatMap { $0.map(Int64.init) }, shape: [c, c])
        return try Response(encoding: report, tensors: [("confusion", confusion)])
    }

    /// Scores a simulated over-confident 10-class classifier and draws its reliability diagram.
    func tour(_ request: Request<Options>) throws -> Response {
        let n = 2000, c = 10
        var rng = SeededGenerator(seed: request.host.seed)
        var scores = [Double](repeating: 0, count: n * c)
        var labels = [Int](repeating: 0, count: n)
        for i in 0..<n {
            let y = i % c
            labels[i] = y
            // The true class gets a signal; a confusable neighbour class gets half of it.
            for j in 0..<c { scores[i * c + j] = 1.6 * rng.nextNormal() }
            scores[i * c + y] += 2.5
            scores[i * c + (y + 1) % c] += 1.2
            // Scale up: an over-confident network (ECE > 0).
            for j in 0..<c { scores[i * c + j] *= 2.0 }
        }
        let report = try classificationReport(
            scores: scores, samples: n, classes: c, labels: labels,
            topK: request.options.topK, bins: request.options.bins, probabilities: false)
        let dir = request.host.scratchDirectory
        var csv = "true\\predicted," + (0..<c).map(String.init).joined(separator: ",") + "\n"
        for (k, row) in report.confusion.enumerated() { csv += "\(k)," + row.map(String.init).joined(separator: ",") + "\n" }
        try csv.write(toFile: dir + "/confusion.csv", atomically: true, encoding: .utf8)
        var rel = "bin_lower,bin_upper,count,accuracy,confidence\n"
        for b in report.reliability {
            rel += "\(b.lower),\(b.upper),\(b.count),\(b.accuracy.map { String($0) } ?? ""),\(b.confidence.map { String($0) } ?? "")\n"
        }
        try rel.write(toFile: dir + "/reliability.csv", atomically: true, encoding: .utf8)
        try reliabilityDiagram(report).write(to: dir + "/reliability.png")
        return try Response(encoding: report, artifacts: ["confusion.csv", "reliability.csv"] + Figure.files("reliability.png"))
    }

    /// Accuracy per confidence bin (bars) and the bin's mean confidence (markers) against the
    /// diagonal of perfect calibration.
    func reliabilityDiagram(_ report: ClassificationReport) -> Figure {
        var f = Figure(width: 480, height: 480)
        f.title(String(format: "Reliability diagram (ECE %.3f)", report.ece))
        let axes = f.axes(
            in: Rect(x: 0, y: 30, width: 480, height: 450), title: nil, xLabel: "confidence", yLabel: "accuracy",
            x: 0...1, y: 0...1, series: 3)
        for bin in report.reliability {
            guard let acc = bin.accuracy else { continue }
            let x0 = axes.px(bin.lower), x1 = axes.px(bin.upper)
            f.rect(Rect(x: x0 + 1, y: axes.py(acc), width: max(x1 - x0 - 2, 0.5), height: axes.py(0) - axes.py(acc)), fill: LinePlot.color(0))
        }
        let confidence = report.reliability.compactMap { b in b.confidence.flatMap { c in b.accuracy.map { (c, $0) } } }
        for (c, a) in confidence { f.circle(axes.point(c, a), radius: 3.5, fill: LinePlot.color(3)) }
        f.line([axes.point(0, 0), axes.point(1, 1)], Color(120, 120, 120), width: 1.2, dash: [5, 4])
        f.legend(
            [
                ("accuracy per bin", .box(LinePlot.color(0))), ("(mean confidence, accuracy)", .marker(LinePlot.color(3))),
                ("perfect calibration", .line(Color(120, 120, 120), dashed: true)),
            ], in: axes,
            avoid: confidence.map { axes.point($0.0, $0.1) } + [axes.point(0.1, 0.1), axes.point(0.9, 0.9)])
        f.endAxes()
        return f
    }
}

/// The plugin: one component.
/// The plugin: its identity and components (the entry symbol is in `Entry/`, so that tests can link
/// this module beside other plugins).
public enum ClassificationMetricsPlugin: Plugin {
    public static let name = "classification-metrics"
    public static let version = "1.0.0"
    public static let summary = "Classification metrics for every method that predicts classes"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [ClassificationMetricsComponent.self]
}
