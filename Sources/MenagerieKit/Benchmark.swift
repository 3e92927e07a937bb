import Foundation
import Tensors

/// One benchmark a component declares in its metadata (`"benchmarks"` of the component): the CLI
/// lists it (`menagerie bench --list`), runs it through the reserved operation `benchmark` and
/// reports it (Docs/benchmarks.md).
public struct BenchmarkSpec: Codable, Sendable, Equatable {
    /// Globally unique, dotted: `family.workload` (lower-case letters, digits, '.', '_', '-').
    public var name: String
    /// "ms", "s", "µs", "images/s", "%", "× weights", … A unit ending in "/s" or equal to "%" is
    /// better high; every other is better low.
    public var unit: String
    /// One line: what is timed.
    public var summary: String
    /// The goal on the reference machine, in `unit` (at least for rates and shares, at most otherwise).
    public var target: Double?
    /// The goal as ours / reference (`menagerie bench --reference`), e.g. 0.85.
    public var ratioTarget: Double?

    enum CodingKeys: String, CodingKey { case name, unit, summary, target, ratioTarget = "ratio_target" }

    public init(_ name: String, unit: String, summary: String, target: Double? = nil, ratioTarget: Double? = nil) {
        self.name = name
        self.unit = unit
        self.summary = summary
        self.target = target
        self.ratioTarget = ratioTarget
    }
}

/// One measured benchmark: the samples of one declared name.
public struct BenchmarkRecord: Sendable {
    public struct Reference: Sendable {
        public var tool: String
        public var median: Double
        public init(tool: String, median: Double) {
            self.tool = tool
            self.median = median
        }
    }

    public var name: String
    public var unit: String
    public var samples: [Double]
    /// Overrides the declared target (rarely needed).
    public var target: Double?
    public var ratioTarget: Double?
    /// A reference measured in the same run (e.g. another tool on the same files).
    public var reference: Reference?

    public init(name: String, unit: String, samples: [Double], target: Double? = nil) {
        self.name = name
        self.unit = unit
        self.samples = samples
        self.target = target
    }

    public var median: Double {
        let s = samples.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    var json: JSONValue {
        var o: [String: JSONValue] = ["name": .string(name), "unit": .string(unit), "samples": .array(samples.map { .number($0) })]
        if let target { o["target"] = .number(target) }
        if let ratioTarget { o["ratio_target"] = .number(ratioTarget) }
        if let reference { o["reference"] = ["tool": .string(reference.tool), "median": .number(reference.median)] }
        return .object(o)
    }
}

/// One `benchmark` call: which of the component's benchmarks the host wants, how many repetitions,
/// and what the component measured. A component's `benchmark(_:)` checks `wanted(name)` and appends
/// to `records`:
///
/// ```swift
/// static let benchmarks = [BenchmarkSpec("my.forward", unit: "ms", summary: "one forward at batch 1")]
/// func benchmark(_ run: BenchmarkRun) throws {
///     if run.wanted("my.forward") {
///         run.records.append(run.record("my.forward", unit: "ms", try Benchmark.measure(repeats: run.repeats) { _ = try model.forward(x) }))
///     }
/// }
/// ```
// @unchecked: one `benchmark` call owns it on the calling thread; `records` and `notes` are never shared while it runs.
public final class BenchmarkRun: @unchecked Sendable {
    /// The declared benchmarks asked for (the CLI's glob applied).
    public let names: [String]
    /// Repetitions asked for (`menagerie bench --repeats`, default 20); a benchmark may use fewer
    /// for long workloads, as each documents.
    public let repeats: Int
    public let host: PluginHost
    /// What this call measured; only names in `names` are reported.
    public var records: [BenchmarkRecord] = []
    /// Lines the CLI prints on stderr (e.g. a comparison made in the same run).
    public var notes: [String] = []

    public init(names: [String], repeats: Int, host: PluginHost) {
        self.names = names
        self.repeats = repeats
        self.host = host
    }

    /// True when `name` was asked for; a name ending in "." asks whether any benchmark of that family was.
    public func wanted(_ name: String) -> Bool {
        name.hasSuffix(".") ? names.contains { $0.hasPrefix(name) } : names.contains(name)
    }

    /// A record of `samples` (in `unit`).
    public func record(_ name: String, unit: String, _ samples: [Double], target: Double? = nil) -> BenchmarkRecord {
        BenchmarkRecord(name: name, unit: unit, samples: samples, target: target)
    }

    /// Milliseconds on a monotonic clock.
    public func now() -> Double { Benchmark.now() }

    /// A scratch folder of this plugin (removed when the host exits).
    public var scratch: String { host.scratchDirectory }

    /// True when the host can resolve the component `id` (of any plugin).
    public func has(_ id: String) -> Bool { (try? host.resolve(id)) != nil }

    /// Calls a component (of this plugin or another) through the host, as `menagerie run` would.
    public func invoke(
        _ component: String, operation: String, options: JSONValue = .object([:]),
        inputs: [(name: String, tensor: Tensor)] = []
    ) throws -> ComponentProxy.Result {
        try host.resolve(component).invoke(operation, options: options, inputs: inputs)
    }

    var resultJSON: JSONValue {
        let kept = records.filter { names.contains($0.name) }
        var o: [String: JSONValue] = ["records": .array(kept.map(\.json))]
        if !notes.isEmpty { o["notes"] = .array(notes.map { .string($0) }) }
        return .object(o)
    }
}

/// Timing helpers for benchmarks.
public enum Benchmark {
    /// Milliseconds on a monotonic clock.
    public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

    /// Runs `body` `warmup` times untimed, then `repeats` times; the milliseconds of each timed call.
    public static func measure(repeats: Int, warmup: Int = 1, _ body: () throws -> Void) rethrows -> [Double] {
        for _ in 0..<warmup { try body() }
        var samples: [Double] = []
        for _ in 0..<max(1, repeats) {
            let t0 = now()
            try body()
            samples.append(now() - t0)
        }
        return samples
    }
}

/// The process's resident-set high-water mark (VmHWM), which Linux resets on request.
public enum PeakMemory {
    /// Resets the high-water mark to the current resident set and returns it (bytes).
    public static func resetAndRead() -> Int {
        if let f = fopen("/proc/self/clear_refs", "w") {
            fputs("5", f)
            fclose(f)
        }
        return read()
    }

    /// VmHWM in bytes.
    public static func read() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return 0
    }
}

/// Runs the reserved operation `benchmark` of a component: options `{"names": [...], "repeats": N}`
/// (unknown keys ignored), result `{"records": [{"name", "unit", "samples", ...}], "notes": [...]}`.
func runBenchmark<C: Component>(_ component: C, options: JSONValue, host: PluginHost) throws -> Response {
    let declared = C.benchmarks.map(\.name)
    var names = options["names"]?.arrayValue?.compactMap(\.stringValue) ?? []
    if let one = options["name"]?.stringValue { names.append(one) }
    if names.isEmpty { names = declared }
    for n in names where !declared.contains(n) {
        throw MenagerieError.notFound("'\(C.id)' declares no benchmark '\(n)'.\(didYouMean(n, in: declared)) Benchmarks: \(declared.joined(separator: ", ")).")
    }
    let repeats = options["repeats"]?.intValue ?? 20
    guard repeats >= 1 else { throw MenagerieError.invalidArgument("benchmark repeats must be at least 1, got \(repeats)") }
    let run = BenchmarkRun(names: names, repeats: repeats, host: host)
    try component.benchmark(run)
    return Response(result: run.resultJSON)
}
