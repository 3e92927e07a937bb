import Foundation
import MenagerieKit
import Tensors

/// The options of `batch` every adapter shares (the same as `synthetic-tol`'s).
private let batchHelp = [
    "split": "batch: train, val or test", "start": "batch: first position in the epoch's order", "count": "batch: number of images",
    "shuffle": "batch: seeded shuffle of the split", "epoch": "batch: the shuffle's epoch", "seed": "seed of the shuffles and splits",
    "skip_bad": "skip unreadable images, empty classes and truncated files (counted in result.json) instead of failing",
    "root": "the dataset's folder (required)",
]

/// The ranges of the shared `batch` options (checked before the adapter runs).
private let batchRanges: [String: ClosedRange<Double>] = ["start": 0...1e12, "count": 1...1e7, "epoch": 0...1e12]

private func batchOutputs(channels: String, ranks: Bool) -> [TensorSpec] {
    [TensorSpec("images", dtypes: ["f32"], shape: "N×\(channels)×S×S", summary: "pixels in [0, 1]"),
     TensorSpec("labels", dtypes: ["i64"], shape: "N", summary: "class index"),
     TensorSpec("index", dtypes: ["i64"], shape: "N", summary: "the image's index in its split")]
    + (ranks ? [TensorSpec("rank_labels", dtypes: ["i64"], shape: "N×7", summary: "node index per rank, kingdom … species (with a taxonomy)")] : [])
}

private func requireRoot(_ root: String, _ id: String) throws -> String {
    guard !root.isEmpty else { throw MenagerieError.invalidArgument("'\(id)' needs its folder: --set root=PATH") }
    return (root as NSString).expandingTildeInPath
}

/// Runs `body`, turning file errors into argument errors (exit code 2, the message names the file).
private func reading<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
}

struct ImageFolderComponent: Dataset {
    struct Options: ComponentOptions {
        var root = ""
        var taxonomy = ""
        var size = 224
        var resize = "crop"
        var valFraction = 0.1
        var testFraction = 0.2
        var split = "train", start = 0, count = 64, shuffle = true, epoch = 0, seed = 0
        var skip_bad = false
        static let help = batchHelp.merging([
            "taxonomy": "a CSV giving each class (label column) or file (file column) its seven ranks and common_name",
            "size": "side of the returned images", "resize": "crop: shorter side to size then centre crop; squash: resize to size×size",
            "valFraction": "share of each class for val when the root has no split folders",
            "testFraction": "share of each class for test when the root has no split folders",
        ]) { a, _ in a }
        static let ranges = batchRanges.merging(["size": 1...65536, "valFraction": 0...1, "testFraction": 0...1]) { a, _ in a }
        static let choices = ["split": ["train", "val", "test"], "resize": ["crop", "squash"]]
    }
    static let id = "image-folder"
    static let summary = "Class-per-folder PNG/TIFF/JPEG images, with an optional seven-rank taxonomy CSV"
    static let operations = [
        OperationSpec("batch", summary: "images and labels (and rank labels with a taxonomy) of one slice of a split",
                      outputs: batchOutputs(channels: "3", ranks: true)),
        OperationSpec("describe", summary: "classes (with taxonomy), split sizes, skipped items"),
    ]

    func source(_ o: Options) throws -> ImageFolderSource {
        guard (8...1024).contains(o.size) else { throw MenagerieError.invalidArgument("option 'size' of '\(Self.id)' must lie in 8…1024, got \(o.size)") }
        let root = try requireRoot(o.root, Self.id)
        return try reading {
            try ImageFolderSource(root: root, size: o.size, squash: o.resize == "squash",
                                  taxonomyPath: o.taxonomy.isEmpty ? nil : (o.taxonomy as NSString).expandingTildeInPath,
                                  valFraction: o.valFraction, testFraction: o.testFraction,
                                  seed: UInt64(bitPattern: Int64(o.seed)), skipBad: o.skip_bad)
        }
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let s = try source(request.options)
        var extra: [String: JSONValue] = [:]
        if let tax = s.taxonomy {
            extra["taxonomy"] = .array(zip(tax, s.commonNames ?? []).map { lineage, common in
                .object(Dictionary(uniqueKeysWithValues: zip(ImageFolderSource.rankNames, lineage.map { JSONValue.string($0) }))
                        .merging(["common_name": .string(common)]) { a, _ in a })
            })
        }
        return Batching.describe(s, name: Self.id, extra: extra, skipped: s.skipped)
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options, s = try source(o)
        return try Batching.batch(s, component: Self.id, split: o.split, start: o.start, count: o.count, shuffle: o.shuffle,
                                  epoch: o.epoch, seed: UInt64(bitPattern: Int64(o.seed)), skipBad: o.skip_bad, skippedBefore: s.skipped)
    }
}

struct MNISTComponent: Dataset {
    struct Options: ComponentOptions {
        var root = ""
        var valCount = 0
        var size = 0
        var split = "train", start = 0, count = 64, shuffle = true, epoch = 0, seed = 0
        var skip_bad = false
        static let help = batchHelp.merging(["size": "side of the returned images (0: the files' own; others resample, antialiased bilinear)", "valCount": "the last valCount training images form the val split"]) { a, _ in a }
        static let ranges = batchRanges.merging(["valCount": 0...1e12, "size": 0...1024]) { a, _ in a }
        static let choices = ["split": ["train", "val", "test"]]
    }
    static let id = "mnist-idx"
    static let summary = "MNIST from its original IDX files (train-images-idx3-ubyte …)"
    static let operations = [
        OperationSpec("batch", summary: "digits and labels of one slice of a split", outputs: batchOutputs(channels: "1", ranks: false)),
        OperationSpec("describe", summary: "classes and split sizes"),
    ]

    func source(_ o: Options) throws -> ItemSource {
        let root = try requireRoot(o.root, Self.id)
        return try ResizedSource.make(try reading { try MNISTSource(root: root, valCount: o.valCount) }, size: o.size, component: Self.id)
    }

    func describe(_ request: Request<Options>) throws -> Response { Batching.describe(try source(request.options), name: Self.id) }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options
        return try Batching.batch(try source(o), component: Self.id, split: o.split, start: o.start, count: o.count, shuffle: o.shuffle,
                                  epoch: o.epoch, seed: UInt64(bitPattern: Int64(o.seed)), skipBad: o.skip_bad)
    }
}

struct CIFAR10Component: Dataset {
    struct Options: ComponentOptions {
        var root = ""
        var valCount = 0
        var size = 0
        var split = "train", start = 0, count = 64, shuffle = true, epoch = 0, seed = 0
        var skip_bad = false
        static let help = batchHelp.merging(["size": "side of the returned images (0: the files' own; others resample, antialiased bilinear)", "valCount": "the last valCount training records form the val split"]) { a, _ in a }
        static let ranges = batchRanges.merging(["valCount": 0...1e12, "size": 0...1024]) { a, _ in a }
        static let choices = ["split": ["train", "val", "test"]]
    }
    static let id = "cifar10-binary"
    static let summary = "CIFAR-10 from its binary version (data_batch_N.bin, test_batch.bin)"
    static let operations = [
        OperationSpec("batch", summary: "images and labels of one slice of a split", outputs: batchOutputs(channels: "3", ranks: false)),
        OperationSpec("describe", summary: "classes, split sizes, skipped files"),
    ]

    /// The source at the asked size, and the files it skipped.
    func source(_ o: Options) throws -> (source: ItemSource, skipped: [Skipped]) {
        let root = try requireRoot(o.root, Self.id)
        let files = try reading { try CIFAR10Source(root: root, valCount: o.valCount, skipBad: o.skip_bad) }
        return (try ResizedSource.make(files, size: o.size, component: Self.id), files.skipped)
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let (s, skipped) = try source(request.options)
        return Batching.describe(s, name: Self.id, skipped: skipped)
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let (s, skipped) = try source(o)
        return try Batching.batch(s, component: Self.id, split: o.split, start: o.start, count: o.count, shuffle: o.shuffle,
                                  epoch: o.epoch, seed: UInt64(bitPattern: Int64(o.seed)), skipBad: o.skip_bad, skippedBefore: skipped)
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum DatasetAdaptersPlugin: Plugin {
    public static let name = "dataset-adapters"
    public static let version = "1.0.0"
    public static let summary = "Real data in its own formats: image folders with taxonomy, MNIST IDX, CIFAR-10 binary"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [ImageFolderComponent.self, MNISTComponent.self, CIFAR10Component.self]
}
