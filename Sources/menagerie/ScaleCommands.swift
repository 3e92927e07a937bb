import ArgumentParser
import Formats
import Foundation
import MenagerieHost
import MenagerieKit

/// `menagerie merge OUT SHARD_DIR…`: the outputs of a sharded run's shards as one output, equal to
/// what an unsharded run writes.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge", abstract: "Merge the --out folders of a sharded run's shards into one output.",
        discussion: """
            Every shard of the run must be given once (any order; a glob such as 'run-slurm/shards/*' does). \
            Tensors (.npy) are joined along their first axis through memory maps, CSV and text files row by row, \
            per-file outputs collected; the result is what one unsharded run writes. OUT is written atomically.
            """)

    @Argument(help: "The merged output folder (must not hold another run).", completion: .directory)
    var out: String

    @Argument(help: "The shards' --out folders.", completion: .directory)
    var shards: [String]

    @Flag(name: .long, help: "Print the merged manifest as JSON on stdout.")
    var json = false

    @Flag(name: .long, help: "Replace the outputs of an earlier run in OUT.")
    var force = false

    func run() throws {
        guard !shards.isEmpty else { throw HostError(.usage, "merge needs the shards' folders after OUT: menagerie merge OUT SHARD_DIR…") }
        let output = try RunOutput(directory: out, replace: force)
        installInterruptHandler()
        let final = try RunMerge.mergeShards(shards, into: output)
        if json {
            print(final.prettyText)
        } else {
            print(summary(final["result"] ?? [:]))
            let n = final["artifacts"]?.arrayValue?.count ?? 0
            print("wrote \(output.directory): result.json and \(n) file\(n == 1 ? "" : "s") (merged from \(shards.count) shard\(shards.count == 1 ? "" : "s"))")
        }
    }
}

/// `menagerie slurm COMPONENT [OPERATION] … --array N --out DIR`: a Slurm job array running one
/// shard per task (resumable), and a merge job that starts when every task has succeeded.
struct SlurmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm", abstract: "Run an operation over a folder as a Slurm job array, then merge the shards.",
        discussion: """
            Writes DIR-slurm/array.sbatch (task i runs `menagerie run … --shard i/N --resume --out DIR-slurm/shards/i`) \
            and DIR-slurm/merge.sbatch (`menagerie merge DIR DIR-slurm/shards/*`, after every task succeeded), and submits both \
            with sbatch (--dry-run prints them instead). A task that is killed or fails is resubmitted by running the same \
            command again: finished shards are kept, and a shard that stopped midway continues from its last committed chunk.
            """)

    @OptionGroup var selection: RunSelection

    @Option(name: .long, help: ArgumentHelp("The merged output folder.", valueName: "DIR"))
    var out: String

    @Option(name: .long, help: ArgumentHelp("The number of array tasks (shards).", valueName: "N"))
    var array: Int

    @Option(name: .long, help: ArgumentHelp("sbatch --partition.", valueName: "NAME"))
    var partition: String?

    @Option(name: .long, help: ArgumentHelp("sbatch --time of each task.", valueName: "TIME"))
    var time: String?

    @Option(name: .long, help: ArgumentHelp("sbatch --cpus-per-task (also the tasks' MENAGERIE_THREADS).", valueName: "N"))
    var cpusPerTask: Int?

    @Option(name: .long, help: ArgumentHelp("sbatch --mem of each task.", valueName: "SIZE"))
    var mem: String?

    @Option(name: .long, help: ArgumentHelp("sbatch --account.", valueName: "NAME"))
    var account: String?

    @Option(name: .long, help: ArgumentHelp("sbatch --array throttle: at most this many tasks at once.", valueName: "N"))
    var parallel: Int?

    @Flag(name: .long, help: "Print the two scripts instead of writing and submitting them.")
    var dryRun = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        guard array >= 1, array <= Shard.maxCount else { throw HostError(.usage, "--array must be 1…\(Shard.maxCount) tasks, got \(array)") }
        if let cpusPerTask, cpusPerTask < 1 || cpusPerTask > 4096 { throw HostError(.usage, "--cpus-per-task must be 1…4096, got \(cpusPerTask)") }
        if let parallel, parallel < 1 { throw HostError(.usage, "--parallel must be at least 1, got \(parallel)") }
        for (flag, value) in [("--partition", partition), ("--time", time), ("--mem", mem), ("--account", account)] {
            if let value, value.isEmpty || value.contains(where: { $0.isWhitespace || $0 == "#" || $0 == "'" || $0 == "\"" }) {
                throw HostError(.usage, "\(flag) '\(value)' must be one word without spaces, quotes or '#' (it becomes an #SBATCH line)")
            }
        }
        // The run is checked here, before anything is submitted: the same errors as `run`.
        let registry = try global.registry()
        _ = try selection.checkedPrecision()
        let request = try selection.request(registry)
        defer { for f in request.temporaryFolders { try? FileManager.default.removeItem(atPath: f) } }
        guard request.component.operations.first(where: { $0.name == request.operation })?.sharding != nil else {
            let able = request.component.operations.filter { $0.sharding != nil }.map(\.name)
            throw HostError(
                .usage,
                "'\(request.component.id)' \(request.operation) does not map over files one by one, so it cannot run as a job array"
                    + (able.isEmpty ? "" : " (these operations can: \(able.joined(separator: ", ")))"))
        }
        guard request.temporaryFolders.isEmpty else {
            throw HostError(.usage, "give the job array one folder per input (--input NAME=FOLDER), not several files: the tasks run elsewhere")
        }
        let cwd = FileManager.default.currentDirectoryPath
        func absolute(_ p: String) -> String {
            let e = (p as NSString).expandingTildeInPath
            return ((e.hasPrefix("/") ? e : cwd + "/" + e) as NSString).standardizingPath
        }
        let final = absolute(out)
        let root = final + "-slurm"
        if FileManager.default.fileExists(atPath: final + "/result.json") {
            throw HostError(.usage, "--out \(out) already holds a finished run: choose another folder")
        }
        let exe = absolute(Bundle.main.executablePath ?? CommandLine.arguments[0])
        var args = ["run", request.component.id, request.operation]
        for s in selection.sets { args += ["--set", s] }
        // Paths as the user gave them: the tasks run in this folder (--chdir), and the outputs name
        // the files exactly as a local run does.
        if let config = selection.config { args += ["--config", config] }
        for i in selection.inputs { args += ["--input", i] }
        args += ["--seed", String(selection.seed)]
        if let precision = selection.precision { args += ["--precision", precision] }
        if let chunk = selection.chunk { args += ["--chunk", String(chunk)] }
        if global.safeMode { args.append("--safe-mode") }
        if let lock = global.lock { args += ["--lock", absolute(lock)] }
        let name = "menagerie-\(request.component.id)-\(request.operation)"
        var header = ["#!/bin/bash", "#SBATCH --job-name=\(name)", "#SBATCH --chdir=\(quoted(cwd))"]
        if let partition { header.append("#SBATCH --partition=\(partition)") }
        if let account { header.append("#SBATCH --account=\(account)") }
        let arrayScript =
            (header + [
                "#SBATCH --array=0-\(array - 1)" + (parallel.map { "%\($0)" } ?? ""),
                "#SBATCH --output=\(quoted(root + "/logs/shard-%a.out"))",
            ] + (cpusPerTask.map { ["#SBATCH --cpus-per-task=\($0)"] } ?? []) + (time.map { ["#SBATCH --time=\($0)"] } ?? [])
            + (mem.map { ["#SBATCH --mem=\($0)"] } ?? []) + [
                "# One shard per task; --resume continues a shard that was killed (its committed chunks are kept).",
                "set -euo pipefail",
                "if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export MENAGERIE_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi",
                "shard=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))",
                "exec " + ([exe] + args).map(quoted).joined(separator: " ") + " --shard \"$shard/\(array)\" --resume --out "
                    + quoted(root + "/shards") + "/\"$(printf %05d \"$shard\")\"",
            ]).joined(separator: "\n") + "\n"
        let mergeScript =
            (header.map { $0.replacingOccurrences(of: "--job-name=\(name)", with: "--job-name=\(name)-merge") } + [
                "#SBATCH --output=\(quoted(root + "/logs/merge.out"))",
                "set -euo pipefail",
                "exec \(quoted(exe)) merge \(quoted(final)) " + quoted(root + "/shards") + "/*",
            ]).joined(separator: "\n") + "\n"
        if dryRun {
            print(
                "# \(root)/array.sbatch\n" + arrayScript + "\n# \(root)/merge.sbatch (sbatch --dependency=afterok:<array job>)\n" + mergeScript, terminator: "")
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: root + "/logs", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: root + "/shards", withIntermediateDirectories: true)
            try AtomicFile.write(arrayScript, to: root + "/array.sbatch")
            try AtomicFile.write(mergeScript, to: root + "/merge.sbatch")
        } catch { throw HostError(.failed, "cannot write the job scripts into \(root): \(error)") }
        let job = try sbatch(["--parsable", root + "/array.sbatch"])
        let merge = try sbatch(["--parsable", "--dependency=afterok:\(job)", "--kill-on-invalid-dep=yes", root + "/merge.sbatch"])
        if FileManager.default.fileExists(atPath: final + "/" + ShardedRun.progressName) {
            writeError("note: \(final) holds chunks of an unsharded resumable run; the merge writes beside them")
        }
        print("submitted array job \(job) (\(array) tasks) and merge job \(merge); the merged output will be \(final)")
        writeError("watch: squeue -j \(job),\(merge)   logs: \(root)/logs/   resubmit failed tasks: the same command again")
    }

    /// Runs sbatch with `args`; returns the job id it prints with --parsable.
    func sbatch(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["sbatch"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { throw HostError(.failed, "cannot start sbatch: \(error.localizedDescription) (is Slurm installed and on PATH?)") }
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: o, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard p.terminationStatus == 0, let id = text.split(separator: ";").first, !id.isEmpty, id.allSatisfy(\.isNumber) else {
            throw HostError(
                .failed,
                "sbatch \(args.last ?? "") failed (exit \(p.terminationStatus)): "
                    + String(decoding: e, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) + (text.isEmpty ? "" : " \(text)"))
        }
        return String(id)
    }
}

/// A word for bash, single-quoted when it needs to be.
func quoted(_ s: String) -> String {
    if !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0)) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
