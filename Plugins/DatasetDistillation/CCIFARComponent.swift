import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// `ccifar10-dd`: the corruption bias (Biased-DD's CCIFAR10-DD): class c's aligned attribute is
/// corruption c (of Corruption's ten), assigned with the same milestones as CMNIST-DD, applied at
/// Hendrycks severity `severity` + 1. Images from CIFAR-10's binary files when `root` is given,
/// else from `synthetic-tol` (ten species at 32 px).
struct CCIFARComponent: Dataset {
    struct Options: ComponentOptions {
        var rho = 0.95
        var severity = 4
        var root = ""
        var per_class = 300
        var test_per_class = 50
        var seed = 0
        var split = "train"
        var start = 0
        var count = 64
        var shuffle = true
        var epoch = 0
        static let help = BiasedDatasetOptions.help.merging([
            "severity": "1…4; corruptions run at Hendrycks severity severity + 1",
            "root": "a folder with CIFAR-10's binary batches (read through cifar10-binary); empty: synthetic-tol, ten species at 32 px",
            "per_class": "synthetic-tol: training images per class", "test_per_class": "synthetic-tol: test images per class",
            "seed": "corruption randomness",
        ]) { _, own in own }
        static let choices = BiasedDatasetOptions.choices
        static let ranges = BiasedDatasetOptions.ranges
    }
    static let id = "ccifar10-dd"
    static let summary = "Corrupted CIFAR-10 with a corruption bias of ratio ρ (Biased-DD's CCIFAR10-DD); synthetic-tol when no CIFAR files are given"
    static let operations = [
        OperationSpec(
            "batch", summary: "corrupted images, labels, the corruption attribute, aligned flags",
            outputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×3×32×32"), TensorSpec("labels", dtypes: ["i64"], shape: "N"),
                TensorSpec("corruptions", dtypes: ["i64"], shape: "N", summary: "0 snow … 9 saturate"),
                TensorSpec("aligned", dtypes: ["i64"], shape: "N"),
            ]),
        OperationSpec("describe", summary: "classes, split sizes, the corruptions and which are approximations"),
        OperationSpec("export", summary: "a sheet: each class under each corruption"),
    ]

    func base(_ o: Options, host: PluginHost, split: String) throws -> (images: [Float], labels: [Int], channels: Int, size: Int, name: String) {
        try validateBias(rho: o.rho, severity: o.severity, component: Self.id)
        if !o.root.isEmpty {
            let d = try SplitCache.shared.load(dataset: "cifar10-binary", options: ["root=" + o.root], size: 32, split: split, host: host)
            return (d.images, d.labels, d.channels, d.size, "cifar10-binary (\(o.root))")
        }
        let tree = [
            "phyla=2", "classesPerPhylum=1", "ordersPerClass=1", "familiesPerOrder=1", "generaPerFamily=1", "speciesPerGenus=5",
            "trainPerSpecies=\(o.per_class)", "valPerSpecies=0", "testPerSpecies=\(o.test_per_class)",
        ]
        let d = try SplitCache.shared.load(dataset: "synthetic-tol", options: tree, size: 32, split: split, host: host)
        return (d.images, d.labels, d.channels, d.size, "synthetic-tol (10 species, 32 px)")
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let train = try base(o, host: request.host, split: "train"), test = try base(o, host: request.host, split: "test")
        let k = (train.labels.max() ?? 0) + 1
        guard k == 10 else { throw MenagerieError.invalidArgument("'\(Self.id)' needs 10 classes (one per corruption); the source has \(k)") }
        return Response(result: [
            "classes": .array((0..<10).map { .string("class \($0)") }), "channels": 3, "size": 32,
            "splits": ["train": .number(Double(train.labels.count)), "test": .number(Double(test.labels.count))],
            "rho": .number(o.rho), "severity": .number(Double(o.severity)), "images": .string(train.name), "attribute": "corruptions",
            "corruptions": .array(Corruption.allCases.map { .object(["name": .string($0.name), "faithful": .bool($0.faithful)]) }),
        ])
    }

    func samples(_ o: Options, split: String, indices: [Int], host: PluginHost) throws -> (images: [Float], labels: [Int], attrs: [Int]) {
        let src = try base(o, host: host, split: split)
        guard src.channels == 3 else { throw MenagerieError.invalidArgument("'\(Self.id)' needs RGB images") }
        let attrs = biasedAttributes(labels: src.labels, classes: 10, rho: split == "train" ? o.rho : 0)
        let plane = 3 * src.size * src.size
        var images = [Float](repeating: 0, count: indices.count * plane)
        images.withUnsafeMutableBufferPointer { out in
            let box = UncheckedBox(out.baseAddress!)
            Parallel.chunks(indices.count, grain: 8) { range in
                for k in range {
                    let i = indices[k]
                    var rng = SeededGenerator(seed: UInt64(bitPattern: Int64(o.seed)) &+ UInt64(i) &* 0x9E37_79B9 &+ (split == "train" ? 3 : 5))
                    let x = Array(src.images[(i * plane)..<((i + 1) * plane)])
                    let y = Corruption(rawValue: attrs[i])!.apply(x, size: src.size, severity: o.severity + 1, rng: &rng)
                    (box.value + k * plane).update(from: y, count: plane)
                }
            }
        }
        return (images, indices.map { src.labels[$0] }, indices.map { attrs[$0] })
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let src = try base(o, host: request.host, split: o.split)
        let total = src.labels.count
        let picked = try batchOrder(
            component: Self.id, split: o.split, total: total, start: o.start, count: o.count, shuffle: o.shuffle,
            seed: UInt64(bitPattern: Int64(o.seed)) &+ UInt64(bitPattern: Int64(o.epoch)) &* 7919 &+ 9)
        let s = try samples(o, split: o.split, indices: picked, host: request.host)
        return Response(
            result: ["split": .string(o.split), "count": .number(Double(picked.count)), "total": .number(Double(total)), "images": .string(src.name)],
            tensors: [
                ("images", try Tensor(s.images, shape: [picked.count, 3, src.size, src.size])),
                ("labels", Tensor(s.labels.map(Int64.init))), ("corruptions", Tensor(s.attrs.map(Int64.init))),
                ("aligned", Tensor(zip(s.labels, s.attrs).map { Int64($0 == $1 ? 1 : 0) })),
            ])
    }

    func export(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let src = try base(o, host: request.host, split: "test")
        // One image per class, under each corruption: rows classes, columns corruptions.
        var tiles: [[Image?]] = [], rowHeaders: [String] = []
        let s = src.size, plane = 3 * s * s
        for y in 0..<10 {
            guard let i = src.labels.firstIndex(of: y) else { continue }
            rowHeaders.append("class \(y)")
            tiles.append([])
            for c in Corruption.allCases {
                var rng = SeededGenerator(seed: UInt64(i))
                let x = c.apply(Array(src.images[(i * plane)..<((i + 1) * plane)]), size: s, severity: o.severity + 1, rng: &rng)
                var px = [UInt8](repeating: 0, count: s * s * 3)
                for p in 0..<(s * s) { for ch in 0..<3 { px[3 * p + ch] = UInt8(max(0, min(255, x[ch * s * s + p] * 255))) } }
                tiles[tiles.count - 1].append(Image(width: s, height: s, channels: 3, pixels: px))
            }
        }
        try ImageGrid(
            title: "CIFAR-10-C style corruptions at severity \(o.severity + 1)", columnHeaders: Corruption.allCases.map(\.name),
            rowHeaders: rowHeaders, tiles: tiles, tileSize: 64
        ).write(to: request.host.scratchDirectory + "/corruptions.png")
        return Response(
            result: ["columns": .array(Corruption.allCases.map { .string($0.name) }), "images": .string(src.name)], artifacts: Figure.files("corruptions.png"))
    }
}
