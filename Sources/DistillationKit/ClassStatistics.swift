import Formats
import Foundation
import MenagerieKit
import Tensors

/// Which backbone class each of the distilled set's classes is generated as. Without `class_ids`
/// the set's class k is the backbone's class k (the dataset and the model have the same classes);
/// with it, dataset class k is backbone class `class_ids[k]` (a 10-class ImageNet subset on
/// DiT-XL/2's 1,000 classes), and the set keeps the dataset's own class indices and names.
public struct ClassMapping: Sendable, Equatable {
    /// The backbone class of every set class.
    public let backbone: [Int]
    public var count: Int { backbone.count }

    public init(_ o: DiffusionDistillOptions, backboneClasses n: Int) throws {
        guard !o.class_ids.isEmpty else {
            backbone = Array(0..<n)
            return
        }
        for (i, v) in o.class_ids.enumerated() where !(0..<n).contains(v) {
            throw MenagerieError.invalidArgument(
                "option 'class_ids': entry \(i) is class \(v), beyond the diffusion backbone's \(n) classes 0…\(n - 1) "
                    + "(a DiT pipeline's num_embeds_ada_norm)")
        }
        guard Set(o.class_ids).count == o.class_ids.count else {
            throw MenagerieError.invalidArgument("option 'class_ids' names a backbone class twice (\(o.class_ids)): one dataset class per backbone class")
        }
        backbone = o.class_ids
    }

    /// The backbone classes of set labels.
    public func map(_ labels: [Int]) -> [Int] { labels.map { backbone[$0] } }
}

/// One split of a dataset component read one class at a time: a first pass keeps only the labels
/// (every image is decoded once, in batches, and dropped) and the per-channel pixel sums; then a
/// class's images are read on demand, in batches, from the positions that hold it (contiguous runs
/// when the dataset lists a class's files together, as `image-folder` does). Nothing holds more than
/// one batch of images.
public struct ClassStream {
    public let proxy: DatasetOptionsProxy
    public let dataset: String
    public let split: String
    public let classes: [String]
    public let channels: Int
    public let size: Int
    /// Per class, its positions in the split's (unshuffled) order.
    public let positions: [[Int]]
    /// The split's per-channel mean and std (the normaliser distilled sets record).
    public let normalizer: Normalizer

    /// Indexes `split` of `dataset` (at most its first `limit` images; 0: all), reading `batch`
    /// images per host call.
    public init(_ host: PluginHost, dataset: String, options: [String], split: String, size: Int, limit: Int, batch: Int) throws {
        proxy = try DatasetOptionsProxy(host, id: dataset, size: size, options: options)
        self.dataset = dataset
        self.split = split
        let (classes, total) = try RealData.describeSplit(proxy, dataset: dataset, split: split)
        self.classes = classes
        let n = limit > 0 ? min(limit, total) : total
        let step = max(1, min(batch, 512))
        var positions = [[Int]](repeating: [], count: classes.count)
        var channels = 0, side = 0
        var sum: [Double] = [], sq: [Double] = []
        for start in stride(from: 0, to: n, by: step) {
            try host.checkCancelled()
            let count = min(step, n - start)
            let (x, labels) = try Self.read(proxy, dataset: dataset, split: split, start: start, count: count, classes: classes.count)
            if start == 0 {
                (channels, side) = (x.shape[1], x.shape[2])
                sum = [Double](repeating: 0, count: channels)
                sq = sum
            } else if x.shape[1] != channels || x.shape[2] != side {
                throw MenagerieError.invalidArgument(
                    "dataset '\(dataset)' returned images \(x.shape) at position \(start), after \(channels)×\(side)×\(side) ones: one size is needed")
            }
            let plane = side * side
            let p = try x.scalars(as: Float.self)
            do {
                for i in 0..<labels.count {
                    for ch in 0..<channels {
                        var s = 0.0, q = 0.0
                        let base = (i * channels + ch) * plane
                        for j in 0..<plane {
                            let v = Double(p[base + j])
                            s += v
                            q += v * v
                        }
                        sum[ch] += s
                        sq[ch] += q
                    }
                }
            }
            for (i, y) in labels.enumerated() { positions[y].append(start + i) }
            host.progress(start + count, of: n, "indexing \(dataset) \(split) (labels only)")
        }
        self.channels = channels
        self.size = side
        self.positions = positions
        let pixels = Double(n * side * side)
        normalizer = Normalizer(
            mean: sum.map { Float($0 / pixels) },
            std: zip(sum, sq).map { s, q in Float(max((q / pixels - (s / pixels) * (s / pixels)).squareRoot(), 1e-3)) })
    }

    /// `count` images from `start` of the split (unshuffled), checked: [count, C, S, S] f32, labels in range.
    static func read(_ proxy: DatasetOptionsProxy, dataset: String, split: String, start: Int, count: Int, classes: Int) throws -> (Tensor, [Int]) {
        let b = try proxy.batch(options: [
            "split": .string(split), "start": .number(Double(start)), "count": .number(Double(count)), "shuffle": false,
        ])
        guard let x = b.tensors["images"], x.rank == 4, x.shape[2] == x.shape[3], let y = b.tensors["labels"] else {
            throw MenagerieError.invalidArgument("dataset '\(dataset)' batch returned no square images [N, C, H, W] / labels")
        }
        let labels = try y.integers()
        guard labels.count == count, x.shape[0] == count else {
            throw MenagerieError.invalidArgument(
                "dataset '\(dataset)' returned \(x.shape[0]) images and \(labels.count) labels for the \(count) asked at position \(start) of '\(split)' "
                    + "(the per-class reader needs every image: without skip_bad, or with the unreadable files removed)")
        }
        if let bad = labels.firstIndex(where: { !(0..<classes).contains($0) }) {
            throw MenagerieError.invalidArgument(
                "dataset '\(dataset)' batch returned label \(labels[bad]) at position \(start + bad), outside its \(classes) classes 0..<\(classes)")
        }
        return (try x.converted(to: .float32), labels)
    }

    /// Calls `body` with class `k`'s images in order, `batch` at a time (the last batch shorter).
    public func forEachBatch(ofClass k: Int, batch: Int, host: PluginHost, _ body: (Tensor) throws -> Void) throws {
        let plane = channels * size * size
        var pending: [Float] = []
        pending.reserveCapacity(batch * plane)
        func flush() throws {
            guard !pending.isEmpty else { return }
            try body(try Tensor(pending, shape: [pending.count / plane, channels, size, size]))
            pending.removeAll(keepingCapacity: true)
        }
        // Runs of consecutive positions, each read in host calls of at most `batch` images.
        var i = 0
        let p = positions[k]
        while i < p.count {
            var j = i + 1
            while j < p.count && p[j] == p[j - 1] + 1 && j - i < batch - pending.count / plane { j += 1 }
            try host.checkCancelled()
            let (x, labels) = try Self.read(proxy, dataset: dataset, split: split, start: p[i], count: j - i, classes: classes.count)
            guard labels.allSatisfy({ $0 == k }), x.shape[1] == channels, x.shape[2] == size else {
                throw MenagerieError.invalidArgument(
                    "dataset '\(dataset)' served other labels or sizes at positions \(p[i])..<\(p[i] + j - i) than when it was indexed: "
                        + "its unshuffled order must not change during the run")
            }
            pending += try x.scalars(as: Float.self)
            if pending.count / plane >= batch { try flush() }
            i = j
        }
        try flush()
    }
}

/// Per-class statistics on disk (`statistics=DIR`): one safetensors file per class, `class_KKKKK.safetensors`,
/// with `mean` and `variance` (f64 [D]) and, as metadata, `count` and everything that identifies the
/// run that made it. Written atomically as each class finishes; a rerun reads the finished classes
/// and computes the rest; a file whose identity differs from the run's is an error naming the file
/// and the field, never reused.
public struct ClassStatisticsStore: Sendable {
    public static let format = "menagerie.class-statistics/1"
    public let folder: String
    /// The identity every file of this run must carry (format, backbone, grid, dataset, …), without the class fields.
    public let identity: [String: String]

    public init(folder: String, identity: [String: String]) throws {
        self.folder = (folder as NSString).expandingTildeInPath
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: self.folder, isDirectory: &isDir) {
            guard isDir.boolValue else { throw MenagerieError.invalidArgument("option 'statistics' = '\(folder)' is a file; it must name a folder") }
        } else {
            do { try FileManager.default.createDirectory(atPath: self.folder, withIntermediateDirectories: true) } catch {
                throw MenagerieError.invalidArgument("option 'statistics': cannot create the folder '\(folder)' (\(error.localizedDescription))")
            }
        }
        self.identity = identity.merging(["format": Self.format]) { _, b in b }
    }

    public func path(ofClass k: Int) -> String { folder + "/" + String(format: "class_%05d.safetensors", k) }

    func expected(_ k: Int, name: String, backboneClass: Int) -> [String: String] {
        identity.merging(["class": "\(k)", "class_name": name, "backbone_class": "\(backboneClass)"]) { _, b in b }
    }

    /// The stored moments of class `k`, nil when no file exists; an error when one exists but was made
    /// by another run (the first differing field named), holds `count` ≠ `count`, or is malformed.
    public func read(class k: Int, name: String, backboneClass: Int, count: Int, dimension d: Int) throws -> (mean: [Double], variance: [Double])? {
        let path = path(ofClass: k)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        func refuse(_ why: String) -> MenagerieError {
            MenagerieError.invalidArgument(
                "statistics file \(path) \(why) (delete the file to recompute class \(k), or choose another statistics folder)")
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw refuse("cannot be read: \(error)") }
        for (key, value) in expected(k, name: name, backboneClass: backboneClass).sorted(by: { $0.key < $1.key }) {
            guard let stored = file.metadata[key] else { throw refuse("has no '\(key)' in its metadata; this run's is '\(value)'") }
            guard stored == value else { throw refuse("was made with \(key) = '\(stored)'; this run has \(key) = '\(value)'") }
        }
        guard let stored = file.metadata["count"], let n = Int(stored), n >= 2 else {
            throw refuse("has no count of 2 or more in its metadata")
        }
        guard n == count else { throw refuse("was made with count = '\(n)' images; this run has count = '\(count)' for the class") }
        func moments(_ name: String) throws -> [Double] {
            let t: Tensor
            do { t = try file.tensor(name) } catch { throw refuse("has no tensor '\(name)': \(error)") }
            guard t.dtype == .float64, t.shape == [d] else {
                throw refuse("holds '\(name)' as \(t.dtype.name) \(t.shape); f64 [\(d)] (the latent size) was expected")
            }
            let v = try t.scalars(as: Double.self)
            if let bad = v.firstIndex(where: { !$0.isFinite }) { throw refuse("holds a non-finite '\(name)' at index \(bad)") }
            return v
        }
        let mean = try moments("mean"), variance = try moments("variance")
        if let bad = variance.firstIndex(where: { $0 < 0 }) { throw refuse("holds a negative variance at index \(bad)") }
        return (mean, variance)
    }

    /// Writes class `k`'s moments (temp file + rename).
    public func write(class k: Int, name: String, backboneClass: Int, count: Int, mean: [Double], variance: [Double]) throws {
        var metadata = expected(k, name: name, backboneClass: backboneClass)
        metadata["count"] = "\(count)"
        do {
            try SafeTensors.write(
                [("mean", try Tensor(mean, shape: [mean.count])), ("variance", try Tensor(variance, shape: [variance.count]))], metadata: metadata,
                to: path(ofClass: k))
        } catch { throw MenagerieError.invalidArgument("option 'statistics': cannot write \(path(ofClass: k)): \(error)") }
    }
}
