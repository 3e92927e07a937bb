import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Vision

/// A small timm-layout ViT classifier trained here on a dataset component (by default
/// `synthetic-tol` species): the embedded classifier the explainers run on with no download.
/// `train` writes timm's `config.json` and `model.safetensors`, so the result loads like any timm
/// checkpoint (and `classifier=` accepts it).
struct ViTClassifierComponent: Backbone {
    struct Options: ComponentOptions {
        var dataset = "synthetic-tol"
        var size = 64
        var patch = 8
        var width = 96
        var depth = 4
        var heads = 3
        var epochs = 24
        var batch = 64
        var lr = 1e-3
        var weightDecay = 0.05
        var warmup = 2
        var seed = 0
        var classifier = ""
        var imageSize = 0
        var datasetOptions: [String] = []
        static let help = [
            "datasetOptions": "train: key=value options passed to the dataset on every call (e.g. trainPerSpecies=96)",
            "dataset": "train: the dataset component (its batch contract: images in [0, 1], labels)",
            "size": "train: image side asked of the dataset", "patch": "train: patch size", "width": "train: embedding width",
            "depth": "train: blocks", "heads": "train: attention heads", "epochs": "train: passes over the training split",
            "batch": "train: batch size", "lr": "train: AdamW peak learning rate (cosine schedule with warm-up)",
            "weightDecay": "train: AdamW decoupled weight decay (not on biases, norms, embeddings)",
            "warmup": "train: warm-up epochs", "seed": "train: initialisation and shuffles",
            "classifier": "embed: a timm ViT folder, with or without a head (DINO, DINOv2, a trained classifier; empty: the embedded one)",
            "imageSize": "embed: run the model at this input size, its position embedding resampled (0: the config's; with 'pixels', their size)",
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "size": 1...65536, "patch": 1...65536, "width": 1...65536, "depth": 1...1024, "heads": 1...65536, "epochs": 1...1e6,
            "batch": 1...1e6, "lr": 0...1e3, "weightDecay": 0...1e3, "warmup": 0...1e6, "imageSize": 0...65536,
        ]
    }
    static let id = "vit-classifier"
    static let summary = "A small ViT classifier: train on a dataset component (timm layout out), embed images"
    static let operations = [
        OperationSpec(
            "embed", summary: "pooled features and patch tokens of normalised images, or of [0, 1] pixels normalised here",
            inputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×3×S×S", summary: "images normalised with the model's mean/std, at its size", optional: true),
                TensorSpec(
                    "pixels", dtypes: ["f32"], shape: "N×3×S×S",
                    summary:
                        "RGB in [0, 1], any square size that is a multiple of the patch size: normalised with the model's mean/std, the model run at that size",
                    optional: true),
            ],
            outputs: [
                TensorSpec("features", dtypes: ["f32"], shape: "N×D", summary: "pooled features"),
                TensorSpec("tokens", dtypes: ["f32"], shape: "N×G×G×D", summary: "patch tokens after the final norm (label propagation's features)"),
            ]),
        OperationSpec("train", summary: "train on a dataset component; writes config.json, model.safetensors, curve.csv, curve.png"),
        OperationSpec(
            "embedded",
            summary:
                "where the embedded classifier is: result {\"folder\": PATH} (timm config.json + model.safetensors, and prompt-cam.safetensors), for other plugins' tours"
        ),
    ]

    func embed(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let folder = o.classifier.isEmpty ? try embeddedClassifierFolder() : (o.classifier as NSString).expandingTildeInPath
        let pixels = request.inputs["pixels"]
        var size = o.imageSize
        if let pixels {
            guard pixels.dtype == .float32, pixels.rank == 4, pixels.shape[1] == 3, pixels.shape[2] == pixels.shape[3] else {
                throw MenagerieError.invalidArgument("input 'pixels' must be f32 [N, 3, S, S] RGB in [0, 1], got \(pixels.dtype.name) \(pixels.shape)")
            }
            guard size == 0 || size == pixels.shape[2] else {
                throw MenagerieError.invalidArgument(
                    "option imageSize=\(size) differs from the size of input 'pixels' (\(pixels.shape[2])): resize the pixels or leave imageSize 0")
            }
            size = pixels.shape[2]
        }
        let classifier: ViTClassifier
        do { classifier = try loadedClassifier(folder: folder, requireHead: false, imageSize: size) } catch let e as FormatError {
            throw MenagerieError.invalidArgument("\(e)")
        }
        let c = classifier.config
        let images: Tensor
        if let pixels {
            images = normalizeChannels(pixels.owned(), mean: classifier.mean, std: classifier.std)
        } else {
            images = try request.inputs.require("images", dtypes: [.float32], rank: 4).owned()
            guard images.shape[1] == 3, images.shape[2] == c.imageSize, images.shape[3] == c.imageSize else {
                throw MenagerieError.invalidArgument(
                    "input 'images' must be [N, 3, \(c.imageSize), \(c.imageSize)] for this model, got \(images.shape) (or pass 'pixels')")
            }
        }
        let out = GradMode.disabled { classifier.model.forward(Variable(images)) }
        let tokens = try out.patchTokens.value.reshaped([images.shape[0], c.grid, c.grid, out.patchTokens.shape[2]])
        return Response(
            result: [
                "features": .number(Double(out.pooled.shape[1])), "grid": .number(Double(c.grid)),
                "patch": .number(Double(c.patchSize)),
            ],
            tensors: [("features", out.pooled.value), ("tokens", tokens)])
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        if operation == "embedded" { return Response(result: ["folder": .string(try embeddedClassifierFolder())]) }
        return try train(request)
    }

    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        // Positivity first: `size % patch` with patch 0 would trap.
        for (key, value) in [
            ("size", o.size), ("patch", o.patch), ("width", o.width), ("depth", o.depth), ("heads", o.heads),
            ("epochs", o.epochs), ("batch", o.batch),
        ] where value <= 0 {
            throw MenagerieError.invalidArgument("option '\(key)' = \(value) must be positive")
        }
        guard o.warmup >= 0, o.warmup <= 1_000_000, o.batch <= 1_000_000, o.epochs <= 1_000_000 else {
            throw MenagerieError.invalidArgument("warmup must lie in 0…1000000 and batch, epochs in 1…1000000")
        }
        guard o.size % o.patch == 0, o.width % o.heads == 0 else {
            throw MenagerieError.invalidArgument("size (\(o.size)) must be a multiple of patch (\(o.patch)), width (\(o.width)) of heads (\(o.heads))")
        }
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: o.size, options: o.datasetOptions)
        let described = try data.describe(options: [:])
        guard let classes = described["classes"]?.arrayValue?.count, classes > 1,
            let trainCount = described["splits"]?["train"]?.intValue, trainCount > 0
        else {
            throw MenagerieError.invalidArgument("dataset '\(o.dataset)' describes no classes or no training images")
        }
        let valCount = described["splits"]?["val"]?.intValue ?? 0
        var config = ViTConfig(imageSize: o.size, patchSize: o.patch, width: o.width, depth: o.depth, heads: o.heads)
        config.numClasses = classes
        config.globalPool = "avg"
        config.fcNorm = false
        do {
            try config.validate(
                source: "options of '\(Self.id)'",
                keys: [
                    "img_size": "size", "patch_size": "patch", "embed_dim": "width",
                    "depth": "depth", "num_heads": "heads", "num_classes": "classes",
                ])
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let model = ViT(config: config, seed: UInt64(bitPattern: Int64(o.seed)))
        // No weight decay on biases, norm gains, the class token and position embedding.
        for (name, p) in model.namedParameters where name.hasSuffix(".bias") || name.contains("norm") || name == "cls_token" || name == "pos_embed" {
            p.decays = false
        }
        let optimizer = AdamW(model.parameters, learningRate: Float(o.lr), weightDecay: Float(o.weightDecay))
        let stepsPerEpoch = (trainCount + o.batch - 1) / o.batch
        let schedule = Schedule.cosine(warmup: o.warmup * stepsPerEpoch, floor: 0.01)
        var curve = "epoch,train_loss,train_accuracy,val_accuracy,seconds\n"
        var lastVal = 0.0, lastTrain = 0.0
        var history: [(loss: Double, train: Double, val: Double)] = []
        let started = Date()
        model.isTraining = true
        try fitClassifier(
            data, dataset: o.dataset, trainCount: trainCount, batch: o.batch, epochs: o.epochs, baseRate: Float(o.lr),
            schedule: schedule, optimizer: optimizer, host: request.host,
            logits: { model.forward(Variable(normalize($0))).logits }
        ) { epoch, loss, accuracy in
            lastTrain = accuracy
            model.isTraining = false
            lastVal = try evaluateAccuracy(data, dataset: o.dataset, split: "val", count: valCount) { model.forward(Variable(normalize($0))).logits }
            model.isTraining = true
            curve += "\(epoch + 1),\(loss),\(lastTrain),\(lastVal),\(Int(Date().timeIntervalSince(started)))\n"
            history.append((Double(loss), lastTrain, lastVal))
            request.host.log(
                .info,
                "epoch \(epoch + 1): loss \(String(format: "%.3f", loss)), train \(String(format: "%.3f", lastTrain)), val \(String(format: "%.3f", lastVal))")
        }
        model.isTraining = false
        let dir = request.host.scratchDirectory
        try model.save(to: dir + "/model.safetensors", metadata: ["format": "pt"])
        try AtomicFile.write(timmConfig(config, classes: classes), to: dir + "/config.json")
        try AtomicFile.write(curve, to: dir + "/curve.csv")
        try LinePlot.trainingCurves(
            title: "ViT classifier on \(o.dataset): \(o.epochs) epochs", epochs: history.indices.map { Double($0 + 1) },
            loss: history.map(\.loss), metrics: [("train", history.map(\.train)), ("val", history.map(\.val))]
        )
        .write(to: dir + "/curve.png")
        return Response(
            result: [
                "classes": .number(Double(classes)), "train_accuracy": .number(lastTrain), "val_accuracy": .number(lastVal),
                "epochs": .number(Double(o.epochs)), "seconds": .number(Date().timeIntervalSince(started)),
                "parameters": .number(Double(model.parameters.reduce(0) { $0 + $1.shape.reduce(1, *) })),
            ],
            artifacts: ["model.safetensors", "config.json", "curve.csv"] + Figure.files("curve.png"))
    }
}

/// timm's config.json for a ViT (model_args + pretrained_cfg), so any timm tool reads it too.
func timmConfig(_ c: ViTConfig, classes: Int) -> String {
    let json: JSONValue = [
        "architecture": "vision_transformer", "num_classes": .number(Double(classes)), "num_features": .number(Double(c.width)),
        "global_pool": .string(c.globalPool),
        "model_args": [
            "img_size": .number(Double(c.imageSize)), "patch_size": .number(Double(c.patchSize)), "embed_dim": .number(Double(c.width)),
            "depth": .number(Double(c.depth)), "num_heads": .number(Double(c.heads)), "num_classes": .number(Double(classes)),
            "global_pool": .string(c.globalPool), "class_token": .bool(c.classToken), "fc_norm": .bool(c.fcNorm),
            "mlp_ratio": .number(c.mlpRatio), "qkv_bias": .bool(c.qkvBias),
        ],
        "pretrained_cfg": [
            "input_size": [3, .number(Double(c.imageSize)), .number(Double(c.imageSize))],
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "crop_pct": 1.0,
        ],
    ]
    return json.prettyText + "\n"
}

/// The embedded classifier shipped with the plugin: `Menagerie_Classifiers.resources/vit-tol` next to
/// the plugin's shared library (SwiftPM copies it there; `make install` installs it beside the .so).
/// Other plugins ask for it through the host (`vit-classifier`'s operation `embedded`).
func embeddedClassifierFolder() throws -> String {
    let folder = try PluginResources.path(module: "Classifiers", item: "vit-tol")
    guard FileManager.default.fileExists(atPath: folder + "/model.safetensors") else {
        throw MenagerieError.notFound("the embedded classifier is missing (\(folder)); pass --set classifier=FOLDER")
    }
    return folder
}

/// Classifiers already loaded in this process, by folder, head requirement and image size, and the
/// weights' identity: a runtime that embeds many batches loads (and initialises) each model once.
let loadedClassifiers = ProcessCache<ViTClassifier>()

func loadedClassifier(folder: String, requireHead: Bool = true, imageSize: Int = 0) throws -> ViTClassifier {
    try loadedClassifiers.value(
        folder + (requireHead ? "#head" : "") + "#\(imageSize)", stamp: Checkpoint.weightsFile(in: folder) ?? folder + "/model.safetensors"
    ) {
        try ViTClassifier(folder: folder, requireHead: requireHead, imageSize: imageSize)
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum ClassifiersPlugin: Plugin {
    public static let name = "classifiers"
    public static let version = "0.2.0"
    public static let summary =
        "The classifiers the explainers run on: a small ViT (embedded, trained on synthetic-tol), ConvNet-3 and linear probes; train and embed"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [
        ViTClassifierComponent.self, ConvNetClassifierComponent.self, LinearProbeComponent.self,
    ]
}
