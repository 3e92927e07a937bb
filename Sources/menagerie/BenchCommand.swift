import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit
import Tensors

/// `menagerie bench`: measures, never asserts. Every benchmark prints the same record shape:
/// `{"name", "unit", "median", "min", "max", "reference": {"tool", "median"} | null, "ratio"}`
/// (ratio = ours / reference; lower is better for times).
///
/// The host measures only itself here (scans, handshakes, `list`, the invoke paths, the machine's
/// sgemm rate); every other benchmark is declared by the component that owns its workload, in its
/// metadata, and run through the reserved operation `benchmark` (Docs/benchmarks.md).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Run the benchmarks and print min/median/max.")

    @Argument(help: "Only benchmarks whose name matches this glob (e.g. 'invoke.*').")
    var name: String?

    @Option(name: .long, help: "Repetitions per benchmark.")
    var repeats = 20

    @Flag(name: .long, help: "Print the records as a JSON array on stdout.")
    var json = false

    @Flag(name: .long, help: "List the benchmarks (the host's and those the plugins declare) without running them.")
    var list = false

    @Option(name: .long, help: "PyTorch's numbers for the same workloads (written by `make bench-reference`; default $MENAGERIE_BENCH_REFERENCE).")
    var reference: String?

    @OptionGroup var global: GlobalOptions

    struct Reference: Codable {
        let tool: String
        let median: Double
    }

    struct Record: Codable {
        let name: String
        let unit: String
        let median: Double
        let min: Double
        let max: Double
        var reference: Reference?
        var ratio: Double?
        /// The goal for this machine, in the record's unit (shown in the table, not part of the JSON shape).
        var target: Double? = nil
        /// The goal as a ratio to the reference (ours / PyTorch's).
        var ratioTarget: Double? = nil
        enum CodingKeys: String, CodingKey { case name, unit, median, min, max, reference, ratio }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(unit, forKey: .unit)
            try c.encode(median, forKey: .median)
            try c.encode(min, forKey: .min)
            try c.encode(max, forKey: .max)
            try c.encode(reference, forKey: .reference)
            try c.encode(ratio, forKey: .ratio)
        }
    }

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, got \(repeats)") }
    }

    func wanted(_ n: String) -> Bool { name == nil || fnmatch(name!, n, 0) == 0 }

    func record(_ name: String, unit: String, _ samples: [Double], target: Double? = nil) -> Record {
        let s = samples.sorted()
        let median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        return Record(name: name, unit: unit, median: median, min: s.first ?? 0, max: s.last ?? 0, reference: nil, ratio: nil, target: target)
    }

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

    func run() throws {
        let registry = try global.registry()
        if list { return try listBenchmarks(registry: registry) }
        let plugins = registry.entries.filter { $0.status == .ok }
        var records: [Record] = []
        let exe = SearchPath.executablePath

        // Cold scan (spawn + dlopen + handshake + metadata) and the handshake alone, per plugin.
        for p in plugins {
            let short = p.metadata?.name ?? (p.path as NSString).lastPathComponent
            guard wanted("scan.cold.\(short)") || wanted("handshake.\(short)") else { continue }
            var scan: [Double] = [], shake: [Double] = []
            for _ in 0..<repeats {
                let t0 = now()
                let report = ChildProbe().probe([p.path])[p.path]
                scan.append(now() - t0)
                if let us = report?.handshakeMicros { shake.append(us / 1000) }
            }
            if wanted("scan.cold.\(short)") { records.append(record("scan.cold.\(short)", unit: "ms", scan, target: 50)) }
            if wanted("handshake.\(short)"), !shake.isEmpty { records.append(record("handshake.\(short)", unit: "ms", shake, target: 2)) }
        }

        // Warm `menagerie list`: a whole process, registry from the cache.
        if wanted("list.warm") {
            _ = try SpawnedChild(exe, ["list"]).wait(timeout: 60)
            var samples: [Double] = []
            for _ in 0..<repeats {
                let t0 = now()
                let outcome = try SpawnedChild(exe, ["list"]).wait(timeout: 60)
                samples.append(now() - t0)
                guard outcome.termination == .exit(0) else { throw HostError(.failed, "`menagerie list` failed: \(outcome.stderr)") }
            }
            records.append(record("list.warm", unit: "ms", samples, target: 30))
        }

        // Invoke overhead: a tiny request through the whole host path (C and Swift plugin).
        let runtime = try Runtime(registry: registry)
        defer {
            runtime.shutdown()
            runtime.removeScratch()
        }
        // Each call carries options JSON in, a result JSON and tensors out; the work itself is trivial.
        let tiny: [(String, String, JSONValue, [(name: String, tensor: Tensor)])] = [
            (
                "segmentation-metrics", "invoke.c", ["classes": 2],
                [("prediction", try Tensor([UInt8(1)], shape: [1, 1])), ("target", try Tensor([UInt8(1)], shape: [1, 1]))]
            ),
            (
                "classification-metrics", "invoke.swift", ["bins": 1, "topK": [1]],
                [("scores", try Tensor([Float(0.2), 0.8], shape: [1, 2])), ("labels", Tensor([Int32(1)]))]
            ),
        ]
        for (component, benchName, options, inputs) in tiny where wanted(benchName) && registry.components.contains(where: { $0.component.id == component }) {
            let calls = 200
            _ = try runtime.invoke(component, operation: "evaluate", options: options, inputs: inputs)
            var samples: [Double] = []
            for _ in 0..<repeats {
                let t0 = now()
                for _ in 0..<calls { _ = try runtime.invoke(component, operation: "evaluate", options: options, inputs: inputs) }
                samples.append((now() - t0) * 1000 / Double(calls))
            }
            records.append(record(benchName, unit: "µs", samples, target: 20))
        }

        // The same tiny call isolated (a child process, tensors in shared memory): the cost added
        // per call over the in-process path; target ≤ 1 ms (issue 19).
        if wanted("invoke.isolated"), registry.components.contains(where: { $0.component.id == "segmentation-metrics" }) {
            let isolated = try Runtime(registry: registry)
            isolated.isolation = .always
            defer {
                isolated.shutdown()
                isolated.removeScratch()
            }
            let (_, _, options, inputs) = tiny[0]
            _ = try isolated.invoke("segmentation-metrics", operation: "evaluate", options: options, inputs: inputs) // starts the child
            let calls = 200
            var samples: [Double] = []
            for _ in 0..<repeats {
                let t0 = now()
                for _ in 0..<calls { _ = try isolated.invoke("segmentation-metrics", operation: "evaluate", options: options, inputs: inputs) }
                samples.append((now() - t0) * 1000 / Double(calls))
            }
            records.append(record("invoke.isolated", unit: "µs", samples, target: 1000))
        }

        if wanted("sgemm.1024") { records.append(sgemmBenchmark()) }
        records += backendBenchmarks()
        records += convBenchmarks()

        // The plugins' benchmarks: each component measures its own in a fresh isolated child per
        // family (`vit_l14.*`, `load.*`, …), so peak-memory rows see only their own family's work.
        let failures = try pluginBenchmarks(into: &records, registry: registry)

        if let referencePath = reference ?? ProcessInfo.processInfo.environment["MENAGERIE_BENCH_REFERENCE"] {
            records = try attachReference(records, from: referencePath)
        }

        if json {
            try printJSON(records)
            if failures > 0 { throw ExitCode.failure }
            return
        }
        let hasReference = records.contains { $0.reference != nil }
        var rows = [["BENCHMARK", "UNIT", "MEDIAN", "MIN", "MAX"] + (hasReference ? ["REFERENCE", "RATIO"] : []) + ["TARGET"]]
        for r in records {
            var row = [r.name, r.unit, String(format: "%.3f", r.median), String(format: "%.3f", r.min), String(format: "%.3f", r.max)]
            if hasReference {
                row += [r.reference.map { String(format: "%.3f", $0.median) } ?? "-", r.ratio.map { String(format: "%.2f×", $0) } ?? "-"]
            }
            // Rates and shares are better high, times and sizes better low.
            let higherIsBetter = r.unit.hasSuffix("/s") || r.unit == "%"
            row.append(
                r.target.map { (higherIsBetter ? "≥ " : "≤ ") + String(format: "%g", $0) } ?? r.ratioTarget.map {
                    (higherIsBetter ? "≥ " : "≤ ") + String(format: "%g", $0) + "× ref"
                }
                    ?? "-")
            rows.append(row)
        }
        print(table(rows))
        print(
            "(\(repeats) repetitions each\(hasReference ? "; RATIO = our time / reference time (rates inverted), lower is better" : "; no reference: run `make bench-reference` for PyTorch side by side"))"
        )
        if failures > 0 { throw ExitCode.failure }
    }
}
