import DistillationKit
import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// The options every distiller takes (each uses what applies to it; `menagerie info <id>`).
struct DistillOptions: ComponentOptions {
    var dataset = "cmnist-dd"
    var dataset_options: [String] = []
    var size = 28
    var ipc = 10
    var limit = 0
    var iterations = -1
    var batch_real = 256
    var lr_image = -1.0
    var momentum_image = 0.5
    var initialisation = "real"
    var augment = "default"
    var width = 128
    var depth = 3
    var outer_loop = 0
    var inner_loop = 0
    var lr_net = 0.01
    var batch_train = 256
    var target = "none"
    var attribute = "colors"
    var feature_epochs = 0
    static let help = [
        "dataset": "the dataset component distilled (its train split)", "dataset_options": "key=value options passed to the dataset (e.g. rho=0.95)",
        "size": "image side asked of the dataset", "ipc": "images per class", "limit": "read at most this many training images (0: all)",
        "iterations": "DM/DC/DSA outer iterations (−1: the paper's, DM 20000, DC/DSA 1000)",
        "batch_real": "real images per class per matching step", "lr_image": "SGD rate on the images (−1: DM 1.0, DC/DSA 0.1)",
        "momentum_image": "SGD momentum on the images", "initialisation": "real (random real images of the class) or noise",
        "augment": "default (DSA for DM and DSA, none for DC), dsa or none", "width": "ConvNet width", "depth": "ConvNet depth",
        "outer_loop": "DC/DSA: outer loop (0: the per-IPC reference schedule)",
        "inner_loop": "DC/DSA: network epochs on the synthetic set between image updates",
        "lr_net": "DC/DSA: the network's SGD rate", "batch_train": "DC/DSA: batch of the network's training on the synthetic set",
        "target":
            "none, or balanced-attribute: distil toward the distribution in which every value of `attribute` is equally likely within a class (task-specific distillation)",
        "attribute": "the dataset tensor naming each image's bias attribute (cmnist-dd: colors)",
        "feature_epochs": "herding: epochs of hard-label training of the feature network on the real data first (0: random features)",
    ]
    static let choices = ["initialisation": ["real", "noise"], "augment": ["default", "dsa", "none"], "target": ["none", "balanced-attribute"]]
    static let ranges: [String: ClosedRange<Double>] = [
        "size": 1...65536, "ipc": 1...1e6, "limit": 0...1e12, "iterations": -1...1e8, "batch_real": 1...1e6, "lr_image": -1...1e6,
        "momentum_image": 0...1, "width": 1...65536, "depth": 1...30, "outer_loop": 0...1e6, "inner_loop": 0...1e6, "lr_net": 0...1e3,
        "batch_train": 1...1e6, "feature_epochs": 0...1e6,
    ]
}

/// The method a distiller component runs.
enum Method: String, Sendable {
    case random = "random-selection", herding, dc, dsa, dm
    var usesDSAByDefault: Bool { self == .dm || self == .dsa }
}

/// Weights that turn each class's attribute distribution uniform: w = 1 / (the class's count of the
/// image's attribute value), normalised within the class.
func balancedAttributeWeights(_ data: RealData) throws -> [Float] {
    guard let attrs = data.attributes else { throw MenagerieError.invalidArgument("target=balanced-attribute needs the dataset's attribute tensor") }
    var weights = [Float](repeating: 0, count: data.count)
    for members in data.byClass {
        var counts: [Int: Int] = [:]
        for i in members { counts[attrs[i], default: 0] += 1 }
        for i in members { weights[i] = 1 / Float(counts[attrs[i]]!) }
    }
    return weights
}

/// Distils `data` with `method`: the core shared by the components and the bias study.
func distil(
    _ method: Method, data: RealData, options o: DistillOptions, seed: UInt64, host: PluginHost,
    curve: inout [(Int, Double)]
) throws -> DistilledSet {
    guard o.ipc > 0 else { throw MenagerieError.invalidArgument("ipc must be > 0") }
    for (k, members) in data.byClass.enumerated() where members.count < o.ipc {
        throw MenagerieError.invalidArgument("ipc \(o.ipc) is larger than class '\(data.classes[k])' of '\(data.dataset)' (\(members.count) training images)")
    }
    let normalizer = Normalizer(data)
    let weights = o.target == "balanced-attribute" ? try balancedAttributeWeights(data) : nil
    var rng = SeededGenerator(seed: seed)
    let plane = data.plane
    var images: [Float]
    switch method {
    case .random:
        images = data.batch(Distillers.randomSelection(data, ipc: o.ipc, weights: weights, rng: &rng)).scalarsOrEmpty
    case .herding:
        let normalized = normalizer.normalize(data.images, channels: data.channels, plane: plane)
        let net = try checkedConvNet(
            channels: data.channels, classes: data.classes.count, width: o.width, depth: o.depth, imageSize: data.size, seed: seed &+ 3)
        if o.feature_epochs > 0 {
            var s = Protocols.Settings()
            s.epochs = o.feature_epochs
            s.width = o.width
            s.depth = o.depth
            s.dsa = nil
            let trained = try Protocols.trainHard(
                images: try Tensor(normalized, shape: [data.count, data.channels, data.size, data.size]),
                labels: data.labels, classes: data.classes.count, settings: s, seed: seed &+ 3, host: host,
                label: "herding features")
            for (a, b) in zip(net.parameters, trained.parameters) { a.assign(b.value) }
        }
        var features: [Float] = [], dim = 0
        GradMode.disabled {
            for start in stride(from: 0, to: data.count, by: 500) {
                let idx = Array(start..<min(data.count, start + 500))
                let x = gatherRows(normalized, idx, shape: [data.channels, data.size, data.size])
                let f = net.embed(Variable(x))
                dim = f.shape[1]
                features += f.scalars
            }
        }
        let picked = Distillers.herding(data, features: features, dim: dim, ipc: o.ipc, weights: weights)
        images = data.batch(picked).scalarsOrEmpty
    case .dm, .dc, .dsa:
        var s = DistillSettings()
        s.ipc = o.ipc
        s.iterations = o.iterations >= 0 ? o.iterations : (method == .dm ? 20000 : 1000)
        s.batchReal = o.batch_real
        s.lrImage = o.lr_image > 0 ? o.lr_image : (method == .dm ? 1.0 : 0.1)
        s.momentumImage = o.momentum_image
        s.initialisation = o.initialisation
        let useDSA = o.augment == "dsa" || (o.augment == "default" && method.usesDSAByDefault)
        s.dsa = useDSA ? DSA() : nil
        s.seed = seed
        s.width = o.width
        s.depth = o.depth
        s.outerLoop = o.outer_loop
        s.innerLoop = o.inner_loop
        s.lrNet = o.lr_net
        s.batchTrain = o.batch_train
        s.weights = weights
        guard s.batchReal > 0, s.lrImage > 0, s.iterations >= 0 else {
            throw MenagerieError.invalidArgument("batch_real and lr_image must be > 0, iterations ≥ 0")
        }
        let normalized = normalizer.normalize(data.images, channels: data.channels, plane: plane)
        var log: [(Int, Double)] = []
        // The loss as a metric ~25 times per run (curve.csv keeps every iteration): the mean since the last row.
        let every = max(1, s.iterations / 25)
        var sum = 0.0
        let keep = { (it: Int, loss: Double) in
            log.append((it, loss))
            sum += loss
            if (it + 1) % every == 0 || it + 1 == s.iterations {
                host.record(step: it + 1, unit: "iteration", ["loss": sum / Double((it % every) + 1)])
                sum = 0
            }
        }
        let result =
            method == .dm
            ? try Distillers.distributionMatching(data, normalized: normalized, settings: s, host: host, log: keep)
            : try Distillers.gradientMatching(data, normalized: normalized, settings: s, host: host, log: keep)
        curve = log
        images = normalizer.denormalize(result, channels: data.channels, plane: plane)
    }
    let labels = (0..<data.classes.count).flatMap { [Int](repeating: $0, count: o.ipc) }
    var set = DistilledSet(
        images: try Tensor(images, shape: [labels.count, data.channels, data.size, data.size]), labels: labels,
        classes: data.classes, method: method.rawValue, dataset: data.dataset, ipc: o.ipc)
    set.extra["mean"] = JSONValue.array(normalizer.mean.map { .number(Double($0)) }).compactText
    set.extra["std"] = JSONValue.array(normalizer.std.map { .number(Double($0)) }).compactText
    set.extra["dataset_options"] = JSONValue.array(o.dataset_options.map { .string($0) }).compactText
    set.extra["target"] = o.target
    return set
}

/// A distiller component: one per method, all with `DistillOptions`.
protocol DistillerMethod: Distiller where Options == DistillOptions {
    static var method: Method { get }
}

extension DistillerMethod {
    static var operations: [OperationSpec] {
        [
            OperationSpec(
                "distill", summary: "distil the dataset's train split at `ipc` images per class → distilled.safetensors, grid.png",
                outputs: distilledSetOutputs)
        ]
    }

    func distill(_ request: Request<DistillOptions>) throws -> Response {
        let o = request.options
        let data = try RealData.load(
            request.host, dataset: o.dataset, options: o.dataset_options, split: "train", size: o.size,
            attribute: o.target == "none" ? "" : o.attribute, limit: o.limit)
        var curve: [(Int, Double)] = []
        let t0 = Date()
        let set = try distil(Self.method, data: data, options: o, seed: request.host.seed, host: request.host, curve: &curve)
        let seconds = Date().timeIntervalSince(t0)
        let dir = request.host.scratchDirectory
        var artifacts = try set.writeRunFiles(to: dir)
        if !curve.isEmpty {
            try AtomicFile.write("iteration,loss\n" + curve.map { "\($0.0),\($0.1)" }.joined(separator: "\n") + "\n", to: dir + "/curve.csv")
            artifacts.append("curve.csv")
        }
        var result: [String: JSONValue] = [
            "method": .string(Self.method.rawValue), "ipc": .number(Double(o.ipc)), "images": .number(Double(set.count)),
            "dataset": .string(o.dataset), "seconds": .number(seconds), "target": .string(o.target),
            "distilled": "distilled.safetensors",
        ]
        if !curve.isEmpty {
            result["iterations"] = .number(Double(curve.count))
            result["iterations_per_s"] = .number(Double(curve.count) / max(seconds, 1e-9))
            result["first_loss"] = .number(curve.first!.1)
            result["last_loss"] = .number(curve.last!.1)
        }
        return Response(result: .object(result), tensors: set.responseTensors, artifacts: artifacts)
    }
}

struct RandomSelectionComponent: DistillerMethod {
    typealias Options = DistillOptions
    static let method = Method.random
    static let id = "random-selection"
    static let summary = "Random selection: IPC real images per class (the baseline every distiller must beat)"
}

struct HerdingComponent: DistillerMethod {
    typealias Options = DistillOptions
    static let method = Method.herding
    static let id = "herding"
    static let summary = "Herding: per class, greedily the real images whose running feature mean tracks the class mean (Welling 2009)"
}

struct DCComponent: DistillerMethod {
    typealias Options = DistillOptions
    static let method = Method.dc
    static let id = "dc"
    static let summary = "DC: dataset condensation by gradient matching (Zhao et al., ICLR 2021), second-order through the synthetic gradients"
}

struct DSAComponent: DistillerMethod {
    typealias Options = DistillOptions
    static let method = Method.dsa
    static let id = "dsa"
    static let summary = "DSA: gradient matching with differentiable Siamese augmentation (Zhao & Bilen, ICML 2021)"
}

struct DMComponent: DistillerMethod {
    typealias Options = DistillOptions
    static let method = Method.dm
    static let id = "dm"
    static let summary = "DM: distribution matching of mean embeddings under fresh random ConvNets (Zhao & Bilen, WACV 2023)"
}

extension DMComponent {
    static var inTour: Bool { true }

    /// CMNIST-DD at ρ = 0.95 (colour-biased, rendered digits): random selection, random selection
    /// toward the unbiased colour distribution, and a short DM run, at IPC 10, each evaluated by one
    /// ConvNet-3 on the unbiased test split; grids, the training set's contact sheet, summary.csv
    /// and a bar chart.
    func tour(_ request: Request<DistillOptions>) throws -> Response {
        let dir = request.host.scratchDirectory
        var o = DistillOptions()
        o.dataset_options = ["rho=0.95", "per_class=300", "test_per_class=50"]
        o.iterations = 20
        o.batch_real = 64
        let train = try RealData.load(request.host, dataset: "cmnist-dd", options: o.dataset_options, split: "train", size: 28, attribute: "colors")
        let test = try RealData.load(request.host, dataset: "cmnist-dd", options: o.dataset_options, split: "test", size: 28, attribute: "")
        var evaluation = Protocols.Settings()
        evaluation.nets = 1
        evaluation.epochs = 30
        evaluation.seed = request.host.seed
        var rows: [(String, Double, Double)] = []
        var artifacts: [String] = []
        for (i, (name, method, target)) in [
            ("random", Method.random, "none"), ("random, unbiased target", Method.random, "balanced-attribute"), ("DM", Method.dm, "none"),
        ].enumerated() {
            request.host.phase(i + 1, of: 3, name)
            var options = o
            options.target = target
            var curve: [(Int, Double)] = []
            let t0 = Date()
            let set = try distil(method, data: train, options: options, seed: request.host.seed, host: request.host, curve: &curve)
            let seconds = Date().timeIntervalSince(t0)
            let accuracy = try Protocols.hardLabel(set, normalizer: set.normalizer()!, test: test, settings: evaluation, host: request.host, parts: false)[0]
            let file = "grid_" + name.replacingOccurrences(of: ", ", with: "_").replacingOccurrences(of: " ", with: "_").lowercased() + ".png"
            try set.grid().write(to: dir + "/" + file)
            artifacts += Figure.files(file)
            rows.append((name, accuracy, seconds))
        }
        var csv = "set,unbiased_test_accuracy,distill_seconds\n"
        for r in rows { csv += "\(csvField(r.0)),\(String(format: "%.4f", r.1)),\(String(format: "%.1f", r.2))\n" }
        try AtomicFile.write(csv, to: dir + "/summary.csv")
        var bars = BarChart(
            title: "CMNIST-DD (ρ 0.95, 10 images per class): unbiased test accuracy", xLabel: "training set",
            yLabel: "test accuracy (unbiased split)", categories: rows.map(\.0), series: [("accuracy", rows.map(\.1))])
        bars.yRange = 0...1
        bars.reference = (0.1, "chance (10 classes)")
        try bars.write(to: dir + "/summary.png")
        artifacts += ["summary.csv"] + Figure.files("summary.png")
        return Response(
            result: [
                "accuracies": .object(Dictionary(uniqueKeysWithValues: rows.map { ($0.0, JSONValue.number($0.1)) })),
                "rho": 0.95, "ipc": 10,
                "note": .string(
                    "one net, 30 epochs, 20 DM iterations: a demonstration; "
                        + "Docs/methods/dataset-distillation.md has the measured tables"),
            ],
            artifacts: artifacts)
    }
}

/// A ConvNet-3 whose sizes (from options, a dataset's response, a distilled file) are validated
/// first through `ConvNet.validate` (`Limits`): a clear error instead of a trap or a huge allocation.
func checkedConvNet(channels: Int, classes: Int, width: Int, depth: Int, imageSize: Int, seed: UInt64) throws -> ConvNet {
    do {
        try ConvNet.validate(
            channels: channels, classes: classes, width: width, depth: depth, imageSize: imageSize, source: "ConvNet-3",
            keys: ["net_width": "width", "net_depth": "depth", "image_size": "size", "in_channels": "channels", "num_classes": "classes"])
    } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    return ConvNet(channels: channels, classes: classes, width: width, depth: depth, imageSize: imageSize, seed: seed)
}
