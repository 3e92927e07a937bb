import Formats
import Foundation
import MenagerieHost
import MenagerieKit

/// `run --shard I/N`, `--resume`, `--chunk K`: an operation over a folder of files, run as one
/// shard of the sorted file list, in chunks committed one by one (Docs/scale.md).
extension RunCommand {
    /// The sharded run this command asks for, or nil for an ordinary run. Inside a Slurm job array
    /// an operation that maps over files takes its shard from the array; others ignore it.
    func shardedRun(request: RunRequest, output: RunOutput?) throws -> ShardedRun? {
        let spec = request.component.operations.first { $0.name == request.operation }?.sharding
        let given = try shard.map(Shard.parse)
        let fromArray = spec != nil ? try Shard.fromEnvironment() : nil
        guard given != nil || resume || chunk != nil || fromArray != nil else { return nil }
        guard let spec else {
            let able = request.component.operations.filter { $0.sharding != nil }.map(\.name)
            throw HostError(
                .usage,
                "'\(request.component.id)' \(request.operation) does not map over files one by one, so --shard, --resume and --chunk do not apply"
                    + (able.isEmpty ? "" : " (they do to: \(able.joined(separator: ", ")))"))
        }
        guard let output else { throw HostError(.usage, "--shard, --resume and --chunk need --out DIR: the chunks are committed there") }
        guard request.inputs.isEmpty else {
            throw HostError(
                .usage,
                "a sharded run maps over the files of '\(spec.option)'; tensor inputs (\(request.inputs.map(\.name).joined(separator: ", "))) cannot be split: pass files"
            )
        }
        let options = request.effectiveOptions
        // The path the component is given (a folder of links for several files), not the record.
        guard let path = request.options[spec.option]?.stringValue ?? options[spec.option]?.stringValue, !path.isEmpty else {
            throw HostError(
                .usage,
                "a sharded run of '\(request.component.id)' \(request.operation) needs --input \(spec.option)=\(spec.items == "lines" ? "FILE" : "FOLDER")")
        }
        for (condition, why) in (spec.refuses ?? [:]).sorted(by: { $0.key < $1.key }) {
            // "option=value" refuses that value; "option!=value" any other.
            let negated = condition.contains("!=")
            let parts = condition.components(separatedBy: negated ? "!=" : "=")
            guard parts.count == 2, let value = options[parts[0]] else { continue }
            let equal =
                value.stringValue == parts[1]
                || value.doubleValue.map { String(describing: $0) == parts[1] || ($0.rounded() == $0 && abs($0) < 1e15 && String(Int64($0)) == parts[1]) }
                    == true
            if equal != negated {
                throw HostError(.usage, "--set \(parts[0])=\(value.stringValue ?? value.compactText) cannot be sharded: \(why)")
            }
        }
        let files: [String]
        do {
            files =
                spec.items == "lines"
                ? try FolderFiles.lines(path, option: spec.option)
                : try FolderFiles.list(path, extensions: spec.extensions, option: spec.option, what: spec.extensions.map { "." + $0 }.joined(separator: "/"))
        } catch { throw HostError(.usage, "\(error)") }
        let batch = spec.batchOption.flatMap { options[$0]?.intValue } ?? 1
        let plan = try ShardPlan(files: files, shard: given ?? fromArray ?? Shard(index: 0, count: 1), batch: batch, chunk: chunk)
        if let chunk, chunk != plan.chunk {
            writeError(
                "note: --chunk \(chunk) rounded up to \(plan.chunk), a multiple of \(spec.batchOption ?? "batch")=\(batch), so every file is batched as in an unsharded run"
            )
        }
        let identity: JSONValue = [
            "component": .string(request.component.id), "operation": .string(request.operation), "options": request.effectiveOptions,
            "seed": .number(Double(request.effectiveSeed)),
        ]
        return try ShardedRun(plan: plan, spec: spec, output: output, identity: identity, resume: resume)
    }

    /// The manifest in `out` when it is the finished output of a shard of this component (and of
    /// this shard, when --shard is given).
    func finishedShard(_ out: String) -> JSONValue? {
        let path = (out as NSString).expandingTildeInPath + "/result.json"
        guard let text = try? RegularFile.text(path, limit: 256 << 20), let m = try? JSONValue.parse(text, source: path),
            let s = m["sharding"], m["component"]?.stringValue == component, operation == nil || m["operation"]?.stringValue == operation
        else { return nil }
        if let given = try? shard.map(Shard.parse) ?? Shard.fromEnvironment() {
            guard s["index"]?.intValue == given.index, s["count"]?.intValue == given.count else { return nil }
        }
        return m
    }

    func runSharded(_ run: ShardedRun, request: RunRequest, registry: Registry) throws {
        let plan = run.plan
        let pending = run.pending
        let started = Date()
        let noun = run.spec.items == "lines" ? "lines" : "files"
        let range = plan.range.isEmpty ? "no \(noun)" : "\(noun) \(plan.range.lowerBound + 1)–\(plan.range.upperBound)"
        writeError(
            "shard \(plan.shard.index)/\(plan.shard.count): \(range) of \(plan.files.count), in chunks of \(plan.chunk); "
                + "\(plan.chunks.count - pending.count) of \(plan.chunks.count) chunk(s) already committed")
        do { try runChunks(run, pending: pending, request: request, registry: registry, started: started) } catch {
            // Nothing committed yet (a refused option, an unreadable first file): leave no trace.
            if !plan.chunks.isEmpty, run.pending.count == plan.chunks.count { run.discard() }
            throw error
        }
    }

    func runChunks(_ run: ShardedRun, pending: [Range<Int>], request: RunRequest, registry: Registry, started: Date) throws {
        let plan = run.plan
        try withRuntime(registry: registry, seed: seed, global: global, isolation: isolation, json: json) { runtime, progress in
            var base: JSONValue?
            do {
                defer { progress.finish() }
                for (i, chunk) in pending.enumerated() {
                    if cancellationFlag.load(ordering: .relaxed) {
                        throw HostError(
                            .failed,
                            "cancelled by the user: \(plan.chunks.count - pending.count + i) of \(plan.chunks.count) chunks are committed in "
                                + "\(run.output.directory); run the same command with --resume to finish")
                    }
                    let input = try run.chunkInput(chunk)
                    defer {
                        try? FileManager.default.removeItem(atPath: input.folder)
                        Lifecycle.forget(input.folder)
                    }
                    var options = request.options.objectValue ?? [:]
                    options[run.spec.option] = .string(input.path)
                    let chunkStarted = Date()
                    let result = try runtime.invoke(request.component.id, operation: request.operation, options: .object(options), inputs: [])
                    if cancellationFlag.load(ordering: .relaxed) { continue } // the check above reports it
                    let manifest = RunOutput.manifest(
                        component: request.component.id, operation: request.operation, plugin: request.plugin, options: request.effectiveOptions,
                        seed: request.effectiveSeed, inputs: request.inputPaths, result: result, seconds: Date().timeIntervalSince(chunkStarted),
                        version: Menagerie.configuration.version)
                    if faultKill(shard: plan.shard, chunk: chunk, of: plan) { kill(getpid(), SIGKILL) }
                    try run.commit(chunk: chunk, manifest: manifest, tensors: result.tensors, artifacts: result.artifacts)
                }
            }
            if cancellationFlag.load(ordering: .relaxed) {
                throw HostError(.failed, "cancelled by the user; the committed chunks stay in \(run.output.directory): finish with --resume")
            }
            base = RunOutput.manifest(
                component: request.component.id, operation: request.operation, plugin: request.plugin, options: request.effectiveOptions,
                seed: request.effectiveSeed, inputs: request.inputPaths, result: InvocationResult(result: [:]),
                seconds: Date().timeIntervalSince(started), version: Menagerie.configuration.version)
            let final = try run.finish(manifest: base!)
            let files = final["artifacts"]?.arrayValue?.count ?? 0
            if json {
                print(final.prettyText)
            } else {
                print(summary(final["result"] ?? [:]))
                print("wrote \(run.output.directory): result.json and \(files) file\(files == 1 ? "" : "s") (shard \(plan.shard.index)/\(plan.shard.count))")
            }
        }
    }
}

/// Fault injection for the tests of `--resume` (Docs/testing.md): with MENAGERIE_FAULT_KILL=I:C
/// the task running shard I kills itself (SIGKILL) after computing its chunk number C (from 0 in
/// the shard) and before committing it — what a node failure or a preempted job does midway.
func faultKill(shard: Shard, chunk: Range<Int>, of plan: ShardPlan) -> Bool {
    guard let spec = ProcessInfo.processInfo.environment["MENAGERIE_FAULT_KILL"] else { return false }
    let parts = spec.split(separator: ":").compactMap { Int($0) }
    guard parts.count == 2, parts[0] == shard.index else { return false }
    return plan.chunks.firstIndex(of: chunk) == parts[1]
}
