import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// What CMNIST-DD and CCIFAR10-DD share: the bias ratio and the batch slice. The defaults differ per
/// dataset, so each declares its fields; the help of the shared options, their ranges and choices
/// are this one table (each dataset adds the help of its own options).
enum BiasedDatasetOptions {
    static let help = [
        "rho": "bias-aligned ratio ρ of the training split: P(attribute = class) (the test split is always ρ = 0: every image bias-conflicting)",
        "split": "batch: train or test", "start": "batch: first position", "count": "batch: images",
        "shuffle": "batch: seeded shuffle of the split", "epoch": "batch: the shuffle's epoch",
    ]
    static let choices = ["split": ["train", "test"]]
    static let ranges: [String: ClosedRange<Double>] = [
        "severity": 1...4, "per_class": 1...1e6, "test_per_class": 1...1e6,
        "size": 1...4096, "start": 0...1e12, "count": 1...1e7, "epoch": 0...1e12,
    ]
}

/// `cmnist-dd`: coloured digits with a controlled colour bias (the bias study's CMNIST-DD).
struct CMNISTComponent: Dataset {
    struct Options: ComponentOptions {
        var rho = 0.95
        var severity = 4
        var root = ""
        var per_class = 500
        var test_per_class = 100
        var seed = 0
        var size = 28
        var split = "train"
        var start = 0
        var count = 64
        var shuffle = true
        var epoch = 0
        static let help = BiasedDatasetOptions.help.merging([
            "severity": "1…4: colour noise std 0.05, 0.02, 0.01, 0.005",
            "root": "a folder with MNIST's IDX files (read through mnist-idx); empty: the built-in digit renderer",
            "per_class": "renderer: training digits per class", "test_per_class": "renderer: test digits per class",
            "seed": "renderer and colour noise seed", "size": "image side (28; the renderer draws any size, MNIST is 28)",
        ]) { _, own in own }
        static let choices = BiasedDatasetOptions.choices
        static let ranges = BiasedDatasetOptions.ranges
    }
    static let id = "cmnist-dd"
    static let summary = "Coloured digits with a colour bias of ratio ρ (Biased-DD's CMNIST-DD): MNIST IDX when given, else rendered digits"
    static let operations = [
        OperationSpec(
            "batch", summary: "coloured digits, labels, colour attribute and whether each is bias-aligned",
            outputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×3×S×S", summary: "RGB in [0, 1]"),
                TensorSpec("labels", dtypes: ["i64"], shape: "N", summary: "digit"),
                TensorSpec("colors", dtypes: ["i64"], shape: "N", summary: "colour index (the bias attribute)"),
                TensorSpec("aligned", dtypes: ["i64"], shape: "N", summary: "1 when the colour equals the digit"),
            ]),
        OperationSpec("describe", summary: "classes, split sizes, ρ, severity, the digit source"),
        OperationSpec("export", summary: "a contact sheet (rows: digits) and counts per (class, colour) as CSV"),
    ]

    /// A split's digits (grey, S × S) and labels, in sample order.
    // @unchecked: built once per call and not mutated afterwards; `digit` reads immutable arrays only.
    struct Source: @unchecked Sendable {
        var labels: [Int]
        var digit: (Int) -> [Float]
        var name: String
    }

    func validate(_ o: Options) throws {
        try validateBias(rho: o.rho, severity: o.severity, component: Self.id)
        guard (8...128).contains(o.size) else { throw MenagerieError.invalidArgument("option 'size' of '\(Self.id)' must lie in 8…128") }
        guard o.per_class > 0, o.test_per_class > 0 else { throw MenagerieError.invalidArgument("per_class and test_per_class must be > 0") }
    }

    func source(_ o: Options, split: String, host: PluginHost) throws -> Source {
        if !o.root.isEmpty {
            guard o.size == 28 else { throw MenagerieError.invalidArgument("MNIST digits are 28×28: use size=28 with root=") }
            let data = try SplitCache.shared.load(dataset: "mnist-idx", options: ["root=" + o.root], size: 28, split: split, host: host)
            return Source(labels: data.labels, digit: { i in Array(data.images[(i * 784)..<((i + 1) * 784)]) }, name: "mnist-idx (\(o.root))")
        }
        let n = (split == "train" ? o.per_class : o.test_per_class) * 10
        let seed = UInt64(bitPattern: Int64(o.seed)) &* 0x9E37_79B9 &+ (split == "train" ? 1 : 2)
        var order = Array(0..<n).map { $0 % 10 }
        var rng = SeededGenerator(seed: seed)
        order.shuffle(using: &rng)
        let labels = order, size = o.size
        return Source(
            labels: labels,
            digit: { i in
                var r = SeededGenerator(seed: seed &+ UInt64(i) &* 0xD1B5_4A32_D192_ED03)
                return DigitRenderer.render(labels[i], size: size, rng: &r)
            }, name: "built-in renderer")
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let o = request.options
        try validate(o)
        let train = try source(o, split: "train", host: request.host), test = try source(o, split: "test", host: request.host)
        return Response(result: [
            "classes": .array((0..<10).map { .string("\($0)") }), "channels": 3, "size": .number(Double(o.size)),
            "splits": ["train": .number(Double(train.labels.count)), "test": .number(Double(test.labels.count))],
            "rho": .number(o.rho), "severity": .number(Double(o.severity)), "digits": .string(train.name),
            "attribute": "colors",
        ])
    }

    /// Images, labels, colours of the split's `indices`.
    func samples(_ o: Options, split: String, indices: [Int], host: PluginHost) throws -> (images: [Float], labels: [Int], colors: [Int]) {
        let src = try source(o, split: split, host: host)
        let colors = biasedAttributes(labels: src.labels, classes: 10, rho: split == "train" ? o.rho : 0)
        let plane = 3 * o.size * o.size
        var images = [Float](repeating: 0, count: indices.count * plane)
        images.withUnsafeMutableBufferPointer { out in
            let box = UncheckedBox(out.baseAddress!)
            Parallel.chunks(indices.count, grain: 16) { range in
                for k in range {
                    let i = indices[k]
                    var rng = SeededGenerator(seed: UInt64(bitPattern: Int64(o.seed)) &+ UInt64(i) &* 0x8CB9_2BA7 &+ (split == "train" ? 11 : 13))
                    let rgb = colourise(src.digit(i), size: o.size, colour: colors[i], severity: o.severity, rng: &rng)
                    (box.value + k * plane).update(from: rgb, count: plane)
                }
            }
        }
        return (images, indices.map { src.labels[$0] }, indices.map { colors[$0] })
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options
        try validate(o)
        let src = try source(o, split: o.split, host: request.host)
        let total = src.labels.count
        let picked = try batchOrder(
            component: Self.id, split: o.split, total: total, start: o.start, count: o.count, shuffle: o.shuffle,
            seed: UInt64(bitPattern: Int64(o.seed)) &+ UInt64(bitPattern: Int64(o.epoch)) &* 7919 &+ 5)
        let s = try samples(o, split: o.split, indices: picked, host: request.host)
        return Response(
            result: [
                "split": .string(o.split), "count": .number(Double(picked.count)), "total": .number(Double(total)),
                "digits": .string(src.name),
            ],
            tensors: [
                ("images", try Tensor(s.images, shape: [picked.count, 3, o.size, o.size])),
                ("labels", Tensor(s.labels.map(Int64.init))), ("colors", Tensor(s.colors.map(Int64.init))),
                ("aligned", Tensor(zip(s.labels, s.colors).map { Int64($0 == $1 ? 1 : 0) })),
            ])
    }

    func export(_ request: Request<Options>) throws -> Response {
        let o = request.options
        try validate(o)
        let dir = request.host.scratchDirectory
        let src = try source(o, split: "train", host: request.host)
        let colors = biasedAttributes(labels: src.labels, classes: 10, rho: o.rho)
        var counts = [[Int]](repeating: [Int](repeating: 0, count: 10), count: 10)
        for (y, c) in zip(src.labels, colors) { counts[y][c] += 1 }
        var csv = "class," + (0..<10).map { "colour_\($0)" }.joined(separator: ",") + "\n"
        for y in 0..<10 { csv += "\(y)," + counts[y].map(String.init).joined(separator: ",") + "\n" }
        try AtomicFile.write(csv, to: dir + "/counts.csv")
        // Contact sheet: 10 per digit, evenly spaced through the class (colours are assigned in
        // sample order, so the first ones would all be the bias-conflicting minority).
        var picked: [Int] = []
        for y in 0..<10 {
            let members = src.labels.indices.filter { src.labels[$0] == y }
            picked += (0..<10).map { members[$0 * members.count / 10 + members.count / 20] }
        }
        let s = try samples(o, split: "train", indices: picked, host: request.host)
        let plane = o.size * o.size
        let tiles = (0..<picked.count).map { k -> Image in
            var px = [UInt8](repeating: 0, count: plane * 3)
            for p in 0..<plane { for ch in 0..<3 { px[3 * p + ch] = UInt8(max(0, min(255, s.images[k * 3 * plane + ch * plane + p] * 255))) } }
            return Image(width: o.size, height: o.size, channels: 3, pixels: px)
        }
        try ImageGrid(
            title: "Colored MNIST (ρ \(o.rho)): 10 training images per digit", columnHeaders: [],
            rowHeaders: (0..<10).map { "digit \($0)" }, tiles: (0..<10).map { d in tiles[(d * 10)..<(d * 10 + 10)].map { Optional($0) } }, tileSize: 40
        )
        .write(to: dir + "/contact_sheet.png")
        return Response(
            result: [
                "counts": .array(counts.map { .array($0.map { .number(Double($0)) }) }), "digits": .string(src.name),
                "rho": .number(o.rho),
            ], artifacts: ["counts.csv"] + Figure.files("contact_sheet.png"))
    }
}

/// The indices a dataset `batch` call serves: `count` positions from `start` of the split's order
/// (seeded shuffle per epoch, or file order), with the error that names an empty selection.
func batchOrder(component: String, split: String, total: Int, start: Int, count: Int, shuffle: Bool, seed: UInt64) throws -> [Int] {
    guard start >= 0, count > 0, start < total else {
        throw MenagerieError.invalidArgument("'\(component)' split '\(split)' has \(total) images; start \(start) with count \(count) selects none")
    }
    var order = Array(0..<total)
    if shuffle {
        var rng = SeededGenerator(seed: seed)
        order.shuffle(using: &rng)
    }
    return Array(order[start..<min(total, start + count)])
}

/// Dataset splits read once per process through another dataset component (`mnist-idx`,
/// `cifar10-binary`, `synthetic-tol`): images [N, C, S, S] in [0, 1] and labels, in sample order.
final class SplitCache: Sendable {
    static let shared = SplitCache()
    private let cache = ProcessCache<(images: [Float], labels: [Int], channels: Int, size: Int)>()

    func load(dataset: String, options: [String], size: Int, split: String, host: PluginHost) throws
        -> (images: [Float], labels: [Int], channels: Int, size: Int)
    {
        try cache.value(([dataset, split, "\(size)"] + options).joined(separator: "|")) {
            try Self.read(dataset: dataset, options: options, size: size, split: split, host: host)
        }
    }

    private static func read(dataset: String, options: [String], size: Int, split: String, host: PluginHost) throws
        -> (images: [Float], labels: [Int], channels: Int, size: Int)
    {
        let proxy = try DatasetOptionsProxy(host, id: dataset, size: size, options: options)
        let total = try proxy.describe()["splits"]?[split]?.intValue ?? 0
        guard total > 0 else { throw MenagerieError.invalidArgument("'\(dataset)' (\(options.joined(separator: " "))) has no '\(split)' split") }
        var images: [Float] = [], labels: [Int] = [], channels = 0, side = 0
        for start in stride(from: 0, to: total, by: 2048) {
            let b = try proxy.batch(options: [
                "split": .string(split), "start": .number(Double(start)), "count": .number(Double(min(2048, total - start))),
                "shuffle": false,
            ])
            guard let x = b.tensors["images"], x.rank == 4, let y = b.tensors["labels"] else {
                throw MenagerieError.invalidArgument("'\(dataset)' batch returned no images / labels")
            }
            channels = x.shape[1]
            side = x.shape[2]
            images += try x.converted(to: .float32).scalars(as: Float.self)
            labels += try y.integers()
        }
        return (images, labels, channels, side)
    }
}
