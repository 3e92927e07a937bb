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
    var labels: [Int]
    var classes: [Int]
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
        classes = try chosenClasses(o, classes: c.classes)
        labels = classes.flatMap { [Int](repeating: $0, count: o.ipc) }
        self.startStep = startStep
        log["statistics_step"] = .number(Double(statisticsStep))
        log["start_step"] = .number(Double(startStep))
        let data = try RealData.load(host, dataset: o.dataset, options: o.dataset_options, split: "train", size: c.imageSize, attribute: "", limit: o.limit)
        guard data.classes.count == c.classes, data.channels == c.channels else {
            throw MenagerieError.invalidArgument(
                "dataset '\(o.dataset)' has \(data.classes.count) classes of \(data.channels) channels; the model was trained on \(c.classes) of \(c.channels)")
        }
        realStats = Normalizer(data)
        let began = Date()
        let d = c.latentDimension
        let key =
            "\(o.generator)|\(o.model)|\(c.identity)|\(o.dataset)|\(o.dataset_options)|\(o.limit)|\(o.steps)|\(o.guidance)|\(inversionLevel)|\(samplingLevel)"
        var gaussians = classGaussians.cached(key) ?? [:]
        let missing = classes.filter { gaussians[$0] == nil }
        for (step, k) in missing.enumerated() {
            let members = data.byClass[k]
            guard members.count >= 2 else {
                throw MenagerieError.invalidArgument("class \(k) of '\(o.dataset)' has \(members.count) training images; D^3HR needs at least 2")
            }
            var atLevel: [Float] = []
            atLevel.reserveCapacity(members.count * d)
            // Encode and invert the class in batches sharing its CFG label; keep the latents at the
            // statistics step, where the inversion stops (the released code goes on to 760, which
            // changes nothing before it).
            for chunk in stride(from: 0, to: members.count, by: o.batch) {
                let rows = Array(members[chunk..<min(members.count, chunk + o.batch)])
                let clean = try client.encode(data.batch(rows))
                atLevel += try client.invert(
                    clean, classes: [Int](repeating: k, count: rows.count), steps: o.steps, guidance: o.guidance, toStep: statisticsStep,
                    recordStep: statisticsStep)
                try host.checkCancelled()
            }
            gaussians[k] = ClassGaussian(latents: atLevel, dimension: d)
            host.progress(step + 1, of: missing.count, "d3hr inversion")
        }
        if !missing.isEmpty { classGaussians.store(key, gaussians) }
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
                Array(groups.start[(range.lowerBound * d)..<(range.upperBound * d)]), classes: Array(groups.labels[range]), steps: o.steps,
                guidance: o.guidance, fromStep: groups.startStep)
            host.progress(range.upperBound, of: groups.labels.count, "d3hr")
        }
        log["generation_seconds"] = .number(Date().timeIntervalSince(began))
        log["images_per_s"] = .number(Double(groups.labels.count) / max(Date().timeIntervalSince(began), 1e-9))
        log["classes"] = .number(Double(groups.classes.count))
        let images = try client.decode(latents, count: groups.labels.count)
        return try generatedSet(images: images, labels: groups.labels, classes: client.classNames, method: "d3hr", options: o, realStats: groups.realStats)
    }

    func performExtra(_ operation: String, _ request: Request<DiffusionDistillOptions>) throws -> Response {
        guard operation == "groups" else { throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'") }
        var log: [String: JSONValue] = [:]
        let g = try D3HRGroups(request.options, host: request.host, log: &log)
        log["from_step"] = .number(Double(g.startStep))
        log["mean"] = .array(g.realStats.mean.map { .number(Double($0)) })
        log["std"] = .array(g.realStats.std.map { .number(Double($0)) })
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
