import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

extension SAM2TrackerComponent {
    static var inTour: Bool { true }

    /// The embedded SAM 2.1 (random weights, the parity fixture's: Hiera 16 wide, 256 px) tracks the
    /// body of one synthetic-tol species over six test images treated as a video, from files as a
    /// user runs it. Random weights say nothing about quality — the stop shows the pipeline, its
    /// speed and memory, and what the parity test measures.
    func tour(_ request: Request<Options>) throws -> Response {
        let host = request.host, dir = host.scratchDirectory
        let model = try PluginResources.path(module: "SAM2", item: "sam2-tiny")
        let data = try DatasetProxy(host, id: "synthetic-tol")
        let s = 128, count = 6
        let batch = try data.batch(options: ["split": "test", "start": 0, "count": .number(Double(count)), "shuffle": false, "size": .number(Double(s))])
        guard let images = batch.tensors["images"], let masks = batch.tensors["masks"], images.shape == [count, 3, s, s], masks.shape == [count, s, s] else {
            throw MenagerieError.failed("synthetic-tol returned no images [\(count), 3, \(s), \(s)] and masks")
        }
        let pixels = try images.scalars(as: Float.self), parts = try masks.scalars(as: UInt8.self)
        let plane = s * s
        let frames = dir + "/tour-data/frames"
        try FileManager.default.createDirectory(atPath: frames, withIntermediateDirectories: true)
        var pictures: [Image] = []
        for i in 0..<count {
            let picture = Image(
                width: s, height: s, channels: 3,
                pixels: (0..<plane).flatMap { p in (0..<3).map { c in UInt8(max(0, min(255, (pixels[(i * 3 + c) * plane + p] * 255).rounded()))) } })
            pictures.append(picture)
            try PNG.write(picture, to: frames + String(format: "/%05d.png", i))
        }
        let body: UInt8 = 2
        try PNG.write(
            Image(width: s, height: s, channels: 1, pixels: parts[0..<plane].map { $0 == body ? 255 : 0 }), to: dir + "/tour-data/body_mask.png")
        var o = Options()
        o.model = model
        o.frames = frames
        o.mask = dir + "/tour-data/body_mask.png"
        let out = try segment(Request(options: o, inputs: request.inputs, host: host, component: Self.id, operation: "segment"))
        let logits = try out.tensors.first { $0.name == "mask_logits" }!.tensor.scalars(as: Float.self)
        let scores = try out.tensors.first { $0.name == "object_score_logits" }!.tensor.scalars(as: Float.self)
        var csv = "frame,object_fraction,object_score_logit,iou_with_true_body\n"
        var tiles: [[Image?]] = [[], [], []]
        var ious: [Double] = []
        for i in 0..<count {
            let predicted = logits[(i * plane)..<((i + 1) * plane)].map { $0 > 0 }
            let truth = parts[(i * plane)..<((i + 1) * plane)].map { $0 == body }
            let inter = zip(predicted, truth).filter { $0 && $1 }.count, union = zip(predicted, truth).filter { $0 || $1 }.count
            let iou = union == 0 ? 1 : Double(inter) / Double(union)
            ious.append(iou)
            let fraction = Double(predicted.filter { $0 }.count) / Double(plane)
            csv += "\(i),\(String(format: "%.4f", fraction)),\(scores[i].isNaN ? "" : String(format: "%.4f", scores[i])),\(String(format: "%.4f", iou))\n"
            tiles[0].append(pictures[i])
            tiles[1].append(tinted(pictures[i], predicted, (230, 40, 40)))
            tiles[2].append(tinted(pictures[i], truth, (40, 160, 230)))
        }
        try AtomicFile.write(csv, to: dir + "/tracking.csv")
        let sheet = ImageGrid(
            title: "SAM 2 (random weights) tracking the body from frame 0's mask", columnHeaders: (0..<count).map { $0 == 0 ? "0 (prompt)" : "frame \($0)" },
            rowHeaders: ["frame", "SAM 2 mask (red)", "true body (blue)"], tiles: tiles, tileSize: 96)
        try sheet.write(to: dir + "/tracking.png")
        var result = out.result.objectValue ?? [:]
        // One-shot cycle-consistent fine-tuning (OC-CCL) on frames 1–5 as the unlabelled set, then the
        // same tracking with the tuned weights.
        let unlabelled = dir + "/tour-data/unlabelled"
        try FileManager.default.createDirectory(atPath: unlabelled, withIntermediateDirectories: true)
        for i in 1..<count { try PNG.write(pictures[i], to: unlabelled + String(format: "/%05d.png", i)) }
        var f = o
        f.support = frames + "/00000.png"
        f.queries = unlabelled
        f.steps = 5
        f.lr = 1e-3
        let tuning = try finetune(Request(options: f, inputs: Inputs([:], component: Self.id), host: host, component: Self.id, operation: "finetune"))
        f.tuned = dir + "/tuned.safetensors"
        f.masks = false
        let tunedRun = try segment(Request(options: f, inputs: request.inputs, host: host, component: Self.id, operation: "segment"))
        result["finetune_cycle_loss"] = tuning.result["cycle_loss"] ?? .null
        result["finetune_seconds_per_step"] = tuning.result["seconds_per_step"] ?? .null
        let tunedLogits = try tunedRun.tensors.first { $0.name == "mask_logits" }!.tensor.scalars(as: Float.self)
        result["tuned_logits_max_change"] = .number(Double(zip(logits, tunedLogits).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }))
        result["mean_iou_tracked_frames"] = .number(ious.dropFirst().reduce(0, +) / Double(max(count - 1, 1)))
        result["note"] =
            "random weights (the parity fixture's model): the masks say nothing about SAM 2's quality; the parity test matches sam2 1.1.0 within 1e-3. Run --set model=DIR with a released checkpoint (config.yaml + model.pt) for real tracking."
        return Response(
            result: .object(result), tensors: out.tensors,
            artifacts: out.artifacts + ["tracking.csv"] + Figure.files("tracking.png") + ["tour-data"] + tuning.artifacts)
    }
}

/// The image with `mask` blended half-way to `colour`.
func tinted(_ image: Image, _ mask: [Bool], _ colour: (UInt8, UInt8, UInt8)) -> Image {
    var px = image.pixels
    let c = [colour.0, colour.1, colour.2]
    for (p, on) in mask.enumerated() where on {
        for k in 0..<3 { px[p * 3 + k] = UInt8((Int(px[p * 3 + k]) + Int(c[k])) / 2) }
    }
    return Image(width: image.width, height: image.height, channels: 3, pixels: px)
}
