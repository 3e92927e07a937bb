import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// Options of the diffusion distillers (`diffusion-dd`, `d3hr`, `concord`).
struct DiffusionDistillOptions: ComponentOptions {
    var model = ""
    var dataset = "synthetic-tol"
    var dataset_options: [String] = []
    var ipc = 10
    var steps = 50
    var guidance = 4.0
    var batch = 128
    var classes: [Int] = []
    // D^3HR
    var inversion_step = 760
    var sampling_step = 600
    var candidates = 2000
    var skew_weight = 0.1
    var limit = 0
    // CONCORD
    var base = "plain"
    var concepts = ""
    var positives = 5
    var negatives = 5
    var policy = "weighted"
    var lambda = 1.0
    var temperature = 0.05
    var clip = "bioclip2"
    var clip_options: [String] = []
    static let help = [
        "model": "the latent diffusion folder (empty: the embedded synthetic-tol model)",
        "dataset": "the dataset the model was trained on (d3hr inverts its train split; class names are checked)",
        "dataset_options": "key=value options for the dataset", "ipc": "images per class", "steps": "DDIM steps (η = 0)",
        "guidance": "classifier-free guidance scale (D^3HR and DiT: 4.0)", "batch": "latents per denoiser call",
        "classes": "generate only these class indices (empty: all)",
        "inversion_step": "d3hr: the timestep the training latents are inverted to (0.76 T)",
        "sampling_step": "d3hr: the timestep whose class statistics are sampled and where generation starts",
        "candidates": "d3hr: candidate groups scored per class", "skew_weight": "d3hr: weight of the skewness term",
        "limit": "d3hr: at most this many training images inverted (0: all)",
        "base": "concord: the generator guided, plain (from noise) or d3hr",
        "concepts": "concord: concepts JSON {class_idx: [name, [descriptions]]} (empty: the file shipped for synthetic-tol or cmnist-dd)",
        "positives": "concord: descriptions per class used as positives", "negatives": "concord: negative classes per sample (K)",
        "policy": "concord: negative classes weighted (by name similarity), similar (top K) or random",
        "lambda": "concord: guidance strength λ (the paper's 1–2; the released code's 10 saturates this model's images, Docs/methods/diffusion-dd.md)",
        "temperature": "concord: τ of the concept loss",
        "clip": "concord: the CLIP backbone component (texts + image embeddings with gradients)",
        "clip_options": "concord: key=value options for it (e.g. model=~/bioclip-2)",
    ]
    static let choices = ["base": ["plain", "d3hr"], "policy": NegativePolicy.allCases.map(\.rawValue)]
}

enum DiffusionMethod: String { case plain = "diffusion-dd", d3hr, concord }

/// Generates a distilled set with one of the diffusion methods.
func diffusionDistil(
    _ method: DiffusionMethod, options o: DiffusionDistillOptions, request host: PluginHost,
    log: inout [String: JSONValue]
) throws -> DistilledSet {
    let model = try loadDiffusion(o.model), c = model.config
    guard o.ipc > 0, o.steps > 0, o.batch > 0 else { throw MenagerieError.invalidArgument("ipc, steps and batch must be positive") }
    let ddim = DDIM(schedule: model.schedule, steps: o.steps)
    let predict = model.predictor(guidance: o.guidance)
    var rng = SeededGenerator(seed: host.seed)
    guard o.classes.allSatisfy({ (0..<c.classes).contains($0) }) else { throw MenagerieError.invalidArgument("classes must lie in 0..<\(c.classes)") }
    let chosen = o.classes.isEmpty ? Array(0..<c.classes) : o.classes
    let labels = chosen.flatMap { [Int](repeating: $0, count: o.ipc) }
    let d = c.latentDimension
    let useD3HR = method == .d3hr || (method == .concord && o.base == "d3hr")

    // The starting latents and the level generation starts from.
    var start: [Float], from: Int
    var realStats: Normalizer?
    if useD3HR {
        let inversionLevel: Int, samplingLevel: Int
        do {
            inversionLevel = try ddim.level(of: o.inversion_step)
            samplingLevel = try ddim.level(of: o.sampling_step)
        } catch { throw MenagerieError.invalidArgument("inversion_step / sampling_step: \(error)") }
        guard samplingLevel <= inversionLevel else {
            throw MenagerieError.invalidArgument(
                "sampling_step \(o.sampling_step) lies beyond inversion_step \(o.inversion_step): the statistics exist only up to the inversion")
        }
        let data = try RealData.load(host, dataset: o.dataset, options: o.dataset_options, split: "train", size: c.imageSize, attribute: "", limit: o.limit)
        guard data.classes.count == c.classes, data.channels == c.channels else {
            throw MenagerieError.invalidArgument(
                "dataset '\(o.dataset)' has \(data.classes.count) classes of \(data.channels) channels; the model was trained on \(c.classes) of \(c.channels)")
        }
        realStats = Normalizer(data)
        let began = Date()
        // The class Gaussians at the sampling level, computed once per model, data and grid in a
        // process (a study distils at several IPCs and with CONCORD on top).
        let weights = fileIdentity((o.model.isEmpty ? try embeddedDiffusionFolder() : (o.model as NSString).expandingTildeInPath) + "/model.safetensors")
        let key = "\(o.model)|\(weights)|\(o.dataset)|\(o.dataset_options)|\(o.limit)|\(o.steps)|\(o.guidance)|\(inversionLevel)|\(samplingLevel)"
        var gaussians = classGaussians.cached(key) ?? [:]
        let missing = chosen.filter { gaussians[$0] == nil }
        if !missing.isEmpty {
            let clean = model.encode(data.batch(missing.flatMap { data.byClass[$0] }).scalarsOrEmpty, count: missing.reduce(0) { $0 + data.byClass[$1].count })
            var offset = 0
            for (step, k) in missing.enumerated() {
                let members = data.byClass[k]
                guard members.count >= 2 else {
                    throw MenagerieError.invalidArgument("class \(k) of '\(o.dataset)' has \(members.count) training images; D^3HR needs at least 2")
                }
                var atLevel = [Float](repeating: 0, count: members.count * d)
                // Invert the class in batches sharing its CFG label, keeping the latents at the sampling level.
                for chunk in stride(from: 0, to: members.count, by: o.batch) {
                    let rows = chunk..<min(members.count, chunk + o.batch)
                    let z = Array(clean[((offset + rows.lowerBound) * d)..<((offset + rows.upperBound) * d)])
                    _ = try ddim.invert(
                        z, to: inversionLevel, classes: [Int](repeating: k, count: rows.count), predict: predict,
                        record: { level, latent in
                            guard level == samplingLevel else { return }
                            for r in 0..<rows.count { for j in 0..<d { atLevel[(rows.lowerBound + r) * d + j] = latent[r * d + j] } }
                        }, cancelled: { try host.checkCancelled() })
                }
                offset += members.count
                gaussians[k] = ClassGaussian(latents: atLevel, dimension: d)
                host.progress(step + 1, of: missing.count, "d3hr inversion")
            }
            classGaussians.store(key, gaussians)
        }
        log["inversion_seconds"] = .number(Date().timeIntervalSince(began))
        start = []
        var scores: [Double] = []
        for k in chosen {
            let best = sampleBestGroup(gaussians[k]!, size: o.ipc, candidates: o.candidates, skewWeight: o.skew_weight, rng: &rng)
            start += best.group
            scores.append(best.score)
        }
        log["mean_group_score"] = .number(scores.reduce(0, +) / Double(scores.count))
        from = samplingLevel
    } else {
        start = (0..<(labels.count * d)).map { _ in Float(rng.nextNormal()) }
        from = ddim.timesteps.count - 1
    }

    // CONCORD's guidance.
    var guidance: ConceptGuidance?
    if method == .concord {
        guard let policy = NegativePolicy(rawValue: o.policy) else { throw MenagerieError.invalidArgument("policy must be weighted, similar or random") }
        guard o.positives > 0, o.negatives > 0, o.temperature > 0 else {
            throw MenagerieError.invalidArgument("positives, negatives and temperature must be positive")
        }
        let path = o.concepts.isEmpty ? try shippedConcepts(dataset: o.dataset) : (o.concepts as NSString).expandingTildeInPath
        let book = try ConceptBook.read(path, classes: c.classes, positives: o.positives)
        let clip = try CLIPBridge(host: host, id: o.clip, options: try keyValueOptions(o.clip_options, option: "clip_options"))
        let names = try clip.texts(book.names)
        let similarity = names.map { a in names.map { b in Double(zip(a, b).reduce(Float(0)) { $0 + $1.0 * $1.1 }) } }
        let prompts = try (0..<c.classes).map { try clip.texts(book.prompts($0)) }
        var negatives: [[[Float]]] = []
        for y in labels {
            let chosen = negativeClasses(
                for: y, count: o.negatives, policy: policy,
                similarity: similarity.enumerated().map { i, row in
                    row.enumerated().map { j, v in i == j ? 0 : v }
                }, rng: &rng)
            negatives.append(chosen.flatMap { prompts[$0] })
        }
        guidance = ConceptGuidance(
            model: model, clip: clip, lambda: o.lambda, temperature: o.temperature,
            positives: labels.map { prompts[$0] }, negatives: negatives)
    }

    // Generation, in batches.
    let began = Date()
    var latents: [Float] = []
    var conceptLosses: [Double] = []
    for chunk in stride(from: 0, to: labels.count, by: o.batch) {
        let range = chunk..<min(labels.count, chunk + o.batch)
        let x = Array(start[(range.lowerBound * d)..<(range.upperBound * d)]), y = Array(labels[range])
        var guide: ((_ x: [Float], _ level: Int, _ epsilon: [Float]) throws -> [Float])?
        if let g = guidance {
            let sub = ConceptGuidance(
                model: g.model, clip: g.clip, lambda: g.lambda, temperature: g.temperature,
                positives: Array(g.positives[range]), negatives: Array(g.negatives[range]))
            guide = { x, level, e in
                let r = try sub.guide(x, epsilon: e, alphaBar: model.schedule.alphaBar[ddim.timesteps[level]])
                if level == 0 { conceptLosses.append(r.loss) }
                return r.epsilon
            }
        }
        latents += try ddim.sample(x, from: from, classes: y, predict: predict, guide: guide, cancelled: { try host.checkCancelled() })
        host.progress(range.upperBound, of: labels.count, method.rawValue)
    }
    log["generation_seconds"] = .number(Date().timeIntervalSince(began))
    log["images_per_s"] = .number(Double(labels.count) / max(Date().timeIntervalSince(began), 1e-9))
    if !conceptLosses.isEmpty { log["final_concept_loss"] = .number(conceptLosses.reduce(0, +) / Double(conceptLosses.count)) }
    let images = model.decode(latents, count: labels.count)
    var set = DistilledSet(
        images: try Tensor(images, shape: [labels.count, c.channels, c.imageSize, c.imageSize]), labels: labels,
        classes: c.classNames.isEmpty ? (0..<c.classes).map { "class \($0)" } : c.classNames,
        method: method == .concord ? "concord-\(o.base)" : method.rawValue, dataset: o.dataset, ipc: o.ipc)
    // The normaliser of the evaluation protocols: the real data's statistics when read, else the
    // generated set's own.
    let normalizer =
        realStats
        ?? Normalizer(
            RealData(
                images: images, labels: labels, attributes: nil, classes: set.classes,
                channels: c.channels, size: c.imageSize, dataset: o.dataset))
    log["classes"] = .number(Double(chosen.count))
    set.extra["mean"] = JSONValue.array(normalizer.mean.map { .number(Double($0)) }).compactText
    set.extra["std"] = JSONValue.array(normalizer.std.map { .number(Double($0)) }).compactText
    set.extra["dataset_options"] = JSONValue.array(o.dataset_options.map { .string($0) }).compactText
    set.extra["guidance"] = "\(o.guidance)"
    set.extra["steps"] = "\(o.steps)"
    return set
}

/// Class Gaussians already computed in this process, by model, data and DDIM grid.
let classGaussians = ProcessCache<[Int: ClassGaussian]>()

protocol DiffusionDistiller: Distiller where Options == DiffusionDistillOptions {
    static var method: DiffusionMethod { get }
}

extension DiffusionDistiller {
    static var operations: [OperationSpec] {
        [
            OperationSpec(
                "distill", summary: "generate `ipc` images per class with the latent diffusion model → distilled.safetensors, grid.png",
                outputs: distilledSetOutputs)
        ]
    }

    func distill(_ request: Request<DiffusionDistillOptions>) throws -> Response {
        var log: [String: JSONValue] = [:]
        let t0 = Date()
        let set = try diffusionDistil(Self.method, options: request.options, request: request.host, log: &log)
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

struct PlainDiffusionComponent: DiffusionDistiller {
    typealias Options = DiffusionDistillOptions
    static let method = DiffusionMethod.plain
    static let id = "diffusion-dd"
    static let summary = "Plain diffusion sampling as distillation: IPC images per class by DDIM with classifier-free guidance from noise"
}

struct D3HRComponent: DiffusionDistiller {
    typealias Options = DiffusionDistillOptions
    static let method = DiffusionMethod.d3hr
    static let id = "d3hr"
    static let summary = "D^3HR: DDIM-inverted class Gaussians, group sampling by mean/std/skewness, generation from the intermediate step (Zhao et al. 2025)"
}

struct ConcordComponent: DiffusionDistiller {
    typealias Options = DiffusionDistillOptions
    static let method = DiffusionMethod.concord
    static let id = "concord"
    static let summary = "CONCORD: concept-guided diffusion distillation (contrastive CLIP concept loss at every DDIM step) on plain or D^3HR generation"
    static let operations = [
        OperationSpec(
            "distill", summary: "generate `ipc` images per class with concept guidance → distilled.safetensors, grid.png",
            outputs: distilledSetOutputs),
        OperationSpec("concepts", summary: "write a concepts file {class_idx: [name, [descriptions]]} from the dataset's description → concepts.json"),
    ]
}

extension ConcordComponent {
    /// `concepts`: writes a concepts file for a dataset from its description — the class's common
    /// name (else its name) and one phrase per described trait and part (synthetic-tol: beak, tail,
    /// limbs, head, body, habitat, body plan, the distinguishing part). A stand-in for the LLM that
    /// wrote the paper's concepts.
    func performExtra(_ operation: String, _ request: Request<DiffusionDistillOptions>) throws -> Response {
        guard operation == "concepts" else { throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'") }
        let o = request.options
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: 32, options: o.dataset_options)
        let classes = try data.describe()["classes"]?.arrayValue ?? []
        guard !classes.isEmpty else { throw MenagerieError.invalidArgument("dataset '\(o.dataset)' describes no classes") }
        let text = conceptsJSON(classes)
        try AtomicFile.write(text, to: request.host.scratchDirectory + "/concepts.json")
        return Response(result: ["classes": .number(Double(classes.count))], artifacts: ["concepts.json"])
    }
}

/// The concepts file shipped for a dataset (synthetic-tol, cmnist-dd); other datasets need `concepts=`.
func shippedConcepts(dataset: String) throws -> String {
    let shipped = ["synthetic-tol", "cmnist-dd"]
    guard shipped.contains(dataset) else {
        throw MenagerieError.invalidArgument(
            "no concepts file is shipped for dataset '\(dataset)' (only \(shipped.joined(separator: ", "))): pass concepts=FILE, e.g. one written by `menagerie run concord concepts --set dataset=\(dataset)`"
        )
    }
    return try PluginResources.path(module: "Distillation", item: "concepts-\(dataset).json")
}

/// The concepts file for described classes (see `ConcordComponent.performExtra`).
func conceptsJSON(_ classes: [JSONValue]) -> String {
    func grade(_ v: Double, _ low: String, _ mid: String, _ high: String) -> String { v < 0.34 ? low : v > 0.66 ? high : mid }
    var entries: [String] = []
    for (k, cls) in classes.enumerated() {
        let name = cls["common_name"]?.stringValue ?? cls["name"]?.stringValue ?? cls.stringValue ?? "class \(k)"
        var phrases: [String] = []
        if let t = cls["traits"]?.objectValue {
            if let v = t["beak_length"]?.doubleValue { phrases.append(grade(v, "a short beak", "a medium beak", "a long beak")) }
            if let v = t["tail_length"]?.doubleValue { phrases.append(grade(v, "a short tail", "a medium-length tail", "a long tail")) }
            if let v = t["limb_size"]?.doubleValue { phrases.append(grade(v, "small legs", "medium legs", "large legs")) }
            if let v = t["head_size"]?.doubleValue { phrases.append(grade(v, "a small head", "a medium head", "a large head")) }
            if let v = t["body_size"]?.doubleValue { phrases.append(grade(v, "a small body", "a medium body", "a large body")) }
            if let v = t["habitat"]?.doubleValue { phrases.append(grade(v, "open blue water behind it", "a reef behind it", "pale sand behind it")) }
        }
        if let plan = cls["body_plan"]?.stringValue { phrases.append(plan == "finned" ? "fins" : "wings") }
        if let part = cls["distinguishing_part"]?.stringValue { phrases.append("a distinctive \(part.replacingOccurrences(of: "_", with: " and "))") }
        if phrases.isEmpty { phrases = ["its typical shape", "its typical colour", "its typical texture", "its typical size", "its typical parts"] }
        entries.append("  \"\(k)\": [" + JSONValue.string(name).compactText + ", " + JSONValue.array(phrases.map { .string($0) }).compactText + "]")
    }
    return "{\n" + entries.joined(separator: ",\n") + "\n}\n"
}

extension D3HRComponent {
    static var inTour: Bool { true }

    /// Eight synthetic-tol species (of different genera), four images each, by the embedded latent
    /// diffusion model: real images (random selection), plain DDIM sampling with CFG, D^3HR, and
    /// CONCORD on plain sampling; plus the DDIM inversion round trip of real latents to t = 760.
    func tour(_ request: Request<DiffusionDistillOptions>) throws -> Response {
        let host = request.host, dir = host.scratchDirectory
        var o = DiffusionDistillOptions()
        o.ipc = 4
        o.classes = [0, 8, 16, 24, 32, 40, 48, 56]
        o.candidates = 500
        var result: [String: JSONValue] = [:], artifacts: [String] = []
        let model = try loadDiffusion(o.model), c = model.config
        let train = try RealData.load(host, dataset: o.dataset, options: o.dataset_options, split: "train", size: c.imageSize, attribute: "")
        // Real images of the same classes, for comparison.
        let realIndex = o.classes.flatMap { train.byClass[$0].prefix(o.ipc) }
        let real = DistilledSet(
            images: train.batch(realIndex), labels: realIndex.map { train.labels[$0] }, classes: train.classes,
            method: "real", dataset: o.dataset, ipc: o.ipc)
        try real.grid().write(to: dir + "/real.png")
        artifacts += Figure.files("real.png")
        for (name, method, base) in [("plain", DiffusionMethod.plain, "plain"), ("d3hr", .d3hr, "plain"), ("concord", .concord, "plain")] {
            var options = o
            options.base = base
            var log: [String: JSONValue] = [:]
            let t0 = Date()
            let set = try diffusionDistil(method, options: options, request: host, log: &log)
            log["seconds"] = .number(Date().timeIntervalSince(t0))
            try set.grid().write(to: dir + "/\(name).png")
            artifacts += Figure.files("\(name).png")
            result[name] = .object(log)
        }
        // The inversion round trip on 16 real images.
        let idx = Array(realIndex.prefix(16))
        let ddim = DDIM(schedule: model.schedule, steps: o.steps)
        let level = try ddim.level(of: o.inversion_step)
        let clean = model.encode(try train.batch(idx).scalars(as: Float.self), count: idx.count)
        let labels = idx.map { train.labels[$0] }
        let predict = model.predictor(guidance: o.guidance)
        let z = try ddim.invert(clean, to: level, classes: labels, predict: predict)
        let back = try ddim.sample(z, from: level, classes: labels, predict: predict)
        let err = zip(back, clean).map { Double(($0 - $1) * ($0 - $1)) }.reduce(0, +), power = clean.map { Double($0 * $0) }.reduce(0, +)
        result["inversion_relative_error_760"] = .number((err / power).squareRoot())
        let roundTrip = DistilledSet(
            images: try Tensor(model.decode(back, count: idx.count), shape: [idx.count, c.channels, c.imageSize, c.imageSize]),
            labels: labels, classes: train.classes, method: "inverted", dataset: o.dataset, ipc: o.ipc)
        try roundTrip.grid().write(to: dir + "/inversion_round_trip.png")
        artifacts += Figure.files("inversion_round_trip.png")
        result["note"] =
            "real.png: training images; plain/d3hr/concord.png: 4 generated images per species; inversion_round_trip.png: real latents inverted to t=760 and sampled back (compare with real.png)"
        return Response(result: .object(result), artifacts: artifacts)
    }
}
