import Foundation
import Imaging
import MenagerieKit
import Tensors

/// What every adapter provides: classes, split sizes, and one item at a time. Items are read when
/// a batch asks for them (files are listed or memory-mapped up front, never decoded in bulk).
public protocol ItemSource: Sendable {
    var classNames: [String] { get }
    /// Channels and side of every image a batch returns.
    var channels: Int { get }
    var size: Int { get }
    func count(split: Int) -> Int
    /// Pixels (CHW, [0, 1]) and the class of item `index` of `split`.
    func item(split: Int, index: Int) throws -> (pixels: [Float], label: Int)
    /// Node index per rank (kingdom … species) of a class, when the source has a taxonomy.
    var rankLabels: [[Int]]? { get }
}

public let splitNames = ["train", "val", "test"]

/// A skipped item or file: where, and why.
public struct Skipped: Sendable {
    public var file: String
    public var reason: String
}

/// The split order (canonical or a seeded shuffle per epoch) and batch assembly shared by the
/// adapters, with the same options and outputs as `synthetic-tol`.
enum Batching {
    static func order(count: Int, shuffle: Bool, seed: UInt64, split: Int, epoch: Int) -> [Int] {
        var idx = Array(0..<count)
        guard shuffle else { return idx }
        var rng = SeededGenerator(seed: seed ^ UInt64(split) << 40 ^ UInt64(bitPattern: Int64(epoch)) &* 0x9E37_79B9_7F4A_7C15)
        for i in stride(from: idx.count - 1, to: 0, by: -1) { idx.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return idx
    }

    /// Reads the slice; with `skipBad` an unreadable item is left out and reported, otherwise its
    /// error (naming the file) ends the call.
    static func batch(
        _ source: ItemSource, component: String, split name: String, start: Int, count: Int, shuffle: Bool,
        epoch: Int, seed: UInt64, skipBad: Bool, skippedBefore: [Skipped] = []
    ) throws -> Response {
        guard let split = splitNames.firstIndex(of: name) else {
            throw MenagerieError.invalidArgument("option 'split' of '\(component)' must be train, val or test, got '\(name)'")
        }
        let total = source.count(split: split)
        guard total > 0 else { throw MenagerieError.invalidArgument("'\(component)' has no images in split '\(name)'") }
        guard start >= 0, count > 0, start < total else {
            throw MenagerieError.invalidArgument("'\(component)' split '\(name)' has \(total) images; start \(start) with count \(count) selects none")
        }
        let picked = Array(order(count: total, shuffle: shuffle, seed: seed, split: split, epoch: epoch)[start..<min(total, start + count)])
        var pixels: [Float] = [], labels: [Int64] = [], kept: [Int64] = []
        var skipped = skippedBefore
        for i in picked {
            do {
                let item = try source.item(split: split, index: i)
                pixels += item.pixels
                labels.append(Int64(item.label))
                kept.append(Int64(i))
            } catch {
                guard skipBad else { throw MenagerieError.invalidArgument("\(error) (set skip_bad=true to skip unreadable items)") }
                skipped.append(Skipped(file: "\(name)[\(i)]", reason: "\(error)"))
            }
        }
        guard !labels.isEmpty else { throw MenagerieError.invalidArgument("'\(component)': every item of the batch was unreadable") }
        let n = labels.count, s = source.size
        var tensors: [(name: String, tensor: Tensor)] = [
            ("images", try Tensor(pixels, shape: [n, source.channels, s, s])),
            ("labels", Tensor(labels)),
            ("index", Tensor(kept)),
        ]
        if let ranks = source.rankLabels {
            tensors.append(("rank_labels", try Tensor(labels.flatMap { ranks[Int($0)].map(Int64.init) }, shape: [n, 7])))
        }
        let skippedJSON: [JSONValue] = skipped.map { .object(["file": .string($0.file), "reason": .string($0.reason)]) }
        return Response(
            result: [
                "split": .string(name), "start": .number(Double(start)), "count": .number(Double(n)),
                "total": .number(Double(total)), "classes": .number(Double(source.classNames.count)),
                "skipped": .number(Double(skipped.count)), "skipped_items": .array(skippedJSON),
            ],
            tensors: tensors)
    }

    static func describe(_ source: ItemSource, name: String, extra: [String: JSONValue] = [:], skipped: [Skipped] = []) -> Response {
        var result: [String: JSONValue] = [
            "name": .string(name),
            "classes": .array(source.classNames.map { .string($0) }),
            "channels": .number(Double(source.channels)), "size": .number(Double(source.size)),
            "splits": .object(Dictionary(uniqueKeysWithValues: splitNames.enumerated().map { ($1, JSONValue.number(Double(source.count(split: $0)))) })),
            "skipped": .number(Double(skipped.count)),
            "skipped_items": .array(skipped.map { .object(["file": .string($0.file), "reason": .string($0.reason)]) }),
        ]
        for (k, v) in extra { result[k] = v }
        return Response(result: .object(result))
    }
}

/// A source whose images are resampled to `size × size` (torchvision's antialiased bilinear `Resize`
/// on the [0, 1] tensor), for adapters whose files have a fixed side (MNIST's 28, CIFAR's 32) when a
/// caller asks for another (a distiller at 32 px on MNIST). `size` equal to the native side is the
/// source itself, bit for bit.
struct ResizedSource: ItemSource {
    let base: ItemSource
    let size: Int
    var classNames: [String] { base.classNames }
    var channels: Int { base.channels }
    var rankLabels: [[Int]]? { base.rankLabels }
    func count(split: Int) -> Int { base.count(split: split) }

    func item(split: Int, index: Int) throws -> (pixels: [Float], label: Int) {
        let (pixels, label) = try base.item(split: split, index: index)
        guard size != base.size else { return (pixels, label) }
        let side = base.size, c = base.channels
        // The adapters' pixels are 8-bit values / 255, so the round trip through an Image is exact.
        var image = Image(width: side, height: side, channels: c)
        for ch in 0..<c {
            for i in 0..<(side * side) { image.pixels[i * c + ch] = UInt8((pixels[ch * side * side + i] * 255).rounded()) }
        }
        return (image.resizedFloatCHW(width: size, height: size, filter: .bilinear), label)
    }

    /// `base` at `size` (0: its own side), with the size checked.
    static func make(_ base: ItemSource, size: Int, component: String) throws -> ItemSource {
        guard size != 0, size != base.size else { return base }
        guard (8...1024).contains(size) else {
            throw MenagerieError.invalidArgument("option 'size' of '\(component)' must be 0 (the files' \(base.size) px) or lie in 8…1024, got \(size)")
        }
        return ResizedSource(base: base, size: size)
    }
}
