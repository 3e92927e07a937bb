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
    [
        TensorSpec("images", dtypes: ["f32"], shape: "N×\(channels)×S×S", summary: "pixels in [0, 1]"),
        TensorSpec("labels", dtypes: ["i64"], shape: "N", summary: "class index"),
        TensorSpec("index", dtypes: ["i64"], shape: "N", summary: "the image's index in its split"),
    ]
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
        OperationSpec(
            "batch", summary: "images and labels (and rank labels with a taxonomy) of one slice of a split",
            outputs: batchOutputs(channels: "3", ranks: true)),
        OperationSpec("describe", summary: "classes (with taxonomy), split sizes, skipped items"),
    ]

    func source(_ o: Options) throws -> ImageFolderSource {
        guard (8...1024).contains(o.size) else { throw MenagerieError.invalidArgument("option 'size' of '\(Self.id)' must lie in 8…1024, got \(o.size)") }
        let root = try requireRoot(o.root, Self.id)
        return try reading {
            try ImageFolderSource(
                root: root, size: o.size, squash: o.resize == "squash",
                taxonomyPath: o.taxonomy.isEmpty ? nil : (o.taxonomy as NSString).expandingTildeInPath,
                valFraction: o.valFraction, testFraction: o.testFraction,
                seed: UInt64(bitPattern: Int64(o.seed)), skipBad: o.skip_bad)
        }
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let s = try source(request.options)
        var extra: [String: JSONValue] = [:]
        if let tax = s.taxonomy {
            extra["taxonomy"] = .array(
                zip(tax, s.commonNames ?? []).map { lineage, common in
                    .object(
                        Dictionary(uniqueKeysWithValues: zip(ImageFolderSource.rankNames, lineage.map { JSONValue.string($0) }))
                            .merging(["common_name": .string(common)]) { a, _ in a })
                })
        }
        return Batching.describe(s, name: Self.id, extra: extra, skipped: s.skipped)
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options, s = try source(o)
        return try Batching.batch(
            s, component: Self.id, split: o.split, start: o.start, count: o.count, shuffle: o.shuffle,
            epoch: o.epoch, seed: UInt64(bitPattern: Int64(o.seed)), skipBad: o.skip_bad, skippedBefore: s.skipped)
    }
}

/// A dataset in fixed binary files with its own train/test split. MNIST's IDX files and CIFAR-10's
/// binary batches share their options and behaviour: one component type, one row per format.
protocol SplitFilesFormat: Sendable {
    static var id: String { get }
    static var summary: String { get }
    /// Channels of the returned images ("1" or "3"), for the output spec.
    static var channels: String { get }
    static var batchSummary: String { get }
    static var describeSummary: String { get }
    /// The source at its own size, and the files it skipped.
    static func open(root: String, valCount: Int, skipBad: Bool) throws -> (source: ItemSource, skipped: [Skipped])
    /// Writes files of this format on embedded data into `scratch` and reads them back (the tour).
    static func tour(scratch: String, seed: UInt64) throws -> Response
}

enum MNISTFormat: SplitFilesFormat {
    static let id = "mnist-idx"
    static let summary = "MNIST from its original IDX files (train-images-idx3-ubyte …)"
    static let channels = "1"
    static let batchSummary = "digits and labels of one slice of a split", describeSummary = "classes and split sizes"
    static func open(root: String, valCount: Int, skipBad: Bool) throws -> (source: ItemSource, skipped: [Skipped]) {
        (try MNISTSource(root: root, valCount: valCount), [])
    }
}

enum CIFAR10Format: SplitFilesFormat {
    static let id = "cifar10-binary"
    static let summary = "CIFAR-10 from its binary version (data_batch_N.bin, test_batch.bin)"
    static let channels = "3"
    static let batchSummary = "images and labels of one slice of a split", describeSummary = "classes, split sizes, skipped files"
    static func open(root: String, valCount: Int, skipBad: Bool) throws -> (source: ItemSource, skipped: [Skipped]) {
        let files = try CIFAR10Source(root: root, valCount: valCount, skipBad: skipBad)
        return (files, files.skipped)
    }
}

struct SplitFilesOptions: ComponentOptions {
    var root = ""
    var valCount = 0
    var size = 0
    var split = "train", start = 0, count = 64, shuffle = true, epoch = 0, seed = 0
    var skip_bad = false
    static let help = batchHelp.merging([
        "size": "side of the returned images (0: the files' own; others resample, antialiased bilinear)",
        "valCount": "the last valCount training items form the val split",
    ]) { a, _ in a }
    static let ranges = batchRanges.merging(["valCount": 0...1e12, "size": 0...1024]) { a, _ in a }
    static let choices = ["split": ["train", "val", "test"]]
}

/// `mnist-idx` and `cifar10-binary`: the row `Format` of the table above.
struct SplitFilesComponent<Format: SplitFilesFormat>: Dataset {
    typealias Options = SplitFilesOptions
    static var id: String { Format.id }
    static var summary: String { Format.summary }
    static var operations: [OperationSpec] {
        [
            OperationSpec("batch", summary: Format.batchSummary, outputs: batchOutputs(channels: Format.channels, ranks: false)),
            OperationSpec("describe", summary: Format.describeSummary),
        ]
    }
    static var inTour: Bool { true }
    func tour(_ request: Request<Options>) throws -> Response { try Format.tour(scratch: request.host.scratchDirectory, seed: request.host.seed) }

    /// The source at the asked size, and the files it skipped.
    func source(_ o: Options) throws -> (source: ItemSource, skipped: [Skipped]) {
        let root = try requireRoot(o.root, Self.id)
        let files = try reading { try Format.open(root: root, valCount: o.valCount, skipBad: o.skip_bad) }
        return (try ResizedSource.make(files.source, size: o.size, component: Self.id), files.skipped)
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let (s, skipped) = try source(request.options)
        return Batching.describe(s, name: Self.id, skipped: skipped)
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let (s, skipped) = try source(o)
        return try Batching.batch(
            s, component: Self.id, split: o.split, start: o.start, count: o.count, shuffle: o.shuffle,
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
    public static let components: [any Component.Type] = [
        ImageFolderComponent.self, SplitFilesComponent<MNISTFormat>.self,
        SplitFilesComponent<CIFAR10Format>.self,
    ]
}
