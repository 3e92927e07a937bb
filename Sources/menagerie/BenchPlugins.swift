import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit
import Tensors

/// The host's side of the plugins' benchmarks: discovery from the registry's metadata, one
/// `benchmark` call per component and family in a fresh isolated child, checks of what comes back,
/// and the reference file of `scripts/bench-reference.py`.
extension BenchCommand {
    /// The benchmarks of the host itself (what `--list` shows for them; `<plugin>` stands for each plugin).
    static let hostBenchmarks: [BenchmarkSpec] = [
        BenchmarkSpec("scan.cold.<plugin>", unit: "ms", summary: "one child-process scan of the plugin file (spawn, dlopen, handshake, metadata)", target: 50),
        BenchmarkSpec("handshake.<plugin>", unit: "ms", summary: "inside that child: ELF check, dlopen, entry, checks, metadata", target: 2),
        BenchmarkSpec("list.warm", unit: "ms", summary: "a whole `menagerie list` process, registry from the cache", target: 30),
        BenchmarkSpec("invoke.c", unit: "µs", summary: "one tiny in-process call into segmentation-metrics (C)", target: 20),
        BenchmarkSpec("invoke.swift", unit: "µs", summary: "one tiny in-process call into classification-metrics (Swift)", target: 20),
        BenchmarkSpec("invoke.isolated", unit: "µs", summary: "the invoke.c call into an isolated child", target: 1000),
        BenchmarkSpec("sgemm.1024", unit: "GFLOP/s", summary: "one 1024³ cblas_sgemm through the GEMM interface (the machine's fp32 rate)"),
        BenchmarkSpec("gemm.1024.openblas", unit: "GFLOP/s", summary: "1024³ through OpenBLAS (fp32), whatever MENAGERIE_BACKEND says"),
        BenchmarkSpec("gemm.1024.onednn", unit: "GFLOP/s", summary: "1024³ through oneDNN's matmul, fp32 (absent without oneDNN)"),
        BenchmarkSpec("gemm.1024.onednn_bf16", unit: "GFLOP/s", summary: "1024³ through oneDNN with bf16 operands, fp32 accumulation"),
        BenchmarkSpec("gemm.vit_mlp.openblas", unit: "GFLOP/s", summary: "ViT-B/16's MLP product, 197 tokens × 768 → 3072 (weight transposed), OpenBLAS"),
        BenchmarkSpec("gemm.vit_mlp.onednn", unit: "GFLOP/s", summary: "the same product through oneDNN, fp32"),
        BenchmarkSpec("gemm.vit_mlp.onednn_bf16", unit: "GFLOP/s", summary: "the same product through oneDNN with bf16 operands (converted per call)"),
        BenchmarkSpec(
            "conv.<layer>.<pass>.<path>", unit: "ms",
            summary:
                "ConvNet-3's 3×3 convolutions at batch 256 (layer first_32: 3→128 at 32², c128_32/16/8: 128→128; ipc10_*: DC's 10 synthetic images at 28², 14², 7²), pass forward / backward_data / backward_weights (+bias), path ours (im2col + sgemm) / onednn / onednn_plain (NCHW primitive, no reorders)"
        ),
    ]

    /// The `conv.*` layers: ConvNet-3 (dataset distillation) at batch 256, with a 128 → 128 layer at 32²
    /// too (ConvNet-3 on 64² inputs, and the largest of the measured rule's shapes).
    static let convLayers: [(String, OneDNNConv.Geometry)] = [
        ("first_32", .init(n: 256, c: 3, h: 32, w: 32, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
        ("c128_32", .init(n: 256, c: 128, h: 32, w: 32, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
        ("c128_16", .init(n: 256, c: 128, h: 16, w: 16, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
        ("c128_8", .init(n: 256, c: 128, h: 8, w: 8, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
        // DC's synthetic batch: 10 images per class at 28² (IPC 10).
        ("ipc10_first_28", .init(n: 10, c: 3, h: 28, w: 28, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
        ("ipc10_c128_14", .init(n: 10, c: 128, h: 14, w: 14, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
        ("ipc10_c128_7", .init(n: 10, c: 128, h: 7, w: 7, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))),
    ]

    /// ConvNet-3's convolutions through ours and oneDNN, interleaved sample by sample so a change in the
    /// shared machine's load hits every path alike (`conv.*`, milliseconds per call).
    func convBenchmarks() -> [Record] {
        var out: [Record] = []
        var paths = OneDNNConv.Path.allCases
        if case .failure(let why) = OneDNNBackend.load() {
            if wanted("conv.*.onednn*") { warn("conv.*.onednn: not measured: \(why.reason)") }
            paths = [.ours]
        }
        let passes: [(String, OneDNNConv.Kind)] = [("forward", .forward), ("backward_data", .backwardData), ("backward_weights", .backwardWeights)]
        for (layer, geometry) in Self.convLayers {
            for (pass, kind) in passes {
                let names = paths.map { "conv.\(layer).\(pass).\($0.rawValue)" }
                let chosen = zip(names, paths).filter { wanted($0.0) }
                guard !chosen.isEmpty else { continue }
                var samples = [[Double]](repeating: [], count: chosen.count)
                for _ in 0..<max(3, repeats) {
                    for (i, (name, path)) in chosen.enumerated() {
                        if let s = OneDNNConv.measure(geometry, kind, path, samples: 1) { samples[i] += s } else { warn("\(name): oneDNN failed") }
                    }
                }
                for (i, (name, _)) in chosen.enumerated() where !samples[i].isEmpty { out.append(record(name, unit: "ms", samples[i])) }
            }
        }
        return out
    }

    /// The sgemm rate everything else is measured against: 1024³ products (`GEMM.measureRate`).
    func sgemmBenchmark() -> Record { record("sgemm.1024", unit: "GFLOP/s", GEMM.measureRate(samples: max(5, repeats))) }

    /// The same products through each backend, one after another in this process (`gemm.*`): what
    /// MENAGERIE_BACKEND=onednn and bf16 products buy at a large square and at ViT-B/16's MLP shape.
    /// Without oneDNN only the OpenBLAS rows are measured and a note says why.
    func backendBenchmarks() -> [Record] {
        var out: [Record] = []
        var backends: [(String, any GEMMBackend)] = [("openblas", OpenBLASBackend())]
        switch OneDNNBackend.load() {
        case .success:
            backends.append(("onednn", OneDNNBackend(minimumFlops: 0)))
            if OneDNNBackend.hasNativeBF16 { backends.append(("onednn_bf16", OneDNNBackend(bf16: true))) }
        case .failure(let why):
            if wanted("gemm.*.onednn*") { warn("gemm.*.onednn: not measured: \(why.reason)") }
        }
        let shapes: [(String, m: Int, n: Int, k: Int, transposeB: Bool)] = [("1024", 1024, 1024, 1024, false), ("vit_mlp", 197, 3072, 768, true)]
        for (shape, m, n, k, transposeB) in shapes {
            for (label, backend) in backends where wanted("gemm.\(shape).\(label)") {
                let samples = GEMM.measureRate(samples: max(5, repeats), m: m, n: n, k: k, transposeB: transposeB, backend: backend)
                out.append(record("gemm.\(shape).\(label)", unit: "GFLOP/s", samples))
            }
        }
        return out
    }

    /// Runs the wanted benchmarks the plugins declare; returns how many calls failed (each reported
    /// on stderr with the plugin and component at fault; the others still run).
    func pluginBenchmarks(into records: inout [Record], registry: Registry) throws -> Int {
        let (declared, shadowed) = PluginBenchmarks.declared(in: registry)
        for d in shadowed where wanted(d.spec.name) {
            warn("benchmark '\(d.spec.name)' of '\(d.component)' (plugin \(d.plugin.name)) is left out: an earlier plugin on the search path declares it")
        }
        // One call per component and family (the name up to its first '.'), in declaration order.
        var groups: [(key: String, benchmarks: [PluginBenchmarks.Declared])] = []
        for d in declared where wanted(d.spec.name) {
            let key = d.component + "/" + (d.spec.name.split(separator: ".").first.map(String.init) ?? d.spec.name)
            if let i = groups.firstIndex(where: { $0.key == key }) { groups[i].benchmarks.append(d) } else { groups.append((key, [d])) }
        }
        var failures = 0
        for (_, asked) in groups {
            let component = asked[0].component, plugin = asked[0].plugin.name
            do {
                // A fresh isolated child per call: the plugin times its workload in that process
                // (as `run` would in process), and peak-memory rows start from a new process.
                let result = try withRuntime(registry: registry, seed: 0, global: global) { runtime, _ in
                    runtime.isolation = .always
                    return try runtime.invoke(
                        component, operation: "benchmark",
                        options: PluginBenchmarks.request(names: asked.map(\.spec.name), repeats: repeats))
                }
                let parsed = try PluginBenchmarks.parse(result.result, asked: asked, component: component, plugin: plugin)
                for e in parsed.errors {
                    failures += 1
                    warn(e)
                }
                for note in parsed.notes { warn("\(component): \(note)") }
                for name in parsed.missing { warn("\(name): not measured (plugin '\(plugin)', component '\(component)' reported nothing for it)") }
                for r in parsed.records {
                    var rec = record(r.name, unit: r.unit, r.samples, target: r.target)
                    rec.ratioTarget = r.ratioTarget
                    if let ref = r.reference {
                        rec.reference = Reference(tool: ref.tool, median: ref.median)
                        rec.ratio = Self.ratio(ours: rec.median, reference: ref.median, unit: rec.unit)
                    }
                    records.append(rec)
                }
            } catch {
                failures += 1
                let message = "\(error)"
                let named = message.contains(plugin) ? message : "plugin '\(plugin)', component '\(component)': \(message)"
                warn("benchmark \(asked.map(\.spec.name).joined(separator: ", ")) failed: \(named)")
            }
        }
        return failures
    }

    func warn(_ line: String) { FileHandle.standardError.write(Data("menagerie bench: \(line)\n".utf8)) }

    /// A time ratio either way: ours / reference for times, reference / ours for rates.
    static func ratio(ours: Double, reference m: Double, unit: String) -> Double {
        unit.hasSuffix("/s") ? m / ours : ours / m
    }

    /// `--list`: every benchmark with its unit, owner and summary, without running anything.
    func listBenchmarks(registry: Registry) throws {
        struct Row: Encodable {
            let name, unit, summary: String
            let component, plugin: String?
            let target, ratioTarget: Double?
            enum CodingKeys: String, CodingKey { case name, unit, summary, component, plugin, target, ratioTarget = "ratio_target" }
        }
        var rows = Self.hostBenchmarks.filter { wanted($0.name) || $0.name.contains("<") }.map {
            Row(name: $0.name, unit: $0.unit, summary: $0.summary, component: nil, plugin: nil, target: $0.target, ratioTarget: $0.ratioTarget)
        }
        rows += PluginBenchmarks.declared(in: registry).benchmarks.filter { wanted($0.spec.name) }.map {
            Row(
                name: $0.spec.name, unit: $0.spec.unit, summary: $0.spec.summary, component: $0.component, plugin: $0.plugin.name,
                target: $0.spec.target, ratioTarget: $0.spec.ratioTarget)
        }
        if name != nil { rows = rows.filter { !$0.name.contains("<") || wanted($0.name) } }
        if json { return try printJSON(rows) }
        print(
            table(
                [["BENCHMARK", "UNIT", "COMPONENT", "PLUGIN", "SUMMARY"]]
                    + rows.map {
                        [$0.name, $0.unit, $0.component ?? "(host)", $0.plugin ?? "-", $0.summary]
                    }))
    }

    /// Puts the reference's median beside each record of the same name (`scripts/bench-reference.py`
    /// writes `{"torch": version, "threads": n, "records": [{"name", "unit", "median", …}]}`).
    func attachReference(_ records: [Record], from path: String) throws -> [Record] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read the reference file \(path) (write it with `make bench-reference`)")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(text, source: path) } catch { throw ValidationError("\(path): \(error)") }
        guard let list = json["records"]?.arrayValue else { throw ValidationError("\(path): no \"records\" array") }
        let tool = "pytorch " + (json["torch"]?.stringValue ?? "?") + ", \(json["threads"]?.intValue ?? 0) threads"
        var medians: [String: Double] = [:]
        for item in list {
            if let name = item["name"]?.stringValue, let median = item["median"]?.doubleValue { medians[name] = median }
        }
        return records.map { r in
            guard let m = medians[r.name], m > 0 else { return r }
            var r = r
            r.reference = Reference(tool: tool, median: m)
            r.ratio = Self.ratio(ours: r.median, reference: m, unit: r.unit)
            return r
        }
    }
}
