import Formats
import Foundation
import Imaging
import NN
import Tensors

/// A timm ViT classifier from a folder holding timm's `config.json` (`model_args`,
/// `pretrained_cfg`) and `model.safetensors`, with its preprocessing.
// @unchecked: immutable after loading; the ViT's weights are only read (inference).
public struct ViTClassifier: @unchecked Sendable {
    public let model: ViT
    public let config: ViTConfig
    public let mean: [Float]
    public let std: [Float]
    /// timm's `pretrained_cfg.interpolation` ("bilinear" or "bicubic").
    public let interpolation: Resample
    public let folder: String

    /// `requireHead: false` accepts a backbone without a classifier head (a linear probe's input, a
    /// DINO/DINOv2 feature extractor). `imageSize` > 0 runs the model at another input size, its
    /// position embedding resampled to the new grid (timm's `resample_abs_pos_embed`).
    public init(folder: String, requireHead: Bool = true, imageSize: Int = 0) throws {
        let configPath = folder + "/config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw FormatError(path: configPath, "not found: a classifier folder holds timm's config.json and model.safetensors")
        }
        guard let weights = Checkpoint.weightsFile(in: folder) else {
            throw FormatError(
                path: folder + "/model.safetensors",
                "not found: a classifier folder holds timm's config.json and model.safetensors (or pytorch_model.bin, model.pt)")
        }
        let checkpoint = try Checkpoint(path: weights)
        var cfg = try ViTConfig.timm(configPath: configPath, checkpoint: checkpoint)
        if imageSize != 0 {
            guard imageSize > 0, imageSize % cfg.patchSize == 0 else {
                throw FormatError(path: configPath, "image size \(imageSize) is not a positive multiple of the patch size \(cfg.patchSize)")
            }
            cfg.imageSize = imageSize
            try cfg.validate(source: configPath + " at image size \(imageSize)")
        }
        guard cfg.numClasses > 0 || !requireHead else {
            throw FormatError(path: configPath, "num_classes is 0: the model has no classifier head to explain (train a linear-probe on it first)")
        }
        guard cfg.classToken || cfg.globalPool == "avg" else { throw FormatError(path: configPath, "unsupported pooling '\(cfg.globalPool)'") }
        let json = try JSONValue.parse(try RegularFile.text(configPath, limit: 16 << 20), source: configPath)
        let pre = json["pretrained_cfg"]
        mean = pre?["mean"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.485, 0.456, 0.406]
        std = pre?["std"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.229, 0.224, 0.225]
        guard mean.count == cfg.inChannels, std.count == cfg.inChannels else {
            throw FormatError(path: configPath, "pretrained_cfg mean/std need \(cfg.inChannels) values")
        }
        guard (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw FormatError(path: configPath, "pretrained_cfg mean and std must be finite and std positive, got \(mean) and \(std)")
        }
        interpolation = pre?["interpolation"]?.stringValue == "bilinear" ? .bilinear : .bicubic
        model = try ViT(config: cfg, checkpoint: checkpoint)
        model.isTraining = false
        config = cfg
        self.folder = folder
    }

    /// An image at the model's input size: unchanged when it already is, otherwise resized (shorter
    /// side) and centre-cropped with the config's interpolation. Returns whether it was resized.
    public func fit(_ image: Image) -> (Image, resized: Bool) {
        let s = config.imageSize
        if image.width == s && image.height == s { return (image, false) }
        return (image.resizedShorterSideAndCropped(to: s, filter: interpolation), true)
    }

    /// Normalised [N, 3, S, S] for images already at the model's size.
    public func normalized(_ images: [Image]) throws -> Tensor {
        let s = config.imageSize
        var out: [Float] = []
        out.reserveCapacity(images.count * 3 * s * s)
        for img in images {
            let rgb =
                img.channels == 3
                ? img
                : Image(
                    width: img.width, height: img.height, channels: 3,
                    pixels: (0..<(img.width * img.height)).flatMap { p in
                        (0..<3).map { c in img.pixels[p * img.channels + (img.channels >= 3 ? c : 0)] }
                    })
            out += try rgb.normalizedCHW(mean: mean, std: std).scalars(as: Float.self)
        }
        return try Tensor(out, shape: [images.count, 3, s, s])
    }
}

/// A classifier folder of either kind: ConvNet-3 when config.json says `"architecture": "convnet"`,
/// otherwise a timm ViT (`vit`: how to load one, e.g. from a cache of loaded models).
public func loadClassifier(folder: String, vit: (String) throws -> ViTClassifier = { try ViTClassifier(folder: $0) }) throws -> any CAMClassifier {
    let configPath = folder + "/config.json"
    if RegularFile.isRegular(configPath), let text = try? RegularFile.text(configPath, limit: 16 << 20),
        let json = try? JSONValue.parse(text), json["architecture"]?.stringValue == "convnet"
    {
        return try ConvNetClassifier(folder: folder)
    }
    return try vit(folder)
}
