import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Vision

/// Classifiers already loaded in this process, by folder and the weights' identity: a runtime that
/// explains many batches loads (and initialises) each model once.
let loadedClassifiers = ProcessCache<ViTClassifier>()

func cachedClassifier(folder: String) throws -> any CAMClassifier {
    try loadClassifier(folder: folder) { folder in
        try loadedClassifiers.value(folder + "#head#0", stamp: Checkpoint.weightsFile(in: folder) ?? folder + "/model.safetensors") {
            try ViTClassifier(folder: folder)
        }
    }
}

/// Loads the images (option path or tensor input), runs the method with the requested target
/// (the class logit, `target_weights`, or a scorer component called back through the host), writes
/// overlays and maps.
func runCAM(_ request: Request<BaseCAMOptions>, component: String, method: BaseMethod) throws -> Response {
    let o = request.options
    guard !o.classifier.isEmpty else {
        throw MenagerieError.invalidArgument("'\(component)' needs --set classifier=FOLDER (timm ViT or ConvNet config.json + model.safetensors)")
    }
    let classifier: any CAMClassifier
    do { classifier = try cachedClassifier(folder: (o.classifier as NSString).expandingTildeInPath) } catch let e as FormatError {
        throw MenagerieError.invalidArgument("\(e)")
    }
    var loaded: LoadedImages? = nil
    let images: Tensor
    if let given = request.inputs["images"] {
        guard given.dtype == .float32, given.rank == 4 else {
            throw MenagerieError.invalidArgument(
                "input 'images' of '\(component)' must be f32 [N, 3, S, S] (normalised), got \(given.dtype.name) \(given.shape)")
        }
        images = given.owned()
    } else {
        guard !o.images.isEmpty else {
            throw MenagerieError.invalidArgument(
                "'\(component)' needs images: --input images=FILE_OR_FOLDER (PNG/TIFF/JPEG) or --input images=X.npy (normalised N×3×S×S)")
        }
        do { loaded = try LoadedImages(path: (o.images as NSString).expandingTildeInPath, classifier: classifier) } catch let e as CAMError {
            throw MenagerieError.invalidArgument("\(e)")
        }
        images = loaded!.images
    }
    let n = images.shape[0]
    // Per-image targets: the tensor input `targets` (−1: top class), else the option for every image.
    var targets: [Int?] = Array(repeating: o.target < 0 ? nil : o.target, count: n)
    if let given = request.inputs["targets"] {
        guard [.int64, .int32, .uint8].contains(given.dtype), given.rank == 1, given.shape[0] == n else {
            throw MenagerieError.invalidArgument("input 'targets' of '\(component)' must be an integer vector [\(n)], got \(given.dtype.name) \(given.shape)")
        }
        targets = try given.integers().map { $0 < 0 ? nil : $0 }
    }
    let target: CAMTarget
    let weights = request.inputs["target_weights"]
    if weights != nil, !o.scorer.isEmpty {
        throw MenagerieError.invalidArgument("'\(component)': give either the input 'target_weights' or the option 'scorer', not both")
    }
    if let weights {
        guard weights.dtype == .float32, weights.rank == 2, weights.shape[0] == n else {
            throw MenagerieError.invalidArgument(
                "input 'target_weights' of '\(component)' must be f32 [\(n), C] (one row per image), got \(weights.dtype.name) \(weights.shape)")
        }
        target = .weights(try weights.scalars(as: Float.self))
    } else if !o.scorer.isEmpty {
        let scorer = try request.host.resolve(o.scorer)
        let scorerOptions = JSONValue.object(try keyValueOptions(o.scorerOptions, option: "scorer_options"))
        target = .scorer { logits, reference, targets in
            let r = try scorer.invoke(
                "score", options: scorerOptions,
                inputs: [("logits", logits), ("reference", reference), ("targets", Tensor(targets.map(Int64.init)))])
            let m = logits.shape[0]
            guard let scores = r.tensors["scores"], scores.dtype == .float32, scores.count == m,
                let grads = r.tensors["grad_logits"], grads.dtype == .float32, grads.shape == logits.shape
            else {
                throw MenagerieError.invalidArgument(
                    "scorer '\(o.scorer)' must answer 'score' with f32 tensors 'scores' [\(m)] and 'grad_logits' \(logits.shape)")
            }
            return (try scores.scalars(as: Float.self), try grads.scalars(as: Float.self))
        }
    } else {
        target = .classes
    }
    let result: Explanation
    do {
        result = try explain(classifier, images: images, method: method, targets: targets, target: target, layer: o.layer)
    } catch let e as CAMError { throw MenagerieError.invalidArgument("'\(component)': \(e)") }
    let artifacts = try writeOverlays(pictures: loaded?.pictures ?? [], maps: result.maps, to: request.host.scratchDirectory)
    let files = loaded?.files ?? []
    let logits = try result.logits.scalars(as: Float.self), classes = result.logits.shape[1]
    let perImage: [JSONValue] = (0..<n).map { i in
        let row = Array(logits[(i * classes)..<((i + 1) * classes)])
        let top = row.indices.max { row[$0] < row[$1] }!
        var item: [String: JSONValue] = ["target": .number(Double(result.targets[i])), "predicted": .number(Double(top))]
        if i < files.count { item["file"] = .string(files[i]) }
        return .object(item)
    }
    var summary: [String: JSONValue] = [
        "method": .string(component), "images": .number(Double(n)), "per_image": .array(perImage),
        "maps": "maps.npy: float32 N×S×S in input order, min–max scaled",
        "target_layer": .string(
            classifier is ConvNetClassifier
                ? "features block \(o.layer): its ReLU output (before pooling)"
                : "blocks[\(o.layer)].norm1 output, CLS dropped"),
        "score": .string(
            weights != nil ? "target_weights: S_i = Σ_c w_ic·y_ic" : o.scorer.isEmpty ? "the target class's logit" : "scorer '\(o.scorer)'"),
    ]
    if let notes = loaded?.notes, !notes.isEmpty { summary["notes"] = .array(notes.map { .string($0) }) }
    return Response(
        result: .object(summary), tensors: [("maps", result.maps), ("grid", result.grid), ("logits", result.logits)], artifacts: artifacts)
}

let explainOutputs = [
    TensorSpec("maps", dtypes: ["f32"], shape: "N×S×S", summary: "the class-activation maps at input size, in input order"),
    TensorSpec("grid", dtypes: ["f32"], shape: "N×h×w", summary: "the maps on the token grid, before resizing"),
    TensorSpec("logits", dtypes: ["f32"], shape: "N×C", summary: "the classifier's logits of the unmasked images"),
]
let explainInputs = [
    TensorSpec(
        "images", dtypes: ["f32"], shape: "N×3×S×S", summary: "normalised images as .npy, or a PNG/TIFF/JPEG file or folder (passed as the images option)",
        optional: true),
    TensorSpec(
        "targets", dtypes: ["i64", "i32", "u8"], shape: "N", summary: "the class to explain per image (−1: its top class); overrides 'target'", optional: true),
    TensorSpec(
        "target_weights", dtypes: ["f32"], shape: "N×C",
        summary: "a linear target: image i's score is S_i = Σ_c w_ic·y_ic (instead of the target class's logit)", optional: true),
]

/// `explain` over a folder maps over its images one by one: each image's map, overlay and row of
/// `per_image` depend on that image alone, so the host can shard it (`overlay_NNN.png` renumbered).
let explainSharding = ShardingSpec(option: "images", extensions: ImageFiles.extensions, sum: ["images"], indexed: ["overlay_"])

/// The five base CAMs as one table: component id and summary per method. Each is exported as
/// `BaseCAMComponent<Tag>`; the tags below only name the row at the type level (components are types).
extension BaseMethod {
    var componentID: String {
        switch self {
        case .gradcam: "grad-cam"
        case .layercam: "layer-cam"
        case .scorecam: "score-cam"
        case .gradcampp: "grad-cam-pp"
        case .hirescam: "hires-cam"
        }
    }
    var componentSummary: String {
        switch self {
        case .gradcam: "Grad-CAM on a ViT classifier's token grid (pytorch-grad-cam's definition)"
        case .layercam: "Layer-CAM on a ViT classifier's token grid (positive gradients weight each position)"
        case .scorecam: "Score-CAM on a ViT classifier's token grid (channel weights from masked-input scores, no gradients)"
        case .gradcampp: "Grad-CAM++ on a ViT token grid or CNN feature map (positive gradients with higher-order weights)"
        case .hirescam: "HiResCAM on a ViT token grid or CNN feature map (gradients times activations, position by position)"
        }
    }
    /// The exported component of this method.
    var component: any Component.Type {
        switch self {
        case .gradcam: BaseCAMComponent<GradCAMTag>.self
        case .layercam: BaseCAMComponent<LayerCAMTag>.self
        case .scorecam: BaseCAMComponent<ScoreCAMTag>.self
        case .gradcampp: BaseCAMComponent<GradCAMPlusPlusTag>.self
        case .hirescam: BaseCAMComponent<HiResCAMTag>.self
        }
    }
}

protocol BaseCAMTag: Sendable { static var method: BaseMethod { get } }
enum GradCAMTag: BaseCAMTag { static let method = BaseMethod.gradcam }
enum LayerCAMTag: BaseCAMTag { static let method = BaseMethod.layercam }
enum ScoreCAMTag: BaseCAMTag { static let method = BaseMethod.scorecam }
enum GradCAMPlusPlusTag: BaseCAMTag { static let method = BaseMethod.gradcampp }
enum HiResCAMTag: BaseCAMTag { static let method = BaseMethod.hirescam }

/// The options every base CAM takes.
struct BaseCAMOptions: ComponentOptions {
    var classifier = "", images = "", target = -1, layer = -1
    var scorer = ""
    var scorerOptions: [String] = []
    static let help = [
        "classifier": "a folder with timm's config.json and model.safetensors or pytorch_model.bin (a ViT classifier), or a ConvNet folder",
        "images": "a PNG/TIFF/JPEG file or a folder of them (sorted by name); or pass the tensor input 'images'",
        "target": "the class to explain (-1: each image's top class)",
        "layer": "the block whose norm1 output is the target layer (-1: the last)",
        "scorer":
            "a component whose operation 'score' gives the score S and ∂S/∂y (a nonlinear target, e.g. finer-cam); empty: the target class's logit",
        "scorerOptions": "key=value options passed to the scorer's 'score' operation",
    ]
}

/// A base CAM explainer (`grad-cam`, `layer-cam`, …): the row `Tag.method` of the table above.
struct BaseCAMComponent<Tag: BaseCAMTag>: Explainer {
    typealias Options = BaseCAMOptions
    static var id: String { Tag.method.componentID }
    static var summary: String { Tag.method.componentSummary }
    static var operations: [OperationSpec] {
        [OperationSpec("explain", summary: "class-activation maps, overlays", inputs: explainInputs, outputs: explainOutputs, sharding: explainSharding)]
    }
    func explain(_ request: Request<Options>) throws -> Response { try runCAM(request, component: Self.id, method: Tag.method) }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum CAMPlugin: Plugin {
    public static let name = "cam"
    public static let version = "0.2.0"
    public static let summary = "Class-activation maps: Grad-CAM, Layer-CAM, Score-CAM, Grad-CAM++ and HiResCAM, with linear or called-back targets"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = BaseMethod.allCases.map(\.component)
}
