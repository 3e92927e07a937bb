import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// A class-conditional latent diffusion model: the autoencoder, the DiT denoiser (NN's
/// `DiTTransformer2DModel` in facebookresearch/DiT's layout, `LatentDiffusionConfig.ditConfig`), the
/// noise schedule. A folder holds `config.json` (`LatentDiffusionConfig`) and `model.safetensors`
/// (`autoencoder.*`, `dit.*` under DiT's own state-dict names, without the fixed `pos_embed`).
// @unchecked: `config` is set only in init; training updates parameters through their own locks, one call at a time.
public final class LatentDiffusionModel: @unchecked Sendable {
    public private(set) var config: LatentDiffusionConfig
    public let autoencoder: LatentAutoencoder
    public let dit: DiTTransformer2DModel
    public let schedule: NoiseSchedule

    public init(config: LatentDiffusionConfig, seed: UInt64 = 0) throws {
        try config.validate()
        self.config = config
        var rng = SeededGenerator(seed: seed)
        autoencoder = LatentAutoencoder(config: config, rng: &rng)
        dit = try DiTTransformer2DModel(config: config.ditConfig, seed: rng.next(), layout: .original)
        schedule = NoiseSchedule(NoiseSchedule.Kind(rawValue: config.schedule)!, steps: config.trainSteps)
        autoencoder.isTraining = false
        dit.isTraining = false
    }

    public static func load(folder: String) throws -> LatentDiffusionModel {
        let configPath = folder + "/config.json", weights = folder + "/model.safetensors"
        let config = try readConfig(folder: folder)
        let model: LatentDiffusionModel
        do { model = try LatentDiffusionModel(config: config) } catch { throw MenagerieError.invalidArgument("'\(configPath)': \(error)") }
        let checkpoint: Checkpoint
        do { checkpoint = try Checkpoint(path: weights) } catch { throw MenagerieError.invalidArgument("\(error)") }
        if LegacyDiTNames.isLegacy(checkpoint) {
            throw MenagerieError.invalidArgument(
                "'\(weights)' holds the DiT under latent-diffusion 0.2's own names (dit.x_embedder.weight, dit.final.linear.*, …): convert the folder once with `menagerie run latent-diffusion convert --set model=\(folder) --out DIR` (DIR/model is the converted folder)"
            )
        }
        do {
            try model.autoencoder.load(from: checkpoint, prefix: "autoencoder.")
            try model.dit.load(from: checkpoint, prefix: "dit.")
        } catch { throw MenagerieError.invalidArgument("\(error)") }
        return model
    }

    /// The folder's `config.json`, decoded (not yet validated: the model's init does that).
    static func readConfig(folder: String) throws -> LatentDiffusionConfig {
        let configPath = folder + "/config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw MenagerieError.notFound(
                "'\(configPath)' not found: a latent diffusion folder holds config.json and model.safetensors (from `latent-diffusion train`)")
        }
        let data: Data
        do { data = try RegularFile.read(configPath, limit: 16 << 20) } catch { throw MenagerieError.invalidArgument("\(error)") }
        let config: LatentDiffusionConfig
        do { config = try JSONDecoder().decode(LatentDiffusionConfig.self, from: data) } catch {
            throw MenagerieError.invalidArgument("'\(configPath)' is not a latent diffusion config: \(error)")
        }
        return config
    }

    public func save(folder: String, dtype: DType = .float32) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let tensors = prefixedState("autoencoder.", autoencoder) + prefixedState("dit.", dit)
        let stored = dtype == .float32 ? tensors : try tensors.map { ($0.name, try $0.tensor.converted(to: dtype)) }
        try SafeTensors.write(stored, metadata: ["format": "menagerie-latent-diffusion"], to: folder + "/model.safetensors")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try encoder.encode(config), as: UTF8.self) + "\n", to: folder + "/config.json")
    }

    /// Sets the latent scale factor (training measures it after the autoencoder).
    public func setScale(_ scale: Float) { config.scaleFactor = scale }

    func prefixedState(_ prefix: String, _ m: Module) -> [(name: String, tensor: Tensor)] { m.stateDict.map { (prefix + $0.name, $0.tensor) } }

    // MARK: Inference (no gradient)

    /// Images [N, C, S, S] in [0, 1] → scaled latents, flattened [N·D].
    public func encode(_ images: [Float], count n: Int, batch: Int = 64) -> [Float] {
        let c = config, plane = c.channels * c.imageSize * c.imageSize
        var out: [Float] = []
        out.reserveCapacity(n * c.latentDimension)
        for start in stride(from: 0, to: n, by: batch) {
            let m = min(batch, n - start)
            let x = Variable(Tensor(shape: [m, c.channels, c.imageSize, c.imageSize], scalars: Array(images[(start * plane)..<((start + m) * plane)])))
            out += GradMode.disabled { autoencoder.encode(x) * c.scaleFactor }.scalars
        }
        return out
    }

    /// Scaled latents [N·D] → images [N·C·S·S] in [0, 1].
    public func decode(_ latents: [Float], count n: Int, batch: Int = 64) -> [Float] {
        let c = config, d = c.latentDimension
        var out: [Float] = []
        for start in stride(from: 0, to: n, by: batch) {
            let m = min(batch, n - start)
            let z = Variable(Tensor(shape: [m, c.latentChannels, c.latentSize, c.latentSize], scalars: Array(latents[(start * d)..<((start + m) * d)])))
            out += GradMode.disabled { autoencoder.decode(z * (1 / c.scaleFactor)) }.scalars
        }
        return out
    }

    /// Decodes scaled latents [N·D] recording the graph, for a vector–Jacobian product afterwards.
    public func decodeGraph(_ latents: [Float], count n: Int) -> DecodeGraph {
        let c = config
        let z = Variable(Tensor(shape: [n, c.latentChannels, c.latentSize, c.latentSize], scalars: latents), requiresGrad: true)
        let images = GradMode.with(true) { autoencoder.decode(z * (1 / c.scaleFactor)) }
        return DecodeGraph(latents: latents, z: z, images: images)
    }

    /// ε(x_t, t, y) for flattened latents, batched.
    public func epsilon(_ x: [Float], t: Int, classes: [Int], batch: Int = 256) -> [Float] {
        let c = config, d = c.latentDimension, n = classes.count
        var out: [Float] = []
        out.reserveCapacity(x.count)
        for start in stride(from: 0, to: n, by: batch) {
            let m = min(batch, n - start)
            let z = Variable(Tensor(shape: [m, c.latentChannels, c.latentSize, c.latentSize], scalars: Array(x[(start * d)..<((start + m) * d)])))
            out += GradMode.disabled { dit(z, timesteps: [Int](repeating: t, count: m), classes: Array(classes[start..<(start + m)])) }.scalars
        }
        return out
    }

    /// The predictor with classifier-free guidance `scale` (1: conditional only).
    public func predictor(guidance scale: Double) -> NoisePredictor {
        DDIM.guided({ [self] x, t, y in epsilon(x, t: t, classes: y) }, scale: scale, nullClass: config.nullClass)
    }
}

/// Training of both parts on a dataset: the autoencoder first (L1 + MSE reconstruction, a small
/// latent L2 penalty), the latent scale factor from the training latents, then the DiT (ε-MSE at
/// uniform timesteps, labels dropped to the null class with probability `classDropout` for
/// classifier-free guidance). AdamW, cosine schedule with warm-up, checkpoints.
struct LatentDiffusionTraining {
    var autoencoderSteps = 800
    var ditSteps = 3000
    var batch = 64
    var autoencoderBatch = 32
    var lr: Float = 2e-4
    var autoencoderLR: Float = 1e-3
    var classDropout = 0.1
    var seed: UInt64 = 0
    var checkpointEvery = 1000
    /// The autoencoder's reconstruction loss: `mseL1` (MSE + L1 on the images; the embedded model's
    /// recipe) or `bce` (binary cross-entropy on the output logits): for sparse images — thin strokes
    /// on black, as cmnist-dd — MSE + L1 through the sigmoid settles on an all-black output whose
    /// gradient vanishes (measured: stuck at 0.09 from step 150), BCE's gradient σ(z) − x does not.
    var autoencoderLoss = AutoencoderLoss.mseL1

    enum AutoencoderLoss: String { case mseL1 = "mse+l1", bce }

    struct Curve {
        var phase: String
        var step: Int
        var loss: Double
        var seconds: Double
    }

    func run(model: LatentDiffusionModel, images: [Float], labels: [Int], host: PluginHost, folder: String?) throws -> [Curve] {
        let c = model.config, n = labels.count, plane = c.channels * c.imageSize * c.imageSize
        var rng = SeededGenerator(seed: seed)
        var curve: [Curve] = []
        let started = Date()
        func batchIndices(_ size: Int) -> [Int] { (0..<min(size, n)).map { _ in Int(rng.next() % UInt64(n)) } }
        func gather(_ idx: [Int]) -> Tensor {
            Tensor.make([idx.count, c.channels, c.imageSize, c.imageSize]) { o in
                for (k, i) in idx.enumerated() { for p in 0..<plane { o[k * plane + p] = images[i * plane + p] } }
            }
        }
        // 1. Autoencoder.
        model.autoencoder.isTraining = true
        let aeOpt = AdamW(model.autoencoder.parameters, learningRate: autoencoderLR, weightDecay: 0)
        let aeSchedule = Schedule.cosine(warmup: autoencoderSteps / 20, floor: 0.05)
        var running = 0.0
        host.phase(1, of: 2, "autoencoder")
        for step in 0..<autoencoderSteps {
            try host.checkCancelled()
            aeOpt.learningRate = aeSchedule.rate(base: autoencoderLR, step: step, total: autoencoderSteps)
            let x = Variable(gather(batchIndices(autoencoderBatch)))
            let z = model.autoencoder.encode(x)
            let reconstruction: Variable
            switch autoencoderLoss {
            case .mseL1:
                let diff = model.autoencoder.decode(z) - x
                reconstruction = (diff * diff).mean() + (diff * diff + 1e-6).sqrt().mean()
            case .bce:
                reconstruction = binaryCrossEntropy(logits: model.autoencoder.decodeLogits(z), targets: x)
            }
            let loss = reconstruction + (z * z).mean() * 1e-4
            aeOpt.minimize(loss)
            running = step == 0 ? Double(loss.scalars[0]) : 0.95 * running + 0.05 * Double(loss.scalars[0])
            if (step + 1) % 50 == 0 || step + 1 == autoencoderSteps {
                curve.append(Curve(phase: "autoencoder", step: step + 1, loss: running, seconds: Date().timeIntervalSince(started)))
                host.record(step: step + 1, ["loss": running])
                host.progress(step + 1, of: autoencoderSteps, "autoencoder")
            }
        }
        model.autoencoder.isTraining = false
        // 2. Latents and their scale.
        model.setScale(1)
        var unscaled = model.encode(images, count: n)
        let mean = unscaled.reduce(0, +) / Float(unscaled.count)
        let variance = unscaled.reduce(Float(0)) { $0 + ($1 - mean) * ($1 - mean) } / Float(unscaled.count)
        let scale = 1 / max(variance.squareRoot(), 1e-6)
        model.setScale(scale)
        for k in unscaled.indices { unscaled[k] *= scale }
        let latents = unscaled, d = c.latentDimension
        // 3. DiT.
        model.dit.isTraining = true
        let opt = AdamW(model.dit.parameters, learningRate: lr, weightDecay: 0)
        let schedule = Schedule.cosine(warmup: ditSteps / 20, floor: 0.1)
        let ddim = DDIM(schedule: model.schedule, steps: model.schedule.steps)
        running = 0
        host.phase(2, of: 2, "dit")
        for step in 0..<ditSteps {
            try host.checkCancelled()
            opt.learningRate = schedule.rate(base: lr, step: step, total: ditSteps)
            let idx = batchIndices(batch), m = idx.count
            var x0 = [Float](repeating: 0, count: m * d)
            for (k, i) in idx.enumerated() { for j in 0..<d { x0[k * d + j] = latents[i * d + j] } }
            let noise = (0..<(m * d)).map { _ in Float(rng.nextNormal()) }
            let t = (0..<m).map { _ in Int(rng.next() % UInt64(c.trainSteps)) }
            var xt = [Float](repeating: 0, count: m * d)
            for k in 0..<m {
                let noisy = ddim.noised(Array(x0[(k * d)..<((k + 1) * d)]), noise: Array(noise[(k * d)..<((k + 1) * d)]), timestep: t[k])
                for j in 0..<d { xt[k * d + j] = noisy[j] }
            }
            let y = idx.map { rng.nextUniform() < classDropout ? c.nullClass : labels[$0] }
            let prediction = model.dit(Variable(try Tensor(xt, shape: [m, c.latentChannels, c.latentSize, c.latentSize])), timesteps: t, classes: y)
            let diff = prediction - Variable(try Tensor(noise, shape: prediction.shape))
            let loss = (diff * diff).mean()
            var gradients = Autograd.gradients(of: loss, wrt: model.dit.parameters.map(\.variable))
            clipGradients(&gradients, maxNorm: 1)
            opt.step(gradients)
            running = step == 0 ? Double(loss.scalars[0]) : 0.98 * running + 0.02 * Double(loss.scalars[0])
            if (step + 1) % 50 == 0 || step + 1 == ditSteps {
                curve.append(Curve(phase: "dit", step: step + 1, loss: running, seconds: Date().timeIntervalSince(started)))
                host.record(step: step + 1, ["loss": running])
                host.progress(step + 1, of: ditSteps, "dit")
            }
            if let folder, checkpointEvery > 0, (step + 1) % checkpointEvery == 0, step + 1 < ditSteps {
                model.dit.isTraining = false
                try model.save(folder: folder + "/checkpoint")
                model.dit.isTraining = true
            }
        }
        model.dit.isTraining = false
        return curve
    }
}

/// One decode with its graph: the images [N, C, S, S] and what the gradient of Σ upstream·images
/// with respect to the scaled latents needs.
// @unchecked: built and read by one request at a time (RetainedDecode hands it over under its lock).
public final class DecodeGraph: @unchecked Sendable {
    public let latents: [Float]
    let z: Variable
    public let images: Variable

    init(latents: [Float], z: Variable, images: Variable) {
        (self.latents, self.z, self.images) = (latents, z, images)
    }

    /// ∂(Σ upstream·images)/∂latents, flattened [N·D].
    public func gradient(upstream: Tensor) -> [Float] {
        Autograd.gradients(of: (images * Variable(upstream)).sum(), wrt: [z])[0]?.scalars ?? [Float](repeating: 0, count: latents.count)
    }
}
