import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Text

/// The classes of a dataset component as BioCLIP captions need them: seven ranks, common name.
struct TaxonomicClass {
    var taxa: [String] // kingdom … genus, species epithet
    var common: String
    var taxonomic: String { taxa.joined(separator: " ") }
    var scientific: String { taxa[5] + " " + taxa[6] }

    /// The five caption types of BioCLIP's training (one type per step for the whole batch).
    static let captionTypes = ["taxonomic", "scientific", "common", "scientific_common", "taxonomic_common"]

    func caption(_ type: String) -> String {
        switch type {
        case "taxonomic": return "a photo of \(taxonomic)."
        case "scientific": return "a photo of \(scientific)."
        case "common": return "a photo of \(common)."
        case "scientific_common": return "a photo of \(scientific) with common name \(common)."
        default: return "a photo of \(taxonomic) with common name \(common)."
        }
    }

    /// The label string of the Tree-of-Life embeddings: taxonomic name with the common name.
    var label: String { "\(taxonomic) with common name \(common)" }

    /// From a `describe` class entry: `taxonomy` with the seven ranks (species as "Genus epithet")
    /// and `common_name`.
    init(_ entry: JSONValue, index: Int, dataset: String) throws {
        guard let t = entry["taxonomy"] else { throw MenagerieError.invalidArgument("dataset '\(dataset)' class \(index) has no taxonomy") }
        var taxa: [String] = []
        for r in Rank.allCases {
            guard let v = t[r.label]?.stringValue, !v.isEmpty else {
                throw MenagerieError.invalidArgument("dataset '\(dataset)' class \(index) has no '\(r.label)' in its taxonomy")
            }
            taxa.append(v)
        }
        // The species rank may hold "Genus epithet": keep the epithet.
        if let last = taxa[6].split(separator: " ").last, taxa[6].hasPrefix(taxa[5] + " ") { taxa[6] = String(last) }
        self.taxa = taxa
        common = entry["common_name"]?.stringValue ?? entry["name"]?.stringValue ?? taxa[5] + " " + taxa[6]
    }
}

extension BioCLIPComponent {
    func datasetClasses(_ data: DatasetOptionsProxy, dataset: String) throws -> (classes: [TaxonomicClass], described: JSONValue) {
        let described = try data.describe()
        guard let entries = described["classes"]?.arrayValue, entries.count > 1 else {
            throw MenagerieError.invalidArgument("dataset '\(dataset)' describes no classes")
        }
        return (try entries.enumerated().map { try TaxonomicClass($0.element, index: $0.offset, dataset: dataset) }, described)
    }

    /// `labels`: txt_emb_species.npy ([E, N], pybioclip's orientation) and txt_emb_species.json for
    /// the dataset's classes, each the mean of the normalised embeddings of its label under the
    /// templates ("photo": "a photo of {}.", the caption form the small model was trained on;
    /// "openai": the 80 templates).
    func writeLabels(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let bio = try loadModel(o)
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: bio.imageSize, options: o.datasetOptions)
        let (classes, _) = try datasetClasses(data, dataset: o.dataset)
        let dir = request.host.scratchDirectory
        let files = try writeTreeOfLife(bio, classes: classes, templates: ["a photo of {}."], to: dir)
        return Response(result: ["classes": .number(Double(classes.count)), "dimension": .number(Double(bio.config.embedDim))], artifacts: files)
    }

    func writeTreeOfLife(_ bio: BioCLIP, classes: [TaxonomicClass], templates: [String], to dir: String) throws -> [String] {
        let e = bio.config.embedDim, n = classes.count
        let rows = try bio.classEmbeddings(labels: classes.map(\.label), templates: templates)
        var columns = [Float](repeating: 0, count: e * n)
        for i in 0..<n { for j in 0..<e { columns[j * n + i] = rows[i * e + j] } }
        try AtomicFile.write(NPY.encode(try Tensor(columns, shape: [e, n])), to: dir + "/txt_emb_species.npy")
        let names: JSONValue = .array(classes.map { .array([.array($0.taxa.map { .string($0) }), .string($0.common)]) })
        try AtomicFile.write(names.compactText + "\n", to: dir + "/txt_emb_species.json")
        return ["txt_emb_species.npy", "txt_emb_species.json"]
    }

    // MARK: train

    /// Hierarchical contrastive training (BioCLIP): symmetric InfoNCE between image and caption
    /// embeddings with the learned logit scale (clamped to [0, ln 100]), one caption type per step
    /// for the whole batch, AdamW (β 0.9/0.98, eps 1e-6; no decay on gains, biases, 1-D parameters
    /// and logit_scale, as open_clip), cosine schedule with warm-up. Writes an open_clip folder and
    /// the Tree-of-Life label files; reports zero-shot accuracy at every rank on `split`.
    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        // Positivity first: `size % patch` with patch 0 would trap.
        for (key, value) in [
            ("size", o.size), ("patch", o.patch), ("width", o.width), ("layers", o.layers), ("textWidth", o.textWidth),
            ("textLayers", o.textLayers), ("embedDim", o.embedDim), ("epochs", o.epochs),
        ] where value <= 0 {
            throw MenagerieError.invalidArgument("option '\(key)' = \(value) must be positive")
        }
        guard o.warmup >= 0, o.warmup <= 1_000_000, o.trainBatch <= 1_000_000, o.epochs <= 1_000_000 else {
            throw MenagerieError.invalidArgument("warmup must lie in 0…1000000 and trainBatch, epochs in 1…1000000")
        }
        guard o.size % o.patch == 0, o.width % 32 == 0, o.textWidth % 32 == 0, o.trainBatch > 1 else {
            throw MenagerieError.invalidArgument("size must be a multiple of patch, widths multiples of 32 (head width 32), epochs positive, batch ≥ 2")
        }
        let types = o.captions == "all" ? TaxonomicClass.captionTypes : o.captions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !types.isEmpty, types.allSatisfy(TaxonomicClass.captionTypes.contains) else {
            throw MenagerieError.invalidArgument("captions must be 'all' or a list of \(TaxonomicClass.captionTypes.joined(separator: ","))")
        }
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: o.size, options: o.datasetOptions)
        let (classes, described) = try datasetClasses(data, dataset: o.dataset)
        guard let trainCount = described["splits"]?["train"]?.intValue, trainCount >= o.trainBatch else {
            throw MenagerieError.invalidArgument("dataset '\(o.dataset)' has fewer training images than one batch of \(o.trainBatch)")
        }
        let config = OpenCLIPConfig(
            embedDim: o.embedDim,
            vision: .init(imageSize: o.size, patchSize: o.patch, width: o.width, layers: o.layers, heads: o.width / 32, mlpRatio: 4),
            text: .init(contextLength: 77, vocabSize: 49408, width: o.textWidth, heads: o.textWidth / 32, layers: o.textLayers, mlpRatio: 4),
            quickGELU: false, mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711])
        do { try config.validate(source: "options of '\(Self.id)'") } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let model = CLIP(config: config, seed: UInt64(bitPattern: Int64(o.seed)))
        for (name, p) in model.namedParameters {
            p.decays = !(p.shape.count < 2 || name.contains("ln_") || name.hasSuffix("bias") || name == "logit_scale")
        }
        let tokenizer = try BioCLIP.tokenizer(try PluginResources.path(module: "BioCLIP2", item: "bpe_simple_vocab_16e6.txt.gz"), contextLength: 77)
        // Captions are few (classes × types): tokenised once.
        var tokens: [String: [[Int]]] = [:]
        for t in types { tokens[t] = tokenizer.tokenize(classes.map { $0.caption(t) }).map { $0.map(Int.init) } }
        let optimizer = AdamW(model.parameters, learningRate: Float(o.lr), beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: Float(o.weightDecay))
        let steps = trainCount / o.trainBatch, total = steps * o.epochs
        let schedule = Schedule.cosine(warmup: o.warmup * steps, floor: 0)
        var curve = "epoch,loss,logit_scale,seconds\n"
        var history: [(loss: Double, scale: Double)] = []
        let started = Date()
        var step = 0
        let (mean, std) = (config.mean, config.std)
        for epoch in 0..<o.epochs {
            model.isTraining = true
            var lossSum = 0.0
            for b in 0..<steps {
                try request.host.checkCancelled()
                let batch = try data.batch(options: [
                    "split": "train", "start": .number(Double(b * o.trainBatch)), "count": .number(Double(o.trainBatch)),
                    "shuffle": true, "epoch": .number(Double(epoch)),
                ])
                guard let images = batch.tensors["images"], let labels = batch.tensors["labels"] else {
                    throw MenagerieError.invalidArgument("dataset '\(o.dataset)' batch returned no images/labels")
                }
                let y = try labels.integers()
                let type = types[step % types.count]
                optimizer.learningRate = schedule.rate(base: Float(o.lr), step: step, total: total)
                let imageFeatures = model.encodeImage(Variable(normalizeChannels(images, mean: mean, std: std)))
                let textFeatures = try model.encodeText(y.map { tokens[type]![$0] })
                let logits = model.logits(image: imageFeatures, text: textFeatures)
                let targets = Array(0..<y.count)
                let loss = (crossEntropy(logits, labels: targets) + crossEntropy(logits.transposed(), labels: targets)) * 0.5
                optimizer.minimize(loss)
                // open_clip clamps the logit scale to [0, ln 100] after each step.
                let s = min(max(model.logitScale.variable.scalars.first ?? 0, 0), Float(log(100.0)))
                model.logitScale.assign(Tensor.filled(s, shape: []))
                lossSum += Double(loss.scalars[0])
                step += 1
                request.host.progress(step, of: total, "epoch \(epoch + 1)/\(o.epochs) (\(type))")
            }
            let logitScale = Double(model.logitScale.variable.scalars.first ?? 0)
            request.host.record(epoch: epoch + 1, ["loss": lossSum / Double(steps), "logit_scale": logitScale])
            curve += "\(epoch + 1),\(lossSum / Double(steps)),\(logitScale),\(Int(Date().timeIntervalSince(started)))\n"
            history.append((lossSum / Double(steps), logitScale))
        }
        // The open_clip folder: config, weights (open_clip's state-dict names), tokenizer, labels.
        let dir = request.host.scratchDirectory + "/model"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let dtype: DType = o.saveDtype == "f16" ? .float16 : o.saveDtype == "bf16" ? .bfloat16 : .float32
        try model.save(to: dir + "/open_clip_model.safetensors", metadata: ["format": "pt"], dtype: dtype)
        try AtomicFile.write(openCLIPConfigJSON(config).prettyText + "\n", to: dir + "/open_clip_config.json")
        try AtomicFile.write(curve, to: request.host.scratchDirectory + "/curve.csv")
        try LinePlot.trainingCurves(
            title: "CLIP training on \(o.dataset): symmetric InfoNCE over \(o.epochs) epochs", epochs: history.indices.map { Double($0 + 1) },
            loss: history.map(\.loss), lossLabel: "contrastive loss", metrics: [("ln logit scale", history.map(\.scale))],
            metricLabel: "ln logit scale"
        ).write(to: request.host.scratchDirectory + "/curve.png")
        let bio = try BioCLIP(folder: dir)
        let labelFiles = try writeTreeOfLife(bio, classes: classes, templates: ["a photo of {}."], to: dir)
        let accuracy = try zeroShotAccuracy(bio, data: data, classes: classes, split: o.split, described: described)
        let parameters = model.parameters.reduce(0) { $0 + $1.shape.reduce(1, *) }
        var result: [String: JSONValue] = [:]
        result["classes"] = .number(Double(classes.count))
        result["epochs"] = .number(Double(o.epochs))
        result["seconds"] = .number(Date().timeIntervalSince(started))
        result["split"] = .string(o.split)
        result["parameters"] = .number(Double(parameters))
        result["logit_scale"] = .number(Double(bio.model.logitScaleValue))
        result["zero_shot_accuracy"] = .object(Dictionary(uniqueKeysWithValues: accuracy.map { ($0.key.label, JSONValue.number($0.value)) }))
        return Response(
            result: .object(result),
            artifacts: ["model/open_clip_model.safetensors", "model/open_clip_config.json"]
                + labelFiles.map { "model/" + $0 } + ["curve.csv"] + Figure.files("curve.png"))
    }

    /// Zero-shot top-1 accuracy at every rank on a split: species probabilities against the
    /// classes' label embeddings, summed per rank prefix (pybioclip's grouping) for higher ranks.
    func zeroShotAccuracy(_ bio: BioCLIP, data: DatasetOptionsProxy, classes: [TaxonomicClass], split: String, described: JSONValue) throws -> [Rank: Double] {
        let count = described["splits"]?[split]?.intValue ?? 0
        guard count > 0 else { throw MenagerieError.invalidArgument("the dataset has no '\(split)' split to evaluate on") }
        let weights = try bio.classEmbeddings(labels: classes.map(\.label), templates: ["a photo of {}."])
        let labels = TreeOfLifeLabels(names: classes.map { ($0.taxa, $0.common) }, embeddings: weights, dimension: bio.config.embedDim)
        var correct = [Rank: Int]()
        for start in stride(from: 0, to: count, by: 128) {
            let batch = try data.batch(options: [
                "split": .string(split), "start": .number(Double(start)), "count": .number(Double(min(128, count - start))),
                "shuffle": false, "size": .number(Double(bio.imageSize)),
            ])
            let y = try batch.tensors["labels"]!.integers()
            let x = normalizeChannels(batch.tensors["images"]!, mean: bio.config.mean, std: bio.config.std)
            let probs = try bio.probabilities(imageFeatures: try bio.imageFeatures(x, batch: 64), classes: weights, count: classes.count)
            for (i, truth) in y.enumerated() {
                let row = Array(probs[(i * classes.count)..<((i + 1) * classes.count)])
                for rank in Rank.allCases {
                    guard let top = rankPredictions(file: "", probs: row, labels: labels, rank: rank, k: 1, minProb: 0).first else { continue }
                    let want = labels.classification(truth, rank: rank).map(\.value)
                    if top.columns.map(\.value) == want { correct[rank, default: 0] += 1 }
                }
            }
        }
        return Dictionary(uniqueKeysWithValues: Rank.allCases.map { ($0, Double(correct[$0] ?? 0) / Double(count)) })
    }
}

/// open_clip's `open_clip_config.json` for a ViT CLIP (`model_cfg` + `preprocess_cfg`).
func openCLIPConfigJSON(_ c: OpenCLIPConfig) -> JSONValue {
    [
        "model_cfg": [
            "embed_dim": .number(Double(c.embedDim)), "quick_gelu": .bool(c.quickGELU),
            "vision_cfg": [
                "image_size": .number(Double(c.vision.imageSize)), "layers": .number(Double(c.vision.layers)),
                "width": .number(Double(c.vision.width)), "head_width": .number(Double(c.vision.width / c.vision.heads)),
                "patch_size": .number(Double(c.vision.patchSize)), "mlp_ratio": .number(c.vision.mlpRatio),
            ],
            "text_cfg": [
                "context_length": .number(Double(c.text.contextLength)), "vocab_size": .number(Double(c.text.vocabSize)),
                "width": .number(Double(c.text.width)), "heads": .number(Double(c.text.heads)), "layers": .number(Double(c.text.layers)),
                "mlp_ratio": .number(c.text.mlpRatio),
            ],
        ],
        "preprocess_cfg": [
            "mean": .array(c.mean.map { .number(Double($0)) }), "std": .array(c.std.map { .number(Double($0)) }),
            "interpolation": "bilinear", "resize_mode": "squash",
        ],
    ]
}
