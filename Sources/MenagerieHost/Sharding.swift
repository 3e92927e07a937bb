import Formats
import Foundation
import MenagerieKit

/// One task's part of a run split into `count` shards (`run --shard I/N`, or a Slurm array task).
public struct Shard: Equatable, Sendable {
    public let index: Int
    public let count: Int

    public static let maxCount = 1_000_000

    public init(index: Int, count: Int) throws {
        guard count >= 1, count <= Shard.maxCount else {
            throw HostError(.usage, "--shard: the number of shards must be 1…\(Shard.maxCount), got \(count)")
        }
        guard index >= 0, index < count else {
            throw HostError(.usage, "--shard \(index)/\(count): the shard index must be 0…\(count - 1) (shards are numbered from 0)")
        }
        self.index = index
        self.count = count
    }

    /// `I/N`, shards numbered from 0.
    public static func parse(_ text: String) throws -> Shard {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]) else {
            throw HostError(.usage, "--shard '\(text)' must be I/N, e.g. --shard 0/4 for the first of four shards")
        }
        return try Shard(index: i, count: n)
    }

    /// The shard of a Slurm job-array task: SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of
    /// SLURM_ARRAY_TASK_COUNT tasks; nil outside an array. The array's ids must be contiguous
    /// (`--array=0-N` or `1-N`, as `menagerie slurm` writes it).
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> Shard? {
        guard let idText = env["SLURM_ARRAY_TASK_ID"], let countText = env["SLURM_ARRAY_TASK_COUNT"] else { return nil }
        guard let id = Int(idText), let count = Int(countText) else {
            throw HostError(.usage, "SLURM_ARRAY_TASK_ID '\(idText)' / SLURM_ARRAY_TASK_COUNT '\(countText)' are not integers")
        }
        let minimum = env["SLURM_ARRAY_TASK_MIN"].flatMap { Int($0) } ?? 0
        guard id - minimum >= 0, id - minimum < count else {
            throw HostError(
                .usage,
                "Slurm array task \(id) (ids from \(minimum), \(count) tasks) is not one of \(count) contiguous shards: "
                    + "submit a contiguous array (--array=0-\(count - 1)) or pass --shard I/N")
        }
        return try Shard(index: id - minimum, count: count)
    }
}

/// Which of a run's files one shard takes, and the chunks it commits them in. The files are those
/// the operation reads (`FolderFiles.list`: sorted by name, so the split does not depend on the
/// order a folder lists them in); they are cut into blocks of `chunk` files, and each shard takes a
/// contiguous run of whole blocks, so that every chunk — in any shard, and in an unsharded run
/// with the same `chunk` — starts at a multiple of the operation's batch: every file is batched
/// with the same neighbours, and the merged outputs equal an unsharded run's byte for byte.
public struct ShardPlan: Equatable, Sendable {
    public let files: [String]
    public let shard: Shard
    public let chunk: Int
    /// This shard's files, as indices into `files`.
    public let range: Range<Int>

    /// The largest chunk chosen by default: a killed task loses at most this many files' work.
    public static let defaultMaxChunk = 256

    /// `chunk` (files per committed call) is rounded up to a multiple of `batch`; by default it is
    /// the shard's share of the files in whole batches, at most 256.
    public init(files: [String], shard: Shard, batch: Int = 1, chunk requested: Int? = nil) throws {
        guard !files.isEmpty else { throw HostError(.usage, "there are no input files to split into shards") }
        guard batch >= 1, batch <= 1 << 30 else { throw HostError(.usage, "the operation's batch size \(batch) must be 1…2^30") }
        if let requested {
            guard requested >= 1, requested <= 1 << 30 else { throw HostError(.usage, "--chunk must be 1…2^30 files, got \(requested)") }
        }
        // Requested: rounded up to whole batches. By default: the shard's share rounded down to
        // whole batches (so that the blocks spread over every shard), at most 256 files.
        let share = (files.count + shard.count - 1) / shard.count
        let chunk =
            requested.map { ($0 + batch - 1) / batch * batch } ?? max(batch, min(share, ShardPlan.defaultMaxChunk) / batch * batch)
        let blocks = (files.count + chunk - 1) / chunk
        let first = shard.index * blocks / shard.count, last = (shard.index + 1) * blocks / shard.count
        self.files = files
        self.shard = shard
        self.chunk = chunk
        self.range = min(first * chunk, files.count)..<min(last * chunk, files.count)
    }

    /// The chunks of this shard, each one call of the operation.
    public var chunks: [Range<Int>] {
        stride(from: range.lowerBound, to: range.upperBound, by: chunk).map { $0..<min($0 + chunk, range.upperBound) }
    }
}
