import Formats
import Foundation
import MenagerieKit
import Tensors

/// A run over one shard of a file list, committed chunk by chunk so that a killed task restarts
/// where it stopped (`run --shard I/N --resume`). Each chunk is one call of the operation on a
/// folder of links to its files; its outputs are committed atomically into
/// `OUT/.menagerie-chunks/chunk-<first file>` — a chunk folder either is complete or does not
/// exist, so no file is ever done twice or lost. When every chunk is there they are merged into
/// `OUT` (RunMerge) and the chunk folders removed.
public struct ShardedRun {
    public static let progressName = ".menagerie-chunks"

    public let plan: ShardPlan
    public let spec: ShardingSpec
    public let output: RunOutput
    /// What must match for a resume: component, operation, options, seed, the split.
    public let identity: JSONValue

    public var progressFolder: String { output.directory + "/" + ShardedRun.progressName }

    /// Refuses a folder that holds another run's chunks; with `resume`, keeps chunks of this same
    /// run, otherwise (or with `force`) starts afresh.
    public init(plan: ShardPlan, spec: ShardingSpec, output: RunOutput, identity: JSONValue, resume: Bool) throws {
        self.plan = plan
        self.spec = spec
        self.output = output
        var record = identity.objectValue ?? [:]
        record["shard"] = ["index": .number(Double(plan.shard.index)), "count": .number(Double(plan.shard.count))]
        record["chunk"] = .number(Double(plan.chunk))
        record["files"] = .array(plan.files[plan.range].map { .string($0) })
        record["total"] = .number(Double(plan.files.count))
        self.identity = .object(record)
        let fm = FileManager.default
        let planFile = progressFolder + "/plan.json"
        if fm.fileExists(atPath: progressFolder) {
            if resume, !output.replace {
                let earlier = try? JSONValue.parse(try RegularFile.text(planFile, limit: 1 << 30), source: planFile)
                guard earlier == self.identity else {
                    throw HostError(
                        .usage,
                        "\(output.directory) holds the chunks of a run with other inputs, options or shards (\(planFile)): "
                            + "resume it with the same command, or pass --force to start over")
                }
                return
            }
            if !resume, !output.replace {
                throw HostError(
                    .usage,
                    "\(output.directory) holds an interrupted run (\(ShardedRun.progressName)/): pass --resume to continue it, or --force to start over")
            }
            try? fm.removeItem(atPath: progressFolder)
        }
        do {
            try fm.createDirectory(atPath: progressFolder, withIntermediateDirectories: true)
            try AtomicFile.write(self.identity.prettyText + "\n", to: planFile)
        } catch { throw HostError(.failed, "cannot record the run's plan in \(progressFolder): \(error)") }
    }

    /// The input of one chunk, for the operation's option: a folder of links to its files (named
    /// in outputs as the user named them), or a file of its lines. `folder` is what the caller removes.
    public func chunkInput(_ chunk: Range<Int>) throws -> (path: String, folder: String) {
        let items = Array(plan.files[chunk])
        if spec.items == "lines" {
            let file: String
            do { file = try FolderFiles.linesFile(items) } catch { throw HostError(.failed, "\(error)") }
            let folder = parentPath(file)
            Lifecycle.markOwned(folder)
            Lifecycle.removeOnForcedExit(folder)
            return (file, folder)
        }
        let folder = try RunRequest.linkFolder(items, name: spec.option, listed: items)
        return (folder, folder)
    }

    /// Removes the progress record (and the output folder when nothing else is in it): for a run
    /// that failed before committing anything.
    public func discard() {
        try? FileManager.default.removeItem(atPath: progressFolder)
        if (try? FileManager.default.contentsOfDirectory(atPath: output.directory))?.isEmpty == true {
            try? FileManager.default.removeItem(atPath: output.directory)
        }
    }

    public func chunkFolder(_ chunk: Range<Int>) -> String { progressFolder + String(format: "/chunk-%09d", chunk.lowerBound) }

    /// The chunks not yet committed.
    public var pending: [Range<Int>] {
        plan.chunks.filter { !FileManager.default.fileExists(atPath: chunkFolder($0) + "/result.json") }
    }

    /// The `sharding` block of a manifest covering `range` (the spec goes with it, so that
    /// `menagerie merge` needs no plugin).
    public func shardingRecord(_ range: Range<Int>) -> JSONValue {
        var spec: JSONValue = .null
        if let encoded = try? JSONValue(encoding: self.spec) { spec = encoded }
        return [
            "index": .number(Double(plan.shard.index)), "count": .number(Double(plan.shard.count)),
            "offset": .number(Double(range.lowerBound)), "items": .number(Double(range.count)),
            "total": .number(Double(plan.files.count)), "chunk": .number(Double(plan.chunk)), "spec": spec,
        ]
    }

    /// Commits one chunk's outputs (atomically: the chunk folder appears whole or not at all).
    public func commit(chunk: Range<Int>, manifest: JSONValue, tensors: [(name: String, tensor: Tensor)], artifacts: [Artifact]) throws {
        var m = manifest.objectValue ?? [:]
        m["sharding"] = shardingRecord(chunk)
        try RunOutput(directory: chunkFolder(chunk)).commit(manifest: .object(m), tensors: tensors, artifacts: artifacts)
    }

    /// Merges the committed chunks into the output folder (atomically) and removes them; an empty
    /// shard commits a manifest with no outputs. `manifest` is the run's manifest without result.
    @discardableResult
    public func finish(manifest: JSONValue) throws -> JSONValue {
        let parts = try plan.chunks.map { try RunMerge.Part(folder: chunkFolder($0)) }
        let final = try output.commit { staging in
            var m = manifest.objectValue ?? [:]
            m["sharding"] = shardingRecord(plan.range)
            if parts.isEmpty {
                // Nothing ran: the counts are zero (the operation's other keys are unknown).
                m["result"] = .object(Dictionary(uniqueKeysWithValues: (spec.sum ?? []).map { ($0, JSONValue.number(0)) }))
                m["artifacts"] = []
            } else {
                let merged = try RunMerge.merge(parts, spec: spec, into: staging, consume: true)
                m["result"] = merged.result
                m["artifacts"] = .array(merged.entries)
                m["seconds"] = .number((merged.seconds * 1000).rounded() / 1000)
            }
            let final = JSONValue.object(m)
            guard FileManager.default.createFile(atPath: staging + "/result.json", contents: Data((final.prettyText + "\n").utf8)) else {
                throw HostError(.failed, "cannot write \(staging)/result.json")
            }
            return final
        }
        try? FileManager.default.removeItem(atPath: progressFolder)
        return final
    }
}

extension RunMerge {
    /// `menagerie merge OUT SHARD_DIR…`: the shards of one sharded run (every index once, same
    /// component, operation and options) merged into `output` as an unsharded run writes it.
    @discardableResult
    public static func mergeShards(_ folders: [String], into output: RunOutput) throws -> JSONValue {
        guard !folders.isEmpty else { throw HostError(.usage, "merge needs at least one shard folder") }
        var parts = try folders.map { try Part(folder: ($0 as NSString).standardizingPath) }
        for p in parts where FileManager.default.fileExists(atPath: p.folder + "/" + ShardedRun.progressName) {
            throw HostError(.usage, "\(p.folder) is an unfinished shard (it still holds \(ShardedRun.progressName)/): run it again with --resume")
        }
        let first = parts[0].manifest
        guard let count = first["sharding"]?["count"]?.intValue, let total = first["sharding"]?["total"]?.intValue,
            let specValue = first["sharding"]?["spec"]
        else { throw HostError(.usage, "\(parts[0].folder)/result.json lacks the shard count, total or merge rules: was it written by `run --shard`?") }
        let spec: ShardingSpec
        do { spec = try specValue.decode(ShardingSpec.self) } catch {
            throw HostError(.usage, "\(parts[0].folder)/result.json: unreadable merge rules (\(error))")
        }
        for p in parts {
            for key in ["component", "operation", "options", "seed"] where p.manifest[key] != first[key] {
                throw HostError(.usage, "\(p.folder) differs from \(parts[0].folder) in its \(key): these are not shards of one run")
            }
            guard p.manifest["sharding"]?["count"]?.intValue == count, p.manifest["sharding"]?["total"]?.intValue == total else {
                throw HostError(.usage, "\(p.folder) belongs to a split into another number of shards or files than \(parts[0].folder)")
            }
        }
        parts.sort { ($0.manifest["sharding"]?["index"]?.intValue ?? 0) < ($1.manifest["sharding"]?["index"]?.intValue ?? 0) }
        let indices = parts.map { $0.manifest["sharding"]?["index"]?.intValue ?? -1 }
        let missing = (0..<count).filter { !indices.contains($0) }
        if !missing.isEmpty || indices.count != Set(indices).count {
            throw HostError(
                .usage,
                "merge needs each of the \(count) shards exactly once; "
                    + (missing.isEmpty ? "some are given twice" : "missing: " + missing.prefix(20).map(String.init).joined(separator: ", ")))
        }
        guard parts.reduce(0, { $0 + $1.items }) == total, parts[0].offset == 0 else {
            throw HostError(.usage, "the shards cover \(parts.reduce(0) { $0 + $1.items }) of \(total) files")
        }
        return try output.commit { staging in
            let merged = try merge(parts, spec: spec, into: staging, consume: false)
            var m = first.objectValue ?? [:]
            m.removeValue(forKey: "sharding")
            m["result"] = merged.result
            m["artifacts"] = .array(merged.entries)
            m["seconds"] = .number((merged.seconds * 1000).rounded() / 1000)
            m["merged_from"] = .array(parts.map { .string($0.folder) })
            let final = JSONValue.object(m)
            guard FileManager.default.createFile(atPath: staging + "/result.json", contents: Data((final.prettyText + "\n").utf8)) else {
                throw HostError(.failed, "cannot write \(staging)/result.json")
            }
            return final
        }
    }
}
