import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// A distilled set: images [N, C, H, W] in [0, 1] with hard labels [N] and optionally soft labels
/// [N, K], written as one safetensors file (`images`, `labels`, `soft_labels`; metadata: method,
/// dataset, ipc, classes, channels, size) and a PNG grid (one row per class).
public struct DistilledSet: Sendable {
    public var images: Tensor
    public var labels: [Int]
    public var softLabels: Tensor?
    public var classes: [String]
    public var method: String
    public var dataset: String
    public var ipc: Int
    public var extra: [String: String] = [:]

    public init(images: Tensor, labels: [Int], softLabels: Tensor? = nil, classes: [String], method: String, dataset: String, ipc: Int) {
        self.images = images
        self.labels = labels
        self.softLabels = softLabels
        self.classes = classes
        self.method = method
        self.dataset = dataset
        self.ipc = ipc
    }

    public var count: Int { images.shape[0] }
    public var channels: Int { images.shape[1] }
    public var size: Int { images.shape[2] }

    public func write(to path: String) throws {
        var tensors: [(name: String, tensor: Tensor)] = [("images", images), ("labels", Tensor(labels.map(Int64.init)))]
        if let softLabels { tensors.append(("soft_labels", softLabels)) }
        var meta = extra
        meta["method"] = method
        meta["dataset"] = dataset
        meta["ipc"] = "\(ipc)"
        meta["classes"] = JSONValue.array(classes.map { .string($0) }).compactText
        meta["format"] = "menagerie-distilled-set"
        try SafeTensors.write(tensors, metadata: meta, to: path)
    }

    public static func read(_ path: String) throws -> DistilledSet {
        guard FileManager.default.fileExists(atPath: path) else {
            throw MenagerieError.notFound("distilled set '\(path)' does not exist (a distiller's distilled.safetensors)")
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw MenagerieError.invalidArgument("'\(path)' is not a safetensors file: \(error)") }
        guard file.entries["images"] != nil, file.entries["labels"] != nil else {
            throw MenagerieError.invalidArgument("'\(path)' holds \(file.entries.keys.sorted()); a distilled set has 'images' [N, C, H, W] and 'labels' [N]")
        }
        let images = try file.float32("images").owned()
        let labels = try file.tensor("labels").integers()
        guard images.rank == 4, images.shape[2] == images.shape[3], labels.count == images.shape[0] else {
            throw MenagerieError.invalidArgument("'\(path)': images must be [N, C, S, S] and labels [N]; got \(images.shape) and \(labels.count) labels")
        }
        // Numbers from a file: labels index classes (and name them when the metadata does not), pixels
        // are converted to bytes for the grid: both are checked before use.
        if let bad = labels.firstIndex(where: { !(0..<Limits.vocabulary.upperBound).contains($0) }) {
            throw MenagerieError.invalidArgument("'\(path)': label \(labels[bad]) at index \(bad) is not a class index in 0..<\(Limits.vocabulary.upperBound)")
        }
        if let bad = try images.scalars(as: Float.self).firstIndex(where: { !$0.isFinite }) {
            throw MenagerieError.invalidArgument("'\(path)': tensor 'images' holds a non-finite value at flat index \(bad)")
        }
        let soft = file.entries["soft_labels"] != nil ? try file.float32("soft_labels").owned() : nil
        var classes: [String] = []
        if let text = file.metadata["classes"], let list = try? JSONValue.parse(text).arrayValue { classes = list.compactMap(\.stringValue) }
        if classes.isEmpty { classes = (0...(labels.max() ?? 0)).map { "class \($0)" } }
        guard labels.allSatisfy({ (0..<classes.count).contains($0) }) else {
            throw MenagerieError.invalidArgument("'\(path)': labels must lie in 0..<\(classes.count)")
        }
        var set = DistilledSet(
            images: images, labels: labels, softLabels: soft, classes: classes, method: file.metadata["method"] ?? "unknown",
            dataset: file.metadata["dataset"] ?? "unknown", ipc: Int(file.metadata["ipc"] ?? "") ?? 0)
        set.extra = file.metadata.filter { !["method", "dataset", "ipc", "classes", "format"].contains($0.key) }
        return set
    }

    /// One row per class (headed by its name), `ipc` columns (at most 20 shown), pixels clamped
    /// to [0, 1]; `title` defaults to the method, dataset and images per class.
    public func grid(title: String? = nil) throws -> ImageGrid {
        let c = channels, s = size, plane = s * s
        let v = try images.scalars(as: Float.self)
        var tiles: [[Image?]] = [], rowHeaders: [String] = []
        let perRow = min(20, max(1, labels.reduce(into: [Int: Int]()) { $0[$1, default: 0] += 1 }.values.max() ?? 1))
        for k in classes.indices where labels.contains(k) {
            let members = labels.indices.filter { labels[$0] == k }.prefix(perRow)
            rowHeaders.append(classes[k])
            tiles.append([])
            for j in 0..<perRow {
                var px = [UInt8](repeating: 255, count: plane * 3)
                if j < members.count {
                    let i = members[members.startIndex + j]
                    for p in 0..<plane {
                        for ch in 0..<3 {
                            let x = v[(i * c + (c == 1 ? 0 : ch)) * plane + p]
                            px[3 * p + ch] = UInt8(max(0, min(255, (x * 255).rounded())))
                        }
                    }
                }
                tiles[tiles.count - 1].append(j < members.count ? Image(width: s, height: s, channels: 3, pixels: px) : nil)
            }
        }
        return ImageGrid(
            title: title ?? "\(method) · \(dataset) · \(ipc) image\(ipc == 1 ? "" : "s") per class", rowHeaders: rowHeaders, tiles: tiles,
            tileSize: Double(min(max(size * 2, 48), 96)))
    }
}

extension Tensor {
    public var scalarsOrEmpty: [Float] { (try? scalars(as: Float.self)) ?? [] }
}

extension DistilledSet {
    /// The normaliser saved with the set (the training data's statistics).
    public func normalizer() -> Normalizer? {
        guard let m = extra["mean"].flatMap({ try? JSONValue.parse($0).arrayValue }), let s = extra["std"].flatMap({ try? JSONValue.parse($0).arrayValue })
        else { return nil }
        return Normalizer(mean: m.compactMap { $0.doubleValue.map(Float.init) }, std: s.compactMap { $0.doubleValue.map(Float.init) })
    }
}

/// What every distiller's `distill` returns besides its files.
public let distilledSetOutputs = [
    TensorSpec("images", dtypes: ["f32"], shape: "K·IPC×C×S×S", summary: "the distilled images in [0, 1] pixels"),
    TensorSpec("labels", dtypes: ["i64"], shape: "K·IPC", summary: "their classes"),
]

extension DistilledSet {
    /// Writes `distilled.safetensors` and `grid.png` into `dir`; returns their names.
    public func writeRunFiles(to dir: String) throws -> [String] {
        try write(to: dir + "/distilled.safetensors")
        try grid().write(to: dir + "/grid.png")
        return ["distilled.safetensors"] + Figure.files("grid.png")
    }

    /// The images and labels as a response's tensors.
    public var responseTensors: [(name: String, tensor: Tensor)] { [("images", images), ("labels", Tensor(labels.map(Int64.init)))] }
}
