import Foundation
import Formats
import Imaging
import MenagerieKit
import Tensors

extension STMTrackerComponent {
    static var inTour: Bool { true }

    /// One labelled synthetic-tol image per species (its part mask as the support), five more of the
    /// same species as queries, tracked twice: on raw 8 × 8 RGB patches, and on the patch tokens of
    /// the embedded ViT (`vit-classifier embed` through the host, when the explainers plugin is
    /// installed). Writes the propagated masks' overlays and per-part IoU from the C
    /// `segmentation-metrics`, also through the host.
    func tour(_ request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory
        let data = try DatasetProxy(request.host, id: "synthetic-tol")
        let b = try data.batch(options: ["split": "test", "start": 0, "count": 64, "shuffle": false, "size": 64])
        guard let images = b.tensors["images"], let masks = b.tensors["masks"], let labels = b.tensors["labels"] else {
            throw MenagerieError.failed("synthetic-tol returned no images / masks / labels")
        }
        let y = try labels.integers(), pixels = try images.scalars(as: Float.self), truth = try masks.integers()
        let s = 64, plane = s * s
        let groups = Array(Set(y)).sorted().prefix(3).map { species in Array(y.indices.filter { y[$0] == species }.prefix(6)) }.filter { $0.count >= 2 }

        // Features per image: [grid·grid, dim].
        let patch = 8, pixelGrid = s / patch
        func pixelFeatures(_ i: Int) -> [Float] {
            (0..<(pixelGrid * pixelGrid)).flatMap { p -> [Float] in
                let (pi, pj) = (p / pixelGrid, p % pixelGrid)
                return (0..<3).flatMap { c in (0..<patch).flatMap { dy in (0..<patch).map { dx in
                    pixels[(i * 3 + c) * plane + (pi * patch + dy) * s + pj * patch + dx] } } }
            }
        }
        var runs: [(name: String, grid: Int, dim: Int, features: (Int) -> [Float])] = [("raw 8x8 RGB patches", pixelGrid, 3 * patch * patch, pixelFeatures)]
        if let vit = try? request.host.resolve("vit-classifier") {
            let normalized = try Tensor(pixels.map { ($0 - 0.5) / 0.5 }, shape: images.shape)
            let r = try vit.invoke("embed", inputs: [("images", normalized)])
            if let tokens = r.tensors["tokens"], tokens.rank == 4 {
                let t = try tokens.scalars(as: Float.self), g = tokens.shape[1], d = tokens.shape[3]
                runs.append(("embedded ViT patch tokens", g, d, { i in Array(t[(i * g * g * d)..<((i + 1) * g * g * d)]) }))
            }
        }
        let metric = try MetricProxy(request.host, id: "segmentation-metrics")
        let parts = ["background", "head", "body", "wings/fins", "tail", "appendage"]
        var table: [[Double]] = [], summary: [String: JSONValue] = [:], artifacts: [String] = []
        for (r, run) in runs.enumerated() {
            var predictions: [Int64] = [], targets: [Int64] = [], tiles: [Image] = []
            for members in groups {
                let support = Array(truth[(members[0] * plane)..<((members[0] + 1) * plane)])
                let channels = try Self.checkMask(support, parts: 5, name: "synthetic-tol mask")
                let memory = SpaceTimeMemory(settings: PropagationSettings(), rows: run.grid, cols: run.grid, dim: run.dim, features: run.features(members[0]),
                                             labels: patchLabels(support, height: s, width: s, rows: run.grid, cols: run.grid, channels: channels), channels: channels)
                for (k, i) in members.enumerated() {
                    var px = [UInt8](repeating: 0, count: plane * 3)
                    for p in 0..<plane { for c in 0..<3 { px[3 * p + c] = UInt8(max(0, min(255, pixels[(i * 3 + c) * plane + p] * 255))) } }
                    let rgb = Image(width: s, height: s, channels: 3, pixels: px)
                    let gt = Array(truth[(i * plane)..<((i + 1) * plane)])
                    let predicted = k == 0 ? gt : labelImage(memory.propagate(run.features(i)), rows: run.grid, cols: run.grid, channels: channels, height: s, width: s)
                    if k > 0 {
                        predictions += predicted.map(Int64.init)
                        targets += gt.map(Int64.init)
                    }
                    tiles += [rgb, try Overlay.labels(on: rgb, mask: predicted), try Overlay.labels(on: rgb, mask: gt)]
                }
            }
            let n = predictions.count / plane
            let m = try metric.evaluate(options: ["classes": 6], inputs: [("prediction", try Tensor(predictions, shape: [n, s, s])),
                                                                           ("target", try Tensor(targets, shape: [n, s, s]))])
            let iou = try m.tensors["iou"]?.doubles() ?? []
            table.append(iou)
            let valid = iou.dropFirst().filter { !$0.isNaN }
            summary[run.name] = .number(valid.reduce(0, +) / Double(max(valid.count, 1)))
            let file = r == 0 ? "propagation_pixels.png" : "propagation_vit.png"
            try PNG.write(try Overlay.grid(tiles, columns: 3), to: dir + "/" + file)
            artifacts.append(file)
        }
        var csv = "part," + runs.map { csvField($0.name) }.joined(separator: ",") + "\n"
        for k in parts.indices {
            csv += csvField(parts[k]) + "," + table.map { k < $0.count && !$0[k].isNaN ? String(format: "%.4f", $0[k]) : "" }.joined(separator: ",") + "\n"
        }
        csv += "mIoU (parts)," + runs.map { String(format: "%.4f", summary[$0.name]?.doubleValue ?? .nan) }.joined(separator: ",") + "\n"
        try AtomicFile.write(csv, to: dir + "/part_iou.csv")
        artifacts.append("part_iou.csv")
        return Response(result: ["species": .number(Double(groups.count)), "queries_per_run": .number(Double(groups.reduce(0) { $0 + $1.count - 1 })),
                                 "mIoU_parts": .object(summary),
                                 "note": "rows: image, propagated parts, true parts; the first row of each species is the labelled support"],
                        artifacts: artifacts)
    }
}
