import Foundation
import TestSupport
import Testing

/// `menagerie bench` runs the benchmarks plugins declare in their metadata (the CLI knows none of
/// them): discovery, a run in an isolated child, and bad results refused with the plugin named.
@Suite struct BenchTests {
    let dir = TempDir("bench")
    let cli: CLI

    init() throws {
        try buildCPlugin(named: "libbenchprobe.so", in: dir.sub("plugins"), defines: ["TEST_BENCHMARKS", "TEST_ID=\"bench-probe\""])
        cli = CLI(pluginPath: [dir.path + "/plugins"])
    }

    func records(_ r: CommandResult) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]], "stdout: \(r.stdout.prefix(300)) stderr: \(r.stderr)")
    }

    @Test func aCPluginsDeclaredBenchmarkIsListedAndRun() throws {
        let listed = try #require(try cli.json("bench", "test.*", "--list", "--json") as? [[String: Any]])
        #expect(Set(listed.map { $0["name"] as? String ?? "" }) == ["test.sleep", "test.nan", "test.negative", "test.missing"])
        #expect(listed.allSatisfy { $0["component"] as? String == "bench-probe" && $0["plugin"] as? String == "bench-probe" })

        let r = try cli.run("bench", "test.sleep", "--repeats", "3", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let bench = try records(r)
        #expect(bench.count == 1)
        let record = try #require(bench.first)
        #expect(Set(record.keys) == ["name", "unit", "median", "min", "max", "reference", "ratio"])
        #expect(record["name"] as? String == "test.sleep" && record["unit"] as? String == "ms")
        let (lo, mid, hi) = (record["min"] as! Double, record["median"] as! Double, record["max"] as! Double)
        #expect(lo >= 1 && lo <= mid && mid <= hi && hi < 1000, "usleep(1000) measured \(lo)…\(hi) ms")

        // `info` shows them too (the metadata's "benchmarks" of the component).
        let info = try cli.run("info", "bench-probe")
        #expect(info.status == 0 && info.stdout.contains("benchmarks (menagerie bench NAME):") && info.stdout.contains("test.sleep"), "\(info.stdout)")

        // The table shows the declared target.
        let table = try cli.run("bench", "test.sleep", "--repeats", "2")
        #expect(table.status == 0 && table.stdout.contains("test.sleep") && table.stdout.contains("≤ 5"), "\(table.stdout)")
    }

    @Test(arguments: [("test.nan", "not a finite number"), ("test.negative", "negative"), ("test.missing", "no \"samples\"")])
    func aBadResultIsAnErrorNamingThePlugin(name: String, reason: String) throws {
        let r = try cli.run("bench", name, "--repeats", "1", "--json")
        #expect(r.status == 1, "\(name): status \(r.status), stderr \(r.stderr)")
        #expect(r.stderr.contains("plugin 'bench-probe'") && r.stderr.contains(name) && r.stderr.contains(reason), "\(r.stderr)")
        #expect(try records(r).isEmpty)
    }

    @Test func theBuiltInPluginsDeclareTheDocumentedBenchmarks() throws {
        let listed = try #require(try CLI().json("bench", "--list", "--json") as? [[String: Any]])
        var owner: [String: String] = [:]
        for row in listed { owner[row["name"] as? String ?? ""] = row["component"] as? String ?? "(host)" }
        let expected: [String: String] = [
            "sgemm.1024": "(host)", "list.warm": "(host)", "invoke.c": "(host)", "invoke.isolated": "(host)",
            "vit_b16.forward": "grad-cam", "vit_b16.forward_batch8": "grad-cam", "vit_b16.sgemm_share": "grad-cam",
            "vit_b16.gradcam": "grad-cam", "vit_b16.finercam": "finer-cam", "prompt_cam.train": "prompt-cam",
            "vit_l14.image_forward": "bioclip2", "vit_l14.text_forward_batch8": "bioclip2", "vit_l14.peak_memory": "bioclip2",
            "bioclip2.text_embed": "bioclip2", "bioclip2.predict_10k_cold": "bioclip2", "bioclip2.predict_10k_cached": "bioclip2",
            "load.pt.open": "bioclip2", "load.pt.first_tensor": "bioclip2", "load.pt.all_tensors": "bioclip2", "load.pt.peak_rss": "bioclip2",
            "coreinfer.dense_decode": "coreinfer", "coreinfer.sparse_decode": "coreinfer", "coreinfer.ffn_share": "coreinfer",
            "coreinfer.peak_memory": "coreinfer", "coreinfer.speedup_of_bound": "coreinfer",
            "convnet3.train_step": "distilled-eval", "distill.eval_epoch": "distilled-eval", "distill.dm_iteration": "dm", "distill.dc_outer_step": "dc",
            "diffusion.denoiser_step_64": "latent-diffusion", "dit.xl2_cfg_step_256": "latent-diffusion", "vae.decode_256": "latent-diffusion",
            "diffusion.generate": "diffusion-dd", "diffusion.generate_concord": "concord",
            "sst.query_224_vit_s16": "sst", "sst.feature_share": "sst", "sst.propagation_224": "stm-tracker",
            "faster_tad.evaluate_5000": "anet-detection", "faster_tad.train": "faster-tad", "faster_tad.detect": "faster-tad",
            "synthetic_tol.generate_64.threads_1": "synthetic-tol", "synthetic_tol.generate_224.threads_1": "synthetic-tol",
        ]
        for (name, component) in expected.sorted(by: { $0.key < $1.key }) {
            #expect(owner[name] == component, "\(name): declared by \(owner[name] ?? "nobody"), expected \(component)")
        }
    }

    @Test func aBuiltInBenchmarkRunsInItsPlugin() throws {
        let r = try CLI().run("bench", "synthetic_tol.generate_64.threads_1", "--repeats", "1", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let bench = try records(r)
        #expect(bench.map { $0["name"] as? String } == ["synthetic_tol.generate_64.threads_1"])
        #expect(bench.first?["unit"] as? String == "images/s" && (bench.first?["median"] as? Double ?? 0) > 0)
    }
}
