import DistillationKit
import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// Loaded diffusers / original-DiT pipelines, by path, heads and numerics, and the weights' identity.
let loadedPipelines = ProcessCache<DiTPipeline>()

/// `model=PATH` names a DiT pipeline (rather than a folder of this plugin's own format) when PATH is
/// a diffusers folder (`model_index.json`) or facebookresearch/DiT's `.pt` (a file, or a folder holding
/// one, with a diffusers `vae/` folder beside it).
func pipelinePath(_ model: String) -> String? {
    guard !model.isEmpty else { return nil }
    let path = (model as NSString).expandingTildeInPath
    if FileManager.default.fileExists(atPath: path + "/config.json") { return nil } // this plugin's own folder
    return DiTPipeline.recognises(path) ? path : nil
}

extension LatentDiffusionComponent {
    /// The pipeline `model` names, or nil for this plugin's own format (and the embedded model).
    func pipeline(_ o: Options) throws -> DiTPipeline? {
        guard let path = pipelinePath(o.model) else { return nil }
        let options = DiTPipeline.OriginalOptions(heads: o.dit_pt_heads > 0 ? o.dit_pt_heads : nil, diffusersNumerics: o.dit_pt_numerics == "diffusers")
        let stamp: String = {
            if FileManager.default.fileExists(atPath: path + "/model_index.json") {
                return Checkpoint.weightsFile(
                    in: path + "/transformer",
                    ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors.index.json"])
                    ?? path + "/model_index.json"
            }
            return path
        }()
        do {
            return try loadedPipelines.value("\(path)|\(o.dit_pt_heads)|\(o.dit_pt_numerics)", stamp: stamp) {
                try DiTPipeline.load(path: path, original: options)
            }
        } catch let e as FormatError { throw MenagerieError.invalidArgument("model '\(o.model)': \(e)") } catch let e as DiffusionError {
            throw MenagerieError.invalidArgument("model '\(o.model)': \(e)")
        }
    }

    func guidedChannels(_ o: Options) -> DiTPipeline.GuidedChannels { o.guidance_channels == "3" ? .first(3) : .all }

    /// The latent shape [C, s, s] of a pipeline.
    func latentShape(_ p: DiTPipeline) -> [Int] {
        let c = p.transformer.config
        return [c.inChannels, c.sampleSize, c.sampleSize]
    }

    func imageShape(_ p: DiTPipeline) -> [Int] {
        let v = p.vae.config
        return [v.outChannels, p.transformer.config.sampleSize * v.downsampling, p.transformer.config.sampleSize * v.downsampling]
    }

    /// Input `name`: latents [N, C, s, s] of the pipeline, every value finite.
    func pipelineLatents(_ request: Request<Options>, _ p: DiTPipeline, name: String) throws -> Tensor {
        let z = try request.inputs.require(name, dtypes: [.float32], rank: 4)
        let shape = latentShape(p)
        guard Array(z.shape.dropFirst()) == shape else {
            throw MenagerieError.invalidArgument(
                "input '\(name)' must be [N, \(shape.map(String.init).joined(separator: ", "))] (the transformer's in_channels and sample_size), got \(z.shape)"
            )
        }
        if let bad = try z.scalars(as: Float.self).firstIndex(where: { !$0.isFinite }) {
            throw MenagerieError.invalidArgument("input '\(name)' holds a non-finite value at flat index \(bad)")
        }
        return z.owned()
    }

    /// Input `classes` (or `labels`): one class per row in 0..<classes (the null class too when allowed).
    func pipelineClasses(_ request: Request<Options>, _ p: DiTPipeline, count n: Int, allowNull: Bool) throws -> [Int] {
        let name = request.inputs["classes"] != nil ? "classes" : "labels"
        let y = try request.inputs.require(name, dtypes: [.int64, .int32], rank: 1).integers()
        let k = p.transformer.config.classes
        guard y.count == n else { throw MenagerieError.invalidArgument("input '\(name)' has \(y.count) classes for \(n) rows") }
        if let bad = y.first(where: { !(0..<(k + (allowNull ? 1 : 0))).contains($0) }) {
            throw MenagerieError.invalidArgument(
                "input '\(name)': class \(bad) is beyond num_embeds_ada_norm = \(k) (0…\(k - 1)\(allowNull ? ", \(k) the null class" : ""))")
        }
        return y
    }

    func ddim(_ p: DiTPipeline, steps: Int) throws -> DDIM {
        do { return try DDIM(scheduler: p.scheduler, steps: steps) } catch { throw MenagerieError.invalidArgument("option 'steps': \(error)") }
    }

    /// Scaled latents → images ([0, 1] scale unclamped with image_range=unit; the VAE's own ≈[−1, 1]
    /// output with signed).
    func toImageRange(_ raw: [Float], _ o: Options) -> [Float] { o.image_range == "signed" ? raw : raw.map { $0 * 0.5 + 0.5 } }

    // MARK: Operations

    func pipelineEmbed(_ request: Request<Options>, _ p: DiTPipeline) throws -> Response {
        let o = request.options
        let x = try request.inputs.require("images", dtypes: [.float32], rank: 4)
        guard Array(x.shape.dropFirst()) == [p.vae.config.inChannels] + Array(imageShape(p).dropFirst()) else {
            throw MenagerieError.invalidArgument(
                "input 'images' must be [N, \(p.vae.config.inChannels), \(imageShape(p)[1]), \(imageShape(p)[2])] for this pipeline, got \(x.shape)")
        }
        var values = try x.scalars(as: Float.self)
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw MenagerieError.invalidArgument("input 'images' holds a non-finite value at flat index \(bad)")
        }
        if o.image_range != "signed" { values = values.map { 2 * $0 - 1 } }
        let n = x.shape[0], shape = [n] + latentShape(p)
        var noise: [Float]? = nil
        if o.posterior == "sample" {
            var rng = SeededGenerator(seed: UInt64(bitPattern: Int64(o.seed)))
            noise = (0..<shape.reduce(1, *)).map { _ in Float(rng.nextNormal()) }
        }
        let z = try p.encode(values, count: n, noise: noise)
        return Response(result: ["latent_shape": .array(latentShape(p).map { .number(Double($0)) })], tensors: [("latents", try Tensor(z, shape: shape))])
    }

    func pipelineDecode(_ request: Request<Options>, _ p: DiTPipeline) throws -> Response {
        let o = request.options
        let z = try pipelineLatents(request, p, name: "latents")
        let n = z.shape[0], values = try z.scalars(as: Float.self), shape = [n] + imageShape(p)
        let key = "pipeline:" + (o.model as NSString).expandingTildeInPath + "|" + o.image_range
        let v = p.vae.config
        func graph() -> DecodeGraph {
            let latent = Variable(try! Tensor(values, shape: z.shape), requiresGrad: true)
            let raw = GradMode.with(true) { p.vae.decode(latent * (1 / v.scalingFactor) + v.shiftFactor) }
            return DecodeGraph(latents: values, z: latent, images: o.image_range == "signed" ? raw : raw * 0.5 + 0.5)
        }
        guard request.inputs["grad_images"] != nil else {
            if o.retain_graph {
                let g = graph()
                retainedDecode.keep(g, model: key)
                return Response(result: [:], tensors: [("images", g.images.value)])
            }
            retainedDecode.clear()
            return Response(result: [:], tensors: [("images", try Tensor(toImageRange(try p.decode(values, count: n), o), shape: shape))])
        }
        let upstream = try request.inputs.require("grad_images", dtypes: [.float32], rank: 4)
        guard upstream.shape == shape else {
            throw MenagerieError.invalidArgument("input 'grad_images' must be \(shape) (the decoded images' shape), got \(upstream.shape)")
        }
        let g = retainedDecode.take(latents: values, model: key) ?? graph()
        let grad = g.gradient(upstream: upstream)
        return Response(result: [:], tensors: [("images", g.images.value), ("grad_latents", try Tensor(grad, shape: z.shape))])
    }

    func pipelineConfig(_ request: Request<Options>, _ p: DiTPipeline) throws -> Response {
        let t = p.transformer.config, s = p.scheduler, image = imageShape(p)
        var names: [JSONValue] = []
        let index = (request.options.model as NSString).expandingTildeInPath + "/model_index.json"
        if let text = try? RegularFile.text(index, limit: 16 << 20), let json = try? JSONValue.parse(text, source: index),
            let labels = json["id2label"]?.objectValue
        {
            names = (0..<t.classes).map { labels[String($0)]?.stringValue.map(JSONValue.string) ?? .string("class \($0)") }
        }
        return Response(result: [
            "image_size": .number(Double(image[1])), "channels": .number(Double(image[0])),
            "latent_shape": .array(latentShape(p).map { .number(Double($0)) }),
            "classes": .number(Double(t.classes)), "class_names": .array(names), "null_class": .number(Double(t.nullClass)),
            "dataset": .string(""), "schedule": .string("diffusers \(s.className): \(s.betaSchedule.rawValue) β, \(s.trainSteps) steps"),
            "alphas_cumprod": .array(s.alphasCumprod.map { .number($0) }),
            "identity": .string(p.weightFiles.map(fileIdentity).joined(separator: "+")),
            "layout": .string(p.layout), "learned_sigma": .bool(t.learnsSigma), "model_channels": .number(Double(t.outChannels)),
            "scaling_factor": .number(Double(p.vae.config.scalingFactor)), "set_alpha_to_one": .bool(s.setAlphaToOne),
            "steps_offset": .number(Double(s.stepsOffset)), "timestep_spacing": .string(s.spacing.rawValue),
            "prediction_type": .string(s.prediction.rawValue), "clip_sample": .bool(s.clipSample), "clip_sample_range": .number(s.clipSampleRange),
            "heads": .number(Double(t.heads)), "layers": .number(Double(t.layers)), "width": .number(Double(t.width)), "patch": .number(Double(t.patch)),
        ])
    }

    /// `denoise`: the transformer's whole output `eps` [N, out, s, s] (ε and, with learned σ, its
    /// interpolation channels; conditional) at per-row `timesteps` (or option `timestep`), and the
    /// guided ε `epsilon` [N, C, s, s] (guidance on guidance_channels; the conditional ε at 1).
    func pipelineDenoise(_ request: Request<Options>, _ p: DiTPipeline) throws -> Response {
        let o = request.options, c = p.transformer.config
        let z = try pipelineLatents(request, p, name: "latents")
        let n = z.shape[0]
        let classes = try pipelineClasses(request, p, count: n, allowNull: true)
        let t: [Int]
        if request.inputs["timesteps"] != nil {
            t = try request.inputs.require("timesteps", dtypes: [.int64, .int32], rank: 1).integers()
            guard t.count == n else { throw MenagerieError.invalidArgument("input 'timesteps' has \(t.count) values for \(n) latents") }
        } else {
            t = [Int](repeating: o.timestep, count: n)
        }
        if let bad = t.first(where: { !(0..<p.scheduler.trainSteps).contains($0) }) {
            throw MenagerieError.invalidArgument("timestep \(bad) is outside the schedule's 0..<\(p.scheduler.trainSteps)")
        }
        let x = try z.scalars(as: Float.self)
        let guided = o.guidance != 1
        let out = try p.modelOutput(
            guided ? x + x : x, timesteps: guided ? t + t : t, classes: guided ? classes + [Int](repeating: c.nullClass, count: n) : classes)
        let plane = c.sampleSize * c.sampleSize, row = c.outChannels * plane, d = c.inChannels * plane
        let k: Int
        switch guidedChannels(o) {
        case .all: k = c.inChannels
        case .first(let m): k = min(m, c.inChannels)
        }
        var epsilon = [Float](repeating: 0, count: n * d)
        for i in 0..<n {
            for j in 0..<d {
                let cond = out[i * row + j]
                epsilon[i * d + j] = guided && j < k * plane ? out[(n + i) * row + j] + Float(o.guidance) * (cond - out[(n + i) * row + j]) : cond
            }
        }
        return Response(
            result: ["guidance": .number(o.guidance)],
            tensors: [
                ("eps", try Tensor(Array(out[0..<(n * row)]), shape: [n, c.outChannels, c.sampleSize, c.sampleSize])),
                ("epsilon", try Tensor(epsilon, shape: z.shape)),
            ])
    }

    /// `sample`: DDIM with CFG from input `noise` (or `latents` at from_step, or seeded noise for
    /// per_class images of `classes`) → `latents` (the final ones) and, with decode, `images`.
    func pipelineSample(_ request: Request<Options>, _ p: DiTPipeline) throws -> Response {
        let o = request.options
        guard o.steps > 0 else { throw MenagerieError.invalidArgument("option 'steps' must be positive") }
        let ddim = try ddim(p, steps: o.steps)
        let shape = latentShape(p), d = shape.reduce(1, *)
        let start: [Float], classes: [Int], from: Int
        if request.inputs["noise"] != nil || request.inputs["latents"] != nil {
            let name = request.inputs["noise"] != nil ? "noise" : "latents"
            let z = try pipelineLatents(request, p, name: name)
            start = try z.scalars(as: Float.self)
            classes = try pipelineClasses(request, p, count: z.shape[0], allowNull: false)
            from = name == "noise" || o.from_step < 0 ? ddim.timesteps.count - 1 : try level(ddim, o.from_step, key: "from_step")
        } else {
            let k = p.transformer.config.classes
            let chosen = o.classes.isEmpty ? Array(0..<min(k, 8)) : o.classes
            guard chosen.allSatisfy({ (0..<k).contains($0) }), o.per_class > 0 else {
                throw MenagerieError.invalidArgument("classes must lie in 0..<\(k) (num_embeds_ada_norm); per_class positive")
            }
            classes = chosen.flatMap { [Int](repeating: $0, count: o.per_class) }
            var rng = SeededGenerator(seed: UInt64(bitPattern: Int64(o.seed)))
            start = (0..<(classes.count * d)).map { _ in Float(rng.nextNormal()) }
            from = ddim.timesteps.count - 1
        }
        let n = classes.count
        let began = Date()
        var latents: [Float] = []
        latents.reserveCapacity(n * d)
        for chunk in stride(from: 0, to: n, by: o.batch) {
            let range = chunk..<min(n, chunk + o.batch)
            latents += try ddim.sample(
                Array(start[(range.lowerBound * d)..<(range.upperBound * d)]), from: from, classes: Array(classes[range]),
                predict: p.predictor(guidance: o.guidance, channels: guidedChannels(o)), cancelled: { try request.host.checkCancelled() })
            request.host.progress(range.upperBound, of: n, "sample")
        }
        let seconds = Date().timeIntervalSince(began)
        var tensors: [(name: String, tensor: Tensor)] = [("latents", try Tensor(latents, shape: [n] + shape)), ("labels", Tensor(classes.map(Int64.init)))]
        if o.decode {
            tensors.append(("images", try Tensor(toImageRange(try p.decode(latents, count: n), o), shape: [n] + imageShape(p))))
        }
        return Response(
            result: ["images": .number(Double(n)), "seconds": .number(seconds), "timesteps": .array(ddim.timesteps.reversed().map { .number(Double($0)) })],
            tensors: tensors)
    }

    /// `invert`: DDIMInverseScheduler's loop on clean latents (or images, encoded to the posterior
    /// mean) for inverse_steps steps of the `steps` grid (or up to to_step), ε with inverse_guidance.
    func pipelineInvert(_ request: Request<Options>, _ p: DiTPipeline) throws -> Response {
        let o = request.options
        guard o.steps > 0 else { throw MenagerieError.invalidArgument("option 'steps' must be positive") }
        guard p.scheduler.spacing != .linspace else {
            throw MenagerieError.invalidArgument("the scheduler's timestep_spacing 'linspace' has no inverse (DDIMInverseScheduler: leading or trailing)")
        }
        let ddim = try ddim(p, steps: o.steps)
        let clean: [Float], n: Int
        if request.inputs["latents"] != nil {
            let z = try pipelineLatents(request, p, name: "latents")
            (clean, n) = (try z.scalars(as: Float.self), z.shape[0])
        } else {
            let embedded = try pipelineEmbed(request, p)
            let z = embedded.tensors[0].tensor
            (clean, n) = (try z.scalars(as: Float.self), z.shape[0])
        }
        let classes = try pipelineClasses(request, p, count: n, allowNull: false)
        let top: Int
        if o.inverse_steps > 0 {
            guard o.inverse_steps <= ddim.timesteps.count else {
                throw MenagerieError.invalidArgument("option 'inverse_steps' = \(o.inverse_steps) exceeds the \(ddim.timesteps.count) steps of the grid")
            }
            top = o.inverse_steps - 1
        } else {
            top = try level(ddim, o.to_step, key: "to_step")
        }
        let recordLevel = o.record_step < 0 ? nil : try level(ddim, o.record_step, key: "record_step")
        if let recordLevel, recordLevel > top {
            throw MenagerieError.invalidArgument("record_step \(o.record_step) lies beyond the last inverted timestep \(ddim.timesteps[top])")
        }
        let predict = p.predictor(guidance: o.inverse_guidance, channels: guidedChannels(o))
        var recorded: [Float] = []
        let z = try ddim.invert(
            clean, to: top, classes: classes, predict: predict, record: { i, latent in if i == recordLevel { recorded = latent } },
            cancelled: { try request.host.checkCancelled() })
        let shape = [n] + latentShape(p)
        var tensors: [(name: String, tensor: Tensor)] = [("latents", try Tensor(z, shape: shape))]
        if recordLevel != nil { tensors.append(("recorded", try Tensor(recorded, shape: shape))) }
        return Response(
            result: ["level": .number(Double(top)), "timestep": .number(Double(ddim.timesteps[top])), "guidance": .number(o.inverse_guidance)],
            tensors: tensors)
    }
}
