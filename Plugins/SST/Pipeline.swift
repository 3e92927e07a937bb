import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// `sst`: SST end to end on files. The labelled support image and its trait mask open a
/// pseudo-video of the query images (file order, or by feature similarity to the support); patch
/// features come from a backbone component (or raw pixels), optionally through a projection head
/// tuned by cycle consistency; a tracker component (`stm-tracker` by default) carries the mask
/// through the video. Also trait retrieval, and the study on synthetic-tol.
struct SSTComponent: Segmenter {
    struct Options: ComponentOptions {
        var support = ""
        var mask = ""
        var queries = ""
        var order = "files"
        var backbone = "vit-classifier"
        var backbone_options: [String] = []
        var size = 224
        var patch = 8
        var tracker = "stm-tracker"
        var tracker_options: [String] = []
        var temperature = 0.1
        var top_k = 5
        var radius = 12
        var queue = 7
        var parts: [String] = []
        var finetune_steps = 0
        var finetune_lr = 1e-3
        var finetune_pairs = 4
        var finetune_soft = true
        var head_dim = 0
        var unlabelled = ""
        var format = "png"
        var truth = ""
        var ranking = "paper"
        var trait = 0
        var top = 5
        var seed = 0
        // study / tour
        var species = 8
        var per_species = 6
        var unlabelled_per_species = 12
        var image_size = 128
        var backbones: [String] = ["pixels", "vit-classifier"]
        var sweep = true
        static let help = [
            "support": "the labelled support image (PNG/TIFF/JPEG)", "mask": "its trait mask: a one-channel PNG/TIFF, 0 background, 1…K traits",
            "queries": "a folder (or one file) of query images (PNG/TIFF/JPEG)",
            "order": "pseudo-video order: files (sorted names) or similarity (to the support, most similar first)",
            "backbone": "patch features: a backbone component whose embed returns tokens (vit-classifier, bioclip2), or pixels (raw RGB patches)",
            "backbone_options": "key=value options for the backbone (e.g. classifier=~/dinov2-small, model=~/bioclip-2)",
            "size": "images are resized to size × size for the features (masks come back at each query's own size)",
            "patch": "patch side of backbone=pixels",
            "tracker": "the tracker component (segment: features + labels → masks; sam2-tracker: the frames themselves)",
            "tracker_options": "key=value options for the tracker (sam2-tracker: model=DIR)",
            "temperature": "tracker τ", "top_k": "tracker: sources kept per query patch", "radius": "tracker: neighbourhood in patches (0: all)",
            "queue": "tracker: recent soft predictions kept as context",
            "parts": "names of traits 1…K (checked against the mask; empty: the mask's largest label)",
            "finetune_steps":
                "cycle-consistent fine-tuning steps of a projection head on the features, or with tracker=sam2-tracker of SAM 2 itself (its finetune operation; tune=, lr=, weight_decay= in tracker_options) (0: none)",
            "finetune_lr": "fine-tuning AdamW rate (cosine to 1 %)", "finetune_pairs": "palindromes per step",
            "finetune_soft": "keep the intermediate prediction soft and differentiable (false: hard, as the released OC-CCL)",
            "head_dim": "projection head width (0: the feature width, identity start)",
            "unlabelled": "folder of unlabelled images for fine-tuning (empty: the queries)", "format": "mask files: png or tiff",
            "truth": "segment: folder of true masks named like the queries → per-trait IoU (segmentation-metrics)",
            "ranking":
                "retrieve: paper (query → support reconstruction, IoU descending) or released (the released code: reconstruction on the query, ascending)",
            "trait": "retrieve: the trait label scored (0: mean IoU over the support's traits)", "top": "retrieve: overlays of the first N",
            "seed": "fine-tuning pairs", "species": "study: species with one labelled image each", "per_species": "study: query images per species",
            "unlabelled_per_species": "study: unlabelled training images per species for fine-tuning", "image_size": "study: synthetic-tol image side",
            "backbones": "study: feature sources compared", "sweep": "study: also vary queue, top-k and radius",
        ]
        static let choices = ["order": ["files", "similarity"], "format": ["png", "tiff"], "ranking": ["paper", "released"]]
        static let ranges: [String: ClosedRange<Double>] = [
            "size": 1...65536, "patch": 1...65536, "temperature": 1e-12...1e12, "top_k": 1...1e9, "radius": 0...1e9, "queue": 0...1e6,
            "finetune_steps": 0...1e7, "finetune_lr": 0...1e3, "finetune_pairs": 0...1e6, "head_dim": 0...65536, "trait": 0...65535,
            "top": 1...1e7, "species": 1...1e6, "per_species": 1...1e6, "unlabelled_per_species": 0...1e6, "image_size": 16...65536,
        ]
    }

    static let id = "sst"
    static let summary = "SST: one-shot trait segmentation by tracking (support image + mask → query masks), cycle-consistent fine-tuning, trait retrieval"
    static let operations = [
        OperationSpec("segment", summary: "support + mask + queries → masks/*.png, overlays/*.png, order.csv (iou.csv with truth=)"),
        OperationSpec("retrieve", summary: "rank queries by how well the support's trait survives query → support propagation: retrieval.csv, top overlays"),
        OperationSpec("study", summary: "synthetic-tol, one labelled image per species: per-part IoU with/without fine-tuning, queue/top-k/radius: study.csv"),
    ]

    // MARK: Shared steps

    func settings(_ o: Options) throws -> PropagationSettings {
        guard o.temperature > 0, o.top_k > 0, o.radius >= 0, o.queue >= 0 else {
            throw MenagerieError.invalidArgument("temperature and top_k must be > 0; radius and queue ≥ 0")
        }
        var s = PropagationSettings()
        s.temperature = o.temperature
        s.topK = o.top_k
        s.radius = o.radius
        s.queue = o.queue
        return s
    }

    func trackerCall(_ o: Options, _ s: PropagationSettings) -> TrackerCall {
        var options: [String: JSONValue] = [
            "temperature": .number(s.temperature), "top_k": .number(Double(s.topK)),
            "radius": .number(Double(s.radius)), "queue": .number(Double(s.queue)),
        ]
        if !o.parts.isEmpty { options["parts"] = .number(Double(o.parts.count)) }
        return TrackerCall(tracker: o.tracker, options: options, extra: (try? keyValueOptions(o.tracker_options, option: "tracker_options")) ?? [:])
    }

    func source(_ o: Options, size: Int) throws -> FeatureSource {
        FeatureSource(backbone: o.backbone, options: try keyValueOptions(o.backbone_options, option: "backbone_options"), size: size, patch: o.patch)
    }

    func readImage(_ path: String) throws -> Image {
        do { return try ImageFiles.read(path) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }

    func listImages(_ path: String, option: String) throws -> [String] {
        do { return try ImageFiles.list((path as NSString).expandingTildeInPath, option: option) } catch let e as FormatError {
            throw MenagerieError.invalidArgument("\(e)")
        }
    }

    /// The support image and its mask, checked against each other and the trait names.
    func support(_ o: Options) throws -> (image: Image, mask: LabelMask, channels: Int) {
        guard !o.support.isEmpty, !o.mask.isEmpty else {
            throw MenagerieError.invalidArgument("'\(Self.id)' needs --set support=IMAGE --set mask=MASK (the one labelled image and its trait mask)")
        }
        let supportPath = (o.support as NSString).expandingTildeInPath, maskPath = (o.mask as NSString).expandingTildeInPath
        let image = try readImage(supportPath)
        let mask = try LabelMask.read(maskPath)
        guard mask.width == image.width, mask.height == image.height else {
            throw MenagerieError.invalidArgument(
                "mask '\(maskPath)' is \(mask.width)×\(mask.height) but the support image '\(supportPath)' is "
                    + "\(image.width)×\(image.height): the mask must label the support image pixel for pixel")
        }
        let channels = try STMTrackerComponent.checkMask(mask.labels, parts: o.parts.count, name: maskPath)
        return (image, mask, channels)
    }

    /// Fine-tunes a projection head when asked and returns the frames' features through it, with
    /// the loss curve.
    func tuned(
        _ features: PatchFeatures, support: Int, labels: [Float], channels: Int, unlabelled: [[Float]], o: Options,
        settings: PropagationSettings, host: PluginHost
    ) throws -> (PatchFeatures, [Float]) {
        guard o.finetune_steps > 0 else { return (features, []) }
        guard !unlabelled.isEmpty else { throw MenagerieError.invalidArgument("fine-tuning needs unlabelled images (unlabelled= or queries)") }
        let head = ProjectionHead(inputs: features.dim, outputs: o.head_dim > 0 ? o.head_dim : features.dim, seed: UInt64(bitPattern: Int64(o.seed)))
        var tuning = CycleTuning()
        tuning.steps = o.finetune_steps
        tuning.learningRate = Float(o.finetune_lr)
        tuning.pairs = o.finetune_pairs
        tuning.soft = o.finetune_soft
        tuning.seed = UInt64(bitPattern: Int64(o.seed))
        let losses = try tuning.run(
            head: head, support: features.frames[support], labels: labels, channels: channels, unlabelled: unlabelled,
            rows: features.rows, cols: features.cols, settings: settings, cancelled: { try host.checkCancelled() })
        var out = features
        out.dim = head.outputs
        out.frames = features.frames.map { head.project($0, patches: features.patches) }
        return (out, losses)
    }

    /// Frame order of the pseudo-video: the support (frame 0) then the queries (1…n).
    func order(_ features: PatchFeatures, mode: String) -> (order: [Int], similarity: [Double]) {
        let n = features.frames.count
        let s = features.descriptor(0)
        let similarity = (0..<n).map { f in Double(zip(features.descriptor(f), s).reduce(Float(0)) { $0 + $1.0 * $1.1 }) }
        let queries = Array(1..<n)
        let ordered =
            mode == "similarity"
            ? queries.enumerated().sorted { a, b in
                similarity[a.element] != similarity[b.element] ? similarity[a.element] > similarity[b.element] : a.offset < b.offset
            }.map(\.element) : queries
        return ([0] + ordered, similarity)
    }

    // MARK: segment

    func segment(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let started = Date()
        let (supportImage, supportMask, channels) = try support(o)
        guard !o.queries.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs --set queries=FOLDER (the images to segment)") }
        let files = try listImages(o.queries, option: "queries")
        let queries = try files.map(readImage)
        let s = try settings(o)
        let src = try source(o, size: o.size)
        let extraFiles = o.unlabelled.isEmpty ? [] : try listImages(o.unlabelled, option: "unlabelled")
        let extraImages = try extraFiles.map(readImage)
        let featureStart = Date()
        var features = try src.extract([supportImage] + queries + extraImages, host: request.host)
        let featureSeconds = Date().timeIntervalSince(featureStart)
        let labels = patchLabels(
            supportMask.labels, height: supportMask.height, width: supportMask.width, rows: features.rows, cols: features.cols, channels: channels)
        let unlabelled = extraFiles.isEmpty ? Array(features.frames[1...queries.count]) : Array(features.frames[(queries.count + 1)...])
        features.frames = Array(features.frames.prefix(queries.count + 1))
        // A tracker of the frames themselves (sam2-tracker) is fine-tuned by its own finetune operation.
        _ = try keyValueOptions(o.tracker_options, option: "tracker_options")
        let imageTracker = try tracksImages(o.tracker, host: request.host)
        var call = trackerCall(o, s)
        var (tunedFeatures, losses) = (features, [Float]())
        if !imageTracker {
            (tunedFeatures, losses) = try tuned(
                features, support: 0, labels: labels, channels: channels, unlabelled: unlabelled, o: o,
                settings: s, host: request.host)
        } else if o.finetune_steps > 0 {
            losses = try tuneTracker(
                &call, support: supportImage, mask: supportMask, unlabelled: extraImages.isEmpty ? queries : extraImages, o: o, size: o.size,
                host: request.host)
        }
        let (order, similarity) = self.order(tunedFeatures, mode: o.order)
        let trackStart = Date()
        let masks = try call.run(
            tunedFeatures, order: order, labels: supportMask, size: o.size, host: request.host, images: [supportImage] + queries)
        let trackSeconds = Date().timeIntervalSince(trackStart)

        let dir = request.host.scratchDirectory
        try FileManager.default.createDirectory(atPath: dir + "/masks", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/overlays", withIntermediateDirectories: true)
        var artifacts: [String] = [], predicted: [Int: LabelMask] = [:]
        var orderCSV = "position,file,similarity_to_support\n"
        for (k, frame) in order.dropFirst().enumerated() {
            let q = frame - 1, image = queries[q]
            let mask = LabelMask(width: o.size, height: o.size, labels: masks[k]).resized(width: image.width, height: image.height)
            predicted[q] = mask
            let stem = ((files[q] as NSString).lastPathComponent as NSString).deletingPathExtension
            let name = "masks/\(stem).\(o.format == "tiff" ? "tif" : "png")"
            try mask.write(to: dir + "/" + name, format: o.format)
            try PNG.write(try Overlay.labels(on: try image.rgb(), mask: mask.labels), to: dir + "/overlays/\(stem).png")
            artifacts += [name, "overlays/\(stem).png"]
            orderCSV += "\(k + 1),\(csvField((files[q] as NSString).lastPathComponent)),\(String(format: "%.6f", similarity[frame]))\n"
        }
        try AtomicFile.write(orderCSV, to: dir + "/order.csv")
        artifacts.append("order.csv")
        if !losses.isEmpty {
            try writeLossCurve(losses, dir: dir)
            artifacts += ["finetune.csv"] + Figure.files("finetune.png")
            if imageTracker { artifacts.append("sam2_tuned.safetensors") }
        }
        var result: [String: JSONValue] = [
            "queries": .number(Double(queries.count)), "traits": .number(Double(channels - 1)),
            "grid": .array([.number(Double(features.rows)), .number(Double(features.cols))]),
            "feature_seconds": .number(featureSeconds), "tracking_seconds": .number(trackSeconds), "seconds": .number(Date().timeIntervalSince(started)),
        ]
        if let last = losses.last, let first = losses.first { result["finetune_loss"] = .array([.number(Double(first)), .number(Double(last))]) }
        if !o.truth.isEmpty {
            let (iou, csv) = try scoreAgainstTruth(predicted, files: files, o: o, channels: channels, host: request.host)
            try AtomicFile.write(csv, to: dir + "/iou.csv")
            artifacts.append("iou.csv")
            result["iou"] = .array(iou.map { $0.isNaN ? .null : .number($0) })
            let valid = iou.dropFirst().filter { !$0.isNaN }
            result["mIoU_traits"] = .number(valid.reduce(0, +) / Double(max(valid.count, 1)))
        }
        return Response(result: .object(result), artifacts: artifacts)
    }

    func writeLossCurve(_ losses: [Float], dir: String) throws {
        try AtomicFile.write(
            "step,cycle_loss\n" + losses.enumerated().map { "\($0.offset + 1),\(String(format: "%.6f", $0.element))" }.joined(separator: "\n") + "\n",
            to: dir + "/finetune.csv")
        let plot = LinePlot(
            title: "Cycle-consistent fine-tuning (support → queries → support)", xLabel: "step", yLabel: "BCE + Dice loss",
            series: [.init("palindrome loss", points: losses.enumerated().map { (Double($0.offset + 1), Double($0.element)) }, color: LinePlot.color(0))])
        try plot.write(to: dir + "/finetune.png")
    }

    /// Per-trait IoU of the predicted masks against true masks named like the queries, by the C
    /// `segmentation-metrics` plugin through the host.
    func scoreAgainstTruth(_ predicted: [Int: LabelMask], files: [String], o: Options, channels: Int, host: PluginHost) throws -> ([Double], String) {
        let truthFolder = (o.truth as NSString).expandingTildeInPath
        var prediction: [Int64] = [], target: [Int64] = []
        var shape: (Int, Int)?
        for (q, file) in files.enumerated() {
            let stem = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
            guard let path = ["png", "tif", "tiff"].map({ truthFolder + "/" + stem + "." + $0 }).first(where: { FileManager.default.fileExists(atPath: $0) })
            else {
                throw MenagerieError.invalidArgument("truth: no mask named \(stem).png/.tif in \(truthFolder) for query '\(file)'")
            }
            let truth = try LabelMask.read(path)
            guard let p = predicted[q], truth.width == p.width, truth.height == p.height else {
                throw MenagerieError.invalidArgument("truth mask '\(path)' is \(truth.width)×\(truth.height), its query image differs")
            }
            // The metric takes one batch of equal-sized masks: bring every pair to the first's size.
            let (w, h) = shape ?? (p.width, p.height)
            shape = (w, h)
            prediction += p.resized(width: w, height: h).labels.map(Int64.init)
            target += truth.resized(width: w, height: h).labels.map(Int64.init)
        }
        let (w, h) = shape!
        let metric = try MetricProxy(host, id: "segmentation-metrics")
        let classes = max(channels, Int(target.max() ?? 0) + 1)
        let r = try metric.evaluate(
            options: ["classes": .number(Double(classes))],
            inputs: [("prediction", try Tensor(prediction, shape: [files.count, h, w])), ("target", try Tensor(target, shape: [files.count, h, w]))])
        let iou = try r.tensors["iou"]?.doubles() ?? []
        var csv = "label,trait,iou\n"
        for (k, v) in iou.enumerated() {
            let name = k == 0 ? "background" : (k - 1 < o.parts.count ? o.parts[k - 1] : "trait \(k)")
            csv += "\(k),\(csvField(name)),\(v.isNaN ? "" : String(format: "%.4f", v))\n"
        }
        return (iou, csv)
    }

    // MARK: retrieve

    /// Trait retrieval: each query gets the support's mask by propagation, then that prediction is
    /// propagated back onto the support (`paper`) and compared with the support's mask; queries
    /// whose reconstruction agrees best hold the trait most like the support's (IoU descending).
    /// `released` is the released script's behaviour: the second propagation runs from the support
    /// frame labelled with the query's prediction onto the query again, compared with the support
    /// mask, ranked ascending.
    func retrieve(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let (supportImage, supportMask, channels) = try support(o)
        guard o.trait >= 0, o.trait < channels else {
            throw MenagerieError.invalidArgument("trait=\(o.trait) is not a label of the mask (0: all traits, 1…\(channels - 1))")
        }
        guard !o.queries.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' retrieve needs --set queries=FOLDER") }
        let files = try listImages(o.queries, option: "queries")
        let queries = try files.map(readImage)
        var s = try settings(o)
        s.queue = 0 // two-frame videos: no queue
        let src = try source(o, size: o.size)
        let extracted = try src.extract([supportImage] + queries, host: request.host)
        // Fine-tuning (finetune_steps > 0) as in `segment`: the queries are the unlabelled frames.
        let labels = patchLabels(
            supportMask.labels, height: supportMask.height, width: supportMask.width, rows: extracted.rows, cols: extracted.cols, channels: channels)
        _ = try keyValueOptions(o.tracker_options, option: "tracker_options")
        let imageTracker = try tracksImages(o.tracker, host: request.host)
        var call = trackerCall(o, s)
        var (features, losses) = (extracted, [Float]())
        if !imageTracker {
            (features, losses) = try tuned(
                extracted, support: 0, labels: labels, channels: channels, unlabelled: Array(extracted.frames[1...]), o: o,
                settings: s, host: request.host)
        } else if o.finetune_steps > 0 {
            losses = try tuneTracker(&call, support: supportImage, mask: supportMask, unlabelled: queries, o: o, size: o.size, host: request.host)
        }
        // Two-frame pseudo-videos; a tracker of the frames themselves gets [support, query] (or reversed).
        let frames = [supportImage] + queries
        let supportAtSize = supportMask.resized(width: o.size, height: o.size)
        let traits = o.trait > 0 ? [o.trait] : Array(Set(supportMask.labels.filter { $0 > 0 })).sorted()
        var scores: [Double] = [], forwardMasks: [[Int]] = []
        for q in 1...queries.count {
            try request.host.checkCancelled()
            let forward = try call.run(features, order: [0, q], labels: supportMask, size: o.size, host: request.host, images: frames)[0]
            forwardMasks.append(forward)
            let predicted = LabelMask(width: o.size, height: o.size, labels: forward)
            let reconstruction: [Int]
            if predicted.labels.allSatisfy({ $0 == 0 }) {
                reconstruction = predicted.labels // nothing carried over: nothing to reconstruct
            } else if o.ranking == "released" {
                reconstruction = try call.run(features, order: [0, q], labels: predicted, size: o.size, host: request.host, images: frames)[0]
            } else {
                reconstruction = try call.run(features, order: [q, 0], labels: predicted, size: o.size, host: request.host, images: frames)[0]
            }
            let ious = traits.map { labelIoU(reconstruction, supportAtSize.labels, label: $0) }.map { $0.isNaN ? 0 : $0 }
            scores.append(ious.reduce(0, +) / Double(max(ious.count, 1)))
        }
        let ranked = scores.indices.sorted { a, b in
            scores[a] != scores[b] ? (o.ranking == "released" ? scores[a] < scores[b] : scores[a] > scores[b]) : a < b
        }
        let dir = request.host.scratchDirectory
        var csv = "rank,file,score\n"
        for (r, q) in ranked.enumerated() { csv += "\(r + 1),\(csvField((files[q] as NSString).lastPathComponent)),\(String(format: "%.6f", scores[q]))\n" }
        try AtomicFile.write(csv, to: dir + "/retrieval.csv")
        var tiles: [[Image?]] = [], names: [String] = []
        for (r, q) in ranked.prefix(max(0, o.top)).enumerated() {
            let image = try queries[q].rgb().resized(width: o.size, height: o.size, filter: .bilinear)
            let shown = o.trait > 0 ? forwardMasks[q].map { $0 == o.trait ? $0 : 0 } : forwardMasks[q]
            tiles.append([image, try Overlay.labels(on: image, mask: shown)])
            names.append("#\(r + 1) " + String(format: "%.3f", scores[q]))
        }
        var artifacts = ["retrieval.csv"]
        if !tiles.isEmpty {
            try ImageGrid(
                title: "Retrieved images, best first (\(o.trait > 0 ? "trait \(o.trait)" : "all traits"), \(o.ranking) ranking)",
                columnHeaders: ["image", "tracked parts"], rowHeaders: names, tiles: tiles
            ).write(to: dir + "/retrieved.png")
            artifacts += Figure.files("retrieved.png")
        }
        var result: [String: JSONValue] = [
            "queries": .number(Double(files.count)), "ranking": .string(o.ranking),
            "best": .string((files[ranked[0]] as NSString).lastPathComponent), "best_score": .number(scores[ranked[0]]),
        ]
        if let first = losses.first, let last = losses.last {
            try writeLossCurve(losses, dir: dir)
            artifacts += ["finetune.csv"] + Figure.files("finetune.png")
            if imageTracker { artifacts.append("sam2_tuned.safetensors") }
            result["finetune_loss"] = .array([.number(Double(first)), .number(Double(last))])
        }
        return Response(result: .object(result), artifacts: artifacts)
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "retrieve": return try retrieve(request)
        case "study": return try study(request)
        default: throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'")
        }
    }
}
