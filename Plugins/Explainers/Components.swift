import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// Options every CAM explainer shares.
protocol CAMOptions: ComponentOptions {
    var classifier: String { get }
    var images: String { get }
    var target: Int { get }
    var layer: Int { get }
}

private let sharedHelp = [
    "classifier": "a folder with timm's config.json and model.safetensors or pytorch_model.bin (a ViT classifier)",
    "images": "a PNG/TIFF/JPEG file or a folder of them (sorted by name); or pass the tensor input 'images'",
    "target": "the class to explain (-1: each image's top class)",
    "layer": "the block whose norm1 output is the target layer (-1: the last)",
]

/// Loads the images (option path or tensor input), runs the method, writes overlays and maps.
func runCAM<O: CAMOptions>(_ request: Request<O>, component: String, method: BaseMethod, finer: FinerOptions?) throws -> Response {
    let o = request.options
    guard !o.classifier.isEmpty else {
        throw MenagerieError.invalidArgument("'\(component)' needs --set classifier=FOLDER (timm ViT or ConvNet config.json + model.safetensors)")
    }
    let classifier: any CAMClassifier
    do { classifier = try loadClassifier(folder: (o.classifier as NSString).expandingTildeInPath) } catch let e as FormatError {
        throw MenagerieError.invalidArgument("\(e)")
    }
    var files: [String] = [], pictures: [Image] = [], notes: [String] = []
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
        let path = (o.images as NSString).expandingTildeInPath
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw MenagerieError.invalidArgument("images: \(path) does not exist") }
        files =
            isDir.boolValue
            ? try FileManager.default.contentsOfDirectory(atPath: path).filter { ImageFiles.extensions.contains(($0 as NSString).pathExtension.lowercased()) }
                .sorted().map { path + "/" + $0 }
            : [path]
        guard !files.isEmpty else { throw MenagerieError.invalidArgument("images: \(path) holds no PNG, TIFF or JPEG file") }
        for f in files {
            let img: Image
            do {
                img = try ImageFiles.read(f)
            } catch { throw MenagerieError.invalidArgument("\(error)") }
            let (fitted, resized) = classifier.fit(img)
            if resized { notes.append("\((f as NSString).lastPathComponent): resized from \(img.width)×\(img.height) to \(fitted.width)×\(fitted.height)") }
            pictures.append(fitted)
        }
        images = try classifier.normalized(pictures)
    }
    let n = images.shape[0]
    let result: Explanation
    do {
        result = try explain(
            classifier, images: images, method: method, targets: Array(repeating: o.target < 0 ? nil : o.target, count: n),
            finer: finer, layer: o.layer)
    } catch let e as CAMError { throw MenagerieError.invalidArgument("'\(component)': \(e)") }
    // Overlays on the (resized) input images: JET with image weight 0.5 (show_cam_on_image).
    var artifacts: [String] = []
    let s = classifier.inputSize
    let maps = try result.maps.scalars(as: Float.self)
    for i in 0..<n where i < pictures.count {
        let name = String(format: "overlay_%03d.png", i)
        let rgb =
            pictures[i].channels == 3
            ? pictures[i]
            : Image(
                width: s, height: s, channels: 3,
                pixels: (0..<(s * s)).flatMap { p in [UInt8](repeating: pictures[i].pixels[p * pictures[i].channels], count: 3) })
        try PNG.write(try Overlay.heatmap(on: rgb, map: Array(maps[(i * s * s)..<((i + 1) * s * s)])), to: request.host.scratchDirectory + "/" + name)
        artifacts.append(name)
    }
    let logits = try result.logits.scalars(as: Float.self), classes = result.logits.shape[1]
    let perImage: [JSONValue] = (0..<n).map { i in
        let row = Array(logits[(i * classes)..<((i + 1) * classes)])
        let top = row.indices.max { row[$0] < row[$1] }!
        var item: [String: JSONValue] = ["target": .number(Double(result.targets[i])), "predicted": .number(Double(top))]
        if i < files.count { item["file"] = .string(files[i]) }
        if !result.comparisons[i].isEmpty { item["comparisons"] = .array(result.comparisons[i].map { .number(Double($0)) }) }
        return .object(item)
    }
    var summary: [String: JSONValue] = [
        "method": .string(component), "images": .number(Double(n)), "per_image": .array(perImage),
        "maps": "maps.npy: float32 N×S×S in input order, min–max scaled",
        "target_layer": .string(
            classifier is ConvNetClassifier
                ? "features block \(o.layer): its ReLU output (before pooling)"
                : "blocks[\(o.layer)].norm1 output, CLS dropped"),
    ]
    if !notes.isEmpty { summary["notes"] = .array(notes.map { .string($0) }) }
    if let finer {
        summary["alpha"] = .number(Double(finer.alpha))
        summary["weighting"] = .string(finer.weighting)
    }
    return Response(result: .object(summary), tensors: [("maps", result.maps), ("grid", result.grid)], artifacts: artifacts)
}

private let explainOutputs = [
    TensorSpec("maps", dtypes: ["f32"], shape: "N×S×S", summary: "the class-activation maps at input size, in input order"),
    TensorSpec("grid", dtypes: ["f32"], shape: "N×h×w", summary: "the maps on the token grid, before resizing"),
]
private let explainInputs = [
    TensorSpec(
        "images", dtypes: ["f32"], shape: "N×3×S×S", summary: "normalised images as .npy, or a PNG/TIFF/JPEG file or folder (passed as the images option)",
        optional: true)
]

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
struct BaseCAMOptions: CAMOptions {
    var classifier = "", images = "", target = -1, layer = -1
    static let help = sharedHelp
}

/// A base CAM explainer (`grad-cam`, `layer-cam`, …): the row `Tag.method` of the table above.
struct BaseCAMComponent<Tag: BaseCAMTag>: Explainer {
    typealias Options = BaseCAMOptions
    static var id: String { Tag.method.componentID }
    static var summary: String { Tag.method.componentSummary }
    static var operations: [OperationSpec] {
        [OperationSpec("explain", summary: "class-activation maps, overlays", inputs: explainInputs, outputs: explainOutputs)]
    }
    func explain(_ request: Request<Options>) throws -> Response { try runCAM(request, component: Self.id, method: Tag.method, finer: nil) }
}

struct FinerCAMComponent: Explainer {
    struct Options: CAMOptions {
        var classifier = "", images = "", target = -1, layer = -1
        var base = "gradcam"
        var alpha = 1.0
        var mode = "default"
        var ranks = [1, 2, 3]
        var weighting = "code"
        var perSpecies = 1
        static let help = sharedHelp.merging([
            "perSpecies": "tour: test images per synthetic-tol species in the comparison",
            "base": "the base CAM: gradcam, layercam, scorecam, gradcampp or hirescam",
            "alpha": "weight of the similar classes (0: the base CAM)",
            "mode": "default: compare with the classes at 'ranks' of closeness of logits; compare: only the closest (rank 1)",
            "ranks": "positions in the order of closeness of logits (0 = the target)",
            "weighting": "code: softmax-weighted comparisons (released code, default); paper: uniform average",
        ]) { a, _ in a }
        static let choices = ["base": BaseMethod.allCases.map(\.rawValue), "mode": ["default", "compare"], "weighting": ["code", "paper"]]
    }
    static let id = "finer-cam"
    static let summary = "Finer-CAM: the target against its most similar classes, so shared features cancel (Zhang et al., CVPR 2025)"
    static let operations = [OperationSpec("explain", summary: "class-activation maps, overlays", inputs: explainInputs, outputs: explainOutputs)]
    func explain(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard let base = BaseMethod(rawValue: o.base) else {
            throw MenagerieError.invalidArgument("option 'base' must be one of " + BaseMethod.allCases.map(\.rawValue).joined(separator: ", "))
        }
        guard o.ranks.allSatisfy({ $0 >= 0 }), !o.ranks.isEmpty else { throw MenagerieError.invalidArgument("option 'ranks' needs non-negative positions") }
        let finer = FinerOptions(alpha: Float(o.alpha), ranks: o.mode == "compare" ? [1] : o.ranks, weighting: o.weighting)
        return try runCAM(request, component: Self.id, method: base, finer: finer)
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum ExplainersPlugin: Plugin {
    public static let name = "explainers"
    public static let version = "0.1.0"
    public static let summary = "Class-activation explanations: Grad-CAM, Layer-CAM, Score-CAM, Grad-CAM++, HiResCAM, Finer-CAM and Prompt-CAM"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] =
        BaseMethod.allCases.map(\.component) + [
            FinerCAMComponent.self,
            ViTClassifierComponent.self, ConvNetClassifierComponent.self, LinearProbeComponent.self, PromptCAMComponent.self,
        ]
}
