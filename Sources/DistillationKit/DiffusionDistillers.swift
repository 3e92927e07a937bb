import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// Options of the diffusion distillers (`diffusion-dd`, `d3hr`, `concord`): one table, so that a
/// study passes the same options to each and `menagerie info` shows every one of them.
public struct DiffusionDistillOptions: ComponentOptions {
    public var generator = "latent-diffusion"
    public var model = ""
    public var dataset = "synthetic-tol"
    public var dataset_options: [String] = []
    public var ipc = 10
    public var steps = 50
    public var guidance = 4.0
    public var batch = 128
    public var classes: [Int] = []
    public var class_ids: [Int] = []
    // D^3HR
    public var inversion_step = 760
    public var sampling_step = 600
    public var start_step = 620
    public var candidates = 2000
    public var skew_weight = 0.1
    public var skewness = "across_members"
    public var limit = 0
    public var statistics = ""
    // CONCORD
    public var base = "plain"
    public var concepts = ""
    public var positives = 5
    public var negatives = 5
    public var policy = "weighted"
    public var lambda = 1.0
    public var temperature = 0.05
    public var clip = "bioclip2"
    public var clip_options: [String] = []
    public init() {}
    public static let help = [
        "generator": "the diffusion backbone component called through the host (config, denoise, decode, sample, invert)",
        "model": "the latent diffusion folder the generator loads (empty: its embedded synthetic-tol model)",
        "dataset": "the dataset the model was trained on (d3hr inverts its train split; class names are checked)",
        "dataset_options": "key=value options for the dataset", "ipc": "images per class", "steps": "DDIM steps (η = 0)",
        "guidance": "classifier-free guidance scale (D^3HR and DiT: 4.0)", "batch": "latents per denoiser call",
        "classes": "generate only these class indices (the set's classes: the dataset's, or the backbone's without class_ids; empty: all)",
        "class_ids":
            "the backbone class of each dataset class, in the dataset's class order (e.g. the ImageNet ids of a 10-class subset on DiT-XL/2's 1,000 classes); empty: dataset class k is backbone class k, and the class counts must agree",
        "inversion_step":
            "d3hr: the last timestep the released code inverts to and stores (760 of 1000; the statistics need only sampling_step, where the inversion stops)",
        "sampling_step":
            "d3hr: the timestep whose class statistics are sampled (the released 600 of DiT's 1000 training steps; d3hr timesteps are on a 1000-step scale, t·T/1000 for a backbone of T steps)",
        "start_step":
            "d3hr: the timestep generation starts from with the chosen latents (the released 620: one 50-step slot above sampling_step; set it to sampling_step for the earlier behaviour)",
        "candidates": "d3hr: candidate groups scored per class", "skew_weight": "d3hr: weight of the skewness term",
        "skewness":
            "d3hr: across_members (the released skewness_batch: each dimension standardised across the group, D/((D−1)(D−2)) with D the latent size) or within_latent (the earlier reading: each latent over its own dimensions)",
        "limit": "d3hr: at most the first this many training images inverted (0: all)",
        "statistics":
            "d3hr: a folder of per-class statistics (class_KKKKK.safetensors: mean, variance, count and the run's identity), written as each class finishes and read back by a rerun, which computes only the missing classes; a file made by another run is an error naming it (empty: kept in memory only)",
        "base": "concord: the generator guided, plain (from noise) or d3hr (the d3hr component's group latents, through the host)",
        "concepts": "concord: concepts JSON {class_idx: [name, [descriptions]]} (empty: the file shipped for synthetic-tol or cmnist-dd)",
        "positives": "concord: descriptions per class used as positives", "negatives": "concord: negative classes per sample (K)",
        "policy": "concord: negative classes weighted (by name similarity), similar (top K) or random",
        "lambda": "concord: guidance strength λ (the paper's 1–2; the released code's 10 saturates this model's images, Docs/methods/diffusion-dd.md)",
        "temperature": "concord: τ of the concept loss",
        "clip": "concord: the CLIP backbone component (texts + image embeddings with gradients)",
        "clip_options": "concord: key=value options for it (e.g. model=~/bioclip-2)",
    ]
    public static let choices = [
        "base": ["plain", "d3hr"], "policy": ["weighted", "similar", "random"], "skewness": ["across_members", "within_latent"],
    ]

    /// The checks every diffusion distiller makes before it calls anything.
    public func validate() throws {
        guard ipc > 0, steps > 0, batch > 0 else { throw MenagerieError.invalidArgument("ipc, steps and batch must be positive") }
    }
}

/// A class-conditional latent diffusion backbone called through the host — `latent-diffusion`, or
/// any component answering the same operations (Docs/kinds.md, "diffusion backbones"): `config`
/// (sizes, classes, the schedule's ᾱ), `denoise` (ε with classifier-free guidance at one timestep),
/// `embed` (images → scaled latents), `decode` (and its vector–Jacobian product), `sample` (DDIM
/// from given latents) and `invert` (DDIM inversion, recording one level). Every number it answers
/// is checked like a file's before it sizes or indexes anything.
public struct DiffusionClient: Sendable {
    public struct Config: Sendable, Equatable {
        public var imageSize: Int
        public var channels: Int
        public var latentChannels: Int
        public var latentSize: Int
        public var classes: Int
        public var classNames: [String]
        public var dataset: String
        /// The weights' identity (path, size, modification time): a cache key.
        public var identity: String
        public var latentDimension: Int { latentChannels * latentSize * latentSize }
        public var latentShape: [Int] { [latentChannels, latentSize, latentSize] }
    }

    public let component: ComponentProxy
    public let config: Config
    public let schedule: NoiseSchedule
    /// The backbone's DDIM grid settings when it names them (a diffusers pipeline's scheduler:
    /// `timestep_spacing`, `steps_offset`, `set_alpha_to_one`, `prediction_type`, `clip_sample`), so a
    /// distiller's own DDIM loop walks the backbone's grid; nil: the plain grid of `DDIM(schedule:steps:)`.
    public let scheduler: DDIMSchedulerConfig?
    let model: String

    /// Resolves `id` and reads its configuration for the model folder `model` (empty: its embedded one).
    public init(_ host: PluginHost, id: String, model: String, neededBy purpose: String) throws {
        component = try host.resolve(id, kind: .backbone, neededBy: purpose, plugin: id == "latent-diffusion" ? "latent-diffusion" : nil)
        self.model = model
        let r = try component.invoke("config", options: ["model": .string(model)]).result
        let source = "the config of diffusion backbone '\(id)'"
        func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int {
            do { return try Limits.int(r[key], key: key, in: range, source: source) } catch { throw MenagerieError.invalidArgument("\(error)") }
        }
        let shape = r["latent_shape"]?.arrayValue?.compactMap(\.intValue) ?? []
        guard shape.count == 3, shape.allSatisfy({ (1...65536).contains($0) }), shape[1] == shape[2] else {
            throw MenagerieError.invalidArgument("\(source): latent_shape must be [channels, side, side], got \(r["latent_shape"]?.compactText ?? "nothing")")
        }
        let classes = try int("classes", 1...Limits.vocabulary.upperBound)
        config = Config(
            imageSize: try int("image_size", 1...65536), channels: try int("channels", 1...4), latentChannels: shape[0], latentSize: shape[1],
            classes: classes, classNames: (r["class_names"]?.arrayValue ?? []).compactMap(\.stringValue),
            dataset: r["dataset"]?.stringValue ?? "", identity: r["identity"]?.stringValue ?? "")
        guard config.latentDimension <= 1 << 24 else { throw MenagerieError.invalidArgument("\(source): latents of \(shape) are too large") }
        let alphaBar = (r["alphas_cumprod"]?.arrayValue ?? []).compactMap(\.doubleValue)
        do { schedule = try NoiseSchedule(alphaBar: alphaBar) } catch { throw MenagerieError.invalidArgument("\(source): \(error)") }
        if let spacing = r["timestep_spacing"]?.stringValue {
            var c = DDIMSchedulerConfig()
            c.trainSteps = alphaBar.count
            guard let s = DDIMSchedulerConfig.Spacing(rawValue: spacing) else {
                throw MenagerieError.invalidArgument("\(source): timestep_spacing '\(spacing)' is not leading, trailing or linspace")
            }
            c.spacing = s
            c.stepsOffset = try int("steps_offset", 0...alphaBar.count)
            c.setAlphaToOne = r["set_alpha_to_one"]?.boolValue ?? true
            let prediction = r["prediction_type"]?.stringValue ?? "epsilon"
            guard let p = DDIMSchedulerConfig.Prediction(rawValue: prediction) else {
                throw MenagerieError.invalidArgument("\(source): prediction_type '\(prediction)' is not epsilon, sample or v_prediction")
            }
            c.prediction = p
            c.clipSample = r["clip_sample"]?.boolValue ?? false
            if c.clipSample {
                guard let range = r["clip_sample_range"]?.doubleValue, range.isFinite, range > 0 else {
                    throw MenagerieError.invalidArgument("\(source): clip_sample needs a positive, finite clip_sample_range")
                }
                c.clipSampleRange = range
            }
            scheduler = c
        } else {
            scheduler = nil
        }
    }

    /// The DDIM grid of `steps` steps the backbone's own `sample` and `invert` walk.
    public func ddim(steps: Int) throws -> DDIM {
        guard let scheduler else { return DDIM(schedule: schedule, steps: steps) }
        do { return try DDIM(alphaBar: schedule.alphaBar, scheduler: scheduler, steps: steps) } catch {
            throw MenagerieError.invalidArgument("option 'steps' = \(steps) on backbone '\(component.id)': \(error)")
        }
    }

    var base: [String: JSONValue] { ["model": .string(model)] }

    func options(_ extra: [String: JSONValue]) -> JSONValue { .object(base.merging(extra) { _, b in b }) }

    func latentTensor(_ x: [Float], count n: Int) throws -> Tensor { try Tensor(x, shape: [n] + config.latentShape) }

    /// The answer's tensor `name`, checked: f32 of `shape`, every value finite.
    func checked(_ r: ComponentProxy.Result, _ name: String, shape: [Int], operation: String) throws -> Tensor {
        guard let t = r.tensors[name], t.dtype == .float32, t.shape == shape else {
            throw MenagerieError.invalidArgument(
                "diffusion backbone '\(component.id)' \(operation) returned \(r.tensors[name].map { "\($0.dtype.name) \($0.shape)" } ?? "no '\(name)'"); f32 \(shape) was expected"
            )
        }
        if let bad = try t.scalars(as: Float.self).firstIndex(where: { !$0.isFinite }) {
            throw MenagerieError.invalidArgument("diffusion backbone '\(component.id)' \(operation): '\(name)' holds a non-finite value at flat index \(bad)")
        }
        return t
    }

    func labelTensor(_ classes: [Int]) -> Tensor { Tensor(classes.map(Int64.init)) }

    /// ε(x_t, t, y) with classifier-free guidance `guidance` (1: conditional only), latents flattened [N·D].
    public func epsilon(_ x: [Float], timestep t: Int, classes: [Int], guidance: Double) throws -> [Float] {
        let n = classes.count
        let r = try component.invoke(
            "denoise", options: options(["timestep": .number(Double(t)), "guidance": .number(guidance)]),
            inputs: [("latents", try latentTensor(x, count: n)), ("labels", labelTensor(classes))])
        return try checked(r, "epsilon", shape: [n] + config.latentShape, operation: "denoise").scalars(as: Float.self)
    }

    /// The predictor a DDIM loop calls: ε through the host.
    public func predictor(guidance: Double) -> NoisePredictor {
        { x, t, y in try epsilon(x, timestep: t, classes: y, guidance: guidance) }
    }

    /// Images [N, C, S, S] in [0, 1] → scaled latents [N·D].
    public func encode(_ images: Tensor) throws -> [Float] {
        let r = try component.invoke("embed", options: options([:]), inputs: [("images", images)])
        return try checked(r, "latents", shape: [images.shape[0]] + config.latentShape, operation: "embed").scalars(as: Float.self)
    }

    /// Scaled latents [N·D] → images [N, C, S, S] in [0, 1]. `retainGraph`: the backbone keeps the
    /// decode's graph for a `decodeGradient` of the same latents that follows (no second decode).
    public func decode(_ latents: [Float], count n: Int, retainGraph: Bool = false) throws -> Tensor {
        let r = try component.invoke(
            "decode", options: options(retainGraph ? ["retain_graph": true] : [:]), inputs: [("latents", try latentTensor(latents, count: n))])
        return try checked(r, "images", shape: [n, config.channels, config.imageSize, config.imageSize], operation: "decode")
    }

    /// The gradient with respect to the scaled latents of Σ upstream·decode(latents).
    public func decodeGradient(_ latents: [Float], count n: Int, upstream: Tensor) throws -> [Float] {
        let r = try component.invoke(
            "decode", options: options([:]), inputs: [("latents", try latentTensor(latents, count: n)), ("grad_images", upstream)])
        return try checked(r, "grad_latents", shape: [n] + config.latentShape, operation: "decode").scalars(as: Float.self)
    }

    /// DDIM (η = 0) from `start` at timestep `fromStep` down to the clean latents.
    public func sample(_ start: [Float], classes: [Int], steps: Int, guidance: Double, fromStep: Int) throws -> [Float] {
        let n = classes.count
        let r = try component.invoke(
            "sample",
            options: options(["steps": .number(Double(steps)), "guidance": .number(guidance), "from_step": .number(Double(fromStep))]),
            inputs: [("latents", try latentTensor(start, count: n)), ("labels", labelTensor(classes))])
        return try checked(r, "latents", shape: [n] + config.latentShape, operation: "sample").scalars(as: Float.self)
    }

    /// DDIM inversion of clean latents up to `toStep`; returns the latents at `recordStep` (≤ toStep).
    /// A backbone that names a diffusers scheduler (a DiT pipeline) takes the inversion's CFG scale as
    /// `inverse_guidance` (its `guidance` is the sampler's); both get `guidance` here.
    public func invert(_ clean: [Float], classes: [Int], steps: Int, guidance: Double, toStep: Int, recordStep: Int) throws -> [Float] {
        let n = classes.count
        var settings: [String: JSONValue] = [
            "steps": .number(Double(steps)), "guidance": .number(guidance), "to_step": .number(Double(toStep)),
            "record_step": .number(Double(recordStep)), "round_trip": false,
        ]
        if scheduler != nil { settings["inverse_guidance"] = .number(guidance) }
        let r = try component.invoke(
            "invert",
            options: options(settings),
            inputs: [("latents", try latentTensor(clean, count: n)), ("labels", labelTensor(classes))])
        return try checked(r, "recorded", shape: [n] + config.latentShape, operation: "invert").scalars(as: Float.self)
    }

    /// Class names for a generated set: the model's, else "class k".
    public var classNames: [String] {
        config.classNames.count == config.classes ? config.classNames : (0..<config.classes).map { "class \($0)" }
    }
}

/// A diffusion distiller component (`diffusion-dd`, `d3hr`, `concord`): `distill` runs `generate`
/// and writes the set's files.
public protocol DiffusionDistiller: Distiller where Options == DiffusionDistillOptions {
    /// The method's name in the set's metadata and result.
    static func generate(_ options: DiffusionDistillOptions, host: PluginHost, log: inout [String: JSONValue]) throws -> DistilledSet
}

extension DiffusionDistiller {
    public static var operations: [OperationSpec] {
        [
            OperationSpec(
                "distill", summary: "generate `ipc` images per class with the latent diffusion model → distilled.safetensors, grid.png",
                outputs: distilledSetOutputs)
        ]
    }

    public func distill(_ request: Request<DiffusionDistillOptions>) throws -> Response {
        var log: [String: JSONValue] = [:]
        let t0 = Date()
        try request.options.validate()
        let set = try Self.generate(request.options, host: request.host, log: &log)
        let artifacts = try set.writeRunFiles(to: request.host.scratchDirectory)
        var result = log
        result["method"] = .string(set.method)
        result["ipc"] = .number(Double(set.ipc))
        result["images"] = .number(Double(set.count))
        result["seconds"] = .number(Date().timeIntervalSince(t0))
        result["distilled"] = "distilled.safetensors"
        return Response(result: .object(result), tensors: set.responseTensors, artifacts: artifacts)
    }
}

/// The classes a diffusion distiller generates (all, or `classes`), checked against the set's
/// `classes` (the backbone's, or the entries of `class_ids`).
public func chosenClasses(_ o: DiffusionDistillOptions, classes: Int) throws -> [Int] {
    if let bad = o.classes.first(where: { !(0..<classes).contains($0) }) {
        throw MenagerieError.invalidArgument(
            "option 'classes': class \(bad) lies outside 0..<\(classes) "
                + (o.class_ids.isEmpty ? "(the diffusion backbone's classes: a DiT pipeline's num_embeds_ada_norm)" : "(the entries of class_ids)"))
    }
    return o.classes.isEmpty ? Array(0..<classes) : o.classes
}

/// A generated set with the metadata the evaluation protocols read: the normaliser (the real
/// data's statistics when read, else the generated images' own), the options that made it.
public func generatedSet(
    images: Tensor, labels: [Int], classes: [String], method: String, options o: DiffusionDistillOptions, realStats: Normalizer?
) throws -> DistilledSet {
    var set = DistilledSet(images: images, labels: labels, classes: classes, method: method, dataset: o.dataset, ipc: o.ipc)
    let pixels = realStats == nil ? try images.scalars(as: Float.self) : []
    let normalizer =
        realStats
        ?? Normalizer(
            RealData(
                images: pixels, labels: labels, attributes: nil, classes: classes, channels: images.shape[1], size: images.shape[2],
                dataset: o.dataset))
    set.extra["mean"] = JSONValue.array(normalizer.mean.map { .number(Double($0)) }).compactText
    set.extra["std"] = JSONValue.array(normalizer.std.map { .number(Double($0)) }).compactText
    set.extra["dataset_options"] = JSONValue.array(o.dataset_options.map { .string($0) }).compactText
    set.extra["guidance"] = "\(o.guidance)"
    set.extra["steps"] = "\(o.steps)"
    return set
}

extension DistilledSet {
    /// The set a distiller returned through the host (its `images` and `labels` tensors), checked as
    /// a file's would be.
    public init(response r: ComponentProxy.Result, from id: String, classes: [String], dataset: String, ipc: Int) throws {
        guard let x = r.tensors["images"], x.dtype == .float32, x.rank == 4, x.shape[2] == x.shape[3], let y = r.tensors["labels"] else {
            throw MenagerieError.invalidArgument("distiller '\(id)' returned no images [N, C, S, S] and labels [N]")
        }
        let labels = try y.integers()
        guard labels.count == x.shape[0], labels.allSatisfy({ (0..<classes.count).contains($0) }) else {
            throw MenagerieError.invalidArgument(
                "distiller '\(id)' returned \(labels.count) labels for \(x.shape[0]) images, or labels outside 0..<\(classes.count)")
        }
        if let bad = try x.scalars(as: Float.self).firstIndex(where: { !$0.isFinite }) {
            throw MenagerieError.invalidArgument("distiller '\(id)' returned a non-finite pixel at flat index \(bad)")
        }
        self.init(images: x, labels: labels, classes: classes, method: r.result["method"]?.stringValue ?? id, dataset: dataset, ipc: ipc)
    }
}

extension BenchmarkRun {
    /// Images per second of a diffusion distiller generating 16 images (4 classes × IPC 4).
    public func generationBenchmark(_ name: String, component: String) throws {
        guard wanted(name) else { return }
        var samples: [Double] = []
        for _ in 0..<2 {
            let r = try invoke(component, operation: "distill", options: ["classes": [0, 8, 16, 24], "ipc": 4])
            samples.append(r.result["images_per_s"]?.doubleValue ?? 0)
        }
        records.append(record(name, unit: "images/s", samples))
    }
}
