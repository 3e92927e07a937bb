import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit
import Tensors

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run an operation of a component.",
        discussion: """
            Options come from --config (a JSON object) and then --set KEY=VALUE, typed by the component's \
            schema (`menagerie info COMPONENT`). Inputs are .npy, .png or .jpg files (a folder or other file goes to the option of its name). With --out, the run writes \
            result.json and its artifacts there atomically; Ctrl-C cancels and leaves no partial output.
            """)

    @OptionGroup var selection: RunSelection
    var component: String { selection.component }
    var operation: String? { selection.operation }
    var sets: [String] { selection.sets }
    var config: String? { selection.config }
    var inputs: [String] { selection.inputs }
    var seed: UInt64 { selection.seed }
    var precision: String? { selection.precision }
    var chunk: Int? { selection.chunk }

    @Option(name: .long, help: ArgumentHelp("Write result.json and artifacts into this folder.", valueName: "DIR"), completion: .directory)
    var out: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Run shard I of N (from 0) of an operation over a folder of files (default in a Slurm job array: SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT); needs --out. `menagerie merge` joins the shards.",
            valueName: "I/N"))
    var shard: String?

    @Flag(name: .long, help: "Continue an interrupted run in --out: chunks already committed are kept, the rest run.")
    var resume = false

    @Flag(name: .long, help: "Print the result manifest as JSON on stdout.")
    var json = false

    @Flag(name: .long, help: "Replace the outputs of an earlier run in --out (refused otherwise).")
    var force = false

    @OptionGroup var global: GlobalOptions
    @OptionGroup var isolation: IsolationOptions

    func run() throws {
        // Everything that can be refused is refused before any work starts.
        if let asked = try selection.checkedPrecision() {
            // Plugins read it at their first product, in this process and in isolated children alike.
            setenv("MENAGERIE_PRECISION", asked.rawValue, 1)
            if asked == .bf16, let why = GEMM.bf16Unavailable() {
                FileHandle.standardError.write(Data("warning: --precision bf16: \(why); running in fp32\n".utf8))
            }
        }
        if resume, !force, let out, let done = finishedShard(out) {
            // A resubmitted array task whose shard is already complete.
            writeError("\(out) already holds this shard's finished output: nothing to resume")
            print(summary(done["result"] ?? [:]))
            return
        }
        let output = try out.map { try RunOutput(directory: $0, replace: force) }
        let registry = try global.registry()
        let request = try selection.request(registry)
        defer {
            for f in request.temporaryFolders {
                try? FileManager.default.removeItem(atPath: f)
                Lifecycle.forget(f)
            }
        }
        if let sharded = try shardedRun(request: request, output: output) {
            try runSharded(sharded, request: request, registry: registry)
            return
        }
        let started = Date()
        // The artifacts live in the plugin's scratch folder until committed, so the commit happens
        // while the runtime (which removes that folder on shutdown) is still up.
        try withRuntime(registry: registry, seed: seed, global: global, isolation: isolation, json: json) { runtime, progress in
            let result: InvocationResult
            do {
                defer { progress.finish() }
                result = try runtime.invoke(component, operation: request.operation, options: request.options, inputs: request.inputs)
            }
            if cancellationFlag.load(ordering: .relaxed) { throw HostError(.failed, "cancelled by the user: nothing was written") }
            let manifest = RunOutput.manifest(
                component: request.component.id, operation: request.operation, plugin: request.plugin,
                options: request.effectiveOptions, seed: request.effectiveSeed, inputs: request.inputPaths, result: result,
                seconds: Date().timeIntervalSince(started), version: Menagerie.configuration.version)
            // A component may hand the CLI a text to show instead of the summary (`display`: a
            // table or CSV the user asked for with format=…); it is not kept in result.json.
            let display = result.result["display"]?.stringValue
            if let output {
                let artifacts = result.artifacts + (try metricsLog(progress.log, scratch: runtime.scratchRoot, beside: result))
                let final = try output.commit(manifest: manifest, tensors: result.tensors, artifacts: artifacts)
                let files = final["artifacts"]?.arrayValue?.compactMap { $0["file"]?.stringValue } ?? []
                // Top-level entries, folders once ("images/"), in the manifest's order.
                var tops: [String] = []
                for f in files {
                    let parts = f.split(separator: "/", maxSplits: 1)
                    let top = String(parts[0]) + (parts.count > 1 ? "/" : "")
                    if !tops.contains(top) { tops.append(top) }
                }
                let wrote =
                    "wrote \(output.directory): result.json" + (files.isEmpty ? "" : " and \(files.count) file\(files.count == 1 ? "" : "s")")
                    + (tops.isEmpty ? "" : " (" + tops.prefix(6).joined(separator: ", ") + (tops.count > 6 ? ", …" : "") + ")")
                if json {
                    print(final.prettyText)
                } else if let display {
                    print(display, terminator: display.hasSuffix("\n") ? "" : "\n")
                    writeError(wrote)
                } else {
                    print(summary(result.result))
                    print(wrote)
                }
            } else {
                if json {
                    print(manifest.prettyText)
                } else {
                    if let display { print(display, terminator: display.hasSuffix("\n") ? "" : "\n") } else { print(summary(result.result)) }
                    for (name, t) in result.tensors { writeError("tensor \(name): \(t.dtype.name) \(t.shape)") }
                    let n = result.tensors.count + result.artifacts.count
                    if n > 0 { writeError("note: pass --out DIR to keep the \(n) output(s)") }
                }
            }
        }
    }
}

/// The metrics the run recorded as log.csv (metrics-log.csv when the component wrote a log.csv of
/// its own), ready to be committed with the artifacts; nothing when none were recorded.
func metricsLog(_ log: MetricsLog, scratch: String, beside result: InvocationResult) throws -> [Artifact] {
    guard !log.isEmpty else { return [] }
    let taken = Set(result.artifacts.map(\.name) + result.tensors.map { $0.name + ".npy" })
    let name = taken.contains("log.csv") ? "metrics-log.csv" : "log.csv"
    let folder = scratch + "/.menagerie-log"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let path = folder + "/" + name
    guard FileManager.default.createFile(atPath: path, contents: Data(log.csv().utf8)) else {
        throw HostError(.failed, "cannot write \(path)")
    }
    return [Artifact(path: path, name: name)]
}

/// Runs `body` with a runtime (shut down and its scratch folder removed afterwards), a progress bar
/// on stderr and Ctrl-C wired to the cancellation flag.
func withRuntime<T>(
    registry: Registry, seed: UInt64, global: GlobalOptions, isolation: IsolationOptions? = nil, json: Bool = false,
    _ body: (Runtime, StderrProgress) throws -> T
) throws -> T {
    Lifecycle.sweep() // scratch folders of runs that were killed outright
    let runtime = try Runtime(registry: registry, seed: seed, lock: try global.lockFile())
    runtime.safeMode = global.isSafeMode
    if let isolation { try isolation.apply(to: runtime) }
    defer {
        runtime.shutdown()
        runtime.removeScratch()
    }
    let progress = StderrProgress(textToStderr: json) // --json: stdout is one JSON document
    runtime.progressSink = progress
    installInterruptHandler()
    return try body(runtime, progress)
}

/// The key numbers of a result, one `key  value` line each: scalars, short arrays inline, small
/// objects flattened one level (`average.map`); long arrays and large objects as a count. At most 30
/// lines; `--json` (or result.json) has everything.
func summary(_ result: JSONValue) -> String {
    func scalar(_ v: JSONValue) -> String? {
        switch v {
        case .number(let d):
            if d.rounded() == d, abs(d) < 1e15 { return String(Int64(d)) }
            return String(format: "%.6g", d)
        case .string(let s): return s.count <= 80 ? s : String(s.prefix(77)) + "…"
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        default: return nil
        }
    }
    func short(_ v: JSONValue) -> String {
        if let s = scalar(v) { return s }
        if let a = v.arrayValue {
            let parts = a.compactMap(scalar)
            if parts.count == a.count, a.count <= 8 { return "[" + parts.joined(separator: ", ") + "]" }
            return "[\(a.count) values]"
        }
        return "{\(v.objectValue?.count ?? 0) keys}"
    }
    guard let object = result.objectValue else { return short(result) }
    var rows: [[String]] = []
    for key in object.keys.sorted() where key != "artifacts" && key != "display" {
        let v = object[key]!
        if let inner = v.objectValue, !inner.isEmpty, inner.count <= 8, inner.values.allSatisfy({ scalar($0) != nil }) {
            for k in inner.keys.sorted() { rows.append([key + "." + k, short(inner[k]!)]) }
        } else {
            rows.append([key, short(v)])
        }
    }
    if rows.isEmpty { return "(no result values; see --json)" }
    var text = table(Array(rows.prefix(30)))
    if rows.count > 30 { text += "\n… \(rows.count - 30) more (result.json or --json has them all)" }
    return text
}

/// Where plugins run: in this process, or in a child with limits (`Isolation`).
struct IsolationOptions: ParsableArguments {
    @Flag(
        name: .long,
        help:
            "Run the plugin in a child process (shared-memory tensors, a crash becomes an error). Default for plugins outside the built-in folder; also MENAGERIE_ISOLATE=1."
    )
    var isolate = false

    @Flag(name: .customLong("no-isolate"), help: "Run every plugin in this process, trusted third-party ones too (MENAGERIE_ISOLATE=0).")
    var noIsolate = false

    @Option(name: .long, help: ArgumentHelp("With isolation: kill a call that takes longer (MENAGERIE_ISOLATE_TIMEOUT).", valueName: "SECONDS"))
    var timeout: Double?

    @Option(
        name: .customLong("memory-limit"),
        help: ArgumentHelp("With isolation: the child's data-segment limit, e.g. 4G (MENAGERIE_ISOLATE_MEMORY, bytes).", valueName: "BYTES"))
    var memoryLimit: String?

    func apply(to runtime: Runtime) throws {
        if isolate && noIsolate { throw HostError(.usage, "--isolate and --no-isolate contradict each other: choose one") }
        if isolate { runtime.isolation = .always }
        if noIsolate { runtime.isolation = .never }
        if let timeout {
            guard timeout.isFinite, timeout > 0 else { throw HostError(.usage, "--timeout \(timeout): give a positive number of seconds") }
            runtime.isolationLimits.timeout = timeout
        }
        if let memoryLimit { runtime.isolationLimits.memory = try Self.bytes(memoryLimit) }
    }

    /// "4G", "512M", "100000" → bytes.
    static func bytes(_ text: String) throws -> Int {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var t = text.uppercased()
        if t.hasSuffix("B") { t.removeLast() }
        var scale = 1
        if let u = t.last, let f = units[u] {
            scale = f
            t.removeLast()
        }
        guard let v = Double(t), v.isFinite, v > 0, v * Double(scale) < 9e18, v * Double(scale) >= 1_048_576 else {
            throw HostError(.usage, "--memory-limit \(text): give a size of at least 1M, e.g. 512M or 4G")
        }
        return Int(v * Double(scale))
    }
}

/// `menagerie _isolate`: the child that runs isolated plugins (internal: started by the host).
struct IsolateChildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "_isolate", abstract: "Serve isolated plugin calls on fd 3 (internal).",
        shouldDisplay: false)
    @Option var scratch: String
    @Option var seed: UInt64 = 0
    @Option(name: .customLong("memory-limit")) var memoryLimit: Int?
    @OptionGroup var global: GlobalOptions

    func run() throws {
        if let memoryLimit { IsolationServer.limitMemory(memoryLimit) }
        let registry = try global.registry()
        let runtime = try Runtime(registry: registry, seed: seed, scratchRoot: scratch, lock: try global.lockFile())
        runtime.isolation = .never
        IsolationServer.serve(runtime: runtime)
    }
}

/// Ctrl-C and SIGTERM set the cancellation flag (plugins see it through `is_cancelled`); a second
/// signal, or a plugin that does not stop in time, ends the process after removing its folders.
func installInterruptHandler() {
    Lifecycle.installSignalHandling()
}

/// What `run` and `slurm` both take to name one run: the component, its operation, options,
/// inputs, seed, precision and chunk size (one declaration, so the two commands cannot drift).
struct RunSelection: ParsableArguments {
    @Argument(help: "The component id (see `menagerie list`).", completion: .custom { ShellCompletion.components($0, $1, $2) })
    var component: String

    @Argument(help: "The operation (default: the component's first).", completion: .custom { ShellCompletion.operations($0, $1, $2) })
    var operation: String?

    @Option(
        name: .customLong("set"), help: ArgumentHelp("Set an option.", valueName: "KEY=VALUE"),
        completion: .custom { ShellCompletion.setValues($0, $1, $2) })
    var sets: [String] = []

    @Option(
        name: .long, help: ArgumentHelp("Options as a JSON object (applied before --set).", valueName: "FILE.json"),
        completion: .file(extensions: ["json"]))
    var config: String?

    @Option(
        name: .customLong("input"),
        help: ArgumentHelp(
            "An input file (.npy/.png/.jpg tensor), or a folder or files for a folder option; repeat a NAME or use a glob ('photos/*.jpg') for several files.",
            valueName: "NAME=PATH"),
        completion: .custom { ShellCompletion.inputValues($0, $1, $2) })
    var inputs: [String] = []

    @Option(name: .long, help: "The run's seed: the default of the component's own seed option, and the seed of the host services.")
    var seed: UInt64 = 0

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Inference arithmetic: fp32, or bf16 (linear layers' products in bfloat16 through oneDNN, fp32 accumulation; needs a CPU with avx512_bf16 or AMX). Also MENAGERIE_PRECISION.",
            valueName: "fp32|bf16"))
    var precision: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Files per committed chunk of a sharded or resumable run (a multiple of the operation's batch; default: the shard's share, at most 256).",
            valueName: "K"))
    var chunk: Int?

    /// The --precision asked for, checked (nil when not given).
    func checkedPrecision() throws -> Precision? {
        guard let precision else { return nil }
        guard let asked = Precision(rawValue: precision) else { throw HostError(.usage, "--precision must be fp32 or bf16, got '\(precision)'") }
        return asked
    }

    /// The run's request, checked against the registry (component, operation, options, inputs).
    func request(_ registry: Registry) throws -> RunRequest {
        try RunRequest(registry: registry, component: component, operation: operation, config: config, sets: sets, inputs: inputs, seed: seed)
    }
}
