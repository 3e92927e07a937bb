import DistillationKit
import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// Loaded latent diffusion models, by folder and the weights' identity (a run that samples many
/// times loads once).
let loadedDiffusionModels = ProcessCache<LatentDiffusionModel>()

/// The graph of the last `decode` with retain_graph (a guided sampler decodes, scores the images
/// elsewhere, then asks for the latents' gradient): one per process, taken by the next `decode` with
/// grad_images of the same latents and model, dropped by any other decode.
// @unchecked: every access holds `lock`; the graph is only read after it is taken.
final class RetainedDecode: @unchecked Sendable {
    private let lock = NSLock()
    private var kept: (graph: DecodeGraph, model: String)?

    func keep(_ graph: DecodeGraph, model: String) { lock.withLock { kept = (graph, model) } }
    func clear() { lock.withLock { kept = nil } }
    func take(latents: [Float], model: String) -> DecodeGraph? {
        lock.withLock {
            defer { kept = nil }
            guard let k = kept, k.model == model, k.graph.latents == latents else { return nil }
            return k.graph
        }
    }
}

let retainedDecode = RetainedDecode()

/// The embedded model: `Menagerie_LatentDiffusion.resources/ldm-tol`, trained here on synthetic-tol.
func embeddedDiffusionFolder() throws -> String {
    let folder = try PluginResources.path(module: "LatentDiffusion", item: "ldm-tol")
    guard FileManager.default.fileExists(atPath: folder + "/model.safetensors") else {
        throw MenagerieError.notFound("the embedded latent diffusion model is missing (\(folder)); pass --set model=FOLDER (from `latent-diffusion train`)")
    }
    return folder
}

func loadDiffusion(_ path: String) throws -> LatentDiffusionModel {
    let folder = path.isEmpty ? try embeddedDiffusionFolder() : (path as NSString).expandingTildeInPath
    return try loadedDiffusionModels.value(folder, stamp: folder + "/model.safetensors") { try LatentDiffusionModel.load(folder: folder) }
}

/// `latent-diffusion`: the generative backbone of the diffusion distillers — train on a dataset
/// component, encode / decode, DDIM sampling with classifier-free guidance, DDIM inversion.
struct LatentDiffusionComponent: Backbone {
    struct Options: ComponentOptions {
        var model = ""
        var dataset = "synthetic-tol"
        var dataset_options: [String] = []
        var size = 32
        var limit = 0
        var steps = 50
        var guidance = 4.0
        var per_class = 4
        var classes: [Int] = []
        var to_step = 760
        var record_step = -1
        var round_trip = true
        var retain_graph = false
        var from_step = -1
        var timestep = 0
        var seed = 0
        // training
        var autoencoder_steps = 800
        var dit_steps = 3000
        var batch = 64
        var autoencoder_batch = 32
        var lr = 2e-4
        var autoencoder_lr = 1e-3
        var autoencoder_loss = "mse+l1"
        var class_dropout = 0.1
        var schedule = "linear"
        var dit_width = 128
        var dit_depth = 4
        var dit_heads = 4
        var patch = 2
        var autoencoder_widths = [32, 64, 64]
        var checkpoint_every = 1000
        var save_dtype = "f32"
        // DiT pipelines (diffusers folder or original .pt)
        var guidance_channels = "all"
        var decode = true
        var inverse_steps = 0
        var inverse_guidance = 1.0
        var image_range = "unit"
        var posterior = "mean"
        var dit_pt_heads = 0
        var dit_pt_numerics = "dit"
        static let help = [
            "model":
                "a latent diffusion folder (config.json + model.safetensors), a diffusers DiT pipeline folder (model_index.json, transformer/, vae/, scheduler/), or facebookresearch/DiT's .pt (a file, or a folder holding one) with a diffusers vae/ folder beside it; empty: the embedded synthetic-tol model",
            "guidance_channels":
                "DiT pipelines: the latent channels classifier-free guidance mixes — all (diffusers' DiTPipeline, D^3HR) or 3 (DiT's own forward_with_cfg, CONCORD)",
            "decode": "sample with a DiT pipeline: also decode the final latents to images",
            "inverse_steps":
                "invert with a DiT pipeline: run this many steps of the `steps` grid (DDIMInverseScheduler's first inverse_steps timesteps; 0: up to to_step)",
            "inverse_guidance": "invert with a DiT pipeline: classifier-free guidance of the inversion's ε (1: conditional only; D^3HR uses 4)",
            "image_range":
                "DiT pipelines: images in unit scale (decode gives VAE/2 + 0.5 unclamped, embed takes [0, 1]) or signed (the VAE's own ≈[−1, 1], unclamped)",
            "posterior": "embed with a DiT pipeline: the VAE posterior's mean, or a sample (seeded by seed)",
            "dit_pt_heads": "an original DiT .pt: attention heads (not stored in the file; 0: by width — 384→6, 768→12, 1024/1152→16)",
            "dit_pt_numerics":
                "an original DiT .pt: compute as DiT's code (timestep frequencies over 128, MLP LayerNorm eps 1e-6) or as diffusers (over 127, 1e-5)",
            "dataset": "train: the dataset component (train split)", "dataset_options": "train: key=value options for the dataset",
            "size": "train: image side", "limit": "train: at most this many training images (0: all)",
            "steps": "DDIM steps (η = 0; the grid 0, T/steps, …)", "guidance": "classifier-free guidance scale (1: none)",
            "per_class": "sample: images per class", "classes": "sample: class indices (empty: all)",
            "to_step": "invert: the timestep the inversion stops at (on the DDIM grid)",
            "record_step": "invert: also return the latents at this timestep as 'recorded' (on the grid, ≤ to_step; −1: none)",
            "round_trip": "invert: sample back to the clean latents and report the reconstruction error",
            "retain_graph":
                "decode: keep this decode's graph, so that the next decode of the same latents with grad_images backpropagates through it instead of decoding again",
            "from_step": "sample with input latents: the timestep they are at (on the grid; −1: the last)",
            "timestep": "denoise: the timestep t of the input latents (0…T−1)",
            "seed": "sampling noise / training",
            "autoencoder_steps": "train: autoencoder steps", "dit_steps": "train: denoiser steps", "batch": "train: DiT batch",
            "autoencoder_batch": "train: autoencoder batch",
            "lr": "train: DiT AdamW rate (cosine)", "autoencoder_lr": "train: autoencoder AdamW rate",
            "autoencoder_loss":
                "train: mse+l1 (the embedded model's) or bce on the output logits (for sparse images such as cmnist-dd's strokes, where mse+l1 collapses to black)",
            "class_dropout": "train: probability of the null class (CFG)",
            "schedule": "train: β schedule, linear or cosine (1000 steps)", "dit_width": "train: DiT width", "dit_depth": "train: DiT blocks",
            "dit_heads": "train: attention heads", "patch": "train: DiT patch on the latent",
            "autoencoder_widths": "train: autoencoder widths (one halving per extra entry)",
            "checkpoint_every": "train: DiT steps between checkpoints (folder/checkpoint)", "save_dtype": "train: f32, f16 or bf16",
        ]
        static let choices = [
            "schedule": ["linear", "cosine"], "save_dtype": ["f32", "f16", "bf16"], "autoencoder_loss": ["mse+l1", "bce"],
            "guidance_channels": ["all", "3"], "image_range": ["unit", "signed"], "posterior": ["mean", "sample"], "dit_pt_numerics": ["dit", "diffusers"],
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "size": 1...65536, "limit": 0...1e9, "steps": 1...1e6, "guidance": -1e6...1e6, "per_class": 1...1e6, "classes": 0...16_777_216,
            "to_step": 0...1e6, "record_step": -1...1e6, "from_step": -1...1e6, "timestep": 0...1e6, "autoencoder_steps": 0...1e8, "dit_steps": 0...1e8,
            "batch": 1...1e6, "autoencoder_batch": 1...1e6,
            "lr": 0...1e3, "autoencoder_lr": 0...1e3, "class_dropout": 0...1, "dit_width": 1...65536, "dit_depth": 1...1024,
            "dit_heads": 1...65536, "patch": 1...65536, "autoencoder_widths": 1...65536, "checkpoint_every": 1...1e8,
            "inverse_steps": 0...1e6, "inverse_guidance": -1e6...1e6, "dit_pt_heads": 0...1024,
        ]
    }

    static let id = "latent-diffusion"
    static let summary =
        "A class-conditional latent diffusion model (conv autoencoder + DiT, CFG, DDIM sampling and inversion): train on a dataset, encode, sample, invert"
    static let operations = [
        OperationSpec(
            "embed", summary: "images [N, C, S, S] in [0, 1] → latents [N, 4, L, L] (scaled)",
            inputs: [TensorSpec("images", dtypes: ["f32"], shape: "N×C×S×S", summary: "images in [0, 1]")],
            outputs: [TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "scaled latents")]),
        OperationSpec(
            "config", summary: "the model's sizes, classes and noise schedule (alphas_cumprod): what a distiller needs to drive it through the host"),
        OperationSpec(
            "denoise", summary: "ε(x_t, t, y) with classifier-free guidance at one timestep (the diffusion distillers' DDIM loops call it)",
            inputs: [
                TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "x_t"),
                TensorSpec("labels", dtypes: ["i64", "i32"], shape: "N", summary: "the classes (or 'classes' with a DiT pipeline)", optional: true),
                TensorSpec("classes", dtypes: ["i64", "i32"], shape: "N", summary: "DiT pipeline: the classes (the null class allowed)", optional: true),
                TensorSpec(
                    "timesteps", dtypes: ["i64", "i32"], shape: "N", summary: "DiT pipeline: one timestep per row (else option timestep)", optional: true),
            ],
            outputs: [
                TensorSpec("epsilon", dtypes: ["f32"], shape: "N×4×L×L", summary: "the guided noise prediction"),
                TensorSpec(
                    "eps", dtypes: ["f32"], shape: "N×O×L×L", summary: "DiT pipeline: the transformer's whole conditional output (ε and learned σ channels)"),
            ]),
        OperationSpec(
            "decode", summary: "latents → images in [0, 1]; with grad_images, also the gradient of Σ grad_images·images with respect to the latents",
            inputs: [
                TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "scaled latents"),
                TensorSpec("grad_images", dtypes: ["f32"], shape: "N×C×S×S", summary: "an upstream gradient (vector–Jacobian product)", optional: true),
            ],
            outputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×C×S×S", summary: "images in [0, 1]"),
                TensorSpec("grad_latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "with grad_images: the latents' gradient"),
            ]),
        OperationSpec(
            "sample",
            summary:
                "DDIM with CFG: from noise, per_class images of each class → images, samples.png; or from input latents at from_step → clean latents and images",
            inputs: [
                TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "start latents (optional: noise otherwise)", optional: true),
                TensorSpec("noise", dtypes: ["f32"], shape: "N×4×L×L", summary: "DiT pipeline: the initial noise at the grid's last timestep", optional: true),
                TensorSpec("labels", dtypes: ["i64", "i32"], shape: "N", summary: "their classes (with latents)", optional: true),
                TensorSpec("classes", dtypes: ["i64", "i32"], shape: "N", summary: "DiT pipeline: their classes (with noise or latents)", optional: true),
            ],
            outputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×C×S×S", summary: "images in [0, 1]"),
                TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "with input latents (always with a DiT pipeline): the clean latents"),
            ]),
        OperationSpec(
            "invert",
            summary: "DDIM inversion (with CFG) of images (or clean latents) up to to_step; optionally the latents at record_step and the round trip's error",
            inputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×C×S×S", summary: "images in [0, 1] (or pass latents)", optional: true),
                TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "clean scaled latents (instead of images)", optional: true),
                TensorSpec("labels", dtypes: ["i64", "i32"], shape: "N", summary: "their classes", optional: true),
                TensorSpec("classes", dtypes: ["i64", "i32"], shape: "N", summary: "DiT pipeline: their classes (instead of labels)", optional: true),
            ],
            outputs: [
                TensorSpec("latents", dtypes: ["f32"], shape: "N×4×L×L", summary: "the inverted latents at to_step"),
                TensorSpec("recorded", dtypes: ["f32"], shape: "N×4×L×L", summary: "the latents at record_step"),
            ]),
        OperationSpec("train", summary: "autoencoder then DiT on a dataset → a model folder (config.json, model.safetensors), curve.csv, samples.png"),
        OperationSpec(
            "convert",
            summary:
                "a model folder written by latent-diffusion 0.2 (its own DiT's tensor names) → the same model under DiT's names (NN's DiTTransformer2DModel) in DIR/model; values moved, not recomputed"
        ),
    ]

    func model(_ o: Options) throws -> LatentDiffusionModel { try loadDiffusion(o.model) }

    func images(_ request: Request<Options>, _ m: LatentDiffusionModel, name: String) throws -> Tensor {
        let c = m.config
        let x = try request.inputs.require(name, dtypes: [.float32], rank: 4)
        guard x.shape[1] == c.channels, x.shape[2] == c.imageSize, x.shape[3] == c.imageSize else {
            throw MenagerieError.invalidArgument("input '\(name)' must be [N, \(c.channels), \(c.imageSize), \(c.imageSize)] for this model, got \(x.shape)")
        }
        return x.owned()
    }

    func embed(_ request: Request<Options>) throws -> Response {
        if let p = try pipeline(request.options) { return try pipelineEmbed(request, p) }
        let m = try model(request.options), c = m.config
        let x = try images(request, m, name: "images")
        let z = m.encode(try x.scalars(as: Float.self), count: x.shape[0])
        return Response(
            result: ["latent_shape": .array([.number(Double(c.latentChannels)), .number(Double(c.latentSize)), .number(Double(c.latentSize))])],
            tensors: [("latents", try Tensor(z, shape: [x.shape[0], c.latentChannels, c.latentSize, c.latentSize]))])
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "decode": return try decode(request)
        case "config": return try describeModel(request)
        case "denoise": return try denoise(request)
        case "sample": return try sample(request)
        case "invert": return try invert(request)
        case "train": return try train(request)
        case "convert": return try convert(request)
        default: throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'")
        }
    }

    /// Input `name`: scaled latents [N, c, L, L] of this model, every value finite.
    func latents(_ request: Request<Options>, _ m: LatentDiffusionModel, name: String = "latents") throws -> Tensor {
        let c = m.config
        let z = try request.inputs.require(name, dtypes: [.float32], rank: 4)
        guard Array(z.shape.dropFirst()) == [c.latentChannels, c.latentSize, c.latentSize] else {
            throw MenagerieError.invalidArgument("input '\(name)' must be [N, \(c.latentChannels), \(c.latentSize), \(c.latentSize)], got \(z.shape)")
        }
        if let bad = try z.scalars(as: Float.self).firstIndex(where: { !$0.isFinite }) {
            throw MenagerieError.invalidArgument("input '\(name)' holds a non-finite value at flat index \(bad)")
        }
        return z.owned()
    }

    /// Input `labels`: one class per row (the null class `classes` too when `allowNull`).
    func labels(_ request: Request<Options>, _ m: LatentDiffusionModel, count n: Int, allowNull: Bool = false) throws -> [Int] {
        let c = m.config
        let labels = try request.inputs.require("labels", dtypes: [.int64, .int32], rank: 1).integers()
        let valid = 0..<(c.classes + (allowNull ? 1 : 0))
        guard labels.count == n, labels.allSatisfy({ valid.contains($0) }) else {
            throw MenagerieError.invalidArgument(
                "input 'labels' needs one class in 0..<\(c.classes)\(allowNull ? " (or the null class \(c.nullClass))" : "") per row, got \(labels.count) for \(n) rows"
            )
        }
        return labels
    }

    /// The grid level of timestep `t` for `steps` DDIM steps; `key` names the option in the error.
    func level(_ ddim: DDIM, _ t: Int, key: String) throws -> Int {
        do { return try ddim.level(of: t) } catch { throw MenagerieError.invalidArgument("\(key): \(error)") }
    }

    func decode(_ request: Request<Options>) throws -> Response {
        if let p = try pipeline(request.options) { return try pipelineDecode(request, p) }
        let o = request.options
        let m = try model(o), c = m.config
        let z = try latents(request, m)
        let n = z.shape[0], values = try z.scalars(as: Float.self)
        let shape = [n, c.channels, c.imageSize, c.imageSize]
        let key = (o.model as NSString).expandingTildeInPath
        guard request.inputs["grad_images"] != nil else {
            if o.retain_graph {
                let graph = m.decodeGraph(values, count: n)
                retainedDecode.keep(graph, model: key)
                return Response(result: [:], tensors: [("images", graph.images.value)])
            }
            retainedDecode.clear()
            return Response(result: [:], tensors: [("images", try Tensor(m.decode(values, count: n), shape: shape))])
        }
        let upstream = try request.inputs.require("grad_images", dtypes: [.float32], rank: 4)
        guard upstream.shape == shape else {
            throw MenagerieError.invalidArgument("input 'grad_images' must be \(shape) (the decoded images' shape), got \(upstream.shape)")
        }
        // The kept graph when it decoded exactly these latents with this model; else decode again.
        let graph = retainedDecode.take(latents: values, model: key) ?? m.decodeGraph(values, count: n)
        let grad = graph.gradient(upstream: upstream)
        return Response(result: [:], tensors: [("images", graph.images.value), ("grad_latents", try Tensor(grad, shape: z.shape))])
    }

    /// `config`: what a distiller driving this model through the host needs.
    func describeModel(_ request: Request<Options>) throws -> Response {
        if let p = try pipeline(request.options) { return try pipelineConfig(request, p) }
        let m = try model(request.options), c = m.config
        let folder = request.options.model.isEmpty ? try embeddedDiffusionFolder() : (request.options.model as NSString).expandingTildeInPath
        return Response(result: [
            "image_size": .number(Double(c.imageSize)), "channels": .number(Double(c.channels)),
            "latent_shape": .array([.number(Double(c.latentChannels)), .number(Double(c.latentSize)), .number(Double(c.latentSize))]),
            "classes": .number(Double(c.classes)), "class_names": .array(c.classNames.map { .string($0) }),
            "null_class": .number(Double(c.nullClass)), "dataset": .string(c.dataset), "schedule": .string(c.schedule),
            "alphas_cumprod": .array(m.schedule.alphaBar.map { .number($0) }),
            "identity": .string(fileIdentity(folder + "/model.safetensors")),
        ])
    }

    /// `denoise`: ε at one timestep with classifier-free guidance.
    func denoise(_ request: Request<Options>) throws -> Response {
        if let p = try pipeline(request.options) { return try pipelineDenoise(request, p) }
        let o = request.options
        let m = try model(o)
        let z = try latents(request, m)
        let classes = try labels(request, m, count: z.shape[0], allowNull: true)
        guard (0..<m.schedule.steps).contains(o.timestep) else {
            throw MenagerieError.invalidArgument("option 'timestep' = \(o.timestep) is outside the schedule's 0..<\(m.schedule.steps)")
        }
        let e = try m.predictor(guidance: o.guidance)(try z.scalars(as: Float.self), o.timestep, classes)
        return Response(result: [:], tensors: [("epsilon", try Tensor(e, shape: z.shape))])
    }

    func sample(_ request: Request<Options>) throws -> Response {
        if let p = try pipeline(request.options) { return try pipelineSample(request, p) }
        let o = request.options
        let m = try model(o), c = m.config
        guard o.steps > 0 else { throw MenagerieError.invalidArgument("option 'steps' must be positive") }
        let ddim = DDIM(schedule: m.schedule, steps: o.steps)
        if request.inputs["latents"] != nil {
            // From given latents (a distiller's): the clean latents and their images.
            let start = try latents(request, m)
            let n = start.shape[0]
            let classes = try labels(request, m, count: n)
            let from = o.from_step < 0 ? ddim.timesteps.count - 1 : try level(ddim, o.from_step, key: "from_step")
            let z = try ddim.sample(
                try start.scalars(as: Float.self), from: from, classes: classes, predict: m.predictor(guidance: o.guidance),
                cancelled: { try request.host.checkCancelled() })
            let images = try Tensor(m.decode(z, count: n), shape: [n, c.channels, c.imageSize, c.imageSize])
            return Response(result: ["images": .number(Double(n))], tensors: [("latents", try Tensor(z, shape: start.shape)), ("images", images)])
        }
        let classes = o.classes.isEmpty ? Array(0..<c.classes) : o.classes
        guard classes.allSatisfy({ (0..<c.classes).contains($0) }), o.per_class > 0 else {
            throw MenagerieError.invalidArgument("classes must lie in 0..<\(c.classes); per_class positive")
        }
        let labels = classes.flatMap { [Int](repeating: $0, count: o.per_class) }
        var rng = SeededGenerator(seed: UInt64(bitPattern: Int64(o.seed)))
        let start = (0..<(labels.count * c.latentDimension)).map { _ in Float(rng.nextNormal()) }
        let began = Date()
        let z = try ddim.sample(
            start, from: ddim.timesteps.count - 1, classes: labels, predict: m.predictor(guidance: o.guidance),
            cancelled: { try request.host.checkCancelled() })
        let x = m.decode(z, count: labels.count)
        let seconds = Date().timeIntervalSince(began)
        let images = try Tensor(x, shape: [labels.count, c.channels, c.imageSize, c.imageSize])
        var set = DistilledSet(
            images: images, labels: labels, classes: c.classNames.isEmpty ? (0..<c.classes).map { "class \($0)" } : c.classNames,
            method: "diffusion", dataset: c.dataset, ipc: o.per_class)
        set.extra["guidance"] = "\(o.guidance)"
        try set.grid().write(to: request.host.scratchDirectory + "/samples.png")
        return Response(
            result: [
                "images": .number(Double(labels.count)), "seconds": .number(seconds),
                "images_per_s": .number(Double(labels.count) / seconds),
            ],
            tensors: [("images", images), ("labels", Tensor(labels.map(Int64.init)))], artifacts: Figure.files("samples.png"))
    }

    func invert(_ request: Request<Options>) throws -> Response {
        if let p = try pipeline(request.options) { return try pipelineInvert(request, p) }
        let o = request.options
        let m = try model(o), c = m.config
        guard o.steps > 0 else { throw MenagerieError.invalidArgument("option 'steps' must be positive") }
        let clean: [Float], n: Int
        if request.inputs["latents"] != nil {
            let z = try latents(request, m)
            (clean, n) = (try z.scalars(as: Float.self), z.shape[0])
        } else {
            let x = try images(request, m, name: "images")
            (clean, n) = (m.encode(try x.scalars(as: Float.self), count: x.shape[0]), x.shape[0])
        }
        let classes = try labels(request, m, count: n)
        let ddim = DDIM(schedule: m.schedule, steps: o.steps)
        let top = try level(ddim, o.to_step, key: "to_step")
        let recordLevel = o.record_step < 0 ? nil : try level(ddim, o.record_step, key: "record_step")
        if let recordLevel, recordLevel > top {
            throw MenagerieError.invalidArgument("record_step \(o.record_step) lies beyond to_step \(o.to_step): the inversion never reaches it")
        }
        let predict = m.predictor(guidance: o.guidance)
        var recorded: [Float] = []
        let z = try ddim.invert(
            clean, to: top, classes: classes, predict: predict, record: { i, latent in if i == recordLevel { recorded = latent } },
            cancelled: { try request.host.checkCancelled() })
        let shape = [n, c.latentChannels, c.latentSize, c.latentSize]
        var tensors: [(name: String, tensor: Tensor)] = [("latents", try Tensor(z, shape: shape))]
        if recordLevel != nil { tensors.append(("recorded", try Tensor(recorded, shape: shape))) }
        var result: [String: JSONValue] = ["level": .number(Double(top))]
        if o.round_trip {
            let back = try ddim.sample(z, from: top, classes: classes, predict: predict, cancelled: { try request.host.checkCancelled() })
            let error = zip(back, clean).map { Double(($0 - $1) * ($0 - $1)) }.reduce(0, +) / Double(max(clean.count, 1))
            let power = clean.map { Double($0 * $0) }.reduce(0, +) / Double(max(clean.count, 1))
            result["reconstruction_mse"] = .number(error)
            result["relative_error"] = .number((error / max(power, 1e-12)).squareRoot())
        }
        return Response(result: .object(result), tensors: tensors)
    }

    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        // Positivity first (before the dataset is read, and before any `%` or `/` by these).
        for (key, value) in [
            ("size", o.size), ("dit_width", o.dit_width), ("dit_depth", o.dit_depth), ("dit_heads", o.dit_heads),
            ("patch", o.patch), ("batch", o.batch), ("autoencoder_batch", o.autoencoder_batch),
            ("checkpoint_every", o.checkpoint_every),
        ] + o.autoencoder_widths.enumerated().map({ ("autoencoder_widths[\($0)]", $1) })
        where value <= 0 {
            throw MenagerieError.invalidArgument("option '\(key)' = \(value) must be positive")
        }
        guard o.dit_width % o.dit_heads == 0 else {
            throw MenagerieError.invalidArgument("option 'dit_width' = \(o.dit_width) is not divisible by 'dit_heads' = \(o.dit_heads)")
        }
        let data = try RealData.load(request.host, dataset: o.dataset, options: o.dataset_options, split: "train", size: o.size, attribute: "", limit: o.limit)
        var config = LatentDiffusionConfig()
        config.imageSize = data.size
        config.channels = data.channels
        config.autoencoderWidths = o.autoencoder_widths
        config.ditWidth = o.dit_width
        config.ditDepth = o.dit_depth
        config.ditHeads = o.dit_heads
        config.patch = o.patch
        config.classes = data.classes.count
        config.classNames = data.classes
        config.schedule = o.schedule
        config.dataset = o.dataset + (o.dataset_options.isEmpty ? "" : " " + o.dataset_options.joined(separator: " "))
        let model: LatentDiffusionModel
        do { model = try LatentDiffusionModel(config: config, seed: UInt64(bitPattern: Int64(o.seed))) } catch {
            throw MenagerieError.invalidArgument("\(error)")
        }
        let dir = request.host.scratchDirectory + "/model"
        var training = LatentDiffusionTraining()
        training.autoencoderSteps = o.autoencoder_steps
        training.ditSteps = o.dit_steps
        training.batch = o.batch
        training.autoencoderBatch = o.autoencoder_batch
        training.lr = Float(o.lr)
        training.autoencoderLR = Float(o.autoencoder_lr)
        training.autoencoderLoss = LatentDiffusionTraining.AutoencoderLoss(rawValue: o.autoencoder_loss) ?? .mseL1
        training.classDropout = o.class_dropout
        training.seed = UInt64(bitPattern: Int64(o.seed))
        training.checkpointEvery = o.checkpoint_every
        let curve = try training.run(model: model, images: data.images, labels: data.labels, host: request.host, folder: dir)
        try? FileManager.default.removeItem(atPath: dir + "/checkpoint")
        let dtype: DType = o.save_dtype == "f16" ? .float16 : o.save_dtype == "bf16" ? .bfloat16 : .float32
        try model.save(folder: dir, dtype: dtype)
        var csv = "phase,step,loss,seconds\n"
        for r in curve { csv += "\(r.phase),\(r.step),\(String(format: "%.6f", r.loss)),\(String(format: "%.1f", r.seconds))\n" }
        try AtomicFile.write(csv, to: dir + "/curve.csv")
        // A look at what it learned: 4 samples of the first 8 classes.
        var sampling = o
        sampling.model = dir
        sampling.classes = Array(0..<min(8, config.classes))
        let samples = try sample(Request(options: sampling, inputs: request.inputs, host: request.host, component: Self.id, operation: "sample"))
        try FileManager.default.moveItem(atPath: request.host.scratchDirectory + "/samples.png", toPath: dir + "/samples.png")
        return Response(
            result: [
                "images": .number(Double(data.count)), "classes": .number(Double(config.classes)),
                "scale_factor": .number(Double(model.config.scaleFactor)),
                "autoencoder_loss": .number(curve.last { $0.phase == "autoencoder" }?.loss ?? .nan),
                "dit_loss": .number(curve.last { $0.phase == "dit" }?.loss ?? .nan),
                "seconds": .number(curve.last?.seconds ?? 0), "sample_images_per_s": samples.result["images_per_s"] ?? .null,
            ],
            artifacts: ["model"])
    }

    /// `convert`: a 0.2 folder (`model`) → `model/` in the scratch directory with the DiT under
    /// DiT's names (`LegacyDiTNames`), config.json and the other files copied; the result is loaded
    /// once before it is reported.
    func convert(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.model.isEmpty else {
            throw MenagerieError.invalidArgument("convert needs option 'model': a latent diffusion folder written by latent-diffusion 0.2")
        }
        let folder = (o.model as NSString).expandingTildeInPath
        let config = try LatentDiffusionModel.readConfig(folder: folder)
        let checkpoint: Checkpoint
        do { checkpoint = try Checkpoint(path: folder + "/model.safetensors") } catch { throw MenagerieError.invalidArgument("\(error)") }
        guard LegacyDiTNames.isLegacy(checkpoint) else {
            throw MenagerieError.invalidArgument(
                "'\(folder)/model.safetensors' has no dit.x_embedder.weight: it is not a latent-diffusion 0.2 model (nothing to convert)")
        }
        let tensors = try LegacyDiTNames.convert(checkpoint, config: config)
        let dir = request.host.scratchDirectory + "/model"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try SafeTensors.write(tensors, metadata: ["format": "menagerie-latent-diffusion"], to: dir + "/model.safetensors")
        for file in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where file != "model.safetensors" && file != "checkpoint" {
            try FileManager.default.copyItem(atPath: folder + "/" + file, toPath: dir + "/" + file)
        }
        _ = try LatentDiffusionModel.load(folder: dir)
        let renamed = tensors.filter { $0.name.hasPrefix("dit.") }.count
        return Response(result: ["tensors": .number(Double(tensors.count)), "dit_tensors": .number(Double(renamed))], artifacts: ["model"])
    }
}
