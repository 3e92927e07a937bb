import Formats
import Tensors

/// ConvNet-3, the evaluation network of dataset distillation (DC/DM/DSA code, `ConvNet` with
/// net_width 128, net_depth 3, instancenorm, relu, avgpooling):
/// depth × [Conv 3×3 (pad 1; pad 3 for the first layer of 28×28 single-channel input) →
/// GroupNorm(width groups, affine) → ReLU → AvgPool 2×2] → flatten → Linear(→ classes).
/// Parameter names follow the reference's `features.N` / `classifier` so its checkpoints load.
public final class ConvNet: Module {
    public let convs: [Conv2d]
    public let norms: [GroupNorm]
    public let classifier: Linear
    public let imageSize: Int
    public var isTraining = true { didSet { for m in convs as [Module] + norms as [Module] + [classifier] { m.isTraining = isTraining } } }

    public init(channels: Int, classes: Int, width: Int = 128, depth: Int = 3, imageSize: Int = 32, seed: UInt64 = 0) {
        var rng = SeededGenerator(seed: seed)
        var convs: [Conv2d] = [], norms: [GroupNorm] = []
        var size = imageSize
        for d in 0..<depth {
            let pad = (d == 0 && channels == 1 && imageSize == 28) ? 3 : 1
            convs.append(Conv2d(d == 0 ? channels : width, width, kernel: 3, padding: pad, rng: &rng))
            norms.append(GroupNorm(groups: width, channels: width))
            size = (size + 2 * pad - 2) / 2
        }
        self.convs = convs
        self.norms = norms
        self.imageSize = imageSize
        classifier = Linear(width * size * size, classes, rng: &rng)
    }

    /// Checks the sizes of a ConvNet before it is built (from a config file or from options): each
    /// positive and in range, the image at least 2^depth pixels wide (every block halves it), and the
    /// parameter and activation memory within `Limits.allocation`. `keys` names the sizes as the
    /// source spells them (`config.json`'s by default).
    public static func validate(
        channels: Int, classes: Int, width: Int, depth: Int, imageSize: Int, source: String,
        keys: [String: String] = [:]
    ) throws {
        func name(_ k: String) -> String { keys[k] ?? k }
        _ = try Limits.check(channels, key: name("in_channels"), in: 1...4096, source: source)
        _ = try Limits.check(classes, key: name("num_classes"), in: Limits.vocabulary, source: source)
        _ = try Limits.check(width, key: name("net_width"), in: Limits.dimension, source: source)
        _ = try Limits.check(depth, key: name("net_depth"), in: 1...30, source: source)
        _ = try Limits.check(imageSize, key: name("image_size"), in: Limits.dimension, source: source)
        var size = imageSize
        for d in 0..<depth {
            let pad = (d == 0 && channels == 1 && imageSize == 28) ? 3 : 1
            size = (size + 2 * pad - 2) / 2
        }
        guard size >= 1 else {
            throw FormatError(
                path: source,
                "'\(name("image_size"))' = \(imageSize) is too small for '\(name("net_depth"))' = \(depth) "
                    + "(each block halves the image: at least 2^depth pixels are needed)")
        }
        try Limits.parameters(
            [[depth, width, width, 9], [channels, width, 9], [width, size, size, classes]],
            what: "the ConvNet's parameters", source: source)
        try Limits.allocation(shape: [width, imageSize, imageSize], elementSize: 4, what: "the ConvNet's first activation of one image", source: source)
    }

    /// Each feature block is 4 entries of the reference's `features` Sequential: conv, norm, act, pool.
    public var namedParameters: [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        for (d, (conv, norm)) in zip(convs, norms).enumerated() {
            out += prefixed("features.\(4 * d).", conv.namedParameters)
            out += prefixed("features.\(4 * d + 1).", norm.namedParameters)
        }
        return out + prefixed("classifier.", classifier.namedParameters)
    }

    /// The flattened features before the classifier (DM matches their class means).
    public func embed(_ x: Variable) -> Variable {
        var h = x
        for (conv, norm) in zip(convs, norms) { h = norm(conv(h)).relu().avgPool2d(kernel: 2) }
        return h.reshaped([x.shape[0], -1])
    }

    /// Logits [N, classes] of images [N, C, H, W].
    public func callAsFunction(_ x: Variable) -> Variable { classifier(embed(x)) }

    /// Logits and every block's ReLU output [N, width, h, w] (before its pooling): the usual
    /// Grad-CAM target layers of a CNN.
    public func forwardWithActivations(_ x: Variable) -> (logits: Variable, activations: [Variable]) {
        var h = x, acts: [Variable] = []
        for (conv, norm) in zip(convs, norms) {
            let a = norm(conv(h)).relu()
            acts.append(a)
            h = a.avgPool2d(kernel: 2)
        }
        return (classifier(h.reshaped([x.shape[0], -1])), acts)
    }
}
