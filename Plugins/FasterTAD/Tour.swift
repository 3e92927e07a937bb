import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

extension FasterTADComponent {
    /// The embedded model on the embedded validation videos (predictions, timelines, per-class AP,
    /// AR@AN of its detections as proposals), a second detector trained for a few epochs, and the
    /// two ensembled both ways; `summary.csv` and `map_vs_tiou.png` compare them.
    func tour(_ request: Request<Options>) throws -> Response {
        var o = request.options
        o.timelines = 6
        let dir = request.host.scratchDirectory
        let inf = try inference(o)
        let embedded = try loadModel(o)
        let data = try dataset(
            o, subsets: ["training", "validation"], snippets: embedded.config.snippets, classes: embedded.config.classes, host: request.host)
        let validation = data.subset("validation")
        let t0 = Date()
        let first = try runDetector(embedded, videos: validation, options: inf, classes: embedded.config.classes, host: request.host)
        let detectRate = Double(validation.count) / max(Date().timeIntervalSince(t0), 1e-9)
        try AtomicFile.write(ActivityNet.json(first), to: dir + "/predictions.json")
        var artifacts = ["predictions.json"]
        artifacts += try writeTimelines(data, predictions: first, count: o.timelines, classes: embedded.config.classes, dir: dir)
        let report = try DetectionMetricComponent.report(
            groundTruth: data.groundTruth, predictions: first, subset: "validation",
            thresholds: [], unknownLabels: "error", dir: dir)
        artifacts += report.artifacts
        let proposals = try ActivityNetEvaluation.proposals(groundTruth: data.groundTruth, proposals: first, subset: "validation", maxAverageProposals: 100)
        let ar = try ProposalMetricComponent.write(proposals, dir: dir)
        artifacts += ar.artifacts

        // A second detector: a short training run from another seed.
        var quick = o
        quick.epochs = 6
        quick.evaluate = false
        let quickData = try dataset(quick, subsets: ["training", "validation"], snippets: embedded.config.snippets, classes: nil, host: request.host)
        let second = try trainQuietly(quickData, options: quick, seed: request.host.seed &+ 1, host: request.host)
        let secondPredictions = try runDetector(second, videos: quickData.subset("validation"), options: inf, classes: quickData.classes, host: request.host)
        let nms = try self.nms(o)
        let merged = combine([first, secondPredictions], weights: [1, 1], mode: .merge, fusionIoU: o.fusion_iou, nms: nms)
        let fused = combine([first, secondPredictions], weights: [1, 1], mode: .fusion, fusionIoU: o.fusion_iou, nms: nms)
        try AtomicFile.write(ActivityNet.json(fused), to: dir + "/ensemble_predictions.json")
        artifacts.append("ensemble_predictions.json")

        var rows: [(String, ActivityNetEvaluation.DetectionResult)] = []
        for (name, p) in [
            ("embedded model (16 epochs, aux stream)", first), ("quick model (6 epochs, another seed)", secondPredictions),
            ("ensemble: merge + Soft-NMS", merged), ("ensemble: weighted fusion", fused),
        ] {
            rows.append((name, try ActivityNetEvaluation.detection(groundTruth: data.groundTruth, predictions: p, subset: "validation")))
        }
        var csv = "detector,average_mAP,mAP@0.50,mAP@0.75,mAP@0.95\n"
        for (name, r) in rows { csv += csvField(name) + String(format: ",%.4f,%.4f,%.4f,%.4f\n", r.averageMAP, r.mAP[0], r.mAP[5], r.mAP[9]) }
        try AtomicFile.write(csv, to: dir + "/summary.csv")
        // Four detectors whose curves can coincide: dashes tell them apart where they overlap.
        var plot = LinePlot(
            title: "Detection mAP vs tIoU threshold (synthetic-actions validation)", xLabel: "tIoU threshold", yLabel: "mAP",
            series: rows.enumerated().map { i, row in
                .init(row.0, points: zip(row.1.thresholds, row.1.mAP).map { ($0, $1) }, color: LinePlot.color(i), dashed: i % 2 == 1)
            }, xRange: 0.48...0.97, yRange: 0...1)
        plot.height = 460
        try plot.write(to: dir + "/map_vs_tiou.png")
        artifacts += ["summary.csv"] + Figure.files("map_vs_tiou.png")
        return Response(
            result: [
                "average_mAP": .number(rows[0].1.averageMAP), "mAP": .array(rows[0].1.mAP.map { .number($0) }),
                "tiou_thresholds": .array(rows[0].1.thresholds.map { .number($0) }),
                "AR@100": ar.result["AR_at_AN"]?["AR@100"] ?? .null, "detect_videos_per_s": .number(detectRate),
                "detectors": .object(Dictionary(uniqueKeysWithValues: rows.map { ($0.0, JSONValue.number($0.1.averageMAP)) })),
                "videos": .number(Double(validation.count)),
            ], artifacts: artifacts)
    }

    /// A training run without files (the tour's second detector).
    func trainQuietly(_ data: TADDataset, options o: Options, seed: UInt64, host: PluginHost) throws -> FasterTADNet {
        var config = FasterTADConfig(classes: data.classes, input_channels: data.channels)
        config.aux_channels = data.auxChannels
        config.snippets = data.snippets
        let net = FasterTADNet(config, seed: seed)
        try fit(net, videos: data.subset("training"), options: o, seed: seed, host: host) { _, _ in }
        net.isTraining = false
        return net
    }
}
