import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// `faster-tad`: train, detect, evaluate and ensemble temporal action detectors on snippet features.
struct FasterTADComponent: Detector {
    struct Options: ComponentOptions {
        // Data
        var data = ""
        var ground_truth = ""
        var features = ""
        var aux_features = ""
        var aux = true
        var train_subset = "training"
        var subset = "validation"
        // synthetic-actions (when no data is given)
        var videos = 600
        var val_videos = 150
        var classes = 6
        var channels = 64
        var noise = 1.4
        // Network
        var model = ""
        var snippets = 100
        var hidden = 128
        var heads = 4
        var roi_channels = 64
        var roi_points = 16
        var context_points = 4
        var context = 0.25
        var head_hidden = 256
        var max_duration = 1.0
        // Training
        var epochs = 16
        var batch = 16
        var lr = 3e-3
        var weight_decay = 1e-4
        var boundary_weight = 1.0
        var regression_weight = 1.0
        var fake_proposals = true
        var fake_per_gt = 4
        var fake_jitter = 0.1
        var random_proposals = 16
        var rois_per_video = 64
        var positive_iou = 0.5
        var boundary_proposals = 32
        var checkpoint_every = 0
        var evaluate = true
        var save_dtype = "f32"
        // Inference
        var proposals = 200
        var labels_per_proposal = 2
        var boundary_power = 0.5
        var sigma = 0.4
        var nms = "gaussian"
        var nms_threshold = 0.0
        var top_n = 100
        var timelines = 6
        var video_list = ""
        var detect_batch = 32
        // Evaluate / ensemble
        var predictions = ""
        var tiou_thresholds: [Double] = []
        var unknown_labels = "error"
        var members: [String] = []
        var weights: [Double] = []
        var mode = "merge"
        var fusion_iou = 0.55

        static let help = [
            "data":
                "an ActivityNet folder: ground_truth.json, features/ (one <video>.npy or .safetensors, T×C), optional aux_features/ (empty: the embedded synthetic-actions)",
            "ground_truth": "the ground-truth JSON (default: <data>/ground_truth.json)", "features": "the feature folder (default: <data>/features)",
            "aux_features": "the auxiliary (atomic) feature folder (default: <data>/aux_features when present)",
            "aux": "use the auxiliary feature stream when there is one (the Auxiliary-Features Block)",
            "train_subset": "train: the subset trained on", "subset": "the subset detected and evaluated (or 'all')",
            "videos": "synthetic-actions: training videos", "val_videos": "synthetic-actions: validation videos",
            "classes": "synthetic-actions: action classes (pairs share onset and offset)", "channels": "synthetic-actions: feature channels",
            "noise": "synthetic-actions: noise level",
            "model": "detect/evaluate: a model folder from train (empty: the embedded model)",
            "snippets": "train: every video is rescaled to this many snippets (linear interpolation)", "hidden": "train: encoder width",
            "heads": "train: attention heads of the context module", "roi_channels": "train: channels the RoI head samples",
            "roi_points": "train: RoIAlign samples inside a proposal", "context_points": "train: samples in each context extension",
            "context": "train: each context extension as a fraction of the proposal", "head_hidden": "train: RoI head width",
            "max_duration": "train: longest proposal as a fraction of the video",
            "epochs": "train: passes over the training videos", "batch": "train: videos per step", "lr": "train: AdamW peak learning rate (cosine decay)",
            "weight_decay": "train: AdamW weight decay", "boundary_weight": "train: weight of the boundary loss",
            "regression_weight": "train: weight of the offset loss",
            "fake_proposals": "train: inject ground-truth-derived proposals (Fake-Proposal Generation)",
            "fake_per_gt": "train: jittered copies per ground truth", "fake_jitter": "train: jitter std of fake proposal bounds, × the segment length",
            "random_proposals": "train: random segments per video (background examples)", "rois_per_video": "train: RoIs sampled per video",
            "positive_iou": "train: tIoU with a ground truth that makes a RoI positive", "boundary_proposals": "train: the network's own proposals per video",
            "checkpoint_every": "train: also save checkpoints/epoch-N every N epochs (0: only the final model)",
            "evaluate": "train: detect on the evaluation subset at the end and report mAP",
            "save_dtype": "train: weights written as f32 or f16",
            "proposals": "detect: proposals per video into the RoI head", "labels_per_proposal": "detect: best classes kept per proposal",
            "boundary_power": "detect: score = p(class) · (p_start · p_end)^this", "sigma": "detect: Soft-NMS Gaussian σ (score · exp(−tIoU²/σ))",
            "nms": "detect/ensemble: gaussian or linear Soft-NMS, or hard NMS",
            "nms_threshold": "detect: only segments overlapping more than this are decayed (the NMS threshold for linear/hard)",
            "top_n": "detect: detections kept per video", "timelines": "PNG timelines written (ground truth vs detections), 0: none",
            "video_list":
                "detect: a text file of video ids, one per line: only these videos of the subset, in this order (default: all of them); shards with --shard",
            "detect_batch": "detect: videos per forward pass",
            "predictions": "evaluate: an ActivityNet predictions JSON (empty: detect with the model first)",
            "tiou_thresholds": "evaluate: tIoU thresholds (default 0.50:0.05:0.95)",
            "unknown_labels": "evaluate: a predicted label the ground truth lacks — error (as the official code) or ignore",
            "members": "ensemble: predictions JSON files of several detectors", "weights": "ensemble: one score weight per member (default 1 each)",
            "mode": "ensemble: merge (pool + Soft-NMS) or fusion (weighted segment fusion + Soft-NMS)",
            "fusion_iou": "ensemble: tIoU at which fusion joins segments",
        ]
        static let choices = [
            "save_dtype": ["f32", "f16"], "nms": ["gaussian", "linear", "hard"], "unknown_labels": ["error", "ignore"], "mode": ["merge", "fusion"],
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "videos": 1...1e6, "val_videos": 0...1e6, "classes": 1...1e5, "channels": 1...65536, "noise": 0...1e6,
            "snippets": 8...4096, "hidden": 1...65536, "heads": 1...65536, "roi_channels": 1...65536, "roi_points": 1...4096,
            "context_points": 0...4096, "context": 0...100, "head_hidden": 1...65536, "max_duration": 0...1,
            "epochs": 1...1e6, "batch": 1...1e6, "lr": 0...1e3, "weight_decay": 0...1e3, "boundary_weight": 0...1e6, "regression_weight": 0...1e6,
            "fake_per_gt": 0...1e4, "fake_jitter": 0...1e3, "random_proposals": 0...1e6, "rois_per_video": 1...1e6, "positive_iou": 0...1,
            "boundary_proposals": 0...1e6, "checkpoint_every": 0...1e6, "proposals": 1...1e6, "labels_per_proposal": 1...1e5,
            "boundary_power": 0...1e3, "sigma": 0...1e6, "nms_threshold": 0...1, "top_n": 1...1e7, "timelines": 0...1e5, "detect_batch": 1...1e6,
            "tiou_thresholds": 0...1, "weights": 0...1e6, "fusion_iou": 0...1,
        ]
    }

    static let id = "faster-tad"
    static let summary = "Faster-TAD: temporal action detection in one network (Chen et al. 2022) on snippet features, ActivityNet in and out"
    static let inTour = true
    static let operations = [
        OperationSpec(
            "detect", summary: "detect actions in every video of the subset → predictions.json (ActivityNet), timelines",
            inputs: [
                TensorSpec("features", dtypes: ["f32"], shape: "T×C", summary: "one video's snippet features (instead of a data folder)", optional: true),
                TensorSpec("aux", dtypes: ["f32"], shape: "T×Ca", summary: "its auxiliary (atomic) stream, for models that take one", optional: true),
                TensorSpec("video_list", shape: "text file", summary: "video ids, one per line (passed as the video_list option)", optional: true),
            ],
            outputs: [
                TensorSpec("segments", dtypes: ["f64"], shape: "K×3", summary: "start, end (fractions of the video), score — with --input features"),
                TensorSpec("labels", dtypes: ["i64"], shape: "K", summary: "class index — with --input features"),
            ],
            sharding: ShardingSpec(
                option: "video_list", items: "lines", extensions: [], batchOption: "detect_batch", sum: ["videos", "detections"],
                jsonMaps: ["predictions.json": "results"],
                refuses: [
                    "timelines!=0": "timelines are drawn for the first videos of each call; pass --set timelines=0 and draw them from the merged predictions"
                ])),
        OperationSpec("train", summary: "train on a data folder or synthetic-actions → model/ (config.json, model.safetensors), curve.csv, mAP"),
        OperationSpec("evaluate", summary: "ActivityNet detection mAP of predictions (or of the model's detections) against the ground truth"),
        OperationSpec("ensemble", summary: "combine several detectors' predictions files (merge + Soft-NMS, or weighted fusion)"),
    ]

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "train": return try train(request)
        case "evaluate": return try evaluateOperation(request)
        default: return try ensemble(request)
        }
    }

    // MARK: Options → parts

    func nms(_ o: Options) throws -> SoftNMS {
        guard o.sigma > 0, o.top_n > 0, (0...1).contains(o.nms_threshold) else {
            throw MenagerieError.invalidArgument("sigma and top_n must be > 0 and nms_threshold in [0, 1]")
        }
        return SoftNMS(
            sigma: o.sigma, method: SoftNMS.Method(rawValue: o.nms) ?? .gaussian, threshold: o.nms_threshold, topN: o.top_n,
            minScore: 0, perLabel: true)
    }

    func inference(_ o: Options) throws -> TAD.InferenceOptions {
        guard o.proposals > 0, o.labels_per_proposal > 0, o.boundary_power >= 0 else {
            throw MenagerieError.invalidArgument("proposals and labels_per_proposal must be > 0, boundary_power ≥ 0")
        }
        return TAD.InferenceOptions(proposals: o.proposals, labelsPerProposal: o.labels_per_proposal, boundaryPower: o.boundary_power, nms: try nms(o))
    }

    func syntheticConfig(_ o: Options, seed: UInt64) throws -> SyntheticActions.Config {
        guard (2...64).contains(o.classes), (4...4096).contains(o.channels), o.videos > 0, o.val_videos > 0, o.noise >= 0 else {
            throw MenagerieError.invalidArgument("synthetic-actions: classes in 2…64, channels in 4…4096, videos and val_videos > 0, noise ≥ 0")
        }
        var c = SyntheticActions.Config()
        c.seed = seed
        c.classes = o.classes
        c.channels = o.channels
        c.noise = o.noise
        c.trainVideos = o.videos
        c.validationVideos = o.val_videos
        return c
    }

    /// The data the options name: a folder in ActivityNet layout, or the embedded generator.
    func dataset(_ o: Options, subsets: [String], snippets: Int, classes: [String]?, host: PluginHost) throws -> TADDataset {
        if o.data.isEmpty && o.ground_truth.isEmpty {
            // The generator's seed is part of the data, fixed so train and detect see the same videos.
            return TADDataset.synthetic(try syntheticConfig(o, seed: 0), snippets: snippets, aux: o.aux)
        }
        let gt = o.ground_truth.isEmpty ? o.data + "/ground_truth.json" : o.ground_truth
        let features = o.features.isEmpty ? o.data + "/features" : o.features
        var aux: String? = o.aux_features.isEmpty ? nil : o.aux_features
        if aux == nil && o.aux && !o.data.isEmpty && FileManager.default.fileExists(atPath: o.data + "/aux_features") { aux = o.data + "/aux_features" }
        if !o.aux { aux = nil }
        return try TADDataset.folder(groundTruth: gt, features: features, aux: aux, subsets: subsets, snippets: snippets, classes: classes)
    }

    /// The model shipped with the plugin (trained here on synthetic-actions; Docs/methods/faster-tad.md).
    func embeddedModelFolder() throws -> String {
        try PluginResources.path(module: "FasterTAD", item: "faster-tad-synthetic")
    }

    func loadModel(_ o: Options) throws -> FasterTADNet {
        try FasterTADNet.load(folder: o.model.isEmpty ? try embeddedModelFolder() : o.model)
    }

    // MARK: detect

    func detect(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let net = try loadModel(o)
        let inf = try inference(o)
        if let x = request.inputs["features"] {
            return try detectTensor(net, x, aux: request.inputs["aux"], options: inf)
        }
        let data = try dataset(o, subsets: [o.subset], snippets: net.config.snippets, classes: net.config.classes, host: request.host)
        try checkCompatible(net, data)
        var videos = data.subset(o.subset)
        if !o.video_list.isEmpty {
            let ids: [String]
            do { ids = try FolderFiles.lines(o.video_list, option: "video_list") } catch { throw MenagerieError.invalidArgument("\(error)") }
            let byID = Dictionary(videos.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            videos = try ids.map { id in
                guard let v = byID[id.trimmingCharacters(in: .whitespaces)] else {
                    throw MenagerieError.invalidArgument(
                        "video_list: '\(id)' (\(o.video_list)) is not a video of subset '\(o.subset)' with features in \(data.source)")
                }
                return v
            }
        }
        let t0 = Date()
        let predictions = try runDetector(
            net, videos: videos, options: inf, classes: net.config.classes, host: request.host, batch: max(1, o.detect_batch))
        let seconds = Date().timeIntervalSince(t0)
        let dir = request.host.scratchDirectory
        try AtomicFile.write(ActivityNet.json(predictions), to: dir + "/predictions.json")
        var artifacts = ["predictions.json"]
        artifacts += try writeTimelines(data, predictions: predictions, count: o.timelines, classes: net.config.classes, dir: dir)
        return Response(
            result: [
                "videos": .number(Double(videos.count)), "detections": .number(Double(predictions.count)),
                "videos_per_s": .number(Double(videos.count) / max(seconds, 1e-9)), "source": .string(data.source),
                "predictions": "predictions.json",
            ], artifacts: artifacts)
    }

    func detectTensor(_ net: FasterTADNet, _ x: Tensor, aux: Tensor?, options: TAD.InferenceOptions) throws -> Response {
        let c = net.config
        guard x.rank == 2, x.shape[1] == c.input_channels, x.shape[0] >= 1 else {
            throw MenagerieError.invalidArgument("input 'features' must be T × \(c.input_channels) (this model's channels), got \(x.shape)")
        }
        let values = try x.converted(to: .float32).scalars(as: Float.self)
        var a: [Float] = []
        if c.aux_channels > 0 {
            guard let aux, aux.rank == 2, aux.shape[1] == c.aux_channels else {
                throw MenagerieError.invalidArgument("this model takes an auxiliary stream: pass --input aux=FILE.npy (T × \(c.aux_channels))")
            }
            a = rescaleSnippets(try aux.converted(to: .float32).scalars(as: Float.self), snippets: aux.shape[0], channels: c.aux_channels, to: c.snippets)
        }
        let video = TADVideo(
            id: "input", subset: "", duration: 1, features: rescaleSnippets(values, snippets: x.shape[0], channels: c.input_channels, to: c.snippets),
            aux: a, segments: [])
        let dets = TAD.detect(net, videos: [video], options: options)[0]
        return Response(
            result: ["detections": .number(Double(dets.count)), "classes": .array(c.classes.map { .string($0) })],
            tensors: [
                ("segments", try Tensor(dets.flatMap { [$0.start, $0.end, $0.score] }, shape: [dets.count, 3])),
                ("labels", Tensor(dets.map { Int64($0.label) })),
            ])
    }

    func checkCompatible(_ net: FasterTADNet, _ data: TADDataset) throws {
        guard data.channels == net.config.input_channels else {
            throw MenagerieError.invalidArgument("the features have \(data.channels) channels; the model expects \(net.config.input_channels)")
        }
        guard data.auxChannels == net.config.aux_channels else {
            throw MenagerieError.invalidArgument(
                net.config.aux_channels > 0
                    ? "the model takes a \(net.config.aux_channels)-channel auxiliary stream; give aux_features= (the data has \(data.auxChannels))"
                    : "the model takes no auxiliary stream; pass --set aux=false")
        }
    }

    /// Detections of `videos` in seconds, batched, with progress.
    func runDetector(
        _ net: FasterTADNet, videos: [TADVideo], options: TAD.InferenceOptions, classes: [String], host: PluginHost, batch: Int = 32
    ) throws -> ActivityNet.Predictions {
        var out: [(id: String, detections: [ActivityNet.Detection])] = []
        for start in stride(from: 0, to: videos.count, by: batch) {
            try host.checkCancelled()
            let part = Array(videos[start..<min(videos.count, start + batch)])
            for (v, dets) in zip(part, TAD.detect(net, videos: part, options: options)) {
                out.append(
                    (
                        v.id,
                        dets.map { ActivityNet.Detection(start: $0.start * v.duration, end: $0.end * v.duration, score: $0.score, label: classes[$0.label]) }
                    ))
            }
            host.progress(min(videos.count, start + batch), of: videos.count, "detect")
        }
        return ActivityNet.Predictions(videos: out)
    }

    func writeTimelines(_ data: TADDataset, predictions: ActivityNet.Predictions, count: Int, classes: [String], dir: String) throws -> [String] {
        guard count > 0 else { return [] }
        try FileManager.default.createDirectory(atPath: dir + "/timelines", withIntermediateDirectories: true)
        let gt = Dictionary(data.groundTruth.videos.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var written: [String] = []
        for (id, dets) in predictions.videos.prefix(count) {
            let v = gt[id]
            let figure = Timeline.figure(video: id, duration: v?.duration ?? 0, groundTruth: v?.annotations ?? [], detections: dets, classes: classes)
            let name = "timelines/\(id.replacingOccurrences(of: "/", with: "_")).png"
            try figure.write(to: dir + "/" + name)
            written += Figure.files(name)
        }
        return written
    }

    // MARK: evaluate

    func evaluateOperation(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let dir = request.host.scratchDirectory
        var artifacts: [String] = []
        let predictions: ActivityNet.Predictions
        let groundTruth: ActivityNet.GroundTruth
        var detectRate: Double? = nil
        if o.predictions.isEmpty {
            let net = try loadModel(o)
            let data = try dataset(o, subsets: [o.subset], snippets: net.config.snippets, classes: net.config.classes, host: request.host)
            try checkCompatible(net, data)
            let videos = data.subset(o.subset)
            let t0 = Date()
            predictions = try runDetector(net, videos: videos, options: try inference(o), classes: net.config.classes, host: request.host)
            detectRate = Double(videos.count) / max(Date().timeIntervalSince(t0), 1e-9)
            groundTruth = data.groundTruth
            try AtomicFile.write(ActivityNet.json(predictions), to: dir + "/predictions.json")
            artifacts.append("predictions.json")
            artifacts += try writeTimelines(data, predictions: predictions, count: o.timelines, classes: net.config.classes, dir: dir)
        } else {
            guard !o.ground_truth.isEmpty || !o.data.isEmpty else {
                throw MenagerieError.invalidArgument("evaluate with predictions= needs ground_truth=FILE (or data=FOLDER holding ground_truth.json)")
            }
            groundTruth = try ActivityNet.readGroundTruth(o.ground_truth.isEmpty ? o.data + "/ground_truth.json" : o.ground_truth)
            predictions = try ActivityNet.readPredictions(o.predictions)
        }
        var r = try DetectionMetricComponent.report(
            groundTruth: groundTruth, predictions: predictions, subset: o.subset,
            thresholds: o.tiou_thresholds, unknownLabels: o.unknown_labels, dir: dir)
        artifacts += r.artifacts
        if let detectRate, case .object(var obj) = r.result {
            obj["detect_videos_per_s"] = .number(detectRate)
            r.result = .object(obj)
        }
        r.artifacts = artifacts
        return r
    }

    // MARK: ensemble

    func ensemble(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.members.count >= 2 else {
            throw MenagerieError.invalidArgument(
                "ensemble needs at least two predictions files: --set 'members=[\"a/predictions.json\",\"b/predictions.json\"]'")
        }
        let weights = o.weights.isEmpty ? [Double](repeating: 1, count: o.members.count) : o.weights
        guard weights.count == o.members.count, weights.allSatisfy({ $0 > 0 }) else {
            throw MenagerieError.invalidArgument("weights must hold one positive number per member (\(o.members.count)), got \(o.weights.count)")
        }
        let files = try o.members.map { try ActivityNet.readPredictions($0) }
        let combined = combine(files, weights: weights, mode: Ensemble.Mode(rawValue: o.mode) ?? .merge, fusionIoU: o.fusion_iou, nms: try nms(o))
        let dir = request.host.scratchDirectory
        try AtomicFile.write(ActivityNet.json(combined), to: dir + "/predictions.json")
        var result: [String: JSONValue] = [
            "members": .number(Double(files.count)), "mode": .string(o.mode),
            "videos": .number(Double(combined.videos.count)), "detections": .number(Double(combined.count)),
            "predictions": "predictions.json",
        ]
        if !o.ground_truth.isEmpty || !o.data.isEmpty {
            let gt = try ActivityNet.readGroundTruth(o.ground_truth.isEmpty ? o.data + "/ground_truth.json" : o.ground_truth)
            let thresholds = o.tiou_thresholds.isEmpty ? ActivityNetEvaluation.defaultThresholds : o.tiou_thresholds
            let unknown = ActivityNetEvaluation.UnknownLabels(rawValue: o.unknown_labels) ?? .error
            let members = try files.map {
                try ActivityNetEvaluation.detection(groundTruth: gt, predictions: $0, subset: o.subset, thresholds: thresholds, unknownLabels: unknown)
                    .averageMAP
            }
            let r = try ActivityNetEvaluation.detection(
                groundTruth: gt, predictions: combined, subset: o.subset, thresholds: thresholds, unknownLabels: unknown)
            result["member_average_mAP"] = .array(members.map { .number($0) })
            result["average_mAP"] = .number(r.averageMAP)
            result["mAP"] = .array(r.mAP.map { .number($0) })
            result["tiou_thresholds"] = .array(thresholds.map { .number($0) })
        }
        return Response(result: .object(result), artifacts: ["predictions.json"])
    }

    /// Per video, the members' detections (labels by name) combined.
    func combine(_ files: [ActivityNet.Predictions], weights: [Double], mode: Ensemble.Mode, fusionIoU: Double, nms: SoftNMS) -> ActivityNet.Predictions {
        var order: [String] = [], seen = Set<String>()
        var labelIndex: [String: Int] = [:], labels: [String] = []
        var byVideo: [String: [[ScoredSegment]]] = [:]
        for (m, f) in files.enumerated() {
            for (id, dets) in f.videos {
                if seen.insert(id).inserted { order.append(id) }
                var lists = byVideo[id] ?? [[ScoredSegment]](repeating: [], count: files.count)
                for d in dets {
                    let l =
                        labelIndex[d.label]
                        ?? {
                            labelIndex[d.label] = labels.count
                            labels.append(d.label)
                            return labels.count - 1
                        }()
                    lists[m].append(ScoredSegment(start: d.start, end: d.end, score: d.score, label: l))
                }
                byVideo[id] = lists
            }
        }
        return ActivityNet.Predictions(
            videos: order.map { id in
                let merged = Ensemble.combine(byVideo[id]!, weights: weights, mode: mode, fusionIoU: fusionIoU, nms: nms)
                return (id, merged.map { ActivityNet.Detection(start: $0.start, end: $0.end, score: $0.score, label: labels[$0.label]) })
            })
    }
}

/// The plugin: Faster-TAD, the ActivityNet metrics and the synthetic-actions dataset.
public enum FasterTADPlugin: Plugin {
    public static let name = "faster-tad"
    public static let version = "1.0.0"
    public static let summary = "Temporal action detection: Faster-TAD, the exact ActivityNet-1.3 evaluation (mAP, AR@AN) and synthetic-actions"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let paper: Paper? = Paper(
        title: "Faster-TAD: Towards Temporal Action Detection with Proposal Generation and Classification in a Unified Network",
        url: "https://arxiv.org/abs/2204.02674")
    public static let components: [any Component.Type] = [
        FasterTADComponent.self, DetectionMetricComponent.self,
        ProposalMetricComponent.self, SyntheticActionsComponent.self,
    ]
}
