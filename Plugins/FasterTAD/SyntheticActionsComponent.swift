import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// `synthetic-actions`: the embedded temporal-detection dataset (SyntheticActions), served as
/// tensors or exported in the ActivityNet layout.
struct SyntheticActionsComponent: Dataset {
    struct Options: ComponentOptions {
        var seed = 0
        var classes = 6
        var channels = 64
        var videos = 600
        var val_videos = 150
        var min_snippets = 64
        var max_snippets = 192
        var max_actions = 3
        var noise = 1.4
        var drift = 0.4
        var seconds_per_snippet = 0.5
        var snippets = 100
        var subset = "training"
        var start = 0
        var count = 16
        var aux = true
        var preview = 8
        static let help = [
            "seed": "every video is fixed by this seed", "classes": "action classes (in pairs sharing onset and offset atoms)",
            "channels": "feature channels", "videos": "training videos", "val_videos": "validation videos",
            "min_snippets": "shortest video in snippets", "max_snippets": "longest video in snippets", "max_actions": "most actions in a video",
            "noise": "Gaussian noise (norm per snippet)", "drift": "background drift strength", "seconds_per_snippet": "time a snippet covers",
            "snippets": "batch: videos rescaled to this many snippets", "subset": "batch: training or validation",
            "start": "batch: first video of the subset", "count": "batch: videos", "aux": "export: also write the atomic stream (aux_features/)",
            "preview": "export: videos drawn into preview.png",
        ]
        static let choices = ["subset": ["training", "validation"]]
    }
    static let id = "synthetic-actions"
    static let summary = "Snippet-feature videos with planted actions (atomic onset/body/offset prototypes, drift, noise), ActivityNet layout on export"
    static let operations = [
        OperationSpec(
            "batch", summary: "features of a slice of a subset, rescaled to a fixed snippet count, with the ground truth",
            outputs: [
                TensorSpec("features", dtypes: ["f32"], shape: "N×T×C", summary: "snippet features"),
                TensorSpec("aux", dtypes: ["f32"], shape: "N×T×4", summary: "atomic stream: background, onset, body, offset"),
                TensorSpec("segments", dtypes: ["f64"], shape: "M×4", summary: "video (in the batch), start s, end s, class"),
                TensorSpec("durations", dtypes: ["f64"], shape: "N", summary: "seconds"),
            ]),
        OperationSpec("describe", summary: "classes, subsets, sizes, the generator's settings"),
        OperationSpec("export", summary: "ActivityNet layout: ground_truth.json, features/<video>.npy (T×C), aux_features/, classes.txt, preview.png"),
    ]

    func generator(_ o: Options) throws -> SyntheticActions {
        guard (2...64).contains(o.classes), (4...4096).contains(o.channels), o.videos >= 0, o.val_videos >= 0, o.videos + o.val_videos > 0,
            o.min_snippets >= 16, o.max_snippets >= o.min_snippets, o.max_snippets <= 100_000, (1...16).contains(o.max_actions),
            o.noise >= 0, o.drift >= 0, o.seconds_per_snippet > 0
        else {
            throw MenagerieError.invalidArgument(
                "'\(Self.id)': classes 2…64, channels 4…4096, videos/val_videos ≥ 0 (not both 0), 16 ≤ min_snippets ≤ max_snippets, max_actions 1…16, noise/drift ≥ 0, seconds_per_snippet > 0"
            )
        }
        var c = SyntheticActions.Config()
        c.seed = UInt64(bitPattern: Int64(o.seed))
        c.classes = o.classes
        c.channels = o.channels
        c.trainVideos = o.videos
        c.validationVideos = o.val_videos
        c.minSnippets = o.min_snippets
        c.maxSnippets = o.max_snippets
        c.maxActions = o.max_actions
        c.noise = o.noise
        c.drift = o.drift
        c.secondsPerSnippet = o.seconds_per_snippet
        return SyntheticActions(c)
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let d = try generator(request.options)
        let actions = d.videos.reduce(0) { $0 + $1.actions.count }
        return Response(result: [
            "classes": .array(d.classNames.map { .string($0) }), "channels": .number(Double(d.config.channels)),
            "aux_channels": .number(Double(SyntheticActions.atomicChannels)),
            "subsets": ["training": .number(Double(d.config.trainVideos)), "validation": .number(Double(d.config.validationVideos))],
            "actions": .number(Double(actions)), "snippets": ["min": .number(Double(d.config.minSnippets)), "max": .number(Double(d.config.maxSnippets))],
            "seconds_per_snippet": .number(d.config.secondsPerSnippet),
        ])
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options, d = try generator(o)
        guard (8...4096).contains(o.snippets) else { throw MenagerieError.invalidArgument("snippets must lie in 8…4096, got \(o.snippets)") }
        let indices = d.videos.indices.filter { d.videos[$0].subset == o.subset }
        guard o.start >= 0, o.count > 0, o.start < indices.count else {
            throw MenagerieError.invalidArgument(
                "'\(Self.id)' subset '\(o.subset)' has \(indices.count) videos; start \(o.start) with count \(o.count) selects none")
        }
        let picked = Array(indices[o.start..<min(indices.count, o.start + o.count)])
        let c = d.config.channels, t = o.snippets, a = SyntheticActions.atomicChannels
        var features = [Float](), aux = [Float](), segments = [Double](), durations = [Double]()
        for (k, i) in picked.enumerated() {
            let v = d.videos[i]
            features += rescaleSnippets(d.features(i), snippets: v.snippets, channels: c, to: t)
            aux += rescaleSnippets(d.atomicFeatures(i), snippets: v.snippets, channels: a, to: t)
            for s in v.actions { segments += [Double(k), s.start, s.end, Double(s.label)] }
            durations.append(v.duration)
        }
        return Response(
            result: [
                "subset": .string(o.subset), "start": .number(Double(o.start)), "count": .number(Double(picked.count)),
                "total": .number(Double(indices.count)), "ids": .array(picked.map { .string(d.videos[$0].id) }),
            ],
            tensors: [
                ("features", try Tensor(features, shape: [picked.count, t, c])),
                ("aux", try Tensor(aux, shape: [picked.count, t, a])),
                ("segments", try Tensor(segments, shape: [segments.count / 4, 4])),
                ("durations", Tensor(durations)),
            ])
    }

    func export(_ request: Request<Options>) throws -> Response {
        let o = request.options, d = try generator(o)
        let dir = request.host.scratchDirectory
        try FileManager.default.createDirectory(atPath: dir + "/features", withIntermediateDirectories: true)
        if o.aux { try FileManager.default.createDirectory(atPath: dir + "/aux_features", withIntermediateDirectories: true) }
        for (i, v) in d.videos.enumerated() {
            if i % 64 == 0 {
                try request.host.checkCancelled()
                request.host.progress(i, of: d.videos.count, "export")
            }
            try NPY.encode(try Tensor(d.features(i), shape: [v.snippets, d.config.channels])).write(to: URL(fileURLWithPath: "\(dir)/features/\(v.id).npy"))
            if o.aux {
                try NPY.encode(try Tensor(d.atomicFeatures(i), shape: [v.snippets, SyntheticActions.atomicChannels]))
                    .write(to: URL(fileURLWithPath: "\(dir)/aux_features/\(v.id).npy"))
            }
        }
        try AtomicFile.write(ActivityNet.json(d.groundTruth(), taxonomy: d.classNames), to: dir + "/ground_truth.json")
        try AtomicFile.write(d.classNames.joined(separator: "\n") + "\n", to: dir + "/classes.txt")
        var artifacts = ["ground_truth.json", "classes.txt", "features"] + (o.aux ? ["aux_features"] : [])
        if o.preview > 0 {
            try preview(d, count: o.preview).write(to: dir + "/preview.png")
            artifacts += Figure.files("preview.png")
        }
        return Response(
            result: [
                "videos": .number(Double(d.videos.count)), "classes": .array(d.classNames.map { .string($0) }),
                "ground_truth": "ground_truth.json", "features": "features",
            ], artifacts: artifacts)
    }

    /// A few videos as feature heat-maps (time across, the first 32 channels up, viridis) with their
    /// ground-truth actions as coloured bars above each, a legend of the classes and a colour bar.
    func preview(_ d: SyntheticActions, count: Int) -> Figure {
        let shown = Array(d.videos.prefix(count).enumerated())
        let panel = 150.0, width = 820.0, legendColumns = 4
        let legendHeight = Double((d.classNames.count + legendColumns - 1) / legendColumns) * 16 + 12
        var f = Figure(width: width, height: 34 + Double(shown.count) * panel + legendHeight)
        f.title("synthetic-actions: snippet features and ground truth")
        var firstAxes: Axes?
        for (row, (i, v)) in shown.enumerated() {
            let features = d.features(i), ch = d.config.channels, shownChannels = min(32, ch)
            let lo = features.min() ?? 0, hi = features.max() ?? 1
            var px = [UInt8](repeating: 0, count: v.snippets * shownChannels * 3)
            for t in 0..<v.snippets {
                for c in 0..<shownChannels {
                    let col = Color.viridis(Double((features[t * ch + c] - lo) / max(hi - lo, 1e-6)))
                    let k = 3 * ((shownChannels - 1 - c) * v.snippets + t)
                    (px[k], px[k + 1], px[k + 2]) = (col.r, col.g, col.b)
                }
            }
            let box = Rect(x: 0, y: 34 + Double(row) * panel, width: width - 80, height: panel)
            let axes = f.axes(
                in: box, title: v.id, xLabel: "time (s)", yLabel: "channel", x: 0...v.duration, y: 0...Double(shownChannels),
                grid: false, series: row == 0 ? d.classNames.count : 1)
            f.image(Image(width: v.snippets, height: shownChannels, channels: 3, pixels: px), in: axes.frame)
            for a in v.actions {
                let x0 = axes.px(a.start), x1 = max(axes.px(a.end), x0 + 1)
                f.rect(Rect(x: x0, y: axes.frame.y - 7, width: x1 - x0, height: 6), fill: LinePlot.color(a.label))
            }
            if row == 0 {
                firstAxes = axes
                f.legend(
                    d.classNames.enumerated().map { ($0.element, .box(LinePlot.color($0.offset))) },
                    at: Point(axes.frame.x, f.height - legendHeight + 4), columns: legendColumns)
            }
            f.endAxes()
        }
        if let a = firstAxes {
            f.colorBar(
                in: Rect(x: width - 70, y: a.frame.y, width: 60, height: a.frame.height), range: 0...1, label: "feature (min–max scaled)",
                colormap: Color.viridis)
        }
        return f
    }
}
