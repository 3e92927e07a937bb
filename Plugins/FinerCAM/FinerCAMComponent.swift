import Foundation
import Imaging
import MenagerieKit
import Tensors
import Vision

/// Finer-CAM as a plugin of its own: the CAM itself is computed by a base explainer called through
/// the host (one of the five built-in CAMs of the `cam` plugin, or any explainer component), with
/// Finer-CAM's score as its target. A base whose schema declares `scorer` calls this component's
/// `score` operation back (exact for every base, Score-CAM included); any other base gets the
/// linearised target: one call for the logits, then a second with `target_weights` = ∂S/∂y at them
/// (exact for gradient CAMs, whose maps depend on the score only through ∂S/∂y).
struct FinerCAMComponent: Explainer {
    struct Options: ComponentOptions {
        var classifier = "", images = "", target = -1, layer = -1
        var base = "gradcam"
        var baseOptions: [String] = []
        var alpha = 1.0
        var mode = "default"
        var ranks = [1, 2, 3]
        var weighting = "code"
        var linearise = false
        var perSpecies = 1
        static let help = [
            "classifier": "the classifier folder passed to the base CAM (timm ViT or ConvNet config.json + model.safetensors)",
            "images": "a PNG/TIFF/JPEG file or a folder of them (sorted by name); or pass the tensor input 'images'",
            "target": "the class to explain (-1: each image's top class)",
            "layer": "the target layer passed to the base CAM (-1: the last block)",
            "perSpecies": "tour: test images per synthetic-tol species in the comparison",
            "base": "the base CAM: gradcam, layercam, scorecam, gradcampp, hirescam (the cam plugin's), or any explainer component id",
            "baseOptions": "key=value options passed to the base CAM as they are (e.g. for a third-party CAM)",
            "alpha": "weight of the similar classes (0: the base CAM)",
            "mode": "default: compare with the classes at 'ranks' of closeness of logits; compare: only the closest (rank 1)",
            "ranks": "positions in the order of closeness of logits (0 = the target)",
            "weighting": "code: softmax-weighted comparisons (released code, default); paper: uniform average",
            "linearise": "always use the linearised target (two base calls, the second with target_weights = ∂S/∂y), even when the base takes a scorer",
        ]
        static let choices = ["mode": ["default", "compare"], "weighting": ["code", "paper"]]
    }
    static let id = "finer-cam"
    static let summary = "Finer-CAM: the target against its most similar classes, so shared features cancel (Zhang et al., CVPR 2025)"
    static let operations = [
        OperationSpec(
            "explain", summary: "class-activation maps of the base CAM with Finer-CAM's score, overlays",
            inputs: [
                TensorSpec(
                    "images", dtypes: ["f32"], shape: "N×3×S×S",
                    summary: "normalised images as .npy, or a PNG/TIFF/JPEG file or folder (passed as the images option)", optional: true),
                TensorSpec("targets", dtypes: ["i64", "i32", "u8"], shape: "N", summary: "the class to explain per image (−1: its top class)", optional: true),
            ],
            outputs: [
                TensorSpec("maps", dtypes: ["f32"], shape: "N×S×S", summary: "the class-activation maps at input size, in input order"),
                TensorSpec("grid", dtypes: ["f32"], shape: "N×h×w", summary: "the maps on the base's grid (when the base returns one)"),
                TensorSpec("logits", dtypes: ["f32"], shape: "N×C", summary: "the classifier's logits"),
            ],
            sharding: ShardingSpec(option: "images", extensions: ImageFiles.extensions, sum: ["images"], indexed: ["overlay_"])),
        OperationSpec(
            "score", summary: "Finer-CAM's score S and ∂S/∂y of rows of logits (the scorer a base CAM calls back)",
            inputs: [
                TensorSpec("logits", dtypes: ["f32"], shape: "M×C", summary: "the rows to score"),
                TensorSpec(
                    "reference", dtypes: ["f32"], shape: "M×C", summary: "each row's unmasked logits: the comparison classes come from them (default: logits)",
                    optional: true),
                TensorSpec("targets", dtypes: ["i64", "i32", "u8"], shape: "M", summary: "each row's target class"),
            ],
            outputs: [
                TensorSpec("scores", dtypes: ["f32"], shape: "M", summary: "S of each row"),
                TensorSpec("grad_logits", dtypes: ["f32"], shape: "M×C", summary: "∂S/∂y of each row"),
            ]),
    ]

    /// The built-in base names and the components they stand for.
    static let builtInBases = ["gradcam": "grad-cam", "layercam": "layer-cam", "scorecam": "score-cam", "gradcampp": "grad-cam-pp", "hirescam": "hires-cam"]

    static func finerOptions(_ o: Options) throws -> FinerOptions {
        guard o.ranks.allSatisfy({ $0 >= 0 }), !o.ranks.isEmpty else { throw MenagerieError.invalidArgument("option 'ranks' needs non-negative positions") }
        return FinerOptions(alpha: Float(o.alpha), ranks: o.mode == "compare" ? [1] : o.ranks, weighting: o.weighting)
    }

    func explain(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let finer = try Self.finerOptions(o)
        let baseID = Self.builtInBases[o.base] ?? o.base
        // Images from a path are read here (with the classifier's preprocessing) so that the overlays
        // can be drawn here; the base gets them as a tensor.
        var loaded: LoadedImages? = nil
        var images = request.inputs["images"]?.owned()
        if images == nil, !o.images.isEmpty, !o.classifier.isEmpty {
            do {
                let classifier = try loadClassifier(folder: (o.classifier as NSString).expandingTildeInPath)
                loaded = try LoadedImages(path: (o.images as NSString).expandingTildeInPath, classifier: classifier)
            } catch let e as CAMError { throw MenagerieError.invalidArgument("\(e)") } catch let e as FormatError {
                throw MenagerieError.invalidArgument("\(e)")
            }
            images = loaded!.images
        }
        let run = try FinerRun(
            host: request.host, base: baseID, options: o, finer: finer, images: images, targets: request.inputs["targets"]?.owned())
        let artifacts = try writeOverlays(pictures: loaded?.pictures ?? [], maps: run.maps, to: request.host.scratchDirectory)
        var summary = run.summary(options: o, finer: finer)
        if let files = loaded?.files, case .array(var items)? = summary["per_image"] {
            for i in items.indices where i < files.count {
                if case .object(var item) = items[i] {
                    item["file"] = .string(files[i])
                    items[i] = .object(item)
                }
            }
            summary["per_image"] = .array(items)
        }
        if let notes = loaded?.notes, !notes.isEmpty {
            summary["notes"] = .array(notes.map { .string($0) } + (summary["notes"]?.arrayValue ?? []))
        }
        var tensors: [(String, Tensor)] = [("maps", run.maps)]
        if let grid = run.grid { tensors.append(("grid", grid)) }
        tensors.append(("logits", run.logits))
        return Response(result: .object(summary), tensors: tensors, artifacts: artifacts)
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        guard operation == "score" else { throw MenagerieError.notFound("'\(Self.id)' has no operation '\(operation)'") }
        let finer = try Self.finerOptions(request.options)
        let logits = try request.inputs.require("logits", dtypes: [.float32], rank: 2)
        let reference = request.inputs["reference"] ?? logits
        guard reference.dtype == .float32, reference.shape == logits.shape else {
            throw MenagerieError.invalidArgument("input 'reference' must be f32 \(logits.shape) like 'logits', got \(reference.dtype.name) \(reference.shape)")
        }
        let (m, c) = (logits.shape[0], logits.shape[1])
        let targets = try request.inputs.require("targets", dtypes: [.int64, .int32, .uint8], rank: 1).integers()
        guard targets.count == m, targets.allSatisfy({ (0..<c).contains($0) }) else {
            throw MenagerieError.invalidArgument("input 'targets' must hold \(m) classes in 0..<\(c)")
        }
        let (scores, gradients) = try finer.scoreAndGradients(logits: logits.owned(), reference: reference.owned(), targets: targets)
        return Response(
            result: ["rows": .number(Double(m)), "alpha": .number(Double(finer.alpha)), "weighting": .string(finer.weighting)],
            tensors: [("scores", Tensor(shape: [m], scalars: scores)), ("grad_logits", Tensor(shape: [m, c], scalars: gradients))])
    }
}

/// One Finer-CAM explanation through a base explainer called through the host.
struct FinerRun {
    var base: String
    var maps: Tensor
    var grid: Tensor?
    var logits: Tensor
    var targets: [Int]
    var comparisons: [[Int]]
    var baseResult: JSONValue
    /// True when the target was linearised (two base calls, the second with `target_weights`).
    var linearised: Bool

    /// `images`: normalised images (nil: the base reads its `images` option); `targets`: per-image
    /// classes (−1: the top class), else the option `target` for every image.
    init(host: PluginHost, base: String, options o: FinerCAMComponent.Options, finer: FinerOptions, images: Tensor?, targets given: Tensor?) throws {
        self.base = base
        let proxy: ExplainerProxy
        do { proxy = try ExplainerProxy(host, id: base) } catch let e as MenagerieError where e.status == .notFound {
            throw MenagerieError.notFound(
                "finer-cam's base '\(base)' is not installed: "
                    + (FinerCAMComponent.builtInBases.values.contains(base) ? "the built-in CAMs come from the 'cam' plugin (\(e.message))" : e.message))
        }
        let schema = proxy.component.info?.options["properties"]?.objectValue ?? [:]
        // The options the base declares get ours; base_options are passed as they are.
        var options: [String: JSONValue] = [:]
        for (key, value) in [
            ("classifier", JSONValue.string(o.classifier)), ("layer", .number(Double(o.layer))), ("target", .number(Double(o.target))),
        ] where schema[key] != nil {
            if key == "classifier" && o.classifier.isEmpty { continue }
            options[key] = value
        }
        if images == nil, schema["images"] != nil, !o.images.isEmpty { options["images"] = .string(o.images) }
        for (k, v) in try keyValueOptions(o.baseOptions, option: "base_options") { options[k] = v }
        var inputs: [(name: String, tensor: Tensor)] = []
        if let images { inputs.append(("images", images)) }
        let declaresTargets = proxy.component.info?.operations.first { $0.name == "explain" }?.inputs.contains { $0.name == "targets" } ?? false
        if let given, declaresTargets { inputs.append(("targets", given)) }
        let scorerOptions: JSONValue = .array(
            ["alpha=\(o.alpha)", "ranks=[" + finer.ranks.map(String.init).joined(separator: ",") + "]", "weighting=\(finer.weighting)"].map { .string($0) })
        let result: ComponentProxy.Result
        if schema["scorer"] != nil, !o.linearise {
            options["scorer"] = .string(FinerCAMComponent.id)
            options["scorer_options"] = scorerOptions
            result = try proxy.explain(options: .object(options), inputs: inputs)
            linearised = false
        } else {
            // The linearised target: the logits first, then w = ∂S/∂y at them as target_weights.
            let first = try proxy.explain(options: .object(options), inputs: inputs)
            let logits = try Self.logits(first, base: base)
            let chosen = try Self.targets(logits: logits, given: given, option: o.target)
            let (_, w) = try finer.scoreAndGradients(logits: logits, reference: logits, targets: chosen)
            result = try proxy.explain(
                options: .object(options), inputs: inputs + [("target_weights", Tensor(shape: logits.shape, scalars: w))])
            linearised = true
        }
        guard let maps = result.tensors["maps"], maps.dtype == .float32, maps.rank == 3 else {
            throw MenagerieError.failed("base '\(base)' returned no maps f32 [N, S, S]")
        }
        logits = try Self.logits(result, base: base)
        guard logits.shape[0] == maps.shape[0] else {
            throw MenagerieError.failed("base '\(base)' returned \(maps.shape[0]) maps and \(logits.shape[0]) rows of logits")
        }
        self.maps = maps
        grid = result.tensors["grid"]
        baseResult = result.result
        // The targets the base explained (its per_image), else ours.
        let reported = result.result["per_image"]?.arrayValue?.compactMap { $0["target"]?.intValue }
        let chosen = try reported?.count == logits.shape[0] ? reported! : Self.targets(logits: logits, given: given, option: o.target)
        let y = try logits.scalars(as: Float.self), c = logits.shape[1]
        targets = chosen
        comparisons = chosen.indices.map { i in finer.comparisons(Array(y[(i * c)..<((i + 1) * c)]), target: chosen[i]) }
    }

    static func logits(_ r: ComponentProxy.Result, base: String) throws -> Tensor {
        guard let logits = r.tensors["logits"], logits.dtype == .float32, logits.rank == 2, logits.shape[1] > 0 else {
            throw MenagerieError.invalidArgument(
                "base '\(base)' returned no 'logits' f32 [N, C]: finer-cam needs the classifier's logits to choose the comparison classes")
        }
        return logits
    }

    /// Given targets (−1: top), else the option, else each row's top class (ties to the lower index).
    static func targets(logits: Tensor, given: Tensor?, option: Int) throws -> [Int] {
        let n = logits.shape[0], c = logits.shape[1], y = try logits.scalars(as: Float.self)
        let asked = try given?.integers() ?? Array(repeating: option, count: n)
        guard asked.count == n else { throw MenagerieError.invalidArgument("input 'targets' must hold one class per image (\(n))") }
        return try (0..<n).map { i in
            if asked[i] >= 0 {
                guard asked[i] < c else { throw MenagerieError.invalidArgument("target class \(asked[i]) is outside 0..<\(c)") }
                return asked[i]
            }
            let row = Array(y[(i * c)..<((i + 1) * c)])
            return row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!
        }
    }

    func summary(options o: FinerCAMComponent.Options, finer: FinerOptions) -> [String: JSONValue] {
        var summary = baseResult.objectValue ?? [:]
        summary["method"] = .string(FinerCAMComponent.id)
        summary["base"] = .string(base)
        summary["alpha"] = .number(Double(finer.alpha))
        summary["weighting"] = .string(finer.weighting)
        summary["score"] = .string(
            linearised
                ? "linearised target: w = ∂S/∂y at the unmasked logits, passed to '\(base)' as target_weights (exact for gradient CAMs)"
                : "Finer-CAM's score called back by '\(base)' (scorer=finer-cam)")
        let items = summary["per_image"]?.arrayValue ?? []
        summary["per_image"] = .array(
            targets.indices.map { i in
                var item = i < items.count ? items[i].objectValue ?? [:] : [:]
                item["target"] = .number(Double(targets[i]))
                item["comparisons"] = .array(comparisons[i].map { .number(Double($0)) })
                return .object(item)
            })
        if linearised {
            summary["notes"] = .array(
                (summary["notes"]?.arrayValue ?? []) + [
                    .string("linearised target: '\(base)' takes no scorer (or linearise=true), so Finer-CAM's score entered as its gradient at the logits")
                ])
        }
        return summary
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum FinerCAMPlugin: Plugin {
    public static let name = "finer-cam"
    public static let version = "0.2.0"
    public static let summary = "Finer-CAM over any base CAM through the host, and its comparison with Grad-CAM and Prompt-CAM on synthetic-tol"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [FinerCAMComponent.self]
}
