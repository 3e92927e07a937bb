import Formats
import Foundation
import Tensors

/// torchvision's BasicBlock: conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus the shortcut
/// (identity, or `downsample` = conv1×1(stride) → BN when the shape changes), → ReLU.
public final class ResNetBasicBlock: Module {
    public let conv1: Conv2d, bn1: BatchNorm, conv2: Conv2d, bn2: BatchNorm
    public let downsample: (conv: Conv2d, bn: BatchNorm)?
    public var isTraining = true {
        didSet { for bn in norms { bn.isTraining = isTraining } }
    }

    var norms: [BatchNorm] { [bn1, bn2] + (downsample.map { [$0.bn] } ?? []) }

    init(_ inPlanes: Int, _ planes: Int, stride: Int, rng: inout SeededGenerator) {
        conv1 = ResNet18.conv(inPlanes, planes, kernel: 3, stride: stride, padding: 1, rng: &rng)
        bn1 = BatchNorm(planes)
        conv2 = ResNet18.conv(planes, planes, kernel: 3, stride: 1, padding: 1, rng: &rng)
        bn2 = BatchNorm(planes)
        downsample =
            stride != 1 || inPlanes != planes
            ? (ResNet18.conv(inPlanes, planes, kernel: 1, stride: stride, padding: 0, rng: &rng), BatchNorm(planes)) : nil
    }

    public var namedParameters: [(String, Parameter)] {
        var out = prefixed("conv1.", conv1.namedParameters) + prefixed("bn1.", bn1.namedParameters)
        out += prefixed("conv2.", conv2.namedParameters) + prefixed("bn2.", bn2.namedParameters)
        if let d = downsample { out += prefixed("downsample.0.", d.conv.namedParameters) + prefixed("downsample.1.", d.bn.namedParameters) }
        return out
    }

    /// The BatchNorms by state-dict prefix ("bn1.", "downsample.1.").
    var namedNorms: [(String, BatchNorm)] { [("bn1.", bn1), ("bn2.", bn2)] + (downsample.map { [("downsample.1.", $0.bn)] } ?? []) }

    public func callAsFunction(_ x: Variable) -> Variable {
        let h = bn2(conv2(bn1(conv1(x)).relu()))
        let shortcut = downsample.map { $0.bn($0.conv(x)) } ?? x
        return (h + shortcut).relu()
    }
}

/// ResNet-18 as torchvision builds it (`torchvision.models.resnet18`): conv1 7×7 stride 2 (no bias)
/// → bn1 → ReLU → max-pool 3×3 stride 2 padding 1 → layer1…layer4 of two BasicBlocks each (64, 128,
/// 256, 512 channels; the first block of layers 2–4 strides 2) → global average pool → fc.
/// `Stem.small` is the `resnet18_modified` of RDED / D^3HR's evaluation for small images: conv1 3×3
/// stride 1 padding 1 and no max-pool. Parameter and buffer names follow torchvision's state dict
/// (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, layer2.0.downsample.0.weight, fc.bias, …),
/// so its checkpoints (`.pt`/`.pth` or safetensors) load by `load(from:)`. Initialisation as
/// torchvision's: convolutions kaiming-normal (fan_out, ReLU gain), BatchNorm 1/0, fc as nn.Linear.
public final class ResNet18: Module {
    public enum Stem: String, Sendable, CaseIterable {
        /// 7×7 stride-2 conv and the max-pool (torchvision's resnet18).
        case imagenet = "resnet18"
        /// 3×3 stride-1 conv, no max-pool (resnet18_modified).
        case small = "resnet18_modified"
    }

    public static let widths = [64, 128, 256, 512]
    public let stem: Stem
    public let conv1: Conv2d, bn1: BatchNorm
    public let layers: [[ResNetBasicBlock]]
    public let fc: Linear
    public let classes: Int
    public var isTraining = true {
        didSet {
            bn1.isTraining = isTraining
            for block in layers.joined() { block.isTraining = isTraining }
        }
    }

    static func conv(_ i: Int, _ o: Int, kernel k: Int, stride: Int, padding: Int, rng: inout SeededGenerator) -> Conv2d {
        // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = √(2 / (out·k·k)).
        let w = normal([o, i, k, k], std: (2 / Float(o * k * k)).squareRoot(), &rng)
        return Conv2d(weight: Parameter(w), bias: nil, stride: stride, padding: padding)
    }

    public init(channels: Int = 3, classes: Int, stem: Stem = .imagenet, seed: UInt64 = 0) {
        var rng = SeededGenerator(seed: seed)
        self.stem = stem
        self.classes = classes
        conv1 =
            stem == .imagenet
            ? Self.conv(channels, 64, kernel: 7, stride: 2, padding: 3, rng: &rng) : Self.conv(channels, 64, kernel: 3, stride: 1, padding: 1, rng: &rng)
        bn1 = BatchNorm(64)
        var inPlanes = 64
        var layers: [[ResNetBasicBlock]] = []
        for (i, planes) in Self.widths.enumerated() {
            let stride = i == 0 ? 1 : 2
            layers.append([ResNetBasicBlock(inPlanes, planes, stride: stride, rng: &rng), ResNetBasicBlock(planes, planes, stride: 1, rng: &rng)])
            inPlanes = planes
        }
        self.layers = layers
        fc = Linear(512, classes, rng: &rng)
    }

    /// Checks the sizes before a ResNet-18 is built: channels and classes in range, and the first
    /// activation of one image within `Limits.allocation`.
    public static func validate(channels: Int, classes: Int, imageSize: Int, stem: Stem, source: String) throws {
        _ = try Limits.check(channels, key: "in_channels", in: 1...4096, source: source)
        _ = try Limits.check(classes, key: "num_classes", in: Limits.vocabulary, source: source)
        _ = try Limits.check(imageSize, key: "image_size", in: Limits.dimension, source: source)
        let first = stem == .imagenet ? (imageSize + 1) / 2 : imageSize
        try Limits.allocation(shape: [64, first, first], elementSize: 4, what: "the ResNet-18's first activation of one image", source: source)
    }

    public var namedParameters: [(String, Parameter)] {
        var out = prefixed("conv1.", conv1.namedParameters) + prefixed("bn1.", bn1.namedParameters)
        for (i, layer) in layers.enumerated() {
            for (j, block) in layer.enumerated() { out += prefixed("layer\(i + 1).\(j).", block.namedParameters) }
        }
        return out + prefixed("fc.", fc.namedParameters)
    }

    /// Every BatchNorm by its state-dict prefix.
    var namedNorms: [(String, BatchNorm)] {
        var out = [("bn1.", bn1)]
        for (i, layer) in layers.enumerated() {
            for (j, block) in layer.enumerated() { out += block.namedNorms.map { ("layer\(i + 1).\(j)." + $0.0, $0.1) } }
        }
        return out
    }

    public var namedBuffers: [(String, Tensor)] {
        namedNorms.flatMap { prefix, bn in bn.namedBuffers.map { (prefix + $0.0, $0.1) } }
    }

    public func loadBuffer(_ name: String, _ value: Tensor) {
        for (prefix, bn) in namedNorms where name.hasPrefix(prefix) {
            let rest = String(name.dropFirst(prefix.count))
            if !rest.contains(".") {
                bn.loadBuffer(rest, value)
                return
            }
        }
    }

    /// The pooled features [N, 512] before fc.
    public func features(_ x: Variable) -> Variable {
        var h = bn1(conv1(x)).relu()
        if stem == .imagenet { h = Self.maxPool3x3Stride2(h) }
        for layer in layers { for block in layer { h = block(h) } }
        let (n, c) = (h.shape[0], h.shape[1])
        return h.reshaped([n, c, -1]).mean(axis: 2)
    }

    /// Logits [N, classes] of images [N, C, H, W].
    public func callAsFunction(_ x: Variable) -> Variable { fc(features(x)) }

    /// torch's MaxPool2d(3, stride 2, padding 1) on a ReLU output: the padding torch treats as −∞
    /// is zero here, which gives the same maximum because every input is ≥ 0 and every window holds
    /// at least one input.
    static func maxPool3x3Stride2(_ x: Variable) -> Variable {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let window = Window2D(kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        let (oh, ow) = window.outputSize(h, w)
        return x.reshaped([n * c, 1, h, w]).unfold(window).max(axis: 1).reshaped([n, c, oh, ow])
    }
}
