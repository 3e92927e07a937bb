import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// Everything that shapes a Faster-TAD network; saved as the checkpoint's `config.json` and read
/// back from it, so a model trained with other sizes loads without options.
struct FasterTADConfig: Codable, Equatable, Sendable {
    var format = "menagerie-faster-tad"
    var classes: [String]
    var input_channels: Int
    /// Channels of the auxiliary ("atomic") feature stream; 0: none.
    var aux_channels = 0
    /// Snippets every video is rescaled to.
    var snippets = 100
    var hidden = 128
    var aux_hidden = 32
    var heads = 4
    /// Channels of the features the RoI head samples.
    var roi_channels = 64
    /// Sample points inside a proposal, and in each of its two context extensions.
    var roi_points = 16
    var context_points = 4
    /// Each context extension as a fraction of the proposal's length.
    var context = 0.25
    var head_hidden = 256
    /// Longest proposal, as a fraction of the video.
    var max_duration = 1.0
    /// Regression targets are offsets / proposal length / this (Faster R-CNN's box-coder scale).
    var regression_scale = 0.1

    var samplePoints: Int { roi_points + 2 * context_points }

    func validate(source: String) throws {
        func need(_ ok: Bool, _ what: String) throws {
            if !ok { throw MenagerieError.invalidArgument("\(source): \(what)") }
        }
        try need(!classes.isEmpty, "'classes' is empty")
        try need(input_channels > 0 && aux_channels >= 0, "'input_channels' must be > 0 and 'aux_channels' ≥ 0")
        try need(snippets >= 8, "'snippets' must be ≥ 8")
        try need(hidden > 0 && heads > 0 && hidden % heads == 0, "'hidden' (\(hidden)) must be a positive multiple of 'heads' (\(heads))")
        try need(roi_channels > 0 && roi_points > 0 && context_points >= 0 && head_hidden > 0 && aux_hidden > 0, "RoI sizes must be positive")
        try need(
            context >= 0 && max_duration > 0 && max_duration <= 1 && regression_scale > 0, "'context' ≥ 0, 'max_duration' in (0, 1], 'regression_scale' > 0")
        // Upper bounds (a corrupt or hostile config.json): each size, then the parameter memory.
        let bounds: [(String, Int, Int)] = [
            ("input_channels", input_channels, 1 << 20), ("aux_channels", aux_channels, 1 << 20), ("snippets", snippets, 1 << 16),
            ("hidden", hidden, 1 << 16), ("aux_hidden", aux_hidden, 1 << 16), ("heads", heads, 1 << 16),
            ("roi_channels", roi_channels, 1 << 16), ("roi_points", roi_points, 1 << 12), ("context_points", context_points, 1 << 12),
            ("head_hidden", head_hidden, 1 << 16), ("classes", classes.count, 1 << 20),
        ]
        for (key, value, upper) in bounds {
            try need(value <= upper, "'\(key)' = \(value) is out of range: it must be at most \(upper)")
        }
        try need(context.isFinite && context <= 100, "'context' = \(context) must be a finite number in 0…100")
        try need(regression_scale.isFinite, "'regression_scale' = \(regression_scale) must be finite")
        do {
            let terms: [[Int]] = [
                [3, input_channels + hidden, hidden], [3, aux_channels + aux_hidden, aux_hidden], [4, hidden, hidden],
                [samplePoints, roi_channels, head_hidden], [2, head_hidden, head_hidden], [classes.count + 3, head_hidden],
            ]
            try Limits.parameters(
                terms,
                what: "the Faster-TAD network's parameters", source: source)
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }
}

/// Faster-TAD as implemented here (decisions on Docs/methods/faster-tad.md): a Faster R-CNN in
/// one dimension over snippet features.
///
/// 1. Base encoder: two 1-D convolutions (k 3, ReLU) over the T × C features; the Auxiliary-
///    Features Block encodes an optional second ("atomic") stream the same way and fuses the two
///    with a 1×1 convolution.
/// 2. Context-Adaptive Proposal Module: a pre-norm self-attention layer gives every snippet the
///    whole video's context; a boundary head predicts start and end probabilities per snippet;
///    proposals pair start and end candidates; the RoI sampler extends each proposal by a context
///    proportional to its length (the context adapts to the proposal's scale).
/// 3. 1-D RoIAlign: `roi_points` linear-interpolated samples inside the proposal and
///    `context_points` in each extension, of a `roi_channels` projection of the features.
/// 4. One head refines both boundaries (class-agnostic offsets) and classifies into the classes
///    plus background. Fake proposals (jittered ground truth) join the proposals during training.
final class FasterTADNet: Module {
    let config: FasterTADConfig
    var isTraining = true
    let base1: Conv1d, base2: Conv1d
    let aux1: Conv1d?, fuse: Conv1d?
    let contextNorm: LayerNorm
    let attention: MultiheadAttention
    let boundary1: Conv1d, boundary2: Conv1d
    let roiProject: Conv1d
    let fc1: Linear, fc2: Linear, classifier: Linear, regressor: Linear

    init(_ config: FasterTADConfig, seed: UInt64) {
        self.config = config
        var rng = SeededGenerator(seed: seed)
        let h = config.hidden
        base1 = Conv1d(config.input_channels, h, kernel: 3, padding: 1, rng: &rng)
        base2 = Conv1d(h, h, kernel: 3, padding: 1, rng: &rng)
        if config.aux_channels > 0 {
            aux1 = Conv1d(config.aux_channels, config.aux_hidden, kernel: 3, padding: 1, rng: &rng)
            fuse = Conv1d(h + config.aux_hidden, h, kernel: 1, rng: &rng)
        } else {
            aux1 = nil
            fuse = nil
        }
        contextNorm = LayerNorm(h)
        attention = MultiheadAttention(width: h, heads: config.heads, rng: &rng)
        boundary1 = Conv1d(h, h, kernel: 3, padding: 1, rng: &rng)
        boundary2 = Conv1d(h, 2, kernel: 1, rng: &rng)
        roiProject = Conv1d(h, config.roi_channels, kernel: 1, rng: &rng)
        fc1 = Linear(config.samplePoints * config.roi_channels, config.head_hidden, rng: &rng)
        fc2 = Linear(config.head_hidden, config.head_hidden, rng: &rng)
        classifier = Linear(config.head_hidden, config.classes.count + 1, rng: &rng)
        regressor = Linear(config.head_hidden, 2, rng: &rng)
        // Small initial offsets, as detection heads start (torchvision: N(0, 0.001)).
        regressor.weight.assign(Tensor(shape: regressor.weight.shape, scalars: regressor.weight.variable.scalars.map { $0 * 0.01 }))
    }

    var namedParameters: [(String, Parameter)] {
        var p = prefixed("base.0.", base1.namedParameters) + prefixed("base.1.", base2.namedParameters)
        if let aux1, let fuse { p += prefixed("aux.0.", aux1.namedParameters) + prefixed("aux.fuse.", fuse.namedParameters) }
        p += prefixed("context.norm.", contextNorm.namedParameters) + prefixed("context.attn.", attention.namedParameters)
        p += prefixed("boundary.0.", boundary1.namedParameters) + prefixed("boundary.1.", boundary2.namedParameters)
        p += prefixed("roi.project.", roiProject.namedParameters)
        p += prefixed("head.fc1.", fc1.namedParameters) + prefixed("head.fc2.", fc2.namedParameters)
        p += prefixed("head.cls.", classifier.namedParameters) + prefixed("head.reg.", regressor.namedParameters)
        return p
    }

    struct Trunk {
        /// [B, T, roi_channels]: what the RoI head samples.
        var roi: Variable
        /// [B, 2, T] boundary probabilities (start, end).
        var boundary: Variable
    }

    /// features [B, C, T] (and aux [B, Ca, T]) → the shared trunk.
    func trunk(_ features: Variable, aux: Variable?) -> Trunk {
        var x = base2(base1(features).relu()).relu() // [B, H, T]
        if let aux1, let fuse, let aux { x = fuse(concat([x, aux1(aux).relu()], axis: 1)).relu() }
        let seq = x.permuted([0, 2, 1]) // [B, T, H]
        let ctx = seq + attention(contextNorm(seq))
        let c = ctx.permuted([0, 2, 1]) // [B, H, T]
        let boundary = boundary2(boundary1(c).relu()).sigmoid()
        let roi = roiProject(c).relu().permuted([0, 2, 1]) // [B, T, R]
        return Trunk(roi: roi, boundary: boundary)
    }

    /// The interpolation matrix of 1-D RoIAlign: row r·P + j samples proposal r at point j
    /// (proposals in normalised time [0, 1]; snippet i is centred at (i + 0.5) / T).
    func roiMatrix(_ proposals: [(Double, Double)]) -> Tensor {
        let t = config.snippets, p = config.samplePoints, inside = config.roi_points, cp = config.context_points
        return Tensor.make([proposals.count * p, t]) { m in
            for (r, (s, e)) in proposals.enumerated() {
                let len = max(e - s, 1e-6), ext = config.context * len
                for j in 0..<p {
                    let u: Double
                    if j < cp {
                        u = s - ext + (Double(j) + 0.5) / Double(cp) * ext
                    } else if j < cp + inside {
                        u = s + (Double(j - cp) + 0.5) / Double(inside) * len
                    } else {
                        u = e + (Double(j - cp - inside) + 0.5) / Double(cp) * ext
                    }
                    let pos = min(max(u * Double(t) - 0.5, 0), Double(t - 1))
                    let i0 = Int(pos), i1 = min(i0 + 1, t - 1), w = Float(pos - Double(i0))
                    m[(r * p + j) * t + i0] += 1 - w
                    m[(r * p + j) * t + i1] += w
                }
            }
        }
    }

    /// RoI features of every video's proposals through the head: logits [R, K+1], offsets [R, 2].
    func head(_ trunk: Trunk, proposals: [[(Double, Double)]]) -> (logits: Variable, offsets: Variable) {
        var parts: [Variable] = []
        for (b, list) in proposals.enumerated() where !list.isEmpty {
            let f = trunk.roi.slice(axis: 0, b..<(b + 1)).reshaped([config.snippets, config.roi_channels])
            let sampled = matmul(Variable(roiMatrix(list)), f) // [R·P, C]
            parts.append(sampled.reshaped([list.count, config.samplePoints * config.roi_channels]))
        }
        let x = parts.count == 1 ? parts[0] : concat(parts, axis: 0)
        let hidden = fc2(fc1(x).relu()).relu()
        return (classifier(hidden), regressor(hidden))
    }

    // MARK: Files

    static func load(folder: String) throws -> FasterTADNet {
        let configPath = folder + "/config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw MenagerieError.notFound("'\(folder)' is not a Faster-TAD model folder: no config.json (train one with `menagerie run faster-tad train`)")
        }
        let data: Data
        do { data = try RegularFile.read(configPath, limit: 16 << 20) } catch { throw MenagerieError.invalidArgument("\(error)") }
        let config: FasterTADConfig
        do { config = try JSONValue.decode(FasterTADConfig.self, from: String(decoding: data, as: UTF8.self)) } catch {
            throw MenagerieError.invalidArgument("'\(configPath)' is not a Faster-TAD config: \(error)")
        }
        try config.validate(source: configPath)
        let net = FasterTADNet(config, seed: 0)
        do { try net.load(from: try Checkpoint(path: folder + "/model.safetensors")) } catch let e as FormatError {
            throw MenagerieError.invalidArgument("'\(folder)/model.safetensors' does not match its config.json: \(e)")
        }
        net.isTraining = false
        return net
    }

    func save(folder: String, metadata: [String: String] = [:], dtype: DType = .float32) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try save(to: folder + "/model.safetensors", metadata: metadata, dtype: dtype)
        try AtomicFile.write(try JSONValue(encoding: config).prettyText + "\n", to: folder + "/config.json")
    }
}
