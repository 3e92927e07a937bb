import Foundation
import Formats
import Imaging
import MenagerieKit
import Tensors

extension STMTrackerComponent {
    static var inTour: Bool { true }

    /// One labelled synthetic-tol image per species (its part mask as the support), five more of the
    /// same species as queries, raw-pixel patch features (8 × 8 × RGB, no backbone): propagated part
    /// masks, their overlays, and per-part IoU from the C `segmentation-metrics` through the host.
    func tour(_ request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory
        let data = try DatasetProxy(request.host, id: "synthetic-tol")
        let b = try data.batch(options: ["split": "test", "start": 0, "count": 64, "shuffle": false, "size": 64])
        guard let images = b.tensors["images"], let masks = b.tensors["masks"], let labels = b.tensors["labels"] else {
            throw MenagerieError.failed("synthetic-tol returned no images / masks / labels")
        }
        let y = try labels.integers(), pixels = try images.scalars(as: Float.self), truth = try masks.integers()
        let s = 64, patch = 8, grid = s / patch, plane = s * s
        var predictions: [Int64] = [], targets: [Int64] = [], tiles: [Image] = []
        var speciesDone = 0
        for species in Array(Set(y)).sorted().prefix(3) {
            let members = y.indices.filter { y[$0] == species }.prefix(6)
            guard members.count >= 2 else { continue }
            // Patch features: the patch's RGB pixels.
            let features = members.flatMap { i -> [Float] in
                (0..<(grid * grid)).flatMap { p -> [Float] in
                    let (pi, pj) = (p / grid, p % grid)
                    return (0..<3).flatMap { c in (0..<patch).flatMap { dy in (0..<patch).map { dx in
                        pixels[(i * 3 + c) * plane + (pi * patch + dy) * s + pj * patch + dx] } } }
                }
            }
            let dim = 3 * patch * patch
            let support = Array(truth[(members.first! * plane)..<((members.first! + 1) * plane)])
            let channels = try Self.checkMask(support, parts: 5, name: "synthetic-tol mask")
            let memory = SpaceTimeMemory(settings: PropagationSettings(), rows: grid, cols: grid, dim: dim,
                                         features: Array(features[0..<(grid * grid * dim)]),
                                         labels: patchLabels(support, height: s, width: s, rows: grid, cols: grid, channels: channels), channels: channels)
            for (k, i) in members.enumerated() {
                func rgb(_ i: Int) -> Image {
                    var px = [UInt8](repeating: 0, count: plane * 3)
                    for p in 0..<plane { for c in 0..<3 { px[3 * p + c] = UInt8(max(0, min(255, pixels[(i * 3 + c) * plane + p] * 255))) } }
                    return Image(width: s, height: s, channels: 3, pixels: px)
                }
                let gt = Array(truth[(i * plane)..<((i + 1) * plane)])
                if k == 0 {
                    tiles += [rgb(i), try Overlay.labels(on: rgb(i), mask: gt), try Overlay.labels(on: rgb(i), mask: gt)]
                    continue
                }
                let seg = memory.propagate(Array(features[(k * grid * grid * dim)..<((k + 1) * grid * grid * dim)]))
                let predicted = labelImage(seg, rows: grid, cols: grid, channels: channels, height: s, width: s)
                predictions += predicted.map(Int64.init)
                targets += gt.map(Int64.init)
                tiles += [rgb(i), try Overlay.labels(on: rgb(i), mask: predicted), try Overlay.labels(on: rgb(i), mask: gt)]
            }
            speciesDone += 1
        }
        let n = predictions.count / plane
        let metric = try MetricProxy(request.host, id: "segmentation-metrics")
        let r = try metric.evaluate(options: ["classes": 6], inputs: [("prediction", try Tensor(predictions, shape: [n, s, s])),
                                                                       ("target", try Tensor(targets, shape: [n, s, s]))])
        let iou = try r.tensors["iou"]?.doubles() ?? []
        let parts = ["background", "head", "body", "wings/fins", "tail", "appendage"]
        var csv = "part,iou\n"
        for (k, v) in iou.enumerated() { csv += "\(csvField(parts[min(k, parts.count - 1)])),\(v.isNaN ? "" : String(format: "%.4f", v))\n" }
        let valid = iou.dropFirst().filter { !$0.isNaN }
        let mIoU = valid.reduce(0, +) / Double(max(valid.count, 1))
        csv += String(format: "mIoU (parts),%.4f\n", mIoU)
        try AtomicFile.write(csv, to: dir + "/part_iou.csv")
        try PNG.write(try Overlay.grid(tiles, columns: 3), to: dir + "/propagation.png")
        return Response(result: ["species": .number(Double(speciesDone)), "queries": .number(Double(n)), "mIoU_parts": .number(mIoU),
                                 "iou": .array(iou.map { $0.isNaN ? .null : .number($0) }),
                                 "features": "raw 8×8 RGB patches (no backbone)",
                                 "note": "rows: image, propagated parts, true parts; the first row of each species is the labelled support"],
                        artifacts: ["part_iou.csv", "propagation.png"])
    }
}
