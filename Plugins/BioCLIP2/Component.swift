import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// BioCLIP 2 as a backbone component: `predict` and `embed` as pybioclip does them, the backbone
/// `embed` of tensors for other plugins, `labels` (Tree-of-Life label embeddings for a dataset's
/// classes), `train` (hierarchical contrastive training on a dataset) and `emergent` (the paper's
/// analyses of the embedding space).
struct BioCLIPComponent: Backbone {
    struct Options: ComponentOptions {
        var model = ""
        var images = ""
        var rank = "species"
        var cls = ""
        var bins = ""
        var subset = ""
        var tol = ""
        var k = 5
        var format = "none"
        var batch = 10
        var prefetch = 2
        var cache = ""
        var output = "json"
        var minProb = 1e-9
        var texts: [String] = []
        // train / labels / emergent
        var dataset = "synthetic-tol"
        var datasetOptions: [String] = []
        var size = 64
        var patch = 8
        var width = 128
        var layers = 4
        var textWidth = 64
        var textLayers = 3
        var embedDim = 128
        var epochs = 20
        var trainBatch = 128
        var saveDtype = "f32"
        var lr = 5e-4
        var weightDecay = 0.2
        var warmup = 1
        var captions = "all"
        var seed = 0
        var split = "test"
        var sizes = [6, 12, 24]
        static let help: [String: String] = [
            "model":
                "an open_clip model folder (open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin); empty: the embedded model",
            "images": "predict/embed: a PNG/TIFF/JPEG file or a folder of them (also --input images=DIR)",
            "rank": "predict: kingdom, phylum, class, order, family, genus or species (Tree-of-Life labels)",
            "cls": "predict: custom labels, a comma-separated list or a file with one per line (80 OpenAI templates)",
            "bins": "predict: CSV class,bin: custom labels whose probabilities are summed per bin",
            "subset": "predict: CSV whose first column is named a rank (or species_epithet, common_name): restrict the Tree-of-Life labels to its values",
            "tol": "predict: folder with txt_emb_species.npy + txt_emb_species.json (default: the model folder)",
            "k": "predict: predictions per image",
            "format":
                "predict: return the predictions as csv, table or json text that the CLI shows instead of the summary (none: the summary; the files either way)",
            "batch": "predict/embed: images per forward pass",
            "prefetch": "predict/embed: batches decoded and resized ahead on a worker thread while the model runs (0: one after the other)",
            "cache": "text-embedding cache folder; none disables; empty: $XDG_CACHE_HOME/menagerie/bioclip2",
            "output": "embed: json (pybioclip's embeddings.json), npy (embeddings.npy + files.txt) or safetensors",
            "texts": "embed: texts → their embeddings [T, E] (tensor output), with the model's image size, mean and std in the result",
            "minProb": "predict: species probabilities at or below this are left out of higher-rank sums (pybioclip's min_prob)",
            "dataset": "train/labels/emergent: the dataset component", "datasetOptions": "train/labels/emergent: key=value options passed to the dataset",
            "size": "train: image side", "patch": "train: patch size", "width": "train: image tower width", "layers": "train: image tower blocks",
            "textWidth": "train: text tower width", "textLayers": "train: text tower blocks", "embedDim": "train: shared embedding size",
            "epochs": "train: passes over the training split", "trainBatch": "train: images (and captions) per contrastive batch",
            "saveDtype": "train: dtype of the saved weights, f32, f16 or bf16", "lr": "train: AdamW peak learning rate (cosine with warm-up)",
            "weightDecay": "train: AdamW weight decay (not on gains, biases, embeddings, logit_scale)", "warmup": "train: warm-up epochs",
            "captions": "train: caption types, all (one per step, cycled) or a list of taxonomic,scientific,common,scientific_common,taxonomic_common",
            "seed": "train: initialisation and shuffles", "split": "train/emergent: the held-out split evaluated",
            "sizes": "scale: trainPerSpecies values of the data-scale experiment",
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "k": 1...1e6, "batch": 1...1e6, "prefetch": 0...64, "minProb": 0...1, "size": 1...65536, "patch": 1...65536, "width": 1...65536, "layers": 1...1024,
            "textWidth": 1...65536, "textLayers": 1...1024, "embedDim": 1...65536, "epochs": 1...1e6, "trainBatch": 1...1e6,
            "lr": 0...1e3, "weightDecay": 0...1e3, "warmup": 0...1e6, "sizes": 1...1e9,
        ]
        static let choices = [
            "saveDtype": ["f32", "f16", "bf16"], "rank": Rank.allCases.map(\.label), "format": ["none", "csv", "table", "json"],
            "output": ["json", "npy", "safetensors"],
        ]
    }

    static let id = "bioclip2"
    static let summary =
        "BioCLIP 2: zero-shot Tree-of-Life classification and embeddings from open_clip weights; hierarchical CLIP training; emergent-property analyses"
    static let operations = [
        OperationSpec(
            "embed",
            summary:
                "image files → embeddings.json (pybioclip's layout), or tensors: images f32 [N,3,S,S] / [0,1] pixels / token ids i64 [N,L] → embedding [N,E] (+ patch tokens)",
            inputs: [
                TensorSpec("input", dtypes: ["f32", "i64"], shape: "N×3×S×S or N×L", summary: "normalised images or token ids", optional: true),
                TensorSpec(
                    "pixels", dtypes: ["f32"], shape: "N×3×H×W", summary: "RGB in [0, 1], any size: resized and normalised as the model's preprocessing",
                    optional: true),
                TensorSpec(
                    "grad_embedding", dtypes: ["f32"], shape: "N×E",
                    summary: "with image 'input': the upstream gradient; returns grad_input = ∂(Σ grad·embedding)/∂input", optional: true),
                TensorSpec("images", shape: "file or folder", summary: "PNG/TIFF/JPEG images (passed as the images option)", optional: true),
            ],
            outputs: [
                TensorSpec("embedding", dtypes: ["f32"], shape: "N×E", summary: "unnormalised embeddings (tensor input only)"),
                TensorSpec(
                    "tokens", dtypes: ["f32"], shape: "N×G×G×W", summary: "patch tokens after ln_post (image tensor input only; label propagation's features)"),
                TensorSpec("grad_input", dtypes: ["f32"], shape: "N×3×S×S", summary: "the vector-Jacobian product (with grad_embedding)"),
            ],
            sharding: ShardingSpec(
                option: "images", extensions: ImageFiles.extensions, batchOption: "batch", sum: ["images", "seconds"],
                jsonMaps: ["embeddings.json": "embeddings"],
                refuses: ["output=safetensors": "safetensors shards are not merged; use output=npy (merged through memory maps) or output=json"])),
        OperationSpec(
            "predict", summary: "zero-shot predictions (Tree-of-Life ranks, custom labels, bins, subsets) → predictions.csv",
            inputs: [TensorSpec("images", shape: "file or folder", summary: "PNG/TIFF/JPEG images (passed as the images option)", optional: true)],
            sharding: ShardingSpec(option: "images", extensions: ImageFiles.extensions, batchOption: "batch", sum: ["images", "seconds"])),
        OperationSpec("labels", summary: "txt_emb_species.npy + .json for a dataset's classes (Tree-of-Life labels for predict)"),
        OperationSpec("train", summary: "hierarchical contrastive training on a dataset → an open_clip model folder, zero-shot accuracy per rank"),
        OperationSpec("emergent", summary: "inter- and intra-species structure of the embedding space on a dataset (emergent.csv, plots)"),
        OperationSpec(
            "scale", summary: "the data-scale experiment: train at several dataset sizes, accuracy and emergent metrics of each (scale.csv, scale.png)"),
    ]

    func embed(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let bio = try loadModel(o)
        if !o.texts.isEmpty {
            let rows = try bio.textFeatures(o.texts)
            return Response(
                result: [
                    "count": .number(Double(o.texts.count)), "image_size": .number(Double(bio.imageSize)),
                    "mean": .array(bio.config.mean.map { .number(Double($0)) }), "std": .array(bio.config.std.map { .number(Double($0)) }),
                ],
                tensors: [("embedding", try Tensor(rows, shape: [o.texts.count, bio.config.embedDim]))])
        }
        if let upstream = request.inputs["grad_embedding"] {
            let input = try request.inputs.require("input", dtypes: [.float32], rank: 4)
            let s = bio.imageSize
            guard input.shape[1] == 3, input.shape[2] == s, input.shape[3] == s else {
                throw MenagerieError.invalidArgument("input 'input' must be normalised images [N, 3, \(s), \(s)] for this model, got \(input.shape)")
            }
            guard upstream.dtype == .float32, upstream.shape == [input.shape[0], bio.config.embedDim] else {
                throw MenagerieError.invalidArgument("input 'grad_embedding' must be f32 [\(input.shape[0]), \(bio.config.embedDim)], got \(upstream.shape)")
            }
            // The loaded CLIP's differentiable path: one model serves inference and gradients.
            let module = bio.model
            let x = Variable(input.owned(), requiresGrad: true)
            let e = GradMode.with(true) { module.encodeImage(x) }
            let grad = Autograd.gradients(of: (e * Variable(upstream.owned())).sum(), wrt: [x])[0]!
            return Response(
                result: ["embedding": .number(Double(e.shape[1])), "count": .number(Double(e.shape[0]))],
                tensors: [("embedding", e.value), ("grad_input", grad.value)])
        }
        if let pixels = request.inputs["pixels"] {
            guard pixels.dtype == .float32, pixels.rank == 4, pixels.shape[1] == 3 else {
                throw MenagerieError.invalidArgument("input 'pixels' must be f32 [N, 3, H, W] RGB in [0, 1], got \(pixels.dtype.name) \(pixels.shape)")
            }
            let (e, t) = try bio.imageFeatures(try bio.preprocess(pixels: pixels.owned()), batch: max(1, o.batch), patchTokens: true)
            return Response(
                result: ["embedding": .number(Double(e.shape[1])), "count": .number(Double(e.shape[0])), "grid": .number(Double(t!.shape[1]))],
                tensors: [("embedding", e), ("tokens", t!)])
        }
        if let input = request.inputs["input"] {
            var out: Tensor, tokens: Tensor?
            do {
                if input.dtype == .float32 {
                    (out, tokens) = try bio.imageFeatures(input.owned(), batch: max(1, o.batch), patchTokens: true)
                } else {
                    out = try bio.model.encodeText(input.owned())
                }
            } catch { throw MenagerieError.invalidArgument("input 'input' of '\(Self.id)': \(error)") }
            return Response(
                result: ["embedding": .number(Double(out.shape[1])), "count": .number(Double(out.shape[0]))],
                tensors: [("embedding", out)] + (tokens.map { [("tokens", $0)] } ?? []))
        }
        let files = try imageFiles(o)
        var rows: [Float] = []
        let started = Date()
        // Decoding and resizing the next batch overlap the forward pass of this one.
        try Prefetch.forEach(batches(files.count, o.batch), depth: o.prefetch, prepare: { r in try bio.preprocess(files[r].map(readImage)) }) { r, pixels in
            try request.host.checkCancelled()
            rows += try bio.imageFeatures(pixels, batch: r.count).scalars(as: Float.self)
            request.host.progress(r.upperBound, of: files.count, "embed")
        }
        let e = bio.config.embedDim
        let dir = request.host.scratchDirectory
        let artifacts: [String]
        switch o.output {
        case "npy":
            try AtomicFile.write(NPY.encode(try Tensor(rows, shape: [files.count, e])), to: dir + "/embeddings.npy")
            try AtomicFile.write(files.joined(separator: "\n") + "\n", to: dir + "/files.txt")
            artifacts = ["embeddings.npy", "files.txt"]
        case "safetensors":
            let list = String(decoding: try JSONSerialization.data(withJSONObject: files), as: UTF8.self)
            try SafeTensors.write(
                [("embeddings", try Tensor(rows, shape: [files.count, e]))], metadata: ["files": list, "model": modelName(o, bio)],
                to: dir + "/embeddings.safetensors")
            artifacts = ["embeddings.safetensors"]
        default:
            // pybioclip: {"model": …, "embeddings": {path: [floats]}} (unnormalised), in file order.
            var text = "{\"model\": " + jsonString(modelName(o, bio)) + ", \"embeddings\": {"
            for (i, f) in files.enumerated() {
                text +=
                    (i == 0 ? "" : ", ") + jsonString(f) + ": [" + rows[(i * e)..<((i + 1) * e)].map { pythonFloat(Double($0)) }.joined(separator: ", ") + "]"
            }
            text += "}}\n"
            try AtomicFile.write(text, to: dir + "/embeddings.json")
            artifacts = ["embeddings.json"]
        }
        return Response(
            result: [
                "images": .number(Double(files.count)), "dimension": .number(Double(e)), "model": .string(modelName(o, bio)),
                "seconds": .number(Date().timeIntervalSince(started)),
            ], artifacts: artifacts)
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "predict": return try predict(request)
        case "labels": return try writeLabels(request)
        case "train": return try train(request)
        case "emergent": return try emergent(request)
        case "scale": return try scaleStudy(request)
        default: throw MenagerieError.invalidArgument("'\(Self.id)' has no operation '\(operation)'")
        }
    }

    // MARK: predict

    func predict(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.k > 0 else { throw MenagerieError.invalidArgument("option 'k' must be positive") }
        guard [o.cls, o.bins].filter({ !$0.isEmpty }).count <= 1, o.subset.isEmpty || (o.cls.isEmpty && o.bins.isEmpty) else {
            throw MenagerieError.invalidArgument(
                "give at most one of cls, bins or subset (subset restricts the Tree-of-Life labels; cls and bins replace them)")
        }
        guard let rank = Rank(label: o.rank) else {
            throw MenagerieError.invalidArgument("rank must be one of \(Rank.allCases.map(\.label).joined(separator: ", "))")
        }
        let bio = try loadModel(o)
        let files = try imageFiles(o)
        let started = Date()
        // The label set and its embeddings.
        var header: [String]
        var classes: [String] = [], bins: [String]? = nil
        var labels: TreeOfLifeLabels? = nil
        var weights: [Float]
        var cacheState = "off"
        if !o.cls.isEmpty || !o.bins.isEmpty {
            do {
                if !o.bins.isEmpty { (classes, bins) = try readBins(o.bins) } else { classes = try readLabels(o.cls) }
            } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
            let cache = TextEmbeddingCache(option: o.cache)
            if let hit = cache.load(identity: bio.identity, templates: openAITemplates, labels: classes, dimension: bio.config.embedDim) {
                weights = hit
                cacheState = "hit"
            } else {
                weights = try bio.classEmbeddings(labels: classes, templates: openAITemplates) { done, total in
                    request.host.progress(done, of: total, "text embeddings")
                }
                cache.store(weights, identity: bio.identity, templates: openAITemplates, labels: classes, dimension: bio.config.embedDim)
                cacheState = cache.directory == nil ? "off" : "miss (stored)"
            }
            header = ["file_name", "classification", "score"]
        } else {
            var tol = try treeOfLife(o, bio)
            if !o.subset.isEmpty {
                do {
                    let (head, rows) = try readCSV(o.subset)
                    let column = head[0].trimmingCharacters(in: .whitespaces).lowercased()
                    let allowed = Rank.allCases.map(\.label) + ["species_epithet", "common_name"]
                    guard allowed.contains(column) else {
                        throw FormatError(path: o.subset, "first column is named '\(head[0])' but must be one of \(allowed.joined(separator: ","))")
                    }
                    tol = try tol.subset(column: column, values: rows.compactMap { $0.first?.trimmingCharacters(in: .whitespaces) }, source: o.subset)
                } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
            }
            labels = tol
            weights = tol.embeddings
            header = ["file_name"] + tol.classification(0, rank: rank).map(\.column) + ["score"]
        }
        let count = labels?.count ?? classes.count
        var predictions: [Prediction] = []
        try Prefetch.forEach(batches(files.count, o.batch), depth: o.prefetch, prepare: { r in try bio.preprocess(files[r].map(readImage)) }) { r, pixels in
            try request.host.checkCancelled()
            let features = try bio.imageFeatures(pixels, batch: r.count)
            let probs = try bio.probabilities(imageFeatures: features, classes: weights, count: count)
            for (i, file) in files[r].enumerated() {
                let row = Array(probs[(i * count)..<((i + 1) * count)])
                if let labels {
                    predictions += rankPredictions(file: file, probs: row, labels: labels, rank: rank, k: o.k, minProb: Float(o.minProb))
                } else {
                    predictions += customPredictions(file: file, probs: row, classes: classes, bins: bins, k: o.k)
                }
            }
            request.host.progress(r.upperBound, of: files.count, "predict")
        }
        let csv =
            ([header.joined(separator: ",")]
            + predictions.map { p in
                ([p.file] + p.columns.map(\.value)).map(csvField).joined(separator: ",") + "," + pythonFloat(p.score)
            }).joined(separator: "\n") + "\n"
        try AtomicFile.write(csv, to: request.host.scratchDirectory + "/predictions.csv")
        let objects: [JSONValue] = predictions.map { p in
            var obj: [String: JSONValue] = ["file_name": .string(p.file), "score": .number(p.score)]
            for (c, v) in p.columns { obj[c] = .string(v) }
            return .object(obj)
        }
        // The predictions in the format asked for, shown by the CLI instead of its summary (plugins
        // never print: a host may run them isolated, and --json must stay JSON).
        let display: String?
        switch o.format {
        case "csv": display = csv
        case "json": display = JSONValue.array(objects).prettyText + "\n"
        case "table": display = table(header: header, rows: predictions.map { [$0.file] + $0.columns.map(\.value) + [String(format: "%.6f", $0.score)] })
        default: display = nil
        }
        var result: [String: JSONValue] = [
            "model": .string(modelName(o, bio)), "images": .number(Double(files.count)), "labels": .number(Double(count)),
            "mode": .string(!o.bins.isEmpty ? "bins" : !o.cls.isEmpty ? "custom labels" : "tree of life, rank \(rank.label)"),
            "text_embedding_cache": .string(cacheState), "seconds": .number(Date().timeIntervalSince(started)),
            "predictions": .array(objects),
        ]
        if let display { result["display"] = .string(display) }
        return Response(result: .object(result), artifacts: ["predictions.csv"])
    }

    // MARK: helpers

    func loadModel(_ o: Options) throws -> BioCLIP {
        let folder = o.model.isEmpty ? try embeddedModelFolder() : o.model
        do { return try loadedModel(folder: folder) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }

    func modelName(_ o: Options, _ bio: BioCLIP) -> String { o.model.isEmpty ? "embedded:bioclip2-tol-tiny" : bio.folder }

    func imageFiles(_ o: Options) throws -> [String] {
        guard !o.images.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs images: --input images=FILE_OR_FOLDER (PNG/TIFF/JPEG)") }
        do { return try ImageFiles.list(o.images) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }

    /// Consecutive ranges of `batch` files (the last one shorter), from the first file.
    func batches(_ count: Int, _ batch: Int) -> [Range<Int>] {
        stride(from: 0, to: count, by: max(1, batch)).map { $0..<min(count, $0 + max(1, batch)) }
    }

    func readImage(_ path: String) throws -> Image {
        do { return try ImageFiles.read(path) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }

    func treeOfLife(_ o: Options, _ bio: BioCLIP) throws -> TreeOfLifeLabels {
        let folder = o.tol.isEmpty ? bio.folder : (o.tol as NSString).expandingTildeInPath
        let npy = folder + "/txt_emb_species.npy", json = folder + "/txt_emb_species.json"
        guard FileManager.default.fileExists(atPath: npy), FileManager.default.fileExists(atPath: json) else {
            throw MenagerieError.invalidArgument(
                "Tree-of-Life labels need txt_emb_species.npy and txt_emb_species.json in \(folder) "
                    + "(download them with the model, or pass --set tol=FOLDER; for custom labels use --set cls=…)")
        }
        do { return try TreeOfLifeLabels(npy: npy, json: json, dimension: bio.config.embedDim) } catch let e as FormatError {
            throw MenagerieError.invalidArgument("\(e)")
        }
    }
}

/// Models already loaded in this process, by folder and the weights' identity.
let loadedModels = ProcessCache<BioCLIP>()

func loadedModel(folder: String) throws -> BioCLIP {
    let folder = (folder as NSString).expandingTildeInPath
    return try loadedModels.value(folder, stamp: Checkpoint.weightsFile(in: folder, Checkpoint.openCLIPFiles) ?? folder + "/open_clip_model.safetensors") {
        try BioCLIP(folder: folder)
    }
}

/// The model shipped with the plugin (trained here on synthetic-tol; see Docs/methods/bioclip2.md).
func embeddedModelFolder() throws -> String {
    try PluginResources.path(module: "BioCLIP2", item: "bioclip2-tol-tiny")
}

func jsonString(_ s: String) -> String { JSONValue.string(s).compactText }

func table(header: [String], rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for r in rows { for (i, v) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], v.count) } }
    func line(_ r: [String]) -> String {
        r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum BioCLIP2Plugin: Plugin {
    public static let name = "bioclip2"
    public static let version = "0.1.0"
    public static let summary = "BioCLIP 2 (Gu et al. 2025): open_clip inference as pybioclip, hierarchical CLIP training, emergent properties"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [BioCLIPComponent.self]
}
