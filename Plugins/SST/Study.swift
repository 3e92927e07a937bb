import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// The study of Docs/methods/sst.md on `synthetic-tol`: ONE labelled test image per species (its
/// part mask is the support), the species' other test images as queries, its training images as
/// the unlabelled set of the fine-tuning; per-part IoU over all queries (C `segmentation-metrics`
/// through the host) for each feature source, with and without cycle-consistent fine-tuning, and
/// (sweep) the tracker's queue length, top-k and radius varied one at a time.
extension SSTComponent {
    static let studyParts = ["background", "head", "body", "wings_fins", "tail", "appendage"]

    struct SpeciesGroup {
        var support: Int // index into images
        var queries: [Int]
        var unlabelled: [Int]
    }

    struct StudyData {
        var images: [Image] = []
        var masks: [[Int]] = []
        var groups: [SpeciesGroup] = []
        var size: Int
    }

    /// Pulls test and training images of the first `species` species from synthetic-tol.
    func studyData(_ o: Options, host: PluginHost) throws -> StudyData {
        guard o.species > 0, o.per_species > 0, o.image_size >= 16 else {
            throw MenagerieError.invalidArgument("species and per_species must be positive, image_size ≥ 16")
        }
        let data = try DatasetProxy(host, id: "synthetic-tol")
        var out = StudyData(size: o.image_size)
        func collect(split: String, perSpecies: Int, withMasks: Bool) throws -> [Int: [Int]] {
            var bySpecies: [Int: [Int]] = [:]
            var start = 0
            let total = try data.describe()["splits"]?[split]?.intValue ?? 0
            while start < total {
                let done = (0..<o.species).allSatisfy { (bySpecies[$0]?.count ?? 0) >= perSpecies }
                if done { break }
                try host.checkCancelled()
                let count = min(128, total - start)
                let b = try data.batch(options: [
                    "split": .string(split), "start": .number(Double(start)), "count": .number(Double(count)),
                    "shuffle": false, "size": .number(Double(o.image_size)),
                ])
                guard let images = b.tensors["images"], let labels = b.tensors["labels"], let masks = b.tensors["masks"] else {
                    throw MenagerieError.failed("synthetic-tol returned no images / labels / masks")
                }
                let y = try labels.integers(), px = try images.scalars(as: Float.self), m = try masks.integers()
                let s = o.image_size, plane = s * s
                for i in 0..<y.count where y[i] < o.species && (bySpecies[y[i]]?.count ?? 0) < perSpecies {
                    var rgb = [UInt8](repeating: 0, count: plane * 3)
                    for p in 0..<plane { for c in 0..<3 { rgb[3 * p + c] = UInt8(max(0, min(255, (px[(i * 3 + c) * plane + p] * 255).rounded()))) } }
                    out.images.append(Image(width: s, height: s, channels: 3, pixels: rgb))
                    out.masks.append(withMasks ? Array(m[(i * plane)..<((i + 1) * plane)]) : [])
                    bySpecies[y[i], default: []].append(out.images.count - 1)
                }
                start += count
            }
            return bySpecies
        }
        let test = try collect(split: "test", perSpecies: o.per_species + 1, withMasks: true)
        let train = try collect(split: "train", perSpecies: o.unlabelled_per_species, withMasks: false)
        for k in 0..<o.species {
            guard let t = test[k], t.count >= 2 else { continue }
            out.groups.append(SpeciesGroup(support: t[0], queries: Array(t.dropFirst()), unlabelled: train[k] ?? []))
        }
        guard !out.groups.isEmpty else { throw MenagerieError.failed("synthetic-tol gave no species with two test images") }
        return out
    }

    struct StudyRow {
        var backbone: String
        var variant: String
        var finetuned: Bool
        var iou: [Double]
        var secondsPerQuery = 0.0
        var mIoU: Double {
            let v = iou.dropFirst().filter { !$0.isNaN }
            return v.reduce(0, +) / Double(max(v.count, 1))
        }
    }

    /// Tracks every species' queries with `settings` (and a head tuned per species when `steps` > 0);
    /// returns per-part IoU and the first species' predictions.
    func studyRun(
        _ data: StudyData, features: PatchFeatures, settings s: PropagationSettings, o: Options, finetune: Bool,
        host: PluginHost
    ) throws -> (iou: [Double], firstMasks: [[Int]], losses: [[Float]], trackingSeconds: Double) {
        let size = data.size, plane = size * size
        var prediction: [Int64] = [], target: [Int64] = [], first: [[Int]] = [], losses: [[Float]] = []
        var trackingSeconds = 0.0
        // A tracker of the frames themselves (sam2-tracker): the frames go to it, and it is
        // fine-tuned per species by its own finetune operation.
        let imageTracker = try tracksImages(o.tracker, host: host)
        var options = o
        options.finetune_steps = finetune ? (o.finetune_steps > 0 ? o.finetune_steps : 50) : 0
        for (g, group) in data.groups.enumerated() {
            let support = LabelMask(width: size, height: size, labels: data.masks[group.support])
            let channels = Self.studyParts.count
            let frames = [group.support] + group.queries
            var video = PatchFeatures(rows: features.rows, cols: features.cols, dim: features.dim, frames: frames.map { features.frames[$0] })
            var call = trackerCall(o, s)
            call.options["parts"] = .number(Double(channels - 1))
            if imageTracker && options.finetune_steps > 0 && !group.unlabelled.isEmpty {
                losses.append(
                    try tuneTracker(
                        &call, support: data.images[group.support], mask: support, unlabelled: group.unlabelled.map { data.images[$0] }, o: options,
                        size: size, host: host, file: "sam2_tuned_species\(g).safetensors"))
            } else if options.finetune_steps > 0 && !group.unlabelled.isEmpty {
                let labels = patchLabels(support.labels, height: size, width: size, rows: video.rows, cols: video.cols, channels: channels)
                let (tuned, curve) = try tuned(
                    video, support: 0, labels: labels, channels: channels,
                    unlabelled: group.unlabelled.map { features.frames[$0] }, o: options, settings: s, host: host)
                video = tuned
                losses.append(curve)
            }
            let began = Date()
            let masks = try call.run(
                video, order: Array(0..<frames.count), labels: support, size: size, host: host, images: imageTracker ? frames.map { data.images[$0] } : nil)
            trackingSeconds += Date().timeIntervalSince(began)
            for (k, q) in group.queries.enumerated() {
                prediction += masks[k].map(Int64.init)
                target += data.masks[q].map(Int64.init)
            }
            if g == 0 { first = masks }
        }
        let n = prediction.count / plane
        let metric = try MetricProxy(host, id: "segmentation-metrics")
        let r = try metric.evaluate(
            options: ["classes": .number(Double(Self.studyParts.count))],
            inputs: [("prediction", try Tensor(prediction, shape: [n, size, size])), ("target", try Tensor(target, shape: [n, size, size]))])
        return (try r.tensors["iou"]?.doubles() ?? [], first, losses, trackingSeconds)
    }

    func study(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let started = Date()
        let data = try studyData(o, host: request.host)
        let base = try settings(o)
        var variants: [(String, PropagationSettings)] = [("default", base)]
        if o.sweep {
            for q in [0, 3] where q != base.queue {
                var s = base
                s.queue = q
                variants.append(("queue=\(q)", s))
            }
            for k in [1, 20] where k != base.topK {
                var s = base
                s.topK = k
                variants.append(("top_k=\(k)", s))
            }
            for r in [0, 2] where r != base.radius {
                var s = base
                s.radius = r
                variants.append(("radius=\(r)\(r == 0 ? " (all)" : "")", s))
            }
        }
        var rows: [StudyRow] = []
        var tiles: [[Image]] = [], tileRows: [String] = [], artifacts: [String] = []
        var curves: [(String, [Float])] = []
        let dir = request.host.scratchDirectory
        let shownQueries = min(4, data.groups[0].queries.count)
        // A tracker of the frames themselves (sam2-tracker) uses no patch features: one pass, its rows
        // named after the tracker (raw patches are extracted for the pseudo-video's bookkeeping only).
        let imageTracker = try tracksImages(o.tracker, host: request.host)
        let backbones = imageTracker ? ["pixels"] : o.backbones
        for (b, backbone) in backbones.enumerated() {
            var opt = o
            opt.backbone = backbone
            let features: PatchFeatures
            do { features = try source(opt, size: data.size).extract(data.images, host: request.host) } catch let e as MenagerieError
                where e.status == .notFound
            {
                request.host.log(.warning, "study: backbone '\(backbone)' is not installed; skipped (\(e.message))")
                continue
            }
            for (v, (name, s)) in variants.enumerated() {
                for finetune in (v == 0 ? [false, true] : [false]) {
                    let run = try studyRun(data, features: features, settings: s, o: opt, finetune: finetune, host: request.host)
                    let queries = data.groups.reduce(0) { $0 + $1.queries.count }
                    let label = imageTracker ? o.tracker : backbone
                    rows.append(
                        StudyRow(
                            backbone: label, variant: name, finetuned: finetune, iou: run.iou, secondsPerQuery: run.trackingSeconds / Double(max(queries, 1))
                        ))
                    if v == 0 && finetune, let curve = run.losses.first { curves.append((label, curve)) }
                    if v == 0 {
                        let group = data.groups[0], shown = group.queries.prefix(shownQueries)
                        if tiles.isEmpty {
                            tiles.append([data.images[group.support]] + shown.map { data.images[$0] })
                            tiles.append(try ([group.support] + shown).map { try Overlay.labels(on: data.images[$0], mask: data.masks[$0]) })
                            tileRows += ["image", "ground truth"]
                        }
                        tiles.append(
                            [try Overlay.labels(on: data.images[group.support], mask: data.masks[group.support])]
                                + (try zip(shown, run.firstMasks).map { try Overlay.labels(on: data.images[$0.0], mask: $0.1) }))
                        tileRows.append(label + (finetune ? " + fine-tuning" : ""))
                    }
                }
            }
            request.host.progress(b + 1, of: backbones.count, "study")
        }
        guard !rows.isEmpty else { throw MenagerieError.notFound("study: none of the backbones \(o.backbones) is installed") }
        var csv = "backbone,variant,finetuned," + Self.studyParts.joined(separator: ",") + ",mIoU_parts\n"
        for r in rows {
            csv +=
                "\(csvField(r.backbone)),\(csvField(r.variant)),\(r.finetuned),"
                + r.iou.map { $0.isNaN ? "" : String(format: "%.4f", $0) }.joined(separator: ",")
                + String(format: ",%.4f", r.mIoU) + "\n"
        }
        try AtomicFile.write(csv, to: dir + "/study.csv")
        artifacts.append("study.csv")
        if !tiles.isEmpty {
            try ImageGrid(
                title: "One-shot part segmentation: support (left) and tracked queries of the first species",
                columnHeaders: ["support"] + (0..<shownQueries).map { "query \($0 + 1)" }, rowHeaders: tileRows, tiles: tiles.map { $0.map { Optional($0) } }
            )
            .write(to: dir + "/study_examples.png")
            artifacts += Figure.files("study_examples.png")
        }
        if !curves.isEmpty {
            let plot = LinePlot(
                title: "Cycle-consistency loss while fine-tuning (first species)", xLabel: "step", yLabel: "BCE + Dice loss",
                series: curves.enumerated().map { i, c in
                    .init(c.0, points: c.1.enumerated().map { (Double($0.offset + 1), Double($0.element)) }, color: LinePlot.color(i))
                })
            try plot.write(to: dir + "/study_finetune.png")
            artifacts += Figure.files("study_finetune.png")
        }
        var summary: [String: JSONValue] = [:], speed: [String: JSONValue] = [:]
        for r in rows {
            summary["\(r.backbone) \(r.variant)\(r.finetuned ? " +finetune" : "")"] = .number((r.mIoU * 1e4).rounded() / 1e4)
            speed["\(r.backbone) \(r.variant)\(r.finetuned ? " +finetune" : "")"] = .number((r.secondsPerQuery * 1e4).rounded() / 1e4)
        }
        return Response(
            result: [
                "species": .number(Double(data.groups.count)), "queries": .number(Double(data.groups.reduce(0) { $0 + $1.queries.count })),
                "mIoU_parts": .object(summary), "seconds": .number(Date().timeIntervalSince(started)), "tracker": .string(o.tracker),
                "tracking_seconds_per_query": .object(speed),
                "note":
                    "study_examples.png rows: images, true parts, then per backbone the predictions (without, with fine-tuning); the first column is the labelled support",
            ],
            artifacts: artifacts)
    }
}
