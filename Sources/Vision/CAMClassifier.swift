import Foundation
import Imaging
import NN
import Tensors

/// An error of the CAM layer (bad target layer, shapes, classes), turned into an invalid-argument
/// error by the plugins.
public struct CAMError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// What the CAM methods need of a classifier: a forward pass that records the graph and returns the
/// target layer, and plain logits (Score-CAM's masked inputs).
public protocol CAMClassifier {
    var inputChannels: Int { get }
    var inputSize: Int { get }
    /// Logits [N, C] and the target layer `layer` (negative counts from the end) with its layout.
    func forwardForCAM(_ images: Variable, layer: Int) throws -> (logits: Variable, target: Variable, layout: ActivationLayout)
    /// Logits [N·C values] without recording a graph.
    func logits(_ images: Tensor) throws -> [Float]
    /// An image at the input size (and whether it had to be resized, with how).
    func fit(_ image: Image) -> (Image, resized: Bool)
    /// Normalised [N, C, S, S] of images already at the input size.
    func normalized(_ images: [Image]) throws -> Tensor
}

/// How a target layer's activations are laid out.
public enum ActivationLayout: Sendable {
    /// ViT tokens [N, T, D]: `prefix` leading tokens (CLS) dropped, the rest a `height` × `width` grid.
    case tokens(prefix: Int, height: Int, width: Int)
    /// CNN feature maps [N, D, height, width].
    case channels(height: Int, width: Int)

    public var height: Int {
        switch self {
        case .tokens(_, let h, _), .channels(let h, _): h
        }
    }
    public var width: Int {
        switch self {
        case .tokens(_, _, let w), .channels(_, let w): w
        }
    }

    /// Flat index of channel k at position p of item i, for an activation tensor of `shape`.
    public func index(_ i: Int, _ k: Int, _ p: Int, shape: [Int]) -> Int {
        switch self {
        case .tokens(let prefix, _, _): return (i * shape[1] + prefix + p) * shape[2] + k
        case .channels(let h, let w): return (i * shape[1] + k) * h * w + p
        }
    }
}

extension ViTClassifier: CAMClassifier {
    public var inputChannels: Int { config.inChannels }
    public var inputSize: Int { config.imageSize }
    public func forwardForCAM(_ images: Variable, layer: Int) throws -> (logits: Variable, target: Variable, layout: ActivationLayout) {
        let c = config
        let block = layer < 0 ? c.depth + layer : layer
        guard (0..<c.depth).contains(block) else { throw CAMError("target layer \(layer) does not exist: the model has \(c.depth) blocks") }
        let prefix = c.prefixTokens
        let patches = c.tokens - prefix
        let g = Int(Double(patches).squareRoot().rounded())
        guard g * g == patches else {
            throw CAMError("the target layer has \(patches) patch tokens, which is not a square grid: cannot reshape it into an activation map")
        }
        let out = GradMode.with(true) { model.forward(images) }
        return (out.logits, out.norm1Outputs[block], .tokens(prefix: prefix, height: g, width: g))
    }
    public func logits(_ images: Tensor) throws -> [Float] {
        try model.forward(images).logits.scalars(as: Float.self) // the no-grad fast path
    }
}

/// Low-resolution maps [N, h, w] to the input size as pytorch-grad-cam does: bilinear resize, ReLU,
/// min–max scaling per image.
public func scaledMaps(grid: Tensor, size s: Int) throws -> Tensor {
    let n = grid.shape[0]
    let lowRes = Variable(try grid.reshaped([n, 1, grid.shape[1], grid.shape[2]]))
    var maps = try GradMode.disabled { lowRes.upsampleBilinear(height: s, width: s) }.value.scalars(as: Float.self)
    for i in 0..<n {
        for j in (i * s * s)..<((i + 1) * s * s) { maps[j] = max(maps[j], 0) }
        minMaxScale(&maps[(i * s * s)..<((i + 1) * s * s)])
    }
    return try Tensor(maps, shape: [n, s, s])
}

/// pytorch-grad-cam's `scale_cam_image`: x − min, then / (1e-7 + max).
public func minMaxScale(_ x: inout ArraySlice<Float>) {
    guard let lo = x.min() else { return }
    for j in x.indices { x[j] -= lo }
    let hi = x.max()!
    for j in x.indices { x[j] /= (1e-7 + hi) }
}

/// Images read from a file or a folder of PNG/TIFF/JPEG files (sorted by name), fitted to a
/// classifier's input size and normalised; `notes` say which had to be resized.
public struct LoadedImages {
    public var images: Tensor
    public var pictures: [Image]
    public var files: [String]
    public var notes: [String]

    /// Throws `CAMError` with a message for the user (missing path, no image files, unreadable file).
    public init(path: String, classifier: some CAMClassifier) throws {
        do { files = try ImageFiles.list(path, option: "images") } catch { throw CAMError("\(error)") }
        pictures = []
        notes = []
        for f in files {
            let img: Image
            do {
                img = try ImageFiles.read(f)
            } catch { throw CAMError("\(error)") }
            let (fitted, resized) = classifier.fit(img)
            if resized { notes.append("\((f as NSString).lastPathComponent): resized from \(img.width)×\(img.height) to \(fitted.width)×\(fitted.height)") }
            pictures.append(fitted)
        }
        images = try classifier.normalized(pictures)
    }
}

/// Overlays of maps [N, S, S] on the (resized) input images: JET with image weight 0.5
/// (pytorch-grad-cam's show_cam_on_image), written as `overlay_000.png`… into `directory`.
public func writeOverlays(pictures: [Image], maps: Tensor, to directory: String) throws -> [String] {
    let s = maps.shape[1]
    let values = try maps.scalars(as: Float.self)
    var names: [String] = []
    for i in 0..<min(maps.shape[0], pictures.count) {
        let name = String(format: "overlay_%03d.png", i)
        let rgb =
            pictures[i].channels == 3
            ? pictures[i]
            : Image(
                width: s, height: s, channels: 3,
                pixels: (0..<(s * s)).flatMap { p in [UInt8](repeating: pictures[i].pixels[p * pictures[i].channels], count: 3) })
        try PNG.write(try Overlay.heatmap(on: rgb, map: Array(values[(i * s * s)..<((i + 1) * s * s)])), to: directory + "/" + name)
        names.append(name)
    }
    return names
}

/// A timm ViT-B/16 classifier folder with random weights (config.json + model.safetensors), the
/// model of the `vit_b16.*` benchmarks: speed does not depend on the weights.
public func writeBenchmarkViTB16(to dir: String) throws -> ViTConfig {
    var config = ViTConfig(imageSize: 224, patchSize: 16, width: 768, depth: 12, heads: 12)
    config.numClasses = 1000
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try ViT(config: config, seed: 1).save(to: dir + "/model.safetensors")
    let timmConfig = """
        {"architecture": "vit_base_patch16_224", "num_classes": 1000, "global_pool": "token",
         "model_args": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "num_classes": 1000,
                        "global_pool": "token", "class_token": true},
         "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}}
        """
    try Data(timmConfig.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
    return config
}
