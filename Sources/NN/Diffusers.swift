import Formats
import Foundation
import Tensors

/// A class-conditional latent diffusion pipeline as diffusers' `DiTPipeline` holds it: the
/// `DiTTransformer2DModel`, the `AutoencoderKL` and the DDIM scheduler's configuration. Loaded from
///
/// - a diffusers folder: `model_index.json`, `transformer/`, `vae/`, `scheduler/` (each part's
///   `config.json` / `scheduler_config.json` and `diffusion_pytorch_model.safetensors`, its sharded
///   index, or `diffusion_pytorch_model.bin`), or
/// - facebookresearch/DiT's original checkpoint: a `.pt` file (or a folder holding one `.pt`) with a
///   diffusers `vae/` folder beside it and optionally a `scheduler/` folder. The `.pt` has no
///   config: the sizes are read from its tensors' shapes (see `DiTConfig.original`); the number of
///   heads cannot be, so it comes from `heads` (default by width: DiT-S 384 → 6, B 768 → 12,
///   L 1024 and XL 1152 → 16). Without `scheduler/`, DiT's training schedule (linear β 1e-4…0.02,
///   1000 steps) with DDIMScheduler's defaults otherwise (leading spacing, `set_alpha_to_one`,
///   no clipping).
// @unchecked: immutable after loading; parameters are read, never written, by inference.
public final class DiTPipeline: @unchecked Sendable {
    public let transformer: DiTTransformer2DModel
    public let vae: AutoencoderKL
    public let scheduler: DDIMSchedulerConfig
    /// "diffusers" or "original".
    public let layout: String
    /// The files the weights came from (for identities and messages).
    public let weightFiles: [String]

    public init(transformer: DiTTransformer2DModel, vae: AutoencoderKL, scheduler: DDIMSchedulerConfig, layout: String, weightFiles: [String]) throws {
        try Self.checkAgreement(transformer.config, vae.config, source: weightFiles.first ?? "pipeline")
        (self.transformer, self.vae, self.scheduler, self.layout, self.weightFiles) = (transformer, vae, scheduler, layout, weightFiles)
    }

    /// Options for the original checkpoint's unknowns.
    public struct OriginalOptions: Sendable {
        /// Attention heads (nil: by width, as DiT's model table).
        public var heads: Int?
        /// Compute as diffusers does (timestep frequencies over 127, the MLP's LayerNorm eps 1e-5)
        /// instead of as DiT's own code (over 128, eps 1e-6).
        public var diffusersNumerics = false
        public init(heads: Int? = nil, diffusersNumerics: Bool = false) {
            self.heads = heads
            self.diffusersNumerics = diffusersNumerics
        }
    }

    /// Whether `path` names a pipeline this type loads (a diffusers folder, or a DiT `.pt`).
    public static func recognises(_ path: String) -> Bool {
        let fm = FileManager.default
        if fm.fileExists(atPath: path + "/model_index.json") { return true }
        if Checkpoint.torchExtensions.contains((path as NSString).pathExtension.lowercased()) { return true }
        return (try? originalCheckpoint(in: path)) != nil
    }

    public static func load(path: String, original: OriginalOptions = OriginalOptions()) throws -> DiTPipeline {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw FormatError(path: path, "does not exist: pass a diffusers pipeline folder (model_index.json) or a DiT .pt with a vae/ folder beside it")
        }
        if isDir.boolValue, FileManager.default.fileExists(atPath: path + "/model_index.json") { return try loadDiffusers(folder: path) }
        let pt = isDir.boolValue ? try originalCheckpoint(in: path) : path
        return try loadOriginal(file: pt, options: original)
    }

    /// The one `.pt`/`.pth` file of a folder.
    static func originalCheckpoint(in folder: String) throws -> String {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        let pts = files.filter { ["pt", "pth"].contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
        guard pts.count == 1 else {
            throw FormatError(
                path: folder,
                pts.isEmpty
                    ? "holds neither model_index.json (a diffusers pipeline) nor a DiT .pt checkpoint"
                    : "holds \(pts.count) .pt files (\(pts.joined(separator: ", "))): name the one to use")
        }
        return folder + "/" + pts[0]
    }

    /// A part's weights file in a diffusers folder.
    static func weights(_ folder: String, part: String) throws -> String {
        let files = [
            "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.bin.index.json", "diffusion_pytorch_model.bin",
        ]
        guard let found = Checkpoint.weightsFile(in: folder, files) else {
            throw FormatError(path: folder, "the pipeline's \(part) holds no weights: looked for " + files.joined(separator: ", "))
        }
        return found
    }

    static func loadDiffusers(folder: String) throws -> DiTPipeline {
        let index = try DiffusersJSON(path: folder + "/model_index.json")
        var missing: [String] = []
        for (part, classes) in [("transformer", ["DiTTransformer2DModel", "Transformer2DModel"]), ("vae", ["AutoencoderKL"]), ("scheduler", [])] {
            guard let entry = index.json[part]?.arrayValue, entry.count == 2, let cls = entry[1].stringValue else {
                missing.append("model_index.json has no '\(part)' entry")
                continue
            }
            if !classes.isEmpty, !classes.contains(cls) {
                throw FormatError(path: index.path, "'\(part)' is a \(cls); a DiT pipeline's is \(classes.joined(separator: " or "))")
            }
            let config = folder + "/\(part)/" + (part == "scheduler" ? "scheduler_config.json" : "config.json")
            if !FileManager.default.fileExists(atPath: config) { missing.append("\(part)/ has no \((config as NSString).lastPathComponent)") }
        }
        guard missing.isEmpty else {
            throw FormatError(path: folder, "is not a complete DiT pipeline: " + missing.joined(separator: "; "))
        }
        let tc = try DiTConfig.load(path: folder + "/transformer/config.json")
        let vc = try AutoencoderKLConfig.load(path: folder + "/vae/config.json")
        let sc = try DDIMSchedulerConfig.load(path: folder + "/scheduler/scheduler_config.json")
        try checkAgreement(tc, vc, source: folder)
        let tw = try weights(folder + "/transformer", part: "transformer"), vw = try weights(folder + "/vae", part: "vae")
        let transformer = try DiTTransformer2DModel(config: tc, checkpoint: try Checkpoint(path: tw))
        let vae = try AutoencoderKL(config: vc, checkpoint: try Checkpoint(path: vw))
        return try DiTPipeline(transformer: transformer, vae: vae, scheduler: sc, layout: "diffusers", weightFiles: [tw, vw])
    }

    static func loadOriginal(file: String, options: OriginalOptions) throws -> DiTPipeline {
        let dir = (file as NSString).deletingLastPathComponent
        let vaeFolder = (dir.isEmpty ? "." : dir) + "/vae"
        guard FileManager.default.fileExists(atPath: vaeFolder + "/config.json") else {
            throw FormatError(
                path: file, "is a DiT checkpoint without a VAE: put a diffusers AutoencoderKL folder (config.json + weights) at \(vaeFolder)")
        }
        let checkpoint = try Checkpoint(path: file)
        let tc = try DiTConfig.original(checkpoint, options: options)
        let vc = try AutoencoderKLConfig.load(path: vaeFolder + "/config.json")
        var sc = DDIMSchedulerConfig()
        sc.clipSample = false
        let schedulerFile = (dir.isEmpty ? "." : dir) + "/scheduler/scheduler_config.json"
        if FileManager.default.fileExists(atPath: schedulerFile) { sc = try DDIMSchedulerConfig.load(path: schedulerFile) }
        try checkAgreement(tc, vc, source: file)
        let vw = try weights(vaeFolder, part: "vae")
        let transformer = try DiTTransformer2DModel(config: tc, checkpoint: checkpoint, layout: .original)
        let vae = try AutoencoderKL(config: vc, checkpoint: try Checkpoint(path: vw))
        return try DiTPipeline(transformer: transformer, vae: vae, scheduler: sc, layout: "original", weightFiles: [file, vw])
    }

    /// The transformer works on the VAE's latents: the same channels and the latent side the VAE's
    /// sample size gives.
    static func checkAgreement(_ t: DiTConfig, _ v: AutoencoderKLConfig, source: String) throws {
        guard t.inChannels == v.latentChannels else {
            throw FormatError(
                path: source,
                "the transformer takes \(t.inChannels) latent channels (in_channels) but the VAE makes \(v.latentChannels) (latent_channels)")
        }
        guard t.sampleSize * v.downsampling == v.sampleSize else {
            throw FormatError(
                path: source,
                "the transformer's sample_size \(t.sampleSize) × the VAE's downsampling \(v.downsampling) = \(t.sampleSize * v.downsampling) px disagrees with the VAE's sample_size \(v.sampleSize)"
            )
        }
    }

    // MARK: Inference

    /// The transformer's output [N, out, S, S] for latents [N, in, S, S] (rows of `batch` at a time).
    public func modelOutput(_ x: [Float], timesteps t: [Int], classes y: [Int], batch: Int = 64) throws -> [Float] {
        let c = transformer.config, d = c.inChannels * c.sampleSize * c.sampleSize, n = y.count
        try transformer.check(shape: [n, c.inChannels, c.sampleSize, c.sampleSize], timesteps: t, classes: y, trainSteps: scheduler.trainSteps)
        guard x.count == n * d else { throw DiffusionError("\(x.count) latent values for \(n) rows of \(d)") }
        var out: [Float] = []
        out.reserveCapacity(n * d * c.outChannels / c.inChannels)
        for start in stride(from: 0, to: n, by: batch) {
            let m = min(batch, n - start)
            let z = Variable(try Tensor(Array(x[(start * d)..<((start + m) * d)]), shape: [m, c.inChannels, c.sampleSize, c.sampleSize]))
            out +=
                GradMode.disabled {
                    transformer(z, timesteps: Array(t[start..<(start + m)]), classes: Array(y[start..<(start + m)]))
                }.scalars
        }
        return out
    }

    /// Which latent channels classifier-free guidance mixes: all (diffusers' DiTPipeline) or the
    /// first 3 (DiT's own `forward_with_cfg`; the 4th keeps the conditional ε).
    public enum GuidedChannels: Sendable, Equatable {
        case all
        case first(Int)
    }

    /// ε(x, t, y) [N·in·S·S] (the first `in` channels: the learned σ dropped), with classifier-free
    /// guidance w when w ≠ 1: one batch [cond, null], ε_u + w·(ε_c − ε_u) on `channels`.
    public func predictor(guidance w: Double, channels: GuidedChannels = .all) -> NoisePredictor {
        { [self] x, t, classes in
            let c = transformer.config, plane = c.sampleSize * c.sampleSize, d = c.inChannels * plane, n = classes.count
            let both = w == 1 ? classes : classes + [Int](repeating: c.nullClass, count: n)
            let input = w == 1 ? x : x + x
            let out = try modelOutput(input, timesteps: [Int](repeating: t, count: both.count), classes: both)
            let rowOut = c.outChannels * plane
            var e = [Float](repeating: 0, count: n * d)
            let guided: Int
            switch channels {
            case .all: guided = c.inChannels
            case .first(let k): guided = min(k, c.inChannels)
            }
            for i in 0..<n {
                for ch in 0..<c.inChannels {
                    let cond = i * rowOut + ch * plane, uncond = (n + i) * rowOut + ch * plane
                    for p in 0..<plane {
                        e[i * d + ch * plane + p] = w == 1 || ch >= guided ? out[cond + p] : out[uncond + p] + Float(w) * (out[cond + p] - out[uncond + p])
                    }
                }
            }
            return e
        }
    }

    /// Scaled latents [N, L, s, s] → VAE output [N, out, s·d, s·d] (≈ [−1, 1], unclamped):
    /// decode((z / scaling_factor) + shift_factor).
    public func decode(_ latents: [Float], count n: Int, batch: Int = 8) throws -> [Float] {
        let v = vae.config, s = transformer.config.sampleSize, d = v.latentChannels * s * s
        guard latents.count == n * d else { throw DiffusionError("\(latents.count) latent values for \(n) rows of \(d)") }
        var out: [Float] = []
        for start in stride(from: 0, to: n, by: batch) {
            let m = min(batch, n - start)
            let z = Variable(try Tensor(Array(latents[(start * d)..<((start + m) * d)]), shape: [m, v.latentChannels, s, s]))
            out += GradMode.disabled { vae.decode(z * (1 / v.scalingFactor) + v.shiftFactor) }.scalars
        }
        return out
    }

    /// Images [N, in, S, S] in [−1, 1] → scaled latents (the posterior's mean, or a draw with `noise`).
    public func encode(_ images: [Float], count n: Int, noise: [Float]? = nil, batch: Int = 8) throws -> [Float] {
        let v = vae.config, side = transformer.config.sampleSize * v.downsampling, plane = v.inChannels * side * side
        let d = v.latentChannels * transformer.config.sampleSize * transformer.config.sampleSize
        guard images.count == n * plane else { throw DiffusionError("\(images.count) image values for \(n) images of \(plane)") }
        var out: [Float] = []
        for start in stride(from: 0, to: n, by: batch) {
            let m = min(batch, n - start)
            let x = Variable(try Tensor(Array(images[(start * plane)..<((start + m) * plane)]), shape: [m, v.inChannels, side, side]))
            let z = GradMode.disabled {
                noise.map { vae.encodeSample(x, noise: Array($0[(start * d)..<((start + m) * d)])) } ?? vae.encodeMean(x)
            }
            out += ((z - v.shiftFactor) * v.scalingFactor).scalars
        }
        return out
    }
}

extension DiTConfig {
    /// The sizes of facebookresearch/DiT's state dict, read from its tensors: width, input channels
    /// and patch from `x_embedder.proj.weight` [D, C, p, p]; the latent side from `pos_embed`
    /// [1, (S/p)², D]; depth from the `blocks.N.` names; output channels from `final_layer.linear`
    /// [p·p·out, D]; classes from `y_embedder.embedding_table.weight` [classes + 1, D] (the released
    /// models were trained with label dropout, so the last row is the null class); the MLP ratio
    /// from `blocks.0.mlp.fc1`. Not inferable: the number of heads (`options.heads`).
    public static func original(_ ck: Checkpoint, options: DiTPipeline.OriginalOptions) throws -> DiTConfig {
        func shape(_ name: String, rank: Int) throws -> [Int] {
            guard ck.contains(name) else {
                throw FormatError(path: ck.path, "has no '\(name)': not a facebookresearch/DiT state dict (x_embedder, pos_embed, blocks.N, final_layer)")
            }
            let s = try ck.entry(name).shape
            guard s.count == rank, s.allSatisfy({ $0 > 0 }) else { throw FormatError(path: ck.path, "'\(name)' has shape \(s), a rank-\(rank) shape expected") }
            return s
        }
        let xe = try shape("x_embedder.proj.weight", rank: 4)
        let (d, cin, p) = (xe[0], xe[1], xe[2])
        guard xe[3] == p else { throw FormatError(path: ck.path, "'x_embedder.proj.weight' \(xe) is not a square patch") }
        let pos = try shape("pos_embed", rank: 3)
        let grid = Int(Double(pos[1]).squareRoot().rounded())
        guard pos[0] == 1, pos[2] == d, grid * grid == pos[1] else {
            throw FormatError(path: ck.path, "'pos_embed' \(pos) is not [1, g², \(d)] for a square grid")
        }
        var depth = 0
        for name in ck.names where name.hasPrefix("blocks.") {
            let index = name.dropFirst("blocks.".count).prefix { $0.isNumber }
            if let i = Int(index), i < 4096 { depth = max(depth, i + 1) }
        }
        guard depth > 0 else { throw FormatError(path: ck.path, "has no 'blocks.N.' tensors") }
        let fl = try shape("final_layer.linear.weight", rank: 2)
        guard fl[1] == d, fl[0] % (p * p) == 0 else {
            throw FormatError(path: ck.path, "'final_layer.linear.weight' \(fl) is not [p²·out, \(d)] for patch \(p)")
        }
        let table = try shape("y_embedder.embedding_table.weight", rank: 2)
        guard table[1] == d, table[0] >= 2 else {
            throw FormatError(path: ck.path, "'y_embedder.embedding_table.weight' \(table) is not [classes + 1, \(d)]")
        }
        let fc1 = try shape("blocks.0.mlp.fc1.weight", rank: 2)
        guard fc1[1] == d, fc1[0] % d == 0 else { throw FormatError(path: ck.path, "'blocks.0.mlp.fc1.weight' \(fc1) is not [r·\(d), \(d)]") }
        let defaultHeads = [384: 6, 768: 12, 1024: 16, 1152: 16][d]
        guard let heads = options.heads ?? defaultHeads else {
            throw FormatError(
                path: ck.path, "the number of attention heads cannot be read from a DiT checkpoint of width \(d): set it (option dit_heads)")
        }
        guard heads > 0, d % heads == 0 else {
            throw FormatError(path: ck.path, "\(heads) heads do not divide the width \(d)")
        }
        var c = DiTConfig(
            heads: heads, headDim: d / heads, inChannels: cin, outChannels: fl[0] / (p * p), layers: depth, sampleSize: grid * p, patch: p,
            classes: table[0] - 1, attentionBias: true, mlpNormEps: options.diffusersNumerics ? 1e-5 : 1e-6,
            frequencyShift: options.diffusersNumerics ? 1 : 0)
        c.mlpRatio = fc1[0] / d
        try c.validate(source: ck.path)
        return c
    }
}
