import Foundation
import MenagerieKit
import Tensors

/// One split of a dataset component held in memory: images [N, C, S, S] in [0, 1], labels, and
/// an optional per-image attribute (the bias study's colour or corruption), grouped by class.
public struct RealData: Sendable {
    public var images: [Float]
    public var labels: [Int]
    public var attributes: [Int]?
    public var classes: [String]
    public var channels: Int
    public var size: Int
    public var byClass: [[Int]]
    public var dataset: String

    public var count: Int { labels.count }
    public var plane: Int { channels * size * size }

    public init(images: [Float], labels: [Int], attributes: [Int]?, classes: [String], channels: Int, size: Int, dataset: String) {
        self.images = images
        self.labels = labels
        self.attributes = attributes
        self.classes = classes
        self.channels = channels
        self.size = size
        self.dataset = dataset
        byClass = classes.indices.map { k in labels.indices.filter { labels[$0] == k } }
    }

    /// The class names and the number of `split` images that `dataset` describes, checked for
    /// distillation: at least two classes and a non-empty split (errors name the dataset and split).
    static func describeSplit(_ proxy: DatasetOptionsProxy, dataset: String, split: String) throws -> (classes: [String], total: Int) {
        let description = try proxy.describe()
        let classes: [String] = (description["classes"]?.arrayValue ?? []).map { $0.stringValue ?? $0["name"]?.stringValue ?? "?" }
        guard !classes.isEmpty else { throw MenagerieError.invalidArgument("dataset '\(dataset)' describes no classes") }
        guard classes.count >= 2 else { throw MenagerieError.invalidArgument("dataset '\(dataset)' has one class; distillation needs at least two") }
        let total = description["splits"]?[split]?.intValue ?? 0
        guard total > 0 else {
            throw MenagerieError.invalidArgument("dataset '\(dataset)' has no '\(split)' images (splits: \(description["splits"]?.compactText ?? "none"))")
        }
        return (classes, total)
    }

    /// Reads `split` of `dataset` through the host (batches of 512), at most `limit` images (0: all).
    public static func load(
        _ host: PluginHost, dataset: String, options: [String], split: String, size: Int, attribute: String,
        limit: Int = 0
    ) throws -> RealData {
        let proxy = try DatasetOptionsProxy(host, id: dataset, size: size, options: options)
        let (classes, total) = try describeSplit(proxy, dataset: dataset, split: split)
        let n = limit > 0 ? min(limit, total) : total
        var images: [Float] = [], labels: [Int] = [], attrs: [Int] = []
        var channels = 0, side = 0
        var hasAttribute = !attribute.isEmpty
        for start in stride(from: 0, to: n, by: 512) {
            try host.checkCancelled()
            let b = try proxy.batch(options: [
                "split": .string(split), "start": .number(Double(start)), "count": .number(Double(min(512, n - start))),
                "shuffle": false,
            ])
            guard let x = b.tensors["images"], x.rank == 4, let y = b.tensors["labels"] else {
                throw MenagerieError.invalidArgument("dataset '\(dataset)' batch returned no images [N, C, H, W] / labels")
            }
            // Another plugin's response: its labels index classes and its images are gathered by row.
            let batchLabels = try y.integers()
            guard batchLabels.count == x.shape[0], x.shape[2] == x.shape[3], start == 0 || (x.shape[1] == channels && x.shape[2] == side) else {
                throw MenagerieError.invalidArgument(
                    "dataset '\(dataset)' batch returned images \(x.shape) with \(batchLabels.count) labels "
                        + "(one label per image and square images of one size are needed)")
            }
            if let bad = batchLabels.firstIndex(where: { !(0..<classes.count).contains($0) }) {
                throw MenagerieError.invalidArgument(
                    "dataset '\(dataset)' batch returned label \(batchLabels[bad]) at index \(start + bad), "
                        + "outside its \(classes.count) classes 0..<\(classes.count)")
            }
            channels = x.shape[1]
            side = x.shape[2]
            images += try x.converted(to: .float32).scalars(as: Float.self)
            labels += batchLabels
            if hasAttribute {
                if let a = b.tensors[attribute] { attrs += try a.integers() } else { hasAttribute = false }
            }
            host.progress(min(n, start + 512), of: n, "loading \(dataset) \(split)")
        }
        if !attribute.isEmpty && !hasAttribute {
            throw MenagerieError.invalidArgument("dataset '\(dataset)' serves no '\(attribute)' tensor (needed by attribute=/target=)")
        }
        return RealData(
            images: images, labels: labels, attributes: hasAttribute ? attrs : nil, classes: classes, channels: channels,
            size: side, dataset: dataset)
    }

    /// The images at `indices` as a tensor [n, C, S, S].
    public func batch(_ indices: [Int]) -> Tensor { gatherRows(images, indices, shape: [channels, size, size]) }
}

/// Rows `indices` of a row-major array of rows shaped `shape`, as a tensor [n] + shape: the one
/// gather behind real batches, distilled-set batches and selections.
public func gatherRows(_ values: [Float], _ indices: [Int], shape: [Int]) -> Tensor {
    let plane = shape.reduce(1, *)
    return Tensor.make([indices.count] + shape) { o in
        values.withUnsafeBufferPointer { src in for (k, i) in indices.enumerated() { (o + k * plane).update(from: src.baseAddress! + i * plane, count: plane) }
        }
    }
}

/// Per-channel normalisation of the real training data; distillation runs in this space (as the
/// reference code, whose images are normalised), distilled sets are saved back in [0, 1] pixels.
public struct Normalizer: Sendable, Equatable {
    public var mean: [Float]
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    public init(_ data: RealData) {
        let c = data.channels, hw = data.size * data.size
        var sum = [Double](repeating: 0, count: c), sq = sum
        for i in 0..<data.count {
            for ch in 0..<c {
                let base = (i * c + ch) * hw
                for p in 0..<hw {
                    let v = Double(data.images[base + p])
                    sum[ch] += v
                    sq[ch] += v * v
                }
            }
        }
        let n = Double(data.count * hw)
        mean = sum.map { Float($0 / n) }
        std = zip(sum, sq).map { s, q in Float(max((q / n - (s / n) * (s / n)).squareRoot(), 1e-3)) }
    }

    public func normalize(_ x: [Float], channels c: Int, plane: Int) -> [Float] {
        var out = x
        for i in 0..<(x.count / plane) {
            for p in 0..<plane {
                let ch = (p / (plane / c))
                out[i * plane + p] = (x[i * plane + p] - mean[ch]) / std[ch]
            }
        }
        return out
    }

    public func denormalize(_ x: [Float], channels c: Int, plane: Int) -> [Float] {
        var out = x
        for i in 0..<(x.count / plane) {
            for p in 0..<plane {
                let ch = (p / (plane / c))
                out[i * plane + p] = x[i * plane + p] * std[ch] + mean[ch]
            }
        }
        return out
    }
}
