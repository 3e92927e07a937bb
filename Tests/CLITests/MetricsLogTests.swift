import Foundation
import TestSupport
import Testing

/// ABI 1.1 `phase` and `record`: metric lines on stderr, log.csv in --out, in process and isolated;
/// rows the host cannot trust are dropped; a plugin built against the 1.0 header still runs.
@Suite struct MetricsLogTests {
    let dir = TempDir("metrics")
    let cli: CLI

    init() throws {
        try buildCPlugin(named: "libtestprobe.so", in: dir.sub("plugins"))
        cli = CLI(pluginPath: [dir.path + "/plugins"])
    }

    /// log.csv parsed: the header and the rows, split at commas (no field here is quoted).
    func table(_ path: String) throws -> (header: [String], rows: [[String]]) {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        return (lines.first ?? [], Array(lines.dropFirst()))
    }

    @Test(arguments: ["--no-isolate", "--isolate"])
    func recordedRowsReachStderrAndLogCSV(_ mode: String) throws {
        let out = dir.path + "/record" + mode
        let r = try cli.run("run", "test-probe", "record", "--out", out, mode)
        #expect(r.status == 0, "\(r.stderr)")
        let (header, rows) = try table(out + "/log.csv")
        #expect(header == ["part", "part_name", "component", "epoch", "loss", "accuracy", "elapsed_s"])
        #expect(rows.count == 6)
        // What the plugin sent: part p, epoch e, loss 1/(p·e), accuracy e/4.
        for (i, row) in rows.enumerated() {
            let part = i / 3 + 1, epoch = i % 3 + 1
            #expect(row[0] == "\(part)" && row[1] == (part == 1 ? "first half" : "second half") && row[2] == "test-probe" && row[3] == "\(epoch)")
            #expect(abs((Double(row[4]) ?? .nan) - 1 / Double(part * epoch)) < 1e-9, "\(row)")
            #expect(Double(row[5]) == 0.25 * Double(epoch), "\(row)")
            #expect((Double(row[6]) ?? -1) >= 0)
        }
        // The lines stay on stderr, one per row, with the part.
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("[test-probe] part ") && $0.contains(" · epoch ") }
        #expect(lines.count == 6, "\(r.stderr)")
        #expect(lines.first?.contains("part 1/2 · first half · epoch 1 · loss 1 · accuracy 0.25") == true, "\(r.stderr)")
        // stderr is a pipe: each new part is announced on a line of its own.
        #expect(
            r.stderr.contains("[test-probe] part 1/2 · first half after ") && r.stderr.contains("[test-probe] part 2/2 · second half after "),
            "\(r.stderr)")
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))) as? [String: Any]
        let files = (manifest?["artifacts"] as? [[String: Any]])?.compactMap { $0["file"] as? String } ?? []
        #expect(files.contains("log.csv"), "result.json lists log.csv: \(files)")
    }

    /// A huge count, NULL arrays or names, a negative step, a repeated name and a part beyond its
    /// count are dropped; the one good row is kept; the host lives.
    @Test(arguments: ["--no-isolate", "--isolate"])
    func untrustworthyRowsAreDropped(_ mode: String) throws {
        let out = dir.path + "/bad" + mode
        let r = try cli.run("run", "test-probe", "bad_record", "--out", out, mode)
        #expect(r.status == 0, "\(r.stderr)")
        let (header, rows) = try table(out + "/log.csv")
        #expect(header == ["part", "part_name", "component", "epoch", "loss", "accuracy", "elapsed_s"])
        #expect(rows.count == 1 && rows.first?[0] == "" && rows.first?[4] == "1" && rows.first?[5] == "2", "\(rows)")
    }

    @Test func noRecordsNoLogCSV() throws {
        let out = dir.path + "/echo"
        #expect(try cli.run("run", "test-probe", "echo", "--out", out).status == 0)
        #expect(!FileManager.default.fileExists(atPath: out + "/log.csv"))
    }

    /// Built against the 1.0 header (kept in the fixtures), declaring ABI 1.0: accepted by the 1.1
    /// host, runs in process and isolated, reports progress; it has no record operation.
    @Test func aPluginOfABI1_0StillRuns() throws {
        let old = TempDir("abi10")
        let r0 = try runProcess(
            "/usr/bin/cc",
            [
                "-shared", "-fPIC", "-O1", "-std=gnu11", "-I", TestPaths.fixtures + "/plugins/abi-1.0",
                "-DTEST_ID=\"old-probe\"", "-o", old.sub("plugins") + "/libold.so",
                TestPaths.fixtures + "/plugins/test_plugin.c",
            ])
        #expect(r0.status == 0, "\(r0.stderr)")
        let oldCLI = CLI(pluginPath: [old.path + "/plugins"])
        let plugins = try oldCLI.json("plugins", "--json") as? [[String: Any]]
        #expect(plugins?.first { ($0["name"] as? String) == "old-probe" }?["abi"] as? String == "1.0")
        for mode in ["--no-isolate", "--isolate"] {
            let echo = try oldCLI.run("run", "old-probe", "echo", "--set", "count=7", "--json", mode)
            #expect(echo.status == 0, "\(echo.stderr)")
            let manifest = try JSONSerialization.jsonObject(with: Data(echo.stdout.utf8)) as? [String: Any]
            #expect(((manifest?["result"] as? [String: Any])?["options"] as? [String: Any])?["count"] as? Int == 7, "\(echo.stdout)")
            let progress = try oldCLI.run("run", "old-probe", "progress", "--json", mode)
            #expect(progress.status == 0 && progress.stdout.contains("\"done\""), "\(progress.stderr)")
        }
        let info = try oldCLI.run("info", "old-probe")
        #expect(info.status == 0 && !info.stdout.contains("bad_record"))
    }

    /// A real training loop (convnet-classifier, 3 epochs on a small synthetic-tol): one row per epoch
    /// with finite numbers, and the epoch lines on stderr.
    @Test func aTrainingComponentLogsEveryEpoch() throws {
        let builtIn = CLI()
        let out = dir.path + "/convnet"
        let r = try builtIn.run(
            "run", "convnet-classifier", "train", "--set", "epochs=3", "--set", "width=8", "--set", "size=32",
            "--set", "dataset_options=[\"train_per_species=4\",\"test_per_species=2\",\"val_per_species=1\"]", "--out", out)
        #expect(r.status == 0, "\(r.stderr)")
        let (header, rows) = try table(out + "/log.csv")
        #expect(header == ["part", "part_name", "component", "epoch", "train_loss", "train_accuracy", "elapsed_s"])
        #expect(rows.map { $0[3] } == ["1", "2", "3"])
        for row in rows {
            for cell in row[4...] { #expect(Double(cell)?.isFinite == true, "\(row)") }
            #expect(row[2] == "convnet-classifier")
        }
        let epochLines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("[convnet-classifier] epoch ") && $0.contains("train_loss ") }
        #expect(epochLines.count == 3, "\(r.stderr)")
    }
}
