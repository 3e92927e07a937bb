import Formats
import Foundation
import MenagerieKit
import NN
import Tensors
import Vision

/// A linear probe: a frozen timm ViT backbone's pooled features (its config's `global_pool`; mean of
/// the patch tokens for `avg`, Finer-CAM's reference setup) → Linear(D → C), trained with AdamW on
/// features computed once. The result is written as a timm classifier folder (the backbone's
/// weights plus `head.weight`/`head.bias`, `num_classes` = C), so every explainer runs on it.
struct LinearProbeComponent: Backbone {
    struct Options: ComponentOptions {
        var backbone = ""
        var dataset = "synthetic-tol"
        var datasetOptions: [String] = []
        var epochs = 100
        var lr = 1e-2
        var weightDecay = 1e-4
        var seed = 0
        var classifier = ""
        static let help = [
            "backbone": "train: a timm ViT folder (config.json + model.safetensors; any head is replaced)",
            "dataset": "train: the dataset component (asked for images at the backbone's size)",
            "datasetOptions": "train: key=value options passed to the dataset",
            "epochs": "train: full-batch AdamW steps over the cached features",
            "lr": "train: AdamW learning rate", "weightDecay": "train: AdamW weight decay on the weight (not the bias)",
            "seed": "train: initialisation of the head",
            "classifier": "embed: a probe folder written by train",
        ]
        static let ranges: [String: ClosedRange<Double>] = ["epochs": 0...1e7, "lr": 0...1e3, "weightDecay": 0...1e3]
    }
    static let id = "linear-probe"
    static let summary = "A linear probe on a frozen ViT backbone's pooled features, saved as a timm classifier folder"
    static let operations = [
        OperationSpec(
            "embed", summary: "logits of normalised images",
            inputs: [TensorSpec("images", dtypes: ["f32"], shape: "N×3×S×S", summary: "normalised images")],
            outputs: [TensorSpec("logits", dtypes: ["f32"], shape: "N×C", summary: "class scores")]),
        OperationSpec("train", summary: "train the probe; writes config.json, model.safetensors"),
    ]

    func embed(_ request: Request<Options>) throws -> Response {
        let classifier: ViTClassifier
        do { classifier = try ViTClassifier(folder: request.options.classifier) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let images = try request.inputs.require("images", dtypes: [.float32], rank: 4)
        let out = GradMode.disabled { classifier.model.forward(Variable(images.owned())) }
        return Response(result: ["classes": .number(Double(classifier.config.numClasses))], tensors: [("logits", out.logits.value)])
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.backbone.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' train needs --set backbone=FOLDER (a timm ViT)") }
        let backbone: ViTClassifier
        do { backbone = try ViTClassifier(folder: (o.backbone as NSString).expandingTildeInPath, requireHead: false) } catch let e as FormatError {
            throw MenagerieError.invalidArgument("\(e)")
        }
        let s = backbone.config.imageSize
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: s, options: o.datasetOptions)
        let described = try data.describe(options: [:])
        guard let classes = described["classes"]?.arrayValue?.count, classes > 1 else {
            throw MenagerieError.invalidArgument("dataset '\(o.dataset)' describes fewer than two classes")
        }
        func features(_ split: String) throws -> (Tensor, [Int]) {
            let count = described["splits"]?[split]?.intValue ?? 0
            var feats: [Float] = [], labels: [Int] = []
            for start in stride(from: 0, to: count, by: 128) {
                try request.host.checkCancelled()
                let b = try data.batch(options: ["split": .string(split), "start": .number(Double(start)), "count": 128, "shuffle": false])
                guard let images = b.tensors["images"], images.shape.count == 4, images.shape[2] == s else {
                    throw MenagerieError.invalidArgument("dataset '\(o.dataset)' did not return [N, 3, \(s), \(s)] images")
                }
                let x = normalize(images, mean: backbone.mean, std: backbone.std)
                feats += try backbone.model.forward(x).pooled.scalars(as: Float.self) // the no-grad fast path
                labels += try b.tensors["labels"]!.integers()
                request.host.progress(start + images.shape[0], of: count, "features (\(split))")
            }
            let d = backbone.config.width
            return (try Tensor(feats, shape: [labels.count, d]), labels)
        }
        let (train, trainLabels) = try features("train")
        guard !trainLabels.isEmpty else { throw MenagerieError.invalidArgument("dataset '\(o.dataset)' has no training images") }
        let (val, valLabels) = try features("val")
        var rng = SeededGenerator(seed: UInt64(bitPattern: Int64(o.seed)))
        let head = Linear(backbone.config.width, classes, rng: &rng)
        let optimizer = AdamW(head.parameters, learningRate: Float(o.lr), weightDecay: Float(o.weightDecay))
        let x = Variable(train)
        for _ in 0..<o.epochs { optimizer.minimize(crossEntropy(head(x), labels: trainLabels)) }
        func accuracy(_ f: Tensor, _ y: [Int]) -> Double {
            guard !y.isEmpty else { return .nan }
            let pred = argmaxRows(GradMode.disabled { head(Variable(f)) }.value)
            return Double(zip(pred, y).filter { $0 == $1 }.count) / Double(y.count)
        }
        // The classifier: the backbone's parameters by name, the trained head.
        var config = backbone.config
        config.numClasses = classes
        let probe = ViT(config: config)
        let source = Dictionary(uniqueKeysWithValues: backbone.model.namedParameters.map { ($0.0, $0.1) })
        for (name, p) in probe.namedParameters {
            if name == "head.weight" {
                p.assign(head.weight.value)
            } else if name == "head.bias" {
                p.assign(head.bias!.value)
            } else if let q = source[name] {
                p.assign(q.value)
            }
        }
        let dir = request.host.scratchDirectory
        try probe.save(to: dir + "/model.safetensors", metadata: ["format": "pt"])
        var cfgText = timmConfig(config, classes: classes)
        // Keep the backbone's own normalisation.
        if case .object(var root) = try JSONValue.parse(cfgText), case .object(var pre)? = root["pretrained_cfg"] {
            pre["mean"] = .array(backbone.mean.map { .number(Double($0)) })
            pre["std"] = .array(backbone.std.map { .number(Double($0)) })
            root["pretrained_cfg"] = .object(pre)
            cfgText = JSONValue.object(root).prettyText + "\n"
        }
        try AtomicFile.write(cfgText, to: dir + "/config.json")
        return Response(
            result: [
                "classes": .number(Double(classes)), "train_accuracy": .number(accuracy(train, trainLabels)),
                "val_accuracy": .number(accuracy(val, valLabels)), "features": .number(Double(backbone.config.width)),
            ],
            artifacts: ["config.json", "model.safetensors"])
    }
}
