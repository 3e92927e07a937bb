import Foundation
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
    static func batch(_ source: ItemSource, component: String, split name: String, start: Int, count: Int, shuffle: Bool,
                      epoch: Int, seed: UInt64, skipBad: Bool, skippedBefore: [Skipped] = []) throws -> Response {
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
        return Response(result: ["split": .string(name), "start": .number(Double(start)), "count": .number(Double(n)),
                                 "total": .number(Double(total)), "classes": .number(Double(source.classNames.count)),
                                 "skipped": .number(Double(skipped.count)), "skipped_items": .array(skippedJSON)],
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
