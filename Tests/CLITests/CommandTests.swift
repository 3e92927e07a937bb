import Foundation
import TestSupport
import Testing

/// The other commands: list, plugins, info, call, doctor, bench, tour; JSON outputs and exit codes.
@Suite struct CommandTests {
    let dir = TempDir("cmd")
    let cli: CLI
    let plugin: String

    init() throws {
        plugin = try buildCPlugin(named: "libtestprobe.so", in: dir.sub("plugins"))
        cli = CLI(pluginPath: [dir.path + "/plugins"])
    }

    @Test func builtInPluginsHandshake() throws {
        let rows = try cli.json("plugins", "--json") as! [[String: Any]]
        let byName = Dictionary(uniqueKeysWithValues: rows.compactMap { r in (r["name"] as? String).map { ($0, r) } })
        #expect(byName["classification-metrics"]?["status"] as? String == "ok")
        #expect(byName["classification-metrics"]?["abi"] as? String == "1.2")
        #expect((byName["classification-metrics"]?["toolchain"] as? String)?.hasPrefix("swift-") == true)
        #expect(byName["segmentation-metrics"]?["status"] as? String == "ok")
        #expect(byName["segmentation-metrics"]?["toolchain"] as? String == "none")
        #expect(byName["classification-metrics"]?["origin"] as? String == "built-in")
        #expect(byName["test-probe"]?["origin"] as? String == "MENAGERIE_PLUGIN_PATH")
    }

    /// Registry cache step: a corrupt cache is a warning and is rebuilt; an unwritable one is a
    /// warning and the command still works.
    @Test func aBadRegistryCacheIsAWarningNotAnError() throws {
        let cache = cli.home.path + "/cache/menagerie/registry.json"
        try FileManager.default.createDirectory(atPath: cli.home.path + "/cache/menagerie", withIntermediateDirectories: true)
        try "{ not json".write(toFile: cache, atomically: true, encoding: .utf8)
        let corrupt = try cli.run("list", "--json")
        #expect(corrupt.status == 0, "\(corrupt.stderr)")
        #expect(corrupt.stderr.contains("the plugin registry cache \(cache) is unusable"))
        #expect((try? JSONSerialization.jsonObject(with: Data(corrupt.stdout.utf8))) != nil)
        let rebuilt = try String(contentsOfFile: cache, encoding: .utf8)
        #expect(rebuilt.contains("\"host\"") && rebuilt.contains("libtestprobe.so"))
        let warm = try cli.run("list")
        #expect(warm.status == 0 && !warm.stderr.contains("registry cache"), "\(warm.stderr)")

        let blocked = CLI(pluginPath: [dir.path + "/plugins"])
        try "a file where the cache folder should be".write(toFile: blocked.home.path + "/cache", atomically: true, encoding: .utf8)
        let unwritable = try blocked.run("list")
        #expect(unwritable.status == 0, "\(unwritable.stderr)")
        #expect(unwritable.stderr.contains("cannot write the plugin registry cache"))
        #expect(unwritable.stdout.contains("test-probe"))
    }

    @Test func rescanScansEveryFileAgain() throws {
        #expect(try cli.run("list").status == 0)
        let cache = cli.home.path + "/cache/menagerie/registry.json"
        let before = try FileManager.default.attributesOfItem(atPath: cache)[.modificationDate] as! Date
        usleep(20_000)
        #expect(try cli.run("list").status == 0)
        let warm = try FileManager.default.attributesOfItem(atPath: cache)[.modificationDate] as! Date
        #expect(warm == before, "a warm list must not rewrite the cache")
        let rows = try cli.json("plugins", "--rescan", "--json") as! [[String: Any]]
        #expect(rows.contains { $0["name"] as? String == "test-probe" && $0["status"] as? String == "ok" })
        let after = try FileManager.default.attributesOfItem(atPath: cache)[.modificationDate] as! Date
        #expect(after > before)
    }

    @Test func listFiltersByGlobAndKind() throws {
        let all = try cli.json("list", "--json") as! [[String: Any]]
        #expect(Set(all.map { $0["id"] as! String }).isSuperset(of: ["classification-metrics", "segmentation-metrics", "test-probe"]))
        let metrics = try cli.json("list", "--kind", "metric", "--json") as! [[String: Any]]
        #expect(metrics.allSatisfy { $0["kind"] as? String == "metric" } && metrics.count >= 2)
        let glob = try cli.json("list", "seg*", "--json") as! [[String: Any]]
        #expect(glob.map { $0["id"] as! String } == ["segmentation-metrics"])
        let bad = try cli.run("list", "--kind", "metrics")
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("Did you mean 'metric'?"))
    }

    @Test func infoShowsPaperOperationsAndOptions() throws {
        let text = try cli.run("info", "test-probe")
        #expect(text.status == 0)
        #expect(text.stdout.contains("A test paper"))
        #expect(text.stdout.contains("https://example.org/paper"))
        #expect(text.stdout.contains("nested"))
        let info = try cli.json("info", "classification-metrics", "--json") as! [String: Any]
        let options = ((info["component"] as! [String: Any])["options"] as! [String: Any])["properties"] as! [String: Any]
        #expect((options["bins"] as! [String: Any])["default"] as? Int == 15)
        #expect((options["top_k"] as! [String: Any])["type"] as? String == "array")
        let unknown = try cli.run("info", "clasification-metrics")
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("Did you mean 'classification-metrics'?"))
    }

    @Test func safeModeLoadsBuiltInsOnly() throws {
        #expect(try cli.run("list").stdout.contains("test-probe"))
        let flag = try cli.run("list", "--safe-mode")
        #expect(!flag.stdout.contains("test-probe") && flag.stdout.contains("segmentation-metrics"))
        cli.extra["MENAGERIE_SAFE_MODE"] = "1"
        defer { cli.extra = [:] }
        let env = try cli.run("list")
        #expect(!env.stdout.contains("test-probe") && env.stdout.contains("classification-metrics"))
    }

    @Test func lockFilePinsPlugins() throws {
        let lock = dir.path + "/plugins.lock"
        let w = try cli.run("plugins", "--write-lock", lock)
        #expect(w.status == 0, "\(w.stderr)")
        let pins = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: lock))) as! [String: Any]
        #expect((pins["plugins"] as! [String: String]).keys.contains(plugin))
        #expect(try cli.run("list", "--lock", lock).stdout.contains("test-probe"))

        // Same path, other bytes: refused with the mismatch named; an unpinned plugin: refused too.
        try buildCPlugin(named: "libtestprobe.so", in: dir.path + "/plugins", defines: ["TEST_VERSION=\"2.0.0-changed\""])
        try buildCPlugin(named: "libother.so", in: dir.path + "/plugins", defines: ["TEST_ID=\"other-probe\""])
        let failed = try cli.json("plugins", "--failed", "--json", "--lock", lock) as! [[String: Any]]
        let reasons = Dictionary(uniqueKeysWithValues: failed.map { (($0["path"] as! String as NSString).lastPathComponent, $0["reason"] as! String) })
        #expect(reasons["libtestprobe.so"]?.contains("SHA-256 mismatch against the lock file") == true)
        #expect(reasons["libother.so"]?.contains("not pinned in the lock file") == true)
        let run = try cli.run("run", "test-probe", "echo", "--lock", lock)
        #expect(run.status == 2)
        // The default location is used when present.
        try FileManager.default.createDirectory(atPath: cli.home.path + "/config/menagerie", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: lock, toPath: cli.home.path + "/config/menagerie/plugins.lock")
        #expect(!(try cli.run("list").stdout.contains("test-probe")))
    }

    @Test func callsCFunctionsThroughLibffi() throws {
        let iou = try cli.run("call", "segmentation-metrics", "segmentation_metrics_iou", "f64(i64,i64,i64)", "8", "2", "4")
        #expect(iou.status == 0, "\(iou.stderr)")
        #expect(Double(iou.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == 8.0 / 14.0)
        let cases: [([String], String)] = [
            (["test_add_i32", "i32(i32,i32)", "2", "40"], "42"),
            (["test_scale_f32", "f32(f32,i32)", "1.5", "3"], "4.5"),
            (["test_greeting", "str()"], "hello from C"),
            (["test_strlen", "u64(str)", "menagerie"], "9"),
            (["test_mix", "f64(i8,u16,f64,f32)", "-3", "70000", "0.5", "0.25"], ""),
            (["test_mix", "f64(i8,u16,f64,f32)", "-3", "7", "0.5", "0.25"], "4.75"),
        ]
        for (args, expected) in cases {
            let r = try cli.run(["call", plugin] + args)
            if expected.isEmpty {
                #expect(r.status == 2, "u16 overflow must be refused")
            } else {
                #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == expected, "\(args): \(r.output)")
            }
        }
        let badSig = try cli.run("call", plugin, "test_add_i32", "i32(int,i32)", "1", "2")
        #expect(badSig.status == 2 && badSig.stderr.contains("unknown argument type 'int'"))
        let noSym = try cli.run("call", plugin, "no_such_function", "void()")
        #expect(noSym.status == 2 && noSym.stderr.contains("exports no function 'no_such_function'"))
    }

    @Test func everyJSONOutputParses() throws {
        let tour = dir.path + "/tour"
        for args in [
            ["list", "--json"], ["plugins", "--json"], ["plugins", "--failed", "--json"], ["info", "segmentation-metrics", "--json"],
            ["run", "test-probe", "echo", "--json"], ["doctor", "--json"], ["validate", plugin, "--json"],
            ["bench", "invoke.*", "--repeats", "3", "--json"], ["tour", "--out", tour, "--only", "*-metrics", "--json"],
        ] {
            let r = try cli.run(args)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            #expect((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) != nil, "\(args) printed: \(r.stdout.prefix(200))")
        }
        let bench = try cli.json("bench", "invoke.*", "--repeats", "3", "--json") as! [[String: Any]]
        #expect(Set(bench.map { $0["name"] as! String }) == ["invoke.c", "invoke.swift", "invoke.isolated"])
        for record in bench {
            #expect(Set(record.keys) == ["name", "unit", "median", "min", "max", "reference", "ratio"])
            let (lo, mid, hi) = (record["min"] as! Double, record["median"] as! Double, record["max"] as! Double)
            #expect(lo > 0 && lo <= mid && mid <= hi)
        }
    }

    @Test func exitCodes() throws {
        #expect(try cli.run("list").status == 0)
        #expect(try cli.run("--version").status == 0)
        #expect(try cli.run("no-such-command").status == 2)
        #expect(try cli.run("list", "--no-such-flag").status == 2)
        #expect(try cli.run("run", "no-such-component").status == 2)
        #expect(try cli.run("run", "test-probe", "fail").status == 1)
        #expect(try cli.run("new", "Bad_Name", "--kind", "metric", "--dir", dir.path).status == 2)
    }

    @Test func tourWritesOutputsAPersonCanOpen() throws {
        let out = dir.path + "/tour-out"
        let r = try cli.run("tour", "--out", out, "--only", "*-metrics")
        #expect(r.status == 0, "\(r.stderr)")
        for c in ["classification-metrics", "segmentation-metrics"] {
            #expect(FileManager.default.fileExists(atPath: "\(out)/\(c)/result.json"))
        }
        let png = try Data(contentsOf: URL(fileURLWithPath: out + "/classification-metrics/reliability.png"))
        #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        let index = try String(contentsOfFile: out + "/index.html", encoding: .utf8)
        #expect(index.contains("classification-metrics/reliability.png"))
        let csv = try String(contentsOfFile: out + "/classification-metrics/confusion.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 11)
    }

    @Test func doctorReportsBLASAndSearchPath() throws {
        let checks = try cli.json("doctor", "--json") as! [[String: Any]]
        let names = checks.map { $0["name"] as! String }
        #expect(names.contains("blas") && names.contains("sgemm") && names.contains("registry cache"))
        #expect(checks.first { $0["name"] as? String == "sgemm" }?["ok"] as? Bool == true)
        #expect(names.contains("search path (MENAGERIE_PLUGIN_PATH)"))
    }
}

/// MENAGERIE_BACKEND as `menagerie doctor` reports it: unset means oneDNN where it loads (the
/// transformer blocks fused through it too), `openblas` means OpenBLAS alone, a wrong value is named
/// and OpenBLAS used. Each in a child process, whose "gemm backend" line says what it chose.
@Suite struct BackendChoiceTests {
    func gemmLine(_ value: String?) throws -> String {
        var env = CLI().environment
        env.removeValue(forKey: "MENAGERIE_BACKEND")
        if let value { env["MENAGERIE_BACKEND"] = value }
        let r = try runProcess(TestPaths.menagerie, ["doctor"], environment: env)
        return r.stdout.split(separator: "\n").first { $0.contains("gemm backend") }.map(String.init) ?? "(no gemm backend line) \(r.output)"
    }

    @Test func backendFromTheEnvironment() throws {
        let unset = try gemmLine(nil)
        let oneDNN = unset.contains("oneDNN") && unset.contains(" available")
        #expect(unset.contains(oneDNN ? "onednn-fp32 (" : "openblas-fp32 ("), "\(unset)")
        #expect(unset.contains(oneDNN ? "transformer blocks fused through oneDNN" : "transformer blocks on OpenBLAS"), "\(unset)")
        let openblas = try gemmLine("openblas")
        #expect(openblas.contains("openblas-fp32 (MENAGERIE_BACKEND") && openblas.contains("transformer blocks on OpenBLAS"), "\(openblas)")
        let wrong = try gemmLine("cuda")
        #expect(wrong.contains("MENAGERIE_BACKEND=cuda is not a backend"), "\(wrong)")
    }
}
