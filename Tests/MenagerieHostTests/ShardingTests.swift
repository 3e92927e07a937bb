import Formats
import Foundation
import MenagerieHost
import MenagerieKit
import Tensors
import TestSupport
import Testing

/// The split of a file list into shards and chunks, and the merge rules (Sources/MenagerieHost/
/// Sharding.swift, RunMerge.swift). The end-to-end checks through the CLI are in
/// Tests/CLITests/ScaleTests.swift.
@Suite struct ShardingTests {
    /// Every shard of every split: disjoint, contiguous, in order, covering all files; every chunk
    /// starts at a multiple of the batch (so each file is batched as in an unsharded run) and no
    /// shard holds more than one chunk above another.
    @Test func splitsCoverEveryFileOnceInWholeBatches() throws {
        for n in [1, 2, 7, 40, 41, 100, 1000, 4097] {
            for count in [1, 2, 3, 4, 7, 16, 300] {
                for batch in [1, 3, 10] {
                    for chunk in [nil, 1, 5, 64] as [Int?] {
                        let files = (0..<n).map { String(format: "f%06d.png", $0) }
                        let plans = try (0..<count).map { try ShardPlan(files: files, shard: Shard(index: $0, count: count), batch: batch, chunk: chunk) }
                        var next = 0
                        for p in plans {
                            #expect(p.chunk % batch == 0 && p.chunk >= (chunk ?? 1))
                            #expect(p.range.lowerBound == next, "n \(n) count \(count) batch \(batch): shard \(p.shard.index) starts at \(p.range)")
                            next = p.range.upperBound
                            for c in p.chunks {
                                #expect(c.lowerBound % batch == 0 && c.count <= p.chunk && !c.isEmpty)
                            }
                            #expect(p.chunks.reduce(0) { $0 + $1.count } == p.range.count)
                        }
                        #expect(next == n, "n \(n) count \(count): the shards end at \(next)")
                        let sizes = plans.map(\.range.count)
                        #expect(sizes.max()! - sizes.min()! <= plans[0].chunk, "unbalanced: \(sizes)")
                    }
                }
            }
        }
    }

    /// The default chunk spreads a small run over every shard (41 files, 4 shards, batch 10:
    /// 10, 10, 10, 11), and is at most 256 files for a large one.
    @Test func defaultChunksSpreadTheFiles() throws {
        let files = (0..<41).map { "\($0)" }
        let sizes = try (0..<4).map { try ShardPlan(files: files, shard: Shard(index: $0, count: 4), batch: 10).range.count }
        #expect(sizes == [10, 10, 10, 11])
        let big = try ShardPlan(files: (0..<1_000_000).map { "\($0)" }, shard: Shard(index: 5, count: 300), batch: 10)
        #expect(big.chunk == 250 && big.range.count >= 3250 && big.range.count <= 3500)
    }

    /// The split depends on the set of files, not on the order a folder lists them in: files
    /// created in shuffled order are listed sorted, so every task computes the same shards.
    @Test func listingIsSortedWhateverTheCreationOrder() throws {
        let dir = TempDir("listing")
        let names = (0..<30).map { String(format: "img_%02d.png", $0) }
        for name in names.shuffled() { FileManager.default.createFile(atPath: (dir.path + "/" + name), contents: Data()) }
        FileManager.default.createFile(atPath: (dir.path + "/" + "notes.txt"), contents: Data())
        let listed = try FolderFiles.list(dir.path, extensions: ["png"], option: "images", what: "PNG")
        #expect(listed == names.map { dir.path + "/" + $0 })
        // A folder of links names the files as the user did.
        let links = try FolderFiles.linkFolder(Array(listed[3..<6]))
        defer { try? FileManager.default.removeItem(atPath: links) }
        #expect(try FolderFiles.list(links, extensions: ["png"], option: "images", what: "PNG") == Array(listed[3..<6]))
    }

    @Test func shardsAreParsedAndChecked() throws {
        #expect(try Shard.parse("3/4") == Shard(index: 3, count: 4))
        for bad in ["4/4", "-1/4", "1/0", "x/2", "1/2/3", "1", "0/2000000"] {
            #expect(throws: HostError.self, "\(bad)") { try Shard.parse(bad) }
        }
        #expect(try Shard.fromEnvironment([:]) == nil)
        #expect(
            try Shard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"]) == Shard(index: 2, count: 4))
        // Ids that are not a contiguous range from the minimum (--array=1,5,9) cannot be shards.
        #expect(throws: HostError.self) { try Shard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"]) }
    }

    /// JSON maps are joined byte for byte with the files' own separator; strings with braces,
    /// quotes and escapes inside do not confuse the scanner; what lies around must agree.
    @Test func jsonMapsSpliceByteForByte() throws {
        let dir = TempDir("splice")
        let a = "{\"model\": \"m {x}\", \"embeddings\": {\"a\\\"}.png\": [1.5, 2], \"b.png\": {\"k\": [3]}}, \"tail\": 1}\n"
        let b = "{\"model\": \"m {x}\", \"embeddings\": {\"c.png\": [4]}, \"tail\": 1}\n"
        let whole = "{\"model\": \"m {x}\", \"embeddings\": {\"a\\\"}.png\": [1.5, 2], \"b.png\": {\"k\": [3]}, \"c.png\": [4]}, \"tail\": 1}\n"
        try a.write(toFile: (dir.path + "/" + "a.json"), atomically: true, encoding: .utf8)
        try b.write(toFile: (dir.path + "/" + "b.json"), atomically: true, encoding: .utf8)
        try RunMerge.spliceJSON([(dir.path + "/" + "a.json"), (dir.path + "/" + "b.json")], member: "embeddings", to: (dir.path + "/" + "ab.json"))
        #expect(try String(contentsOfFile: (dir.path + "/" + "ab.json"), encoding: .utf8) == whole)
        // Pretty-printed maps keep their newline-and-indent separator.
        let p1 = "{\n  \"results\": {\n    \"v1\": [1],\n    \"v2\": [2]\n  }\n}\n", p2 = "{\n  \"results\": {\n    \"v3\": [3]\n  }\n}\n"
        try p1.write(toFile: (dir.path + "/" + "p1.json"), atomically: true, encoding: .utf8)
        try p2.write(toFile: (dir.path + "/" + "p2.json"), atomically: true, encoding: .utf8)
        try RunMerge.spliceJSON([(dir.path + "/" + "p1.json"), (dir.path + "/" + "p2.json")], member: "results", to: (dir.path + "/" + "p.json"))
        #expect(
            try String(contentsOfFile: (dir.path + "/" + "p.json"), encoding: .utf8)
                == "{\n  \"results\": {\n    \"v1\": [1],\n    \"v2\": [2],\n    \"v3\": [3]\n  }\n}\n")
        let other = "{\"model\": \"another\", \"embeddings\": {\"c.png\": [4]}, \"tail\": 1}\n"
        try other.write(toFile: (dir.path + "/" + "c.json"), atomically: true, encoding: .utf8)
        #expect(throws: HostError.self) {
            try RunMerge.spliceJSON([(dir.path + "/" + "a.json"), (dir.path + "/" + "c.json")], member: "embeddings", to: (dir.path + "/" + "x.json"))
        }
    }

    /// .npy files join along the first axis (any dtype, any trailing shape) and must agree on the rest.
    @Test func npyFilesJoinAlongTheFirstAxis() throws {
        let dir = TempDir("npy")
        let x = try Tensor((0..<12).map { Float($0) }, shape: [2, 3, 2]), y = try Tensor((12..<18).map { Float($0) }, shape: [1, 3, 2])
        try NPY.encode(x).write(to: URL(fileURLWithPath: (dir.path + "/" + "x.npy")))
        try NPY.encode(y).write(to: URL(fileURLWithPath: (dir.path + "/" + "y.npy")))
        _ = try RunMerge.concatenateNPY([(dir.path + "/" + "x.npy"), (dir.path + "/" + "y.npy")], to: (dir.path + "/" + "xy.npy"))
        let xy = try NPY.read(path: (dir.path + "/" + "xy.npy"))
        let values = try xy.scalars(as: Float.self)
        #expect(xy.shape == [3, 3, 2] && values == (0..<18).map { Float($0) })
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: (dir.path + "/" + "xy.npy"))) == NPY.encode(try Tensor((0..<18).map { Float($0) }, shape: [3, 3, 2])))
        try NPY.encode(try Tensor([Float](repeating: 0, count: 4), shape: [1, 4])).write(to: URL(fileURLWithPath: (dir.path + "/" + "z.npy")))
        #expect(throws: HostError.self) {
            try RunMerge.concatenateNPY([(dir.path + "/" + "x.npy"), (dir.path + "/" + "z.npy")], to: (dir.path + "/" + "bad.npy"))
        }
    }

    /// Results: arrays concatenated, declared counts added, equal values kept, the rest per shard.
    @Test func resultsMergeByTheirDeclaredRules() throws {
        let merged = RunMerge.mergeResults(
            [["images": 3, "model": "m", "per_image": [1, 2, 3], "rate": 2.5], ["images": 2, "model": "m", "per_image": [4, 5], "rate": 3.0]],
            sum: ["images"])
        #expect(merged["images"] == 5 && merged["model"] == "m" && merged["per_image"] == [1, 2, 3, 4, 5])
        #expect(merged["rate"] == nil && merged["per_shard"]?["rate"] == [2.5, 3.0])
        #expect(RunMerge.indexParts("overlay_012.png", "overlay_")! == (12, 3, ".png"))
        #expect(RunMerge.indexParts("overlay_x.png", "overlay_") == nil)
    }
}
