import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Vision

/// The `prompt-cam` explainer: `train` learns class prompts and the shared head on a dataset
/// component with the backbone frozen; `explain` shows, per head of the last block, what the class
/// prompt attends to, with the heads ranked by greedy blurring.
struct PromptCAMComponent: Explainer {
    struct Options: ComponentOptions {
        var backbone = ""
        var prompts = ""
        var images = ""
        var query = -1
        var dataset = "synthetic-tol"
        var datasetOptions: [String] = []
        var epochs = 6
        var batch = 16
        var lr = 0.005
        var weightDecay = 1e-3
        var warmup = 1
        var seed = 0
        static let help = [
            "backbone": "a timm ViT folder, frozen (empty: the embedded classifier's backbone)",
            "prompts": "explain: the prompts.safetensors written by train",
            "images": "explain: a PNG/TIFF/JPEG file or folder; or the tensor input 'images'",
            "query": "explain: the class whose prompt is shown (-1: each image's prediction; another class: a cross-class query)",
            "dataset": "train: the dataset component", "datasetOptions": "train: key=value options passed to the dataset",
            "epochs": "train: passes over the training split", "batch": "train: batch size",
            "lr": "train: SGD learning rate (momentum 0.9, cosine schedule with warm-up)", "weightDecay": "train: SGD weight decay",
            "warmup": "train: warm-up epochs", "seed": "train: prompt and head initialisation",
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "query": -1...16_777_216, "epochs": 1...1e6, "batch": 1...1e6, "lr": 0...1e3,
            "weightDecay": 0...1e3, "warmup": 0...1e6,
        ]
    }
    static let id = "prompt-cam"
    static let summary = "Prompt-CAM: class prompts on a frozen ViT; per-head trait maps ranked by blurring (Chowdhury et al., CVPR 2025)"
    static let operations = [
        OperationSpec(
            "explain", summary: "per-head trait maps, head ranking, a grid PNG per image",
            inputs: [
                TensorSpec(
                    "images", dtypes: ["f32"], shape: "N×3×S×S",
                    summary: "normalised images as .npy, or a PNG/TIFF/JPEG file or folder (passed as the images option)", optional: true)
            ],
            outputs: [TensorSpec("maps", dtypes: ["f32"], shape: "N×H×S×S", summary: "per-head trait maps at input size")],
            sharding: ShardingSpec(option: "images", extensions: ImageFiles.extensions, sum: ["images"], indexed: ["heads_"])),
        OperationSpec("train", summary: "learn the prompts and head; writes prompts.safetensors, curve.csv"),
        OperationSpec(
            "trait_maps", summary: "per-head trait maps on the token grid and the logits of normalised images (no ranking, no files)",
            inputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×3×S×S", summary: "normalised images"),
                TensorSpec(
                    "query", dtypes: ["i64", "i32", "u8"], shape: "N", summary: "the class whose prompt is shown per image (−1: its prediction)", optional: true
                ),
            ],
            outputs: [
                TensorSpec("grid", dtypes: ["f32"], shape: "N×H×g×g", summary: "the last block's attention of the query prompt over the patches, per head"),
                TensorSpec("logits", dtypes: ["f32"], shape: "N×C", summary: "the Prompt-CAM model's logits"),
            ]),
        OperationSpec(
            "logits", summary: "the Prompt-CAM model's logits of normalised images",
            inputs: [TensorSpec("images", dtypes: ["f32"], shape: "N×3×S×S", summary: "normalised images")],
            outputs: [TensorSpec("logits", dtypes: ["f32"], shape: "N×C", summary: "one score per class prompt")]),
    ]

    /// The frozen backbone: the option's folder, else the embedded classifier of the `classifiers`
    /// plugin (asked through the host).
    func backbone(_ o: Options, host: PluginHost) throws -> ViTClassifier {
        let folder =
            o.backbone.isEmpty
            ? try embeddedClassifierFolder(host, for: Self.id, hint: "--set backbone=FOLDER") : (o.backbone as NSString).expandingTildeInPath
        do { return try ViTClassifier(folder: folder, requireHead: false) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }

    /// The backbone with the prompts of `o.prompts` (a file written by train) loaded.
    func model(_ o: Options, host: PluginHost) throws -> (PromptCAMModel, ViTClassifier) {
        let vit = try backbone(o, host: host)
        guard !o.prompts.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs --set prompts=FILE (from prompt-cam train)") }
        let promptsFile = (o.prompts as NSString).expandingTildeInPath
        let promptShape: [Int]
        do { promptShape = try SafeTensorsFile(path: promptsFile).entry("prompts").shape } catch { throw MenagerieError.invalidArgument("\(error)") }
        // [depth, classes, width] of this backbone, checked before the shape sizes the model.
        guard promptShape.count == 3, promptShape[0] == vit.config.depth, promptShape[2] == vit.config.width,
            Limits.vocabulary.contains(promptShape[1])
        else {
            throw MenagerieError.invalidArgument(
                "\(promptsFile): tensor 'prompts' has shape \(promptShape); this backbone needs "
                    + "[\(vit.config.depth), classes, \(vit.config.width)] with 1…\(Limits.vocabulary.upperBound) classes")
        }
        let model = PromptCAMModel(backbone: vit.model, classes: promptShape[1])
        do { try model.load(from: promptsFile) } catch { throw MenagerieError.invalidArgument("\(error)") }
        return (model, vit)
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "trait_maps", "logits":
            let (model, vit) = try model(request.options, host: request.host)
            let images = try request.inputs.require("images", dtypes: [.float32], rank: 4).owned()
            let s = vit.config.imageSize
            guard images.shape[1] == 3, images.shape[2] == s, images.shape[3] == s else {
                throw MenagerieError.invalidArgument("input 'images' must be [N, 3, \(s), \(s)] for this backbone, got \(images.shape)")
            }
            let n = images.shape[0]
            if operation == "logits" {
                let logits = GradMode.disabled { model.forward(Variable(images)).logits }.value
                return Response(result: ["images": .number(Double(n))], tensors: [("logits", logits)])
            }
            var query = Array(repeating: -1, count: n)
            if let q = request.inputs["query"] {
                guard q.rank == 1, q.shape[0] == n else { throw MenagerieError.invalidArgument("input 'query' must be [\(n)], got \(q.shape)") }
                query = try q.integers()
            }
            guard query.allSatisfy({ $0 < model.classes }) else {
                throw MenagerieError.invalidArgument("input 'query' holds a class outside 0..<\(model.classes)")
            }
            if query.contains(where: { $0 < 0 }) {
                let logits0 = GradMode.disabled { model.forward(Variable(images)).logits }.value
                let predicted = argmaxRows(logits0)
                query = query.indices.map { query[$0] >= 0 ? query[$0] : predicted[$0] }
            }
            let (grid, logits) = model.traitMaps(images, query: query)
            return Response(result: ["images": .number(Double(n)), "heads": .number(Double(grid.shape[1]))], tensors: [("grid", grid), ("logits", logits)])
        default:
            return try train(request)
        }
    }

    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let vit = try backbone(o, host: request.host)
        let s = vit.config.imageSize
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: s, options: o.datasetOptions)
        let described = try data.describe(options: [:])
        guard let classes = described["classes"]?.arrayValue?.count, classes > 1, let trainCount = described["splits"]?["train"]?.intValue, trainCount > 0
        else {
            throw MenagerieError.invalidArgument("dataset '\(o.dataset)' describes no classes or no training images")
        }
        let valCount = described["splits"]?["val"]?.intValue ?? 0
        // Positivity first: the step count divides by batch.
        for (key, value) in [("epochs", o.epochs), ("batch", o.batch)] where value <= 0 {
            throw MenagerieError.invalidArgument("option '\(key)' = \(value) must be positive")
        }
        guard (0...1_000_000).contains(o.warmup), o.batch <= 1_000_000, o.epochs <= 1_000_000 else {
            throw MenagerieError.invalidArgument("warmup must lie in 0…1000000 and batch, epochs in 1…1000000")
        }
        let model = PromptCAMModel(backbone: vit.model, classes: classes, seed: UInt64(bitPattern: Int64(o.seed)))
        let optimizer = SGD(model.trainable, learningRate: Float(o.lr), momentum: 0.9, weightDecay: Float(o.weightDecay))
        let steps = (trainCount + o.batch - 1) / o.batch
        let schedule = Schedule.cosine(warmup: o.warmup * steps, floor: 0)
        func normalise(_ images: Tensor) -> Tensor { normalize(images, mean: vit.mean, std: vit.std) }
        var curve = "epoch,train_loss,train_accuracy,val_accuracy\n"
        var lastTrain = 0.0, lastVal = Double.nan
        let started = Date()
        try fitClassifier(
            data, dataset: o.dataset, trainCount: trainCount, batch: o.batch, epochs: o.epochs, baseRate: Float(o.lr),
            schedule: schedule, optimizer: optimizer, host: request.host,
            logits: { model.forward(Variable(normalise($0))).logits }
        ) { epoch, loss, accuracy in
            lastTrain = accuracy
            if valCount > 0 {
                lastVal = try evaluateAccuracy(data, dataset: o.dataset, split: "val", count: valCount) { model.forward(Variable(normalise($0))).logits }
            }
            curve += "\(epoch + 1),\(loss),\(lastTrain),\(lastVal)\n"
        }
        let dir = request.host.scratchDirectory
        try model.save(to: dir + "/prompts.safetensors")
        try AtomicFile.write(curve, to: dir + "/curve.csv")
        return Response(
            result: [
                "classes": .number(Double(classes)), "train_accuracy": .number(lastTrain), "val_accuracy": .number(lastVal),
                "seconds": .number(Date().timeIntervalSince(started)), "backbone": .string(vit.folder),
                "trainable_parameters": .number(Double(model.trainable.reduce(0) { $0 + $1.shape.reduce(1, *) })),
            ],
            artifacts: ["prompts.safetensors", "curve.csv"])
    }

    func explain(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let (model, vit) = try model(o, host: request.host)
        let classes = model.classes
        let (images, pictures) = try loadImages(request, classifier: vit, optionPath: o.images, component: Self.id)
        let n = images.shape[0]
        let logits0 = try GradMode.disabled { model.forward(Variable(images)).logits }.value.scalars(as: Float.self)
        let predicted = (0..<n).map { i in (0..<classes).max { logits0[i * classes + $0] < logits0[i * classes + $1] }! }
        guard o.query < classes else { throw MenagerieError.invalidArgument("query class \(o.query) is outside 0..<\(classes)") }
        let query = predicted.map { o.query >= 0 ? o.query : $0 }
        let (grid, _) = model.traitMaps(images, query: query)
        let c = vit.config, h = c.heads, s = c.imageSize, g = c.grid
        let up = try GradMode.disabled { Variable(try grid.reshaped([n * h, 1, g, g])).upsampleBilinear(height: s, width: s) }.value.reshaped([n, h, s, s])
        var perImage: [JSONValue] = [], artifacts: [String] = []
        let maps = try up.scalars(as: Float.self)
        for i in 0..<n {
            let ranking = model.rankHeads(
                try Tensor(Array(try images.scalars(as: Float.self)[(i * 3 * s * s)..<((i + 1) * 3 * s * s)]), shape: [1, 3, s, s]),
                target: query[i])
            perImage.append([
                "predicted": .number(Double(predicted[i])), "query": .number(Double(query[i])),
                "head_ranking": .array(ranking.map { .number(Double($0)) }),
            ])
            if i < pictures.count {
                var tiles = [pictures[i]]
                let headers = ["image"] + ranking.enumerated().map { "head \($0.element) (#\($0.offset + 1))" }
                for hh in ranking {
                    var m = Array(maps[((i * h + hh) * s * s)..<((i * h + hh + 1) * s * s)])
                    let lo = m.min()!, hi = m.max()!
                    for j in m.indices { m[j] = (m[j] - lo) / (hi - lo + 1e-7) }
                    tiles.append(try Overlay.heatmap(on: pictures[i], map: m))
                }
                let name = String(format: "heads_%03d.png", i)
                var grid = ImageGrid(
                    title: "Prompt-CAM heads for class \(query[i]), most to least important", columnHeaders: headers,
                    tiles: [tiles.map { Optional($0) }], tileSize: 80)
                grid.colorBar = (0...1, "attention (min–max scaled)", { Color.jet($0) })
                try grid.write(to: request.host.scratchDirectory + "/" + name)
                artifacts += Figure.files(name)
            }
        }
        return Response(
            result: [
                "images": .number(Double(n)), "heads": .number(Double(h)), "per_image": .array(perImage),
                "maps": "maps.npy: the last block's attention of the query prompt over the patches, per head, at input size",
            ],
            tensors: [("maps", up)], artifacts: artifacts)
    }
}

/// Images from `--set images=PATH` (resized to the model and said so) or the tensor input.
func loadImages<O: ComponentOptions>(_ request: Request<O>, classifier: ViTClassifier, optionPath: String, component: String) throws -> (Tensor, [Image]) {
    if let given = request.inputs["images"] {
        guard given.dtype == .float32, given.rank == 4 else {
            throw MenagerieError.invalidArgument(
                "input 'images' of '\(component)' must be f32 [N, 3, S, S] (normalised), got \(given.dtype.name) \(given.shape)")
        }
        return (given.owned(), [])
    }
    guard !optionPath.isEmpty else {
        throw MenagerieError.invalidArgument(
            "'\(component)' needs images: --input images=FILE_OR_FOLDER (PNG/TIFF/JPEG) or --input images=X.npy (normalised N×3×S×S)")
    }
    let files: [String]
    do { files = try ImageFiles.list(optionPath, option: "images") } catch { throw MenagerieError.invalidArgument("\(error)") }
    var pictures: [Image] = []
    for f in files {
        do {
            let img = try ImageFiles.read(f)
            pictures.append(classifier.fit(img).0)
        } catch { throw MenagerieError.invalidArgument("\(error)") }
    }
    return (try classifier.normalized(pictures), pictures)
}

extension PromptCAMComponent {
    static var inTour: Bool { true }

    /// The embedded Prompt-CAM (prompts trained here on `synthetic-tol` over the embedded backbone):
    /// its accuracy on two test images per species, and the ranked per-head trait maps of the four
    /// species of the first genus (they differ only in the beak), plus one cross-class query.
    func tour(_ request: Request<Options>) throws -> Response {
        let folder = try embeddedClassifierFolder(request.host, for: Self.id, hint: "prompt-cam train/explain with --set backbone=FOLDER")
        let vit: ViTClassifier
        do { vit = try ViTClassifier(folder: folder, requireHead: false) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let promptsFile = folder + "/prompt-cam.safetensors"
        let classes = try SafeTensorsFile(path: promptsFile).entry("prompts").shape[1]
        let model = PromptCAMModel(backbone: vit.model, classes: classes)
        try model.load(from: promptsFile)
        let s = vit.config.imageSize, plane = s * s
        let data = try DatasetProxy(request.host, id: "synthetic-tol")
        let described = try data.describe(options: ["size": .number(Double(s))])
        let testPer = (described["splits"]?["test"]?.intValue ?? 0) / max(classes, 1)
        let batch = try data.batch(options: [
            "split": "test", "start": 0, "count": .number(Double(testPer * classes)), "shuffle": false, "size": .number(Double(s)),
        ])
        let raw = try batch.tensors["images"]!.scalars(as: Float.self), labels = try batch.tensors["labels"]!.integers()
        var picked: [Int] = []
        for species in 0..<classes { picked += (0..<min(2, testPer)).map { species * testPer + $0 } }
        func normalised(_ indices: [Int]) throws -> Tensor {
            var x: [Float] = []
            for i in indices {
                for c in 0..<3 { x += raw[((i * 3 + c) * plane)..<((i * 3 + c + 1) * plane)].map { ($0 - vit.mean[c]) / vit.std[c] } }
            }
            return try Tensor(x, shape: [indices.count, 3, s, s])
        }
        var correct = 0
        for start in stride(from: 0, to: picked.count, by: 32) {
            let chunk = Array(picked[start..<min(picked.count, start + 32)])
            let logits = try GradMode.disabled { model.forward(Variable(try normalised(chunk))).logits }
            correct += zip(argmaxRows(logits.value), chunk.map { labels[$0] }).filter { $0 == $1 }.count
        }
        let accuracy = Double(correct) / Double(picked.count)
        // The first genus's species, their own prompts; then species 0's image with species 3's prompt.
        let shown = (0..<min(4, classes)).map { $0 * testPer }
        let images = try normalised(shown)
        var queries = shown.map { labels[$0] }
        let (maps, _) = model.traitMaps(images, query: queries)
        let cross = model.traitMaps(try normalised([shown[0]]), query: [min(3, classes - 1)]).maps
        queries.append(min(3, classes - 1))
        let h = vit.config.heads, g = vit.config.grid
        let all = try maps.scalars(as: Float.self) + cross.scalars(as: Float.self)
        var tiles: [[Image?]] = []
        for (row, i) in (shown + [shown[0]]).enumerated() {
            let picture = Image(
                width: s, height: s, channels: 3,
                pixels: (0..<plane).flatMap { p in
                    (0..<3).map { c in UInt8((raw[(i * 3 + c) * plane + p] * 255).rounded()) }
                })
            let ranking = model.rankHeads(try normalised([i]), target: queries[row])
            tiles.append([picture])
            for hh in ranking {
                let low = try Tensor(Array(all[((row * h + hh) * g * g)..<((row * h + hh + 1) * g * g)]), shape: [1, 1, g, g])
                var m = try GradMode.disabled { Variable(low).upsampleBilinear(height: s, width: s) }.value.scalars(as: Float.self)
                let lo = m.min()!, hi = m.max()!
                for j in m.indices { m[j] = (m[j] - lo) / (hi - lo + 1e-7) }
                tiles[row].append(try Overlay.heatmap(on: picture, map: m))
            }
        }
        let dir = request.host.scratchDirectory
        let rowHeaders = shown.indices.map { "class \(queries[$0]), own prompt" } + ["class \(queries[0]) with class \(queries[shown.count])'s prompt"]
        var grid = ImageGrid(
            title: "Prompt-CAM trait maps: the last block's heads, most to least important",
            columnHeaders: ["image"] + (0..<h).map { "head #\($0 + 1)" }, rowHeaders: rowHeaders, tiles: tiles, tileSize: 72)
        grid.colorBar = (0...1, "attention (min–max scaled)", { Color.jet($0) })
        try grid.write(to: dir + "/trait_maps.png")
        return Response(
            result: [
                "test_accuracy": .number(accuracy), "test_images": .number(Double(picked.count)), "classes": .number(Double(classes)),
                "trait_maps":
                    "rows: the first genus's species with their own prompt, then species 0 queried with species 3's prompt; columns: the image, then the last block's heads from most to least important (greedy blurring)",
            ],
            artifacts: Figure.files("trait_maps.png"))
    }
}

/// The embedded classifier's folder, asked of the `classifiers` plugin through the host (operation
/// `embedded` of `vit-classifier`); a clear error naming that plugin when it is not installed.
func embeddedClassifierFolder(_ host: PluginHost, for component: String, hint: String) throws -> String {
    let proxy: ComponentProxy
    do { proxy = try host.resolve("vit-classifier") } catch let e as MenagerieError where e.status == .notFound {
        throw MenagerieError.notFound(
            "'\(component)' needs the embedded classifier of the 'classifiers' plugin (component 'vit-classifier'), which is not installed: "
                + "install libClassifiers.so with its Menagerie_Classifiers.resources folder, or use \(hint)")
    }
    guard let folder = try proxy.invoke("embedded").result["folder"]?.stringValue else {
        throw MenagerieError.failed("vit-classifier's operation 'embedded' returned no folder")
    }
    return folder
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum PromptCAMPlugin: Plugin {
    public static let name = "prompt-cam"
    public static let version = "0.2.0"
    public static let summary = "Prompt-CAM: class prompts on a frozen ViT, per-head trait maps ranked by blurring"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [PromptCAMComponent.self]
}
