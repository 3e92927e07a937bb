import Formats
import Foundation
import Imaging
import MenagerieKit

/// `anet-detection`: the official ActivityNet-1.3 detection metric on two JSON files.
struct DetectionMetricComponent: Metric {
    struct Options: ComponentOptions {
        var ground_truth = ""
        var predictions = ""
        var subset = "validation"
        var tiou_thresholds: [Double] = []
        var unknown_labels = "error"
        static let help = [
            "ground_truth": "ActivityNet ground-truth JSON ({version, taxonomy, database})",
            "predictions": "ActivityNet predictions JSON ({version, results, external_data})",
            "subset": "the ground-truth subset evaluated (the official default: validation; 'all' for every video)",
            "tiou_thresholds": "tIoU thresholds (default: 0.50:0.05:0.95, numpy's linspace)",
            "unknown_labels": "a predicted label absent from the ground truth: error (the official code raises) or ignore (dropped, counted)",
        ]
        static let ranges: [String: ClosedRange<Double>] = ["tiou_thresholds": 0...1]
        static let choices = ["unknown_labels": ["error", "ignore"]]
    }
    static let id = "anet-detection"
    static let summary = "ActivityNet-1.3 temporal detection mAP at tIoU 0.5:0.05:0.95 and average mAP (the official eval_detection.py, ported)"
    static let operations = [OperationSpec("evaluate", summary: "mAP per tIoU threshold, average mAP, AP per class → result.json, per_class.csv")]

    func evaluate(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.ground_truth.isEmpty, !o.predictions.isEmpty else {
            throw MenagerieError.invalidArgument("'\(Self.id)' needs --set ground_truth=FILE.json and --set predictions=FILE.json")
        }
        let gt = try ActivityNet.readGroundTruth(o.ground_truth)
        let predictions = try ActivityNet.readPredictions(o.predictions)
        return try Self.report(
            groundTruth: gt, predictions: predictions, subset: o.subset, thresholds: o.tiou_thresholds,
            unknownLabels: o.unknown_labels, dir: request.host.scratchDirectory)
    }

    /// Evaluates and writes `per_class.csv`; the result holds `tiou_thresholds`, `mAP`, `average_mAP`.
    static func report(
        groundTruth: ActivityNet.GroundTruth, predictions: ActivityNet.Predictions, subset: String, thresholds: [Double],
        unknownLabels: String, dir: String
    ) throws -> Response {
        let thr = thresholds.isEmpty ? ActivityNetEvaluation.defaultThresholds : thresholds
        guard thr.allSatisfy({ $0 > 0 && $0 <= 1 }) else { throw MenagerieError.invalidArgument("tiou_thresholds must lie in (0, 1], got \(thr)") }
        let t0 = Date()
        let r = try ActivityNetEvaluation.detection(
            groundTruth: groundTruth, predictions: predictions, subset: subset, thresholds: thr,
            unknownLabels: ActivityNetEvaluation.UnknownLabels(rawValue: unknownLabels) ?? .error)
        let seconds = Date().timeIntervalSince(t0)
        var csv = "class," + thr.map { String(format: "AP@%.2f", $0) }.joined(separator: ",") + ",average\n"
        for (c, name) in r.labels.enumerated() {
            let aps = thr.indices.map { r.ap[$0][c] }
            csv +=
                csvField(name) + "," + aps.map { String(format: "%.6f", $0) }.joined(separator: ",")
                + String(format: ",%.6f\n", aps.reduce(0, +) / Double(aps.count))
        }
        try AtomicFile.write(csv, to: dir + "/per_class.csv")
        var perClass: [String: JSONValue] = [:]
        for (c, name) in r.labels.enumerated() { perClass[name] = .array(thr.indices.map { .number(r.ap[$0][c]) }) }
        let result: JSONValue = [
            "tiou_thresholds": .array(thr.map { .number($0) }), "mAP": .array(r.mAP.map { .number($0) }),
            "average_mAP": .number(r.averageMAP), "AP_per_class": .object(perClass), "subset": .string(subset),
            "classes": .number(Double(r.labels.count)), "ground_truth_instances": .number(Double(r.groundTruthCount)),
            "predictions_evaluated": .number(Double(r.predictionCount)), "predictions_ignored": .number(Double(r.ignoredPredictions)),
            "classes_without_predictions": .array(r.classesWithoutPredictions.map { .string($0) }),
            "evaluation_seconds": .number(seconds),
            "ties": "equal scores (and equal tIoUs) keep input order; the official code's numpy argsort leaves them unspecified",
        ]
        return Response(result: result, artifacts: ["per_class.csv"])
    }
}

/// `anet-proposals`: the official ActivityNet proposal metric (average recall vs average number of
/// proposals per video, and the area under that curve).
struct ProposalMetricComponent: Metric {
    struct Options: ComponentOptions {
        var ground_truth = ""
        var proposals = ""
        var subset = "validation"
        var tiou_thresholds: [Double] = []
        var max_proposals = 100.0
        static let help = [
            "ground_truth": "ActivityNet ground-truth JSON",
            "proposals": "proposals JSON: {results: {video: [{score, segment}]}} (labels ignored; detections files work)",
            "subset": "the ground-truth subset evaluated", "tiou_thresholds": "tIoU thresholds (default 0.50:0.05:0.95)",
            "max_proposals": "the largest average number of proposals per video (the challenge uses 100; 0: all)",
        ]
        static let ranges: [String: ClosedRange<Double>] = ["max_proposals": 0...1e9, "tiou_thresholds": 0...1]
    }
    static let id = "anet-proposals"
    static let summary = "ActivityNet proposal metric: AR@AN and the area under the AR-vs-AN curve (the official eval_proposal.py, ported)"
    static let operations = [OperationSpec("evaluate", summary: "AR at 1, 5, 10, 50, 100 proposals per video and AUC → result.json, ar_an.csv, ar_an.png")]

    func evaluate(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.ground_truth.isEmpty, !o.proposals.isEmpty else {
            throw MenagerieError.invalidArgument("'\(Self.id)' needs --set ground_truth=FILE.json and --set proposals=FILE.json")
        }
        guard o.max_proposals >= 0 else { throw MenagerieError.invalidArgument("max_proposals must be ≥ 0") }
        let thr = o.tiou_thresholds.isEmpty ? ActivityNetEvaluation.defaultThresholds : o.tiou_thresholds
        let r = try ActivityNetEvaluation.proposals(
            groundTruth: try ActivityNet.readGroundTruth(o.ground_truth),
            proposals: try ActivityNet.readPredictions(o.proposals, requireLabels: false),
            subset: o.subset, thresholds: thr, maxAverageProposals: o.max_proposals)
        return try Self.write(r, dir: request.host.scratchDirectory)
    }

    static func write(_ r: ActivityNetEvaluation.ProposalResult, dir: String) throws -> Response {
        var csv = "average_proposals,average_recall," + r.thresholds.map { String(format: "recall@%.2f", $0) }.joined(separator: ",") + "\n"
        for j in r.proposalsPerVideo.indices {
            csv +=
                String(format: "%.4f,%.6f,", r.proposalsPerVideo[j], r.averageRecall[j])
                + r.thresholds.indices.map { String(format: "%.6f", r.recall[$0][j]) }.joined(separator: ",") + "\n"
        }
        try AtomicFile.write(csv, to: dir + "/ar_an.csv")
        var plot = LinePlot(
            title: "Average recall vs average number of proposals (AR@AN)", xLabel: "average number of proposals per video",
            yLabel: "average recall (tIoU 0.50:0.05:0.95)",
            series: [.init("AR", points: zip(r.proposalsPerVideo, r.averageRecall).map { ($0, $1) }, color: LinePlot.color(0), markers: false)],
            xRange: 0...max(r.proposalsPerVideo.last ?? 1, 1), yRange: 0...1)
        plot.series += r.thresholds.indices.filter { [0, 5, 9].contains($0) }.map { k in
            .init(
                String(format: "recall @ tIoU %.2f", r.thresholds[k]), points: zip(r.proposalsPerVideo, r.recall[k]).map { ($0, $1) },
                color: LinePlot.color(k == 0 ? 1 : k == 5 ? 2 : 3), dashed: true, markers: false)
        }
        try plot.write(to: dir + "/ar_an.png")
        // AR at the usual budgets, read where the curve's grid lands on them.
        var at: [String: JSONValue] = [:]
        for an in [1.0, 5, 10, 50, 100] {
            if let j = r.proposalsPerVideo.firstIndex(where: { abs($0 - an) < 1e-6 * max(an, 1) }) { at["AR@\(Int(an))"] = .number(r.averageRecall[j]) }
        }
        let result: JSONValue = [
            "AR_at_AN": .object(at), "AUC": .number(r.auc), "AUC_percent": .number(r.aucPercent),
            "max_average_proposals": .number(r.proposalsPerVideo.last ?? 0), "tiou_thresholds": .array(r.thresholds.map { .number($0) }),
        ]
        return Response(result: result, artifacts: ["ar_an.csv"] + Figure.files("ar_an.png"))
    }
}
