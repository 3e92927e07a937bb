import Formats
import Foundation

/// Reads a diffusers `config.json` (or `scheduler_config.json`): the JSON object and typed fields
/// with ranges checked, each error naming the file and the key.
struct DiffusersJSON {
    let json: JSONValue
    let path: String

    init(path: String) throws {
        let text: String
        do { text = try RegularFile.text(path, limit: 16 << 20) } catch let e as FormatError { throw e } catch {
            throw FormatError(path: path, "cannot be read: \(error)")
        }
        json = try JSONValue.parse(text, source: path)
        guard json.objectValue != nil else { throw FormatError(path: path, "is not a JSON object") }
        self.path = path
    }

    init(json: JSONValue, path: String) {
        self.json = json
        self.path = path
    }

    func present(_ key: String) -> Bool { json[key].map { $0 != .null } ?? false }

    func int(_ key: String, in range: ClosedRange<Int> = Limits.dimension, default d: Int? = nil) throws -> Int {
        try Limits.int(json[key], key: key, in: range, source: path, default: d)
    }

    func optionalInt(_ key: String, in range: ClosedRange<Int> = Limits.dimension) throws -> Int? {
        present(key) ? try int(key, in: range) : nil
    }

    func double(_ key: String, in range: ClosedRange<Double>, default d: Double) throws -> Double {
        guard present(key) else { return d }
        guard let v = json[key]?.doubleValue else { throw FormatError(path: path, "'\(key)' = \(json[key]!) is not a number") }
        return try Limits.finite(v, key: key, in: range, source: path)
    }

    func bool(_ key: String, default d: Bool) throws -> Bool {
        guard present(key) else { return d }
        guard let b = json[key]?.boolValue else { throw FormatError(path: path, "'\(key)' must be true or false, got \(json[key]!)") }
        return b
    }

    func string(_ key: String, default d: String, allowed: [String]? = nil) throws -> String {
        guard present(key) else { return d }
        guard let s = json[key]?.stringValue else { throw FormatError(path: path, "'\(key)' must be a string, got \(json[key]!)") }
        if let allowed, !allowed.contains(s) {
            throw FormatError(path: path, "'\(key)' = '\(s)' is not supported (supported: \(allowed.joined(separator: ", ")))")
        }
        return s
    }

    func ints(_ key: String, in range: ClosedRange<Int> = Limits.dimension) throws -> [Int] {
        guard let list = json[key]?.arrayValue, !list.isEmpty, list.count <= 16 else {
            throw FormatError(path: path, "'\(key)' must be a list of 1…16 integers")
        }
        return try list.enumerated().map { try Limits.int($1, key: "\(key)[\($0)]", in: range, source: path) }
    }

    func strings(_ key: String) throws -> [String] {
        guard let list = json[key]?.arrayValue, let s = Optional(list.compactMap(\.stringValue)), s.count == list.count, !s.isEmpty else {
            throw FormatError(path: path, "'\(key)' must be a non-empty list of strings")
        }
        return s
    }
}

/// `DiTTransformer2DModel`'s configuration (diffusers `transformer/config.json`), plus the two
/// numerical details in which diffusers and the original facebookresearch/DiT code differ.
public struct DiTConfig: Sendable, Equatable {
    public var heads: Int
    public var headDim: Int
    public var inChannels: Int
    public var outChannels: Int
    public var layers: Int
    public var sampleSize: Int
    public var patch: Int
    /// Classes without the null class (the table has one more row; the null class is this index).
    public var classes: Int
    public var attentionBias: Bool
    /// The LayerNorm before the MLP (diffusers' `norm3`: `norm_eps`, 1e-5; DiT's `norm2`: 1e-6).
    public var mlpNormEps: Float
    /// The timestep features divide the frequency exponent by (128 − shift): diffusers'
    /// `CombinedTimestepLabelEmbeddings` uses `downscale_freq_shift = 1`, DiT's `timestep_embedding` 0.
    public var frequencyShift: Int
    public var mlpRatio: Int = 4

    public var width: Int { heads * headDim }
    public var grid: Int { sampleSize / patch }
    public var tokens: Int { grid * grid }
    public var nullClass: Int { classes }
    public var learnsSigma: Bool { outChannels == 2 * inChannels }

    public init(
        heads: Int, headDim: Int, inChannels: Int, outChannels: Int, layers: Int, sampleSize: Int, patch: Int, classes: Int,
        attentionBias: Bool = true, mlpNormEps: Float = 1e-5, frequencyShift: Int = 1
    ) {
        (self.heads, self.headDim, self.inChannels, self.outChannels, self.layers) = (heads, headDim, inChannels, outChannels, layers)
        (self.sampleSize, self.patch, self.classes, self.attentionBias) = (sampleSize, patch, classes, attentionBias)
        (self.mlpNormEps, self.frequencyShift) = (mlpNormEps, frequencyShift)
    }

    /// DiT-XL/2 at 256 px (the released model's sizes; 1000 classes).
    public static let xl2_256 = DiTConfig(heads: 16, headDim: 72, inChannels: 4, outChannels: 8, layers: 28, sampleSize: 32, patch: 2, classes: 1000)

    /// Reads `transformer/config.json`; only what DiTTransformer2DModel computes is accepted.
    public static func load(path: String) throws -> DiTConfig {
        let j = try DiffusersJSON(path: path)
        let norm = try j.string("norm_type", default: "ada_norm_zero", allowed: ["ada_norm_zero"])
        _ = norm
        _ = try j.string("activation_fn", default: "gelu-approximate", allowed: ["gelu-approximate"])
        if try j.bool("norm_elementwise_affine", default: false) {
            throw FormatError(path: path, "'norm_elementwise_affine' = true is not supported (DiTTransformer2DModel's norms have no affine parameters)")
        }
        let inChannels = try j.int("in_channels", in: 1...4096, default: 4)
        var c = DiTConfig(
            heads: try j.int("num_attention_heads", in: 1...1024, default: 16), headDim: try j.int("attention_head_dim", in: 1...4096, default: 72),
            inChannels: inChannels, outChannels: try j.optionalInt("out_channels", in: 1...8192) ?? inChannels,
            layers: try j.int("num_layers", in: 1...1024, default: 28), sampleSize: try j.int("sample_size", in: 1...4096, default: 32),
            patch: try j.int("patch_size", in: 1...256, default: 2),
            classes: try j.int("num_embeds_ada_norm", in: 1...Limits.vocabulary.upperBound, default: 1000),
            attentionBias: try j.bool("attention_bias", default: true),
            mlpNormEps: Float(try j.double("norm_eps", in: 0...1, default: 1e-5)), frequencyShift: 1)
        c.mlpRatio = 4
        try c.validate(source: path)
        return c
    }

    /// Sizes together: the latent side divisible by the patch, the parameters and one image's
    /// attention scores within the allocation limits.
    public func validate(source: String) throws {
        guard sampleSize % patch == 0 else {
            throw FormatError(path: source, "'sample_size' = \(sampleSize) is not divisible by 'patch_size' = \(patch)")
        }
        guard width <= 65536 else { throw FormatError(path: source, "the width \(heads)×\(headDim) = \(width) exceeds 65536") }
        guard outChannels == inChannels || outChannels == 2 * inChannels else {
            throw FormatError(
                path: source,
                "'out_channels' = \(outChannels) must equal 'in_channels' = \(inChannels) (ε only) or twice it (ε and the learned σ)")
        }
        try Limits.parameters(
            [[layers, 12 + 2 * mlpRatio, width, width], [layers, classes + 1, width], [layers, 256, width], [patch, patch, outChannels, width]],
            what: "the DiT's parameters", source: source)
        try Limits.allocation(shape: [heads, tokens, tokens], elementSize: 4, what: "one image's attention scores", source: source)
    }
}

/// `AutoencoderKL`'s configuration (diffusers `vae/config.json`).
public struct AutoencoderKLConfig: Sendable, Equatable {
    public var inChannels = 3
    public var outChannels = 3
    public var blockOutChannels = [128, 256, 512, 512]
    public var layersPerBlock = 2
    public var latentChannels = 4
    public var groups = 32
    public var sampleSize = 256
    public var scalingFactor: Float = 0.18215
    public var shiftFactor: Float = 0
    public var useQuantConv = true
    public var usePostQuantConv = true
    public var midAttention = true

    public init() {}

    /// Image side / latent side.
    public var downsampling: Int { 1 << (blockOutChannels.count - 1) }

    public static func load(path: String) throws -> AutoencoderKLConfig {
        let j = try DiffusersJSON(path: path)
        var c = AutoencoderKLConfig()
        c.inChannels = try j.int("in_channels", in: 1...64, default: 3)
        c.outChannels = try j.int("out_channels", in: 1...64, default: 3)
        c.blockOutChannels = try j.present("block_out_channels") ? j.ints("block_out_channels", in: 1...16384) : [64]
        c.layersPerBlock = try j.int("layers_per_block", in: 1...64, default: 1)
        c.latentChannels = try j.int("latent_channels", in: 1...1024, default: 4)
        c.groups = try j.int("norm_num_groups", in: 1...16384, default: 32)
        c.sampleSize = try j.int("sample_size", in: 1...65536, default: 32)
        c.scalingFactor = Float(try j.double("scaling_factor", in: 1e-6...1e6, default: 0.18215))
        c.shiftFactor = Float(try j.double("shift_factor", in: -1e6...1e6, default: 0))
        c.useQuantConv = try j.bool("use_quant_conv", default: true)
        c.usePostQuantConv = try j.bool("use_post_quant_conv", default: true)
        c.midAttention = try j.bool("mid_block_add_attention", default: true)
        _ = try j.string("act_fn", default: "silu", allowed: ["silu"])
        let n = c.blockOutChannels.count
        if j.present("down_block_types") {
            let down = try j.strings("down_block_types")
            guard down.count == n, down.allSatisfy({ $0 == "DownEncoderBlock2D" }) else {
                throw FormatError(path: path, "'down_block_types' must be \(n) × DownEncoderBlock2D (one per block_out_channels entry), got \(down)")
            }
        }
        if j.present("up_block_types") {
            let up = try j.strings("up_block_types")
            guard up.count == n, up.allSatisfy({ $0 == "UpDecoderBlock2D" }) else {
                throw FormatError(path: path, "'up_block_types' must be \(n) × UpDecoderBlock2D (one per block_out_channels entry), got \(up)")
            }
        }
        if j.present("latents_mean") || j.present("latents_std") {
            throw FormatError(path: path, "'latents_mean' / 'latents_std' are not supported (the SD VAE has neither)")
        }
        try c.validate(source: path)
        return c
    }

    public func validate(source: String) throws {
        for (i, w) in blockOutChannels.enumerated() where w % groups != 0 {
            throw FormatError(path: source, "'block_out_channels'[\(i)] = \(w) is not divisible by 'norm_num_groups' = \(groups)")
        }
        guard sampleSize % downsampling == 0 else {
            throw FormatError(path: source, "'sample_size' = \(sampleSize) is not divisible by the VAE's downsampling \(downsampling)")
        }
        let w = blockOutChannels.max()!
        try Limits.parameters(
            [[2 * blockOutChannels.count * (2 * layersPerBlock + 3) + 8, w, w, 9]], what: "the VAE's parameters", source: source)
    }
}

/// diffusers' `DDIMScheduler` configuration (`scheduler/scheduler_config.json`).
public struct DDIMSchedulerConfig: Sendable, Equatable {
    public enum Spacing: String, Sendable, CaseIterable { case leading, trailing, linspace }
    public enum BetaSchedule: String, Sendable, CaseIterable {
        case linear
        case scaledLinear = "scaled_linear"
        case squaredcosCapV2 = "squaredcos_cap_v2"
    }
    public enum Prediction: String, Sendable, CaseIterable {
        case epsilon
        case sample
        case vPrediction = "v_prediction"
    }
    public var trainSteps = 1000
    public var betaStart = 0.0001
    public var betaEnd = 0.02
    public var betaSchedule = BetaSchedule.linear
    public var trainedBetas: [Double]?
    /// diffusers' default is true; DiT's pipelines write false.
    public var setAlphaToOne = true
    public var stepsOffset = 0
    public var spacing = Spacing.leading
    public var prediction = Prediction.epsilon
    public var clipSample = true
    public var clipSampleRange = 1.0
    /// The class named in the file (`DDIMScheduler`, or another scheduler whose β settings are read).
    public var className = "DDIMScheduler"

    public init() {}

    public static func load(path: String) throws -> DDIMSchedulerConfig {
        let j = try DiffusersJSON(path: path)
        var c = DDIMSchedulerConfig()
        c.className = try j.string("_class_name", default: "DDIMScheduler")
        c.trainSteps = try j.int("num_train_timesteps", in: 1...100_000, default: 1000)
        c.betaStart = try j.double("beta_start", in: 0...1, default: 0.0001)
        c.betaEnd = try j.double("beta_end", in: 0...1, default: 0.02)
        let kind = try j.string("beta_schedule", default: "linear", allowed: BetaSchedule.allCases.map(\.rawValue))
        c.betaSchedule = BetaSchedule(rawValue: kind)!
        if j.present("trained_betas") {
            guard let list = j.json["trained_betas"]?.arrayValue, list.count == c.trainSteps else {
                throw FormatError(path: path, "'trained_betas' must be a list of num_train_timesteps = \(c.trainSteps) numbers")
            }
            c.trainedBetas = try list.enumerated().map { i, v in
                guard let d = v.doubleValue else { throw FormatError(path: path, "'trained_betas'[\(i)] is not a number") }
                return try Limits.finite(d, key: "trained_betas[\(i)]", in: 0...1, source: path)
            }
        }
        c.setAlphaToOne = try j.bool("set_alpha_to_one", default: true)
        c.stepsOffset = try j.int("steps_offset", in: 0...100_000, default: 0)
        c.spacing = Spacing(rawValue: try j.string("timestep_spacing", default: "leading", allowed: Spacing.allCases.map(\.rawValue)))!
        c.prediction = Prediction(rawValue: try j.string("prediction_type", default: "epsilon", allowed: Prediction.allCases.map(\.rawValue)))!
        c.clipSample = try j.bool("clip_sample", default: true)
        c.clipSampleRange = try j.double("clip_sample_range", in: 0...1e6, default: 1)
        if try j.bool("thresholding", default: false) {
            throw FormatError(path: path, "'thresholding' = true (dynamic thresholding) is not supported; set it to false")
        }
        if try j.bool("rescale_betas_zero_snr", default: false) {
            throw FormatError(path: path, "'rescale_betas_zero_snr' = true is not supported; set it to false")
        }
        return c
    }

    /// β_t as diffusers computes them (float32 linspace; squaredcos_cap_v2 by `betas_for_alpha_bar`).
    public var betas: [Double] {
        if let trainedBetas { return trainedBetas }
        let n = trainSteps
        func linspace(_ a: Double, _ b: Double) -> [Double] {
            (0..<n).map { Double(Float(a + (b - a) * Double($0) / Double(max(n - 1, 1)))) }
        }
        switch betaSchedule {
        case .linear: return linspace(betaStart, betaEnd)
        case .scaledLinear: return linspace(betaStart.squareRoot(), betaEnd.squareRoot()).map { Double(Float($0 * $0)) }
        case .squaredcosCapV2:
            func f(_ t: Double) -> Double {
                let x = (t + 0.008) / 1.008 * Double.pi / 2
                return cos(x) * cos(x)
            }
            return (0..<n).map { Double(Float(min(1 - f(Double($0 + 1) / Double(n)) / f(Double($0) / Double(n)), 0.999))) }
        }
    }

    /// ᾱ_t = Π (1 − β_s), accumulated in float32 as torch's `cumprod` of a float32 tensor.
    public var alphasCumprod: [Double] {
        var p: Float = 1
        return betas.map {
            p *= 1 - Float($0)
            return Double(p)
        }
    }

    /// The timesteps of `set_timesteps(count)`, descending (sampling order), as diffusers computes them.
    public func timesteps(_ count: Int) throws -> [Int] {
        let t = trainSteps
        guard (1...t).contains(count) else {
            throw DiffusionError("\(count) DDIM steps: 1…\(t) (num_train_timesteps) are allowed")
        }
        switch spacing {
        case .leading:
            let ratio = t / count
            return (0..<count).reversed().map { $0 * ratio + stepsOffset }
        case .trailing:
            let ratio = Double(t) / Double(count)
            // np.round(np.arange(T, 0, -ratio)) − 1
            var out: [Int] = []
            var i = 0
            while Double(t) - Double(i) * ratio > 0 {
                out.append(Int((Double(t) - Double(i) * ratio).rounded(.toNearestOrEven)) - 1)
                i += 1
            }
            return out
        case .linspace:
            return (0..<count).reversed().map { Int((Double(t - 1) * Double($0) / Double(max(count - 1, 1))).rounded(.toNearestOrEven)) }
        }
    }
}
