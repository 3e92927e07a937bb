import Formats
import Foundation
import Imaging
import NN
import Tensors

/// A ConvNet-3 classifier (dataset distillation's evaluation network) from a folder holding
/// `config.json` — `{"architecture": "convnet", "in_channels", "num_classes", "net_width",
/// "net_depth", "image_size", "mean", "std"}` — and `model.safetensors` with the reference code's
/// names (`features.N.*`, `classifier.*`). Target layers are the blocks' ReLU outputs.
// @unchecked: immutable after loading; the ConvNet is only read (inference, evaluation mode).
public struct ConvNetClassifier: @unchecked Sendable, CAMClassifier {
    public let model: ConvNet
    public let channels: Int, classes: Int, width: Int, depth: Int, size: Int
    public let mean: [Float], std: [Float]

    public init(folder: String) throws {
        let configPath = folder + "/config.json"
        let json = try JSONValue.parse(try RegularFile.text(configPath, limit: 16 << 20), source: configPath)
        func int(_ key: String, default d: Int? = nil, in range: ClosedRange<Int> = Limits.dimension) throws -> Int {
            try Limits.int(json[key], key: key, in: range, source: configPath, default: d)
        }
        channels = try int("in_channels", in: 1...4096)
        classes = try int("num_classes", in: Limits.vocabulary)
        width = try int("net_width", default: 128)
        depth = try int("net_depth", default: 3, in: 1...30)
        size = try int("image_size")
        try ConvNet.validate(channels: channels, classes: classes, width: width, depth: depth, imageSize: size, source: configPath)
        mean = json["mean"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [Float](repeating: 0, count: channels)
        std = json["std"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [Float](repeating: 1, count: channels)
        guard mean.count == channels, std.count == channels else { throw FormatError(path: configPath, "mean/std need \(channels) values") }
        guard (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw FormatError(path: configPath, "mean and std must be finite and std positive, got \(mean) and \(std)")
        }
        model = ConvNet(channels: channels, classes: classes, width: width, depth: depth, imageSize: size)
        try model.load(from: Checkpoint(path: folder + "/model.safetensors"))
        model.isTraining = false
    }

    public var inputChannels: Int { channels }
    public var inputSize: Int { size }

    public func forwardForCAM(_ images: Variable, layer: Int) throws -> (logits: Variable, target: Variable, layout: ActivationLayout) {
        let block = layer < 0 ? depth + layer : layer
        guard (0..<depth).contains(block) else { throw CAMError("target layer \(layer) does not exist: the ConvNet has \(depth) blocks") }
        let out = GradMode.with(true) { model.forwardWithActivations(images) }
        let a = out.activations[block]
        return (out.logits, a, .channels(height: a.shape[2], width: a.shape[3]))
    }

    public func logits(_ images: Tensor) throws -> [Float] {
        try GradMode.disabled { model(Variable(images)) }.value.scalars(as: Float.self)
    }

    /// Squashed to the input size (bilinear): CIFAR-like inputs are square already.
    public func fit(_ image: Image) -> (Image, resized: Bool) {
        image.width == size && image.height == size ? (image, false) : (image.resized(width: size, height: size, filter: .bilinear), true)
    }

    public func normalized(_ images: [Image]) throws -> Tensor {
        var out: [Float] = []
        for img in images {
            guard img.channels == channels || (channels == 3 && img.channels == 4) || (channels == 1 && img.channels >= 1) else {
                throw CAMError("the ConvNet takes \(channels)-channel images, got \(img.channels)")
            }
            let plane = size * size
            for c in 0..<channels {
                for p in 0..<plane { out.append((Float(img.pixels[p * img.channels + c]) / 255 - mean[c]) / std[c]) }
            }
        }
        return try Tensor(out, shape: [images.count, channels, size, size])
    }
}
