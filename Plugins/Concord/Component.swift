import DistillationKit
import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

struct ConcordComponent: DiffusionDistiller {
    typealias Options = DiffusionDistillOptions
    static let id = "concord"
    static let summary = "CONCORD: concept-guided diffusion distillation (contrastive CLIP concept loss at every DDIM step) on plain or D^3HR generation"
    static let operations = [
        OperationSpec(
            "distill", summary: "generate `ipc` images per class with concept guidance → distilled.safetensors, grid.png",
            outputs: distilledSetOutputs),
        OperationSpec("concepts", summary: "write a concepts file {class_idx: [name, [descriptions]]} from the dataset's description → concepts.json"),
    ]

    /// Plain or D^3HR start latents, then DDIM with concept guidance at every step. The diffusion
    /// backbone (`generator`), the CLIP backbone (`clip`) and, with base=d3hr, the `d3hr` component
    /// are all called through the host.
    static func generate(_ o: DiffusionDistillOptions, host: PluginHost, log: inout [String: JSONValue]) throws -> DistilledSet {
        guard let policy = NegativePolicy(rawValue: o.policy) else { throw MenagerieError.invalidArgument("policy must be weighted, similar or random") }
        guard o.positives > 0, o.negatives > 0, o.temperature > 0 else {
            throw MenagerieError.invalidArgument("positives, negatives and temperature must be positive")
        }
        let client = try DiffusionClient(host, id: o.generator, model: o.model, neededBy: "concord")
        let c = client.config, d = c.latentDimension
        let ddim = try client.ddim(steps: o.steps)
        let mapping = try ClassMapping(o, backboneClasses: c.classes)
        let chosen = try chosenClasses(o, classes: mapping.count)
        // The set's labels (dataset classes with class_ids) and the backbone classes they are generated as.
        let labels = chosen.flatMap { [Int](repeating: $0, count: o.ipc) }
        let backboneLabels = mapping.map(labels)
        var setNames: [String]? = nil
        var rng = SeededGenerator(seed: host.seed)

        // The starting latents and the level generation starts from.
        var start: [Float], from: Int
        var realStats: Normalizer?
        if o.base == "d3hr" {
            let d3hr = try host.resolve("d3hr", kind: .distiller, neededBy: "concord with base=d3hr", plugin: "d3hr")
            let r = try d3hr.invoke("groups", options: try JSONValue(encoding: o))
            guard let z = r.tensors["latents"], z.dtype == .float32, z.shape == [labels.count] + c.latentShape, let y = r.tensors["labels"],
                try y.integers() == labels
            else {
                throw MenagerieError.invalidArgument(
                    "d3hr groups returned \(r.tensors["latents"]?.shape ?? []) latents; \([labels.count] + c.latentShape) for \(labels.count) labels were expected"
                )
            }
            start = try z.scalars(as: Float.self)
            guard start.allSatisfy(\.isFinite) else { throw MenagerieError.invalidArgument("d3hr groups returned a non-finite latent") }
            let step = try Limits.int(r.result["from_step"], key: "from_step", in: 0...1_000_000, source: "the answer of d3hr groups")
            do { from = try ddim.level(of: step) } catch { throw MenagerieError.invalidArgument("d3hr groups: \(error)") }
            let mean = r.result["mean"]?.arrayValue?.compactMap(\.doubleValue).map(Float.init) ?? []
            let std = r.result["std"]?.arrayValue?.compactMap(\.doubleValue).map(Float.init) ?? []
            if mean.count == c.channels, std.count == c.channels, (mean + std).allSatisfy(\.isFinite) { realStats = Normalizer(mean: mean, std: std) }
            if let names = r.result["class_names"]?.arrayValue?.compactMap(\.stringValue), names.count == mapping.count { setNames = names }
            for key in ["inversion_seconds", "mean_group_score", "statistics_classes_computed", "statistics_classes_read", "images_inverted"] {
                log[key] = r.result[key]
            }
        } else {
            start = (0..<(labels.count * d)).map { _ in Float(rng.nextNormal()) }
            from = ddim.timesteps.count - 1
        }

        let path = o.concepts.isEmpty ? try shippedConcepts(dataset: o.dataset) : (o.concepts as NSString).expandingTildeInPath
        let book = try ConceptBook.read(path, classes: mapping.count, positives: o.positives)
        let clip = try CLIPBridge(host: host, id: o.clip, options: try keyValueOptions(o.clip_options, option: "clip_options"))
        let names = try clip.texts(book.names)
        // The released `neighbors`: cosine similarities of the class names (unit text embeddings);
        // `negativeClasses` subtracts the identity as the code does.
        let similarity = names.map { a in names.map { b in Double(zip(a, b).reduce(Float(0)) { $0 + $1.0 * $1.1 }) } }
        let prompts = try (0..<mapping.count).map { try clip.texts(book.prompts($0)) }
        var negativeTexts: [Int: [[Float]]] = [:]
        var negatives: [[[Float]]] = []
        var drawnClasses: [Int] = []
        // Per generated image, K negative classes with replacement and one description of each.
        for y in labels {
            let picked: [Int]
            do { picked = try negativeClasses(for: y, count: o.negatives, policy: policy, similarity: similarity, rng: &rng) } catch {
                throw MenagerieError.invalidArgument("concord negatives for class \(y) (policy \(o.policy)): \(error)")
            }
            var texts: [[Float]] = []
            for k in picked {
                if negativeTexts[k] == nil { negativeTexts[k] = try clip.texts(book.negativePrompts(k)) }
                let pool = negativeTexts[k]!
                texts.append(pool[negativeDescription(pool: pool.count, rng: &rng)])
            }
            drawnClasses += picked
            negatives.append(texts)
        }
        log["negative_draws_distinct_classes"] = .number(Double(Set(drawnClasses).count))
        let guidance = ConceptGuidance(
            client: client, clip: clip, lambda: o.lambda, temperature: o.temperature, positives: labels.map { prompts[$0] }, negatives: negatives)

        // Generation, in batches.
        let began = Date()
        let predict = client.predictor(guidance: o.guidance)
        var latents: [Float] = []
        var conceptLosses: [Double] = []
        for chunk in stride(from: 0, to: labels.count, by: o.batch) {
            let range = chunk..<min(labels.count, chunk + o.batch)
            let sub = guidance.slice(range)
            latents += try ddim.sample(
                Array(start[(range.lowerBound * d)..<(range.upperBound * d)]), from: from, classes: Array(backboneLabels[range]), predict: predict,
                guide: { x, level, e in
                    let r = try sub.guide(x, epsilon: e, alphaBar: client.schedule.alphaBar[ddim.timesteps[level]])
                    if level == 0 { conceptLosses.append(r.loss) }
                    return r.epsilon
                }, cancelled: { try host.checkCancelled() })
            host.progress(range.upperBound, of: labels.count, "concord")
        }
        log["generation_seconds"] = .number(Date().timeIntervalSince(began))
        log["images_per_s"] = .number(Double(labels.count) / max(Date().timeIntervalSince(began), 1e-9))
        if !conceptLosses.isEmpty { log["final_concept_loss"] = .number(conceptLosses.reduce(0, +) / Double(conceptLosses.count)) }
        log["classes"] = .number(Double(chosen.count))
        let images = try client.decode(latents, count: labels.count)
        let setClassNames = setNames ?? (o.class_ids.isEmpty ? client.classNames : book.names)
        return try generatedSet(images: images, labels: labels, classes: setClassNames, method: "concord-\(o.base)", options: o, realStats: realStats)
    }
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
    return try PluginResources.path(module: "Concord", item: "concepts-\(dataset).json")
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

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum ConcordPlugin: Plugin {
    public static let name = "concord"
    public static let version = "0.2.0"
    public static let summary =
        "CONCORD: concept-guided diffusion dataset distillation; the diffusion and CLIP backbones (and D^3HR) are called through the host"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let paper: Paper? = Paper(
        title: "CONCORD: concept-informed diffusion for dataset distillation (released code)", url: "https://github.com/vimar-gu/CONCORD")
    public static let components: [any Component.Type] = [ConcordComponent.self]
}

extension ConcordComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "diffusion.generate_concord", unit: "images/s",
            summary: "concord generating 16 images (denoise, decode and its VJP, CLIP forward and backward through the host at every step)")
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.generationBenchmark("diffusion.generate_concord", component: Self.id) }
}
