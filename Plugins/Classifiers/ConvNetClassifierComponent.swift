import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Vision

/// ConvNet-3 trained here on a dataset component, with dataset distillation's hard-label protocol
/// (SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, learning rate ×0.1 at half): `train`
/// writes the folder `ConvNetClassifier` (and so every CAM's `classifier=`) loads.
struct ConvNetClassifierComponent: Backbone {
    struct Options: ComponentOptions {
        var dataset = "synthetic-tol"
        var size = 32
        var width = 128
        var depth = 3
        var epochs = 30
        var batch = 256
        var lr = 0.01
        var momentum = 0.9
        var weightDecay = 5e-4
        var seed = 0
        var classifier = ""
        var datasetOptions: [String] = []
        static let help = [
            "dataset": "train: the dataset component (its batch contract: images in [0, 1], labels)",
            "datasetOptions": "train: key=value options passed to the dataset on every call",
            "size": "train: image side asked of the dataset", "width": "train: channels of every block", "depth": "train: blocks",
            "epochs": "train: passes over the training split (learning rate ×0.1 at half)", "batch": "train: batch size",
            "lr": "train: SGD learning rate", "momentum": "train: SGD momentum", "weightDecay": "train: SGD weight decay",
            "seed": "train: initialisation and shuffles", "classifier": "embed: a ConvNet folder written by train",
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "size": 1...65536, "width": 1...65536, "depth": 1...30, "epochs": 1...1e6,
            "batch": 1...1e6, "lr": 0...1e3, "momentum": 0...1, "weightDecay": 0...1e3,
        ]
    }
    static let id = "convnet-classifier"
    static let summary = "ConvNet-3 (instance norm, average pooling): train on a dataset component, embed images"
    static let operations = [
        OperationSpec(
            "embed", summary: "flattened features before the classifier",
            inputs: [TensorSpec("images", dtypes: ["f32"], shape: "N×C×S×S", summary: "normalised images")],
            outputs: [TensorSpec("features", dtypes: ["f32"], shape: "N×D", summary: "features")]),
        OperationSpec("train", summary: "train on a dataset component; writes config.json, model.safetensors, curve.csv, curve.png"),
    ]

    func embed(_ request: Request<Options>) throws -> Response {
        guard !request.options.classifier.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' embed needs --set classifier=FOLDER (from train)") }
        let net: ConvNetClassifier
        do { net = try ConvNetClassifier(folder: (request.options.classifier as NSString).expandingTildeInPath) } catch let e as FormatError {
            throw MenagerieError.invalidArgument("\(e)")
        }
        let images = try request.inputs.require("images", dtypes: [.float32], rank: 4)
        guard images.shape[1] == net.channels, images.shape[2] == net.size, images.shape[3] == net.size else {
            throw MenagerieError.invalidArgument("input 'images' must be [N, \(net.channels), \(net.size), \(net.size)] for this ConvNet, got \(images.shape)")
        }
        let features = GradMode.disabled { net.model.embed(Variable(images.owned())) }
        return Response(result: ["features": .number(Double(features.shape[1]))], tensors: [("features", features.value)])
    }

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response { try train(request) }

    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.epochs > 0, o.batch > 0, o.width > 0, o.depth > 0, o.size > 0, o.size >> o.depth > 0 else {
            throw MenagerieError.invalidArgument(
                "epochs, batch, width, depth and size must be positive and size ≥ 2^depth "
                    + "(got epochs=\(o.epochs), batch=\(o.batch), width=\(o.width), depth=\(o.depth), size=\(o.size))")
        }
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: o.size, options: o.datasetOptions)
        let described = try data.describe(options: [:])
        guard let classes = described["classes"]?.arrayValue?.count, classes > 1,
            let trainCount = described["splits"]?["train"]?.intValue, trainCount > 0
        else {
            throw MenagerieError.invalidArgument("dataset '\(o.dataset)' describes no classes or no training images")
        }
        let testSplit = described["splits"]?["test"]?.intValue ?? 0 > 0 ? "test" : "val"
        let testCount = described["splits"]?[testSplit]?.intValue ?? 0
        let channels = try labelledBatch(data, dataset: o.dataset, split: "train", start: 0, count: 1, epoch: nil).0.shape[1]
        let mean = [Float](repeating: 0.5, count: channels), std = mean
        do {
            try ConvNet.validate(
                channels: channels, classes: classes, width: o.width, depth: o.depth, imageSize: o.size, source: "options of '\(Self.id)'",
                keys: ["net_width": "width", "net_depth": "depth", "image_size": "size"])
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let model = ConvNet(channels: channels, classes: classes, width: o.width, depth: o.depth, imageSize: o.size, seed: UInt64(bitPattern: Int64(o.seed)))
        let optimizer = SGD(model.parameters, learningRate: Float(o.lr), momentum: Float(o.momentum), weightDecay: Float(o.weightDecay))
        let total = (trainCount + o.batch - 1) / o.batch * o.epochs
        let schedule = Schedule.step(milestones: [total / 2], gamma: 0.1)
        var curve = "epoch,train_loss,train_accuracy,seconds\n"
        var lastTrain = 0.0
        var history: [(loss: Double, accuracy: Double)] = []
        let started = Date()
        model.isTraining = true
        try fitClassifier(
            data, dataset: o.dataset, trainCount: trainCount, batch: o.batch, epochs: o.epochs, baseRate: Float(o.lr),
            schedule: schedule, optimizer: optimizer, host: request.host,
            logits: { model(Variable(normalize($0, mean: mean, std: std))) }
        ) { epoch, loss, accuracy in
            lastTrain = accuracy
            curve += "\(epoch + 1),\(loss),\(accuracy),\(Int(Date().timeIntervalSince(started)))\n"
            history.append((Double(loss), accuracy))
        }
        // Test accuracy at the end (the protocol's single evaluation).
        model.isTraining = false
        let testAccuracy = try evaluateAccuracy(data, dataset: o.dataset, split: testSplit, count: testCount) {
            model(Variable(normalize($0, mean: mean, std: std)))
        }
        let dir = request.host.scratchDirectory
        try model.save(to: dir + "/model.safetensors", metadata: ["format": "pt"])
        let config: JSONValue = [
            "architecture": "convnet", "in_channels": .number(Double(channels)), "num_classes": .number(Double(classes)),
            "net_width": .number(Double(o.width)), "net_depth": .number(Double(o.depth)), "image_size": .number(Double(o.size)),
            "mean": .array(mean.map { .number(Double($0)) }), "std": .array(std.map { .number(Double($0)) }),
            "trained_on": .string(o.dataset),
        ]
        try AtomicFile.write(config.prettyText + "\n", to: dir + "/config.json")
        try AtomicFile.write(curve, to: dir + "/curve.csv")
        try LinePlot.trainingCurves(
            title: "ConvNet-\(o.depth) on \(o.dataset): \(o.epochs) epochs (\(testSplit) accuracy \(String(format: "%.3f", testAccuracy)))",
            epochs: history.indices.map { Double($0 + 1) }, loss: history.map(\.loss), metrics: [("train", history.map(\.accuracy))]
        )
        .write(to: dir + "/curve.png")
        return Response(
            result: [
                "classes": .number(Double(classes)), "train_accuracy": .number(lastTrain),
                "\(testSplit)_accuracy": .number(testAccuracy), "epochs": .number(Double(o.epochs)),
                "seconds": .number(Date().timeIntervalSince(started)),
                "parameters": .number(Double(model.parameters.reduce(0) { $0 + $1.shape.reduce(1, *) })),
            ],
            artifacts: ["model.safetensors", "config.json", "curve.csv"] + Figure.files("curve.png"))
    }
}
