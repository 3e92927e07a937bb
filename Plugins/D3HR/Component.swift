import DistillationKit
import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// Class Gaussians already computed in this process, by generator, weights, data and DDIM grid (a
/// study distils at several IPCs, and CONCORD on D^3HR asks for the same classes again).
let classGaussians = ProcessCache<[Int: ClassGaussian]>()

/// D^3HR's group latents as the released code makes them: the training split inverted through the
/// diffusion backbone (on the host) to `sampling_step` (600), the latents there summarised per class
/// by a diagonal Gaussian, per class the best of `candidates` groups of `ipc` draws (the same draws
/// for every class), and generation from `start_step` (620).
struct D3HRGroups {
    var client: DiffusionClient
    var start: [Float]
    /// The set's labels (dataset classes) and the backbone classes they are generated as.
    var labels: [Int]
    var backboneLabels: [Int]
    var classes: [Int]
    /// The set's class names (the dataset's).
    var classNames: [String]
    /// The timestep generation starts from (`start_step`).
    var startStep: Int
    var realStats: Normalizer

    init(_ o: DiffusionDistillOptions, host: PluginHost, log: inout [String: JSONValue], neededBy purpose: String = "d3hr") throws {
        try o.validate()
        guard let skewness = SkewnessMode(rawValue: o.skewness) else {
            throw MenagerieError.invalidArgument("option 'skewness' = '\(o.skewness)' must be across_members or within_latent")
        }
        client = try DiffusionClient(host, id: o.generator, model: o.model, neededBy: purpose)
        let c = client.config
        let ddim = try client.ddim(steps: o.steps)
        // The released timesteps are DiT's (1000 training steps); a backbone of T steps gets t·T/1000.
        let trainSteps = client.schedule.steps
        let inversionStep = try scaledTimestep(o.inversion_step, key: "inversion_step", trainSteps: trainSteps)
        let statisticsStep = try scaledTimestep(o.sampling_step, key: "sampling_step", trainSteps: trainSteps)
        let startStep = try scaledTimestep(o.start_step, key: "start_step", trainSteps: trainSteps)
        let inversionLevel: Int, samplingLevel: Int
        do {
            inversionLevel = try ddim.level(of: inversionStep)
            samplingLevel = try ddim.level(of: statisticsStep)
        } catch { throw MenagerieError.invalidArgument("inversion_step / sampling_step: \(error)") }
        do { _ = try ddim.level(of: startStep) } catch { throw MenagerieError.invalidArgument("start_step: \(error)") }
        guard samplingLevel <= inversionLevel else {
            throw MenagerieError.invalidArgument(
                "sampling_step \(o.sampling_step) lies beyond inversion_step \(o.inversion_step): the statistics exist only up to the inversion")
        }
        let mapping = try ClassMapping(o, backboneClasses: c.classes)
        classes = try chosenClasses(o, classes: mapping.count)
        labels = classes.flatMap { [Int](repeating: $0, count: o.ipc) }
        backboneLabels = mapping.map(labels)
        self.startStep = startStep
        log["statistics_step"] = .number(Double(statisticsStep))
        log["start_step"] = .number(Double(startStep))
        // The training split, one class at a time: a labels-only pass, then each class's images in
        // batches (never the whole split in memory).
        let stream = try ClassStream(host, dataset: o.dataset, options: o.dataset_options, split: "train", size: c.imageSize, limit: o.limit, batch: o.batch)
        guard stream.classes.count == mapping.count else {
            throw MenagerieError.invalidArgument(
                o.class_ids.isEmpty
                    ? "dataset '\(o.dataset)' has \(stream.classes.count) classes; the diffusion backbone '\(o.generator)' has \(c.classes) "
                        + "(a DiT pipeline's num_embeds_ada_norm): set class_ids=[…] to give each dataset class its backbone class"
                    : "dataset '\(o.dataset)' has \(stream.classes.count) classes; option 'class_ids' names \(mapping.count): one backbone class per dataset class"
            )
        }
        guard stream.channels == c.channels, stream.size == c.imageSize else {
            throw MenagerieError.invalidArgument(
                "dataset '\(o.dataset)' serves \(stream.channels)×\(stream.size)×\(stream.size) images; the diffusion backbone takes \(c.channels)×\(c.imageSize)×\(c.imageSize)"
            )
        }
        classNames = stream.classes
        realStats = stream.normalizer
        let began = Date()
        let d = c.latentDimension
        let key =
            "\(o.generator)|\(o.model)|\(c.identity)|\(o.dataset)|\(o.dataset_options)|\(o.limit)|\(o.steps)|\(o.guidance)|\(inversionLevel)|\(samplingLevel)|\(o.class_ids)"
        var gaussians = classGaussians.cached(key) ?? [:]
        let store =
            o.statistics.isEmpty
            ? nil
            : try ClassStatisticsStore(
                folder: o.statistics,
                identity: statisticsIdentity(o, client: client, statisticsStep: statisticsStep, imageSize: stream.size))
        var toCompute: [Int] = [], reused = 0
        for k in classes where gaussians[k] == nil {
            let count = stream.positions[k].count
            guard count >= 2 else {
                throw MenagerieError.invalidArgument(
                    "class \(k) ('\(stream.classes[k])') of '\(o.dataset)' has \(count) training images\(o.limit > 0 ? " among the first \(o.limit) (limit)" : ""); D^3HR needs at least 2"
                )
            }
            if let store, let m = try store.read(class: k, name: stream.classes[k], backboneClass: mapping.backbone[k], count: count, dimension: d) {
                gaussians[k] = ClassGaussian(mean: m.mean, variance: m.variance)
                reused += 1
            } else {
                toCompute.append(k)
            }
        }
        // Encode and invert each class in batches sharing its CFG label; keep the latents at the
        // statistics step, where the inversion stops (the released code goes on to 760, which
        // changes nothing before it).
        let total = toCompute.reduce(0) { $0 + stream.positions[$1].count }
        var done = 0, computed = 0
        let client = self.client
        let inverting = Date()
        for k in toCompute {
            var atLevel: [Float] = []
            atLevel.reserveCapacity(stream.positions[k].count * d)
            try stream.forEachBatch(ofClass: k, batch: o.batch, host: host) { x in
                let n = x.shape[0]
                let clean = try client.encode(x)
                atLevel += try client.invert(
                    clean, classes: [Int](repeating: mapping.backbone[k], count: n), steps: o.steps, guidance: o.guidance, toStep: statisticsStep,
                    recordStep: statisticsStep)
                done += n
                host.progress(done, of: total, "d3hr statistics: images inverted")
            }
            let m = ClassGaussian.moments(latents: atLevel, dimension: d)
            try store?.write(
                class: k, name: stream.classes[k], backboneClass: mapping.backbone[k], count: atLevel.count / d, mean: m.mean, variance: m.variance)
            gaussians[k] = ClassGaussian(mean: m.mean, variance: m.variance)
            let elapsed = Date().timeIntervalSince(inverting), rate = Double(done) / max(elapsed, 1e-9)
            // One line per finished class (stderr and log.csv): the class, images inverted so far, the rate, the ETA.
            computed += 1
            host.record(
                step: computed, unit: "class",
                [
                    "dataset_class": Double(k), "images_inverted": Double(done), "of": Double(total), "images_per_s": rate,
                    "eta_s": Double(total - done) / max(rate, 1e-9),
                ])
        }
        if !toCompute.isEmpty { classGaussians.store(key, gaussians) }
        log["statistics_classes_computed"] = .number(Double(toCompute.count))
        log["statistics_classes_read"] = .number(Double(reused))
        log["images_inverted"] = .number(Double(total))
        if total > 0 { log["inversion_images_per_s"] = .number(Double(total) / max(Date().timeIntervalSince(inverting), 1e-9)) }
        log["inversion_seconds"] = .number(Date().timeIntervalSince(began))
        start = []
        var scores: [Double] = []
        for k in classes {
            // The same candidate noise for every class, as the released code seeds each class's
            // batches with the same seeds (i·12345).
            var rng = SeededGenerator(seed: host.seed)
            let best = sampleBestGroup(
                gaussians[k]!, size: o.ipc, candidates: o.candidates, skewWeight: o.skew_weight, skewness: skewness, rng: &rng)
            start += best.group
            scores.append(best.score)
        }
        log["mean_group_score"] = .number(scores.reduce(0, +) / Double(scores.count))
    }
}

/// What identifies the statistics of a run (besides the class): the backbone and its weights, the
/// DDIM grid and its schedule, the inversion's guidance, the data. Every value a statistics file was
/// made with must equal this run's.
func statisticsIdentity(_ o: DiffusionDistillOptions, client: DiffusionClient, statisticsStep: Int, imageSize: Int) throws -> [String: String] {
    // FNV-1a over the schedule's ᾱ (their bit patterns): a different schedule is a different run.
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for a in client.schedule.alphaBar {
        var bits = a.bitPattern
        for _ in 0..<8 {
            hash = (hash ^ (bits & 0xff)) &* 0x100_0000_01b3
            bits >>= 8
        }
    }
    let grid = try client.ddim(steps: o.steps).timesteps
    return [
        "generator": o.generator,
        "model": o.model.isEmpty ? "" : ((o.model as NSString).expandingTildeInPath as NSString).standardizingPath,
        "model_identity": client.config.identity,
        "latent_shape": client.config.latentShape.map(String.init).joined(separator: "x"),
        "image_size": "\(imageSize)",
        "alphas_cumprod_fnv1a": String(hash, radix: 16),
        "steps": "\(o.steps)",
        "grid": grid.map(String.init).joined(separator: ","),
        "statistics_step": "\(statisticsStep)",
        "guidance": "\(o.guidance)",
        "dataset": o.dataset,
        "dataset_options": JSONValue.array(o.dataset_options.map { .string($0) }).compactText,
        "split": "train",
        "limit": "\(o.limit)",
    ]
}

/// A D^3HR timestep given on DiT's 1000-step scale (the released 600, 620, 760) on a backbone trained
/// with `trainSteps` steps: t·T/1000, which must be a whole timestep (T = 1000: t itself).
public func scaledTimestep(_ t: Int, key: String, trainSteps: Int) throws -> Int {
    guard (0...1000).contains(t) else {
        throw MenagerieError.invalidArgument("option '\(key)' = \(t) must lie in 0…1000 (d3hr timesteps are on DiT's 1000-step scale)")
    }
    guard (t * trainSteps) % 1000 == 0 else {
        throw MenagerieError.invalidArgument(
            "option '\(key)' = \(t) of 1000 is no whole timestep of this backbone's \(trainSteps) steps (\(t)·\(trainSteps)/1000 is fractional)")
    }
    return t * trainSteps / 1000
}

struct D3HRComponent: DiffusionDistiller {
    typealias Options = DiffusionDistillOptions
    static let id = "d3hr"
    static let summary = "D^3HR: DDIM-inverted class Gaussians, group sampling by mean/std/skewness, generation from the intermediate step (Zhao et al. 2025)"
    static let operations = [
        OperationSpec(
            "distill", summary: "generate `ipc` images per class from D^3HR's group latents → distilled.safetensors, grid.png",
            outputs: distilledSetOutputs),
        OperationSpec(
            "groups", summary: "the group latents at sampling_step, per class the best of `candidates` (what generation starts from; concord base=d3hr)",
            outputs: [
                TensorSpec("latents", dtypes: ["f32"], shape: "K·IPC×c×L×L", summary: "the chosen groups, class by class"),
                TensorSpec("labels", dtypes: ["i64"], shape: "K·IPC", summary: "their classes"),
            ]),
    ]

    static func generate(_ o: DiffusionDistillOptions, host: PluginHost, log: inout [String: JSONValue]) throws -> DistilledSet {
        let groups = try D3HRGroups(o, host: host, log: &log)
        let client = groups.client, d = client.config.latentDimension
        let began = Date()
        var latents: [Float] = []
        for chunk in stride(from: 0, to: groups.labels.count, by: o.batch) {
            let range = chunk..<min(groups.labels.count, chunk + o.batch)
            latents += try client.sample(
                Array(groups.start[(range.lowerBound * d)..<(range.upperBound * d)]), classes: Array(groups.backboneLabels[range]), steps: o.steps,
                guidance: o.guidance, fromStep: groups.startStep)
            host.progress(range.upperBound, of: groups.labels.count, "d3hr")
        }
        log["generation_seconds"] = .number(Date().timeIntervalSince(began))
        log["images_per_s"] = .number(Double(groups.labels.count) / max(Date().timeIntervalSince(began), 1e-9))
        log["classes"] = .number(Double(groups.classes.count))
        let images = try client.decode(latents, count: groups.labels.count)
        return try generatedSet(images: images, labels: groups.labels, classes: groups.classNames, method: "d3hr", options: o, realStats: groups.realStats)
    }

    func performExtra(_ operation: String, _ request: Request<DiffusionDistillOptions>) throws -> Response {
        guard operation == "groups" else { throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'") }
        var log: [String: JSONValue] = [:]
        let g = try D3HRGroups(request.options, host: request.host, log: &log)
        log["from_step"] = .number(Double(g.startStep))
        log["mean"] = .array(g.realStats.mean.map { .number(Double($0)) })
        log["std"] = .array(g.realStats.std.map { .number(Double($0)) })
        log["class_names"] = .array(g.classNames.map { .string($0) })
        return Response(
            result: .object(log),
            tensors: [
                ("latents", try Tensor(g.start, shape: [g.labels.count] + g.client.config.latentShape)), ("labels", Tensor(g.labels.map(Int64.init))),
            ])
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum D3HRPlugin: Plugin {
    public static let name = "d3hr"
    public static let version = "0.2.0"
    public static let summary = "D^3HR: dataset distillation by DDIM-inverted class statistics and group sampling, on any diffusion backbone through the host"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let paper: Paper? = Paper(
        title: "D^3HR: diffusion-based dataset distillation with high representativeness (Zhao et al. 2025; released code)",
        url: "https://github.com/lin-zhao-resoLve/D3HR")
    public static let components: [any Component.Type] = [D3HRComponent.self]
}
