import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Text

/// An open_clip model folder (BioCLIP 2's Hugging Face layout): `open_clip_config.json` and
/// `open_clip_model.safetensors`, any ViT image tower, with the CLIP tokenizer (the folder's own
/// `bpe_simple_vocab_16e6.txt.gz` when it has one, else the one shipped with the plugin).
// @unchecked: immutable after loading; the model's weights are only read (inference), the tokenizer locks its own cache.
public final class BioCLIP: @unchecked Sendable {
    public let model: CLIP
    public let tokenizer: CLIPTokenizer
    public let folder: String
    /// What identifies these weights in caches: the folder, the weights' size and modification time.
    public let identity: String
    public var config: OpenCLIPConfig { model.config }
    public var imageSize: Int { model.config.vision.imageSize }

    public init(folder: String) throws {
        let folder = (folder as NSString).expandingTildeInPath
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw FormatError(path: folder, "is not a folder: give an open_clip model folder (open_clip_config.json + open_clip_model.safetensors)")
        }
        let configPath = folder + "/open_clip_config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw FormatError(path: configPath, "is missing: an open_clip model folder holds open_clip_config.json and open_clip_model.safetensors")
        }
        guard let weights = Checkpoint.weightsFile(in: folder, Checkpoint.openCLIPFiles) else {
            throw FormatError(
                path: folder + "/open_clip_model.safetensors",
                "is missing: an open_clip model folder holds open_clip_config.json and open_clip_model.safetensors (or open_clip_pytorch_model.bin)")
        }
        let config = try OpenCLIPConfig.load(path: configPath)
        model = try CLIP(config: config, checkpoint: Checkpoint(path: weights))
        let local = folder + "/bpe_simple_vocab_16e6.txt.gz"
        let vocabulary =
            FileManager.default.fileExists(atPath: local) ? local : try PluginResources.path(module: "BioCLIP2", item: "bpe_simple_vocab_16e6.txt.gz")
        tokenizer = try BioCLIP.tokenizer(vocabulary, contextLength: config.text.contextLength)
        self.folder = folder
        identity = folder + "|" + fileIdentity(weights)
    }

    /// Tokenizers are large (49k merges) and identical for every CLIP: one per vocabulary file.
    private static let tokenizers = ProcessCache<CLIPTokenizer>()
    static func tokenizer(_ path: String, contextLength: Int) throws -> CLIPTokenizer {
        try tokenizers.value(path + "|\(contextLength)") { try CLIPTokenizer(vocabulary: path, contextLength: contextLength) }
    }

    // MARK: Images

    /// pybioclip's preprocessing: to RGB, `ToTensor`, an antialiased bilinear squash to the model's
    /// size (on float data), then the config's mean/std. Returns [N, 3, S, S].
    public func preprocess(_ images: [Image]) throws -> Tensor {
        let s = imageSize, plane = s * s
        var out = [Float](repeating: 0, count: images.count * 3 * plane)
        let (mean, std) = (config.mean, config.std)
        for (i, img) in images.enumerated() {
            let rgb = try img.rgb()
            let chw = rgb.resizedFloatCHW(width: s, height: s, filter: .bilinear)
            for c in 0..<3 {
                for p in 0..<plane { out[(i * 3 + c) * plane + p] = (chw[c * plane + p] - mean[c]) / std[c] }
            }
        }
        return try Tensor(out, shape: [images.count, 3, s, s])
    }

    /// Unnormalised image features [N, E] of preprocessed images, `batch` at a time.
    public func imageFeatures(_ images: Tensor, batch: Int = 16) throws -> Tensor {
        try imageFeatures(images, batch: batch, patchTokens: false).embedding
    }

    /// The image features and, with `patchTokens`, the patch tokens after `ln_post` [N, G, G, width].
    public func imageFeatures(_ images: Tensor, batch: Int, patchTokens: Bool) throws -> (embedding: Tensor, tokens: Tensor?) {
        let n = images.shape[0], per = images.count / max(n, 1)
        let all = try images.scalars(as: Float.self)
        var out: [Float] = [], tokens: [Float] = []
        out.reserveCapacity(n * config.embedDim)
        var tokenShape: [Int] = []
        for start in stride(from: 0, to: n, by: max(1, batch)) {
            let end = min(n, start + max(1, batch))
            let chunk = try Tensor(Array(all[(start * per)..<(end * per)]), shape: [end - start] + Array(images.shape.dropFirst()))
            let (e, t) = try model.encodeImage(chunk, patchTokens: patchTokens)
            out += try e.scalars(as: Float.self)
            if let t {
                tokens += try t.scalars(as: Float.self)
                tokenShape = Array(t.shape.dropFirst())
            }
        }
        return (try Tensor(out, shape: [n, config.embedDim]), patchTokens ? try Tensor(tokens, shape: [n] + tokenShape) : nil)
    }

    /// [0, 1] RGB pixels [N, 3, H, W] of any size to the model's input: resized like `preprocess`
    /// (through 8-bit pixels, then float bilinear), normalised with the config's mean/std.
    public func preprocess(pixels: Tensor) throws -> Tensor {
        let (n, h, w) = (pixels.shape[0], pixels.shape[2], pixels.shape[3])
        let v = try pixels.scalars(as: Float.self), plane = h * w
        if h == imageSize && w == imageSize { return normalizeChannels(pixels, mean: config.mean, std: config.std) }
        let images = (0..<n).map { i in
            Image(
                width: w, height: h, channels: 3,
                pixels: (0..<(plane * 3)).map { k in
                    UInt8(max(0, min(255, (v[(i * 3 + k % 3) * plane + k / 3] * 255).rounded())))
                })
        }
        return try preprocess(images)
    }

    // MARK: Text

    /// Unnormalised text features [T, E] of texts, `batch` at a time.
    public func textFeatures(_ texts: [String], batch: Int = 64) throws -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(texts.count * config.embedDim)
        for start in stride(from: 0, to: texts.count, by: batch) {
            let chunk = Array(texts[start..<min(texts.count, start + batch)])
            let ids = tokenizer.tokenize(chunk)
            let t = try Tensor(ids.flatMap { $0 }, shape: [chunk.count, config.text.contextLength])
            out += try model.encodeText(t).scalars(as: Float.self)
        }
        return out
    }

    /// Zero-shot class embeddings [C, E]: each label under every template, each L2-normalised,
    /// averaged, re-normalised (open_clip's and pybioclip's `_get_txt_embeddings`).
    public func classEmbeddings(labels: [String], templates: [String], progress: ((Int, Int) -> Void)? = nil) throws -> [Float] {
        let e = config.embedDim
        var out = [Float](repeating: 0, count: labels.count * e)
        // Several labels per batch so that short captions fill the products.
        let perBatch = max(1, 256 / max(templates.count, 1))
        for start in stride(from: 0, to: labels.count, by: perBatch) {
            let group = Array(labels[start..<min(labels.count, start + perBatch)])
            let texts = group.flatMap { label in templates.map { $0.replacingOccurrences(of: "{}", with: label) } }
            let f = try textFeatures(texts, batch: 256)
            for (g, _) in group.enumerated() {
                var mean = [Float](repeating: 0, count: e)
                for t in 0..<templates.count {
                    let row = (g * templates.count + t) * e
                    var norm: Float = 0
                    for j in 0..<e { norm += f[row + j] * f[row + j] }
                    let inv = 1 / max(norm.squareRoot(), 1e-12)
                    for j in 0..<e { mean[j] += f[row + j] * inv }
                }
                var norm: Float = 0
                for j in 0..<e { norm += mean[j] * mean[j] }
                let inv = 1 / max(norm.squareRoot(), 1e-12)
                for j in 0..<e { out[(start + g) * e + j] = mean[j] * inv }
            }
            progress?(min(labels.count, start + perBatch), labels.count)
        }
        return out
    }

    /// softmax(exp(logit_scale) · normalize(f) · W) for image features f [N, E] and class embeddings
    /// W given as [C, E] rows (already normalised). Returns [N, C].
    public func probabilities(imageFeatures f: Tensor, classes w: [Float], count c: Int) throws -> [Float] {
        let e = config.embedDim, n = f.shape[0]
        var x = try f.scalars(as: Float.self)
        for i in 0..<n {
            var s: Float = 0
            for j in 0..<e { s += x[i * e + j] * x[i * e + j] }
            let inv = 1 / max(s.squareRoot(), 1e-12)
            for j in 0..<e { x[i * e + j] *= inv }
        }
        var logits = [Float](repeating: 0, count: n * c)
        GEMM.sgemm(transposeB: true, m: n, n: c, k: e, alpha: expf(model.logitScaleValue), a: x, lda: e, b: w, ldb: e, c: &logits, ldc: c)
        for i in 0..<n {
            let row = logits[(i * c)..<((i + 1) * c)]
            let m = row.max() ?? 0
            var z: Double = 0
            for j in 0..<c {
                logits[i * c + j] = expf(logits[i * c + j] - m)
                z += Double(logits[i * c + j])
            }
            for j in 0..<c { logits[i * c + j] = Float(Double(logits[i * c + j]) / z) }
        }
        return logits
    }
}

/// The 80 OpenAI ImageNet templates pybioclip uses for custom labels ("{}" is the label).
public let openAITemplates: [String] = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
]
