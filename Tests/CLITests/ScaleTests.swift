import Foundation
import TestSupport
import Testing

/// `run --shard I/N`, `--resume`, `menagerie merge` and `menagerie slurm --dry-run` through the
/// CLI on 41 synthetic-tol images (Docs/scale.md). The real job array is in SlurmTests.
@Suite struct ScaleTests {
    let dir = TempDir("scale")
    let cli = CLI()

    /// 41 images (the first of each of 41 species, renamed img_000 … img_040) in `dir/imgs`.
    init() throws {
        let export = try cli.run(
            "run", "synthetic-tol", "export", "--set", "splits=test", "--set", "test_per_species=1", "--set", "sheet_per_species=1", "--out",
            dir.path + "/tol")
        guard export.status == 0 else { throw TestSupportError("export failed: \(export.stderr)") }
        let test = dir.path + "/tol/images/test"
        var files: [String] = []
        for species in try FileManager.default.contentsOfDirectory(atPath: test).sorted() {
            files += try FileManager.default.contentsOfDirectory(atPath: test + "/" + species).filter { $0.hasSuffix(".png") }.sorted().map {
                test + "/" + species + "/" + $0
            }
        }
        try FileManager.default.createDirectory(atPath: dir.path + "/imgs", withIntermediateDirectories: true)
        for (i, f) in files.prefix(41).enumerated() { try FileManager.default.copyItem(atPath: f, toPath: dir.path + String(format: "/imgs/img_%03d.png", i)) }
    }

    /// Runs the CLI in `dir` (inputs given relative to it, as a user types them).
    func run(_ args: String..., env: [String: String] = [:]) throws -> CommandResult { try run(args, env: env) }

    func run(_ args: [String], env: [String: String] = [:]) throws -> CommandResult {
        let c = CLI()
        c.extra = env
        return try c.run(args, directory: dir.path)
    }

    func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: dir.path + "/" + path) }

    func result(_ folder: String) throws -> [String: Any] {
        let data = try #require(bytes(folder + "/result.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// Four shards merged (given out of order) equal the unsharded run byte for byte: bioclip2
    /// embed as npy + files.txt and as pybioclip's embeddings.json, predict's predictions.csv.
    @Test func mergedShardsEqualTheUnshardedRun() throws {
        let cases: [(op: String, sets: [String], files: [String])] = [
            ("embed", ["output=npy"], ["embeddings.npy", "files.txt"]),
            ("embed", ["output=json"], ["embeddings.json"]),
            ("predict", ["k=3"], ["predictions.csv"]),
        ]
        for (n, c) in cases.enumerated() {
            let sets = c.sets.flatMap { ["--set", $0] }
            let full = try run(["run", "bioclip2", c.op, "--input", "images=imgs", "--out", "full\(n)"] + sets)
            #expect(full.status == 0, "\(full.stderr)")
            for i in 0..<4 {
                let r = try run(["run", "bioclip2", c.op, "--input", "images=imgs", "--shard", "\(i)/4", "--out", "s\(n)-\(i)"] + sets)
                #expect(r.status == 0, "\(r.stderr)")
                #expect(r.stderr.contains("shard \(i)/4: files"), "\(r.stderr)")
            }
            let m = try run("merge", "merged\(n)", "s\(n)-2", "s\(n)-0", "s\(n)-3", "s\(n)-1")
            #expect(m.status == 0, "\(m.stderr)")
            for f in c.files {
                let a = bytes("full\(n)/\(f)"), b = bytes("merged\(n)/\(f)")
                #expect(a != nil && a == b, "\(c.op) \(c.sets): \(f) differs from the unsharded run's")
            }
            let merged = try result("merged\(n)"), whole = try result("full\(n)")
            let r = try #require(merged["result"] as? [String: Any]), w = try #require(whole["result"] as? [String: Any])
            #expect(r["images"] as? Int == 41 && (merged["merged_from"] as? [Any])?.count == 4)
            #expect(try withoutSeconds(r) == withoutSeconds(w), "\(r.keys.sorted()) vs \(w.keys.sorted())")
        }
        // More shards than blocks of whole batches (41 files, batch 10, 8 shards): the empty shards
        // commit a manifest with zero counts, and the merge still equals the unsharded run.
        var empty = 0
        for i in 0..<8 {
            let r = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--shard", "\(i)/8", "--out", "e\(i)")
            #expect(r.status == 0, "\(r.stderr)")
            if let images = try result("e\(i)")["result"] as? [String: Any], images["images"] as? Int == 0 { empty += 1 }
        }
        #expect(empty == 3, "\(empty) empty shards")
        let m8 = try run(["merge", "m8"] + (0..<8).map { "e\($0)" })
        #expect(m8.status == 0 && bytes("m8/embeddings.npy") == bytes("full0/embeddings.npy"), "\(m8.stderr)")
        // Decoding ahead on a worker thread changes nothing in the numbers.
        let serial = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--set", "prefetch=0", "--out", "serial")
        #expect(serial.status == 0 && bytes("serial/embeddings.npy") == bytes("full0/embeddings.npy"), "\(serial.stderr)")
        // The names in the outputs are the files as the user named them (relative), not the links.
        let listed = String(decoding: try #require(bytes("merged0/files.txt")), as: UTF8.self)
        #expect(listed.hasPrefix("imgs/img_000.png\nimgs/img_001.png\n") && listed.split(separator: "\n").count == 41)
    }

    /// An explainer over a folder: overlays renumbered, maps equal within float rounding (each
    /// chunk is one batch, the unsharded run one batch of 41; measured ≤ 4e-6 on the logits).
    @Test func explainerShardsRenumberTheirOverlays() throws {
        let classifier = TestPaths.sourceRoot + "/Plugins/Classifiers/Resources/vit-tol"
        let full = try run("run", "grad-cam", "explain", "--input", "images=imgs", "--set", "classifier=\(classifier)", "--out", "full")
        #expect(full.status == 0, "\(full.stderr)")
        for i in 0..<3 {
            let r = try run(
                "run", "grad-cam", "explain", "--input", "images=imgs", "--set", "classifier=\(classifier)", "--shard", "\(i)/3", "--chunk", "4", "--out",
                "s\(i)")
            #expect(r.status == 0, "\(r.stderr)")
        }
        let m = try run("merge", "merged", "s0", "s1", "s2")
        #expect(m.status == 0, "\(m.stderr)")
        let overlays = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/merged").filter { $0.hasPrefix("overlay_") }.sorted()
        #expect(overlays == (0..<41).map { String(format: "overlay_%03d.png", $0) })
        let py = """
            import numpy as np, json, sys
            d = sys.argv[1]
            for name, tol in (("maps", 1e-4), ("grid", 1e-4), ("logits", 1e-4)):
                a, b = np.load(f"{d}/full/{name}.npy"), np.load(f"{d}/merged/{name}.npy")
                assert a.shape == b.shape and a.shape[0] == 41, (name, a.shape, b.shape)
                assert np.abs(a - b).max() <= tol, (name, np.abs(a - b).max())
            a = json.load(open(f"{d}/full/result.json"))["result"]["per_image"]
            b = json.load(open(f"{d}/merged/result.json"))["result"]["per_image"]
            assert a == b and a[0]["file"] == "imgs/img_000.png", (a[:2], b[:2])
            """
        let check = try runProcess("/usr/bin/env", ["python3", "-c", py, dir.path])
        #expect(check.status == 0, "\(check.stderr)")
    }

    /// A task killed (SIGKILL) after computing its fourth chunk and before committing it: the three
    /// committed chunks stay, a plain rerun is refused, `--resume` runs only the rest, and the
    /// output equals an unsharded run's byte for byte (no file twice, none missing).
    @Test func resumeAfterSIGKILLFinishesWithoutDuplicates() throws {
        let sets = ["--set", "batch=2", "--set", "output=json"]
        let full = try run(["run", "bioclip2", "embed", "--input", "images=imgs", "--out", "full"] + sets)
        #expect(full.status == 0, "\(full.stderr)")
        let killed = try run(
            ["run", "bioclip2", "embed", "--input", "images=imgs", "--chunk", "2", "--resume", "--out", "res"] + sets, env: ["MENAGERIE_FAULT_KILL": "0:3"])
        #expect(killed.status == SIGKILL, "exit \(killed.status): \(killed.stderr)")
        let chunks = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/res/.menagerie-chunks").filter { $0.hasPrefix("chunk-") }.sorted()
        #expect(chunks == ["chunk-000000000", "chunk-000000002", "chunk-000000004"])
        #expect(bytes("res/result.json") == nil && bytes("res/embeddings.json") == nil)
        let plain = try run(["run", "bioclip2", "embed", "--input", "images=imgs", "--chunk", "2", "--out", "res"] + sets)
        #expect(plain.status == 2 && plain.stderr.contains("pass --resume"), "\(plain.stderr)")
        let other = try run([
            "run", "bioclip2", "embed", "--input", "images=imgs", "--chunk", "2", "--resume", "--out", "res", "--set", "batch=2", "--set", "output=npy",
        ])
        #expect(other.status == 2 && other.stderr.contains("other inputs, options or shards"), "\(other.stderr)")
        let resumed = try run(["run", "bioclip2", "embed", "--input", "images=imgs", "--chunk", "2", "--resume", "--out", "res"] + sets)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("3 of 21 chunk(s) already committed"), "\(resumed.stderr)")
        #expect(bytes("res/embeddings.json") != nil && bytes("res/embeddings.json") == bytes("full/embeddings.json"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/res/.menagerie-chunks"))
        let again = try run(["run", "bioclip2", "embed", "--input", "images=imgs", "--chunk", "2", "--resume", "--out", "res"] + sets)
        #expect(again.status == 0 && again.stderr.contains("already holds this shard's finished output"), "\(again.stderr)")
    }

    /// An operation over the lines of a file: coreinfer generate on a prompts file (sampling at
    /// temperature 0.8: each prompt's seed comes from its text, not its position), three shards and
    /// a resumed run, against one unsharded run, byte for byte.
    @Test func promptLinesShardAndResume() throws {
        let prompts = ["Knead the dough", "The river runs", "", "A small bird", "In the morning light", "Once upon a time", "The seeds were planted"]
        try (prompts.joined(separator: "\n") + "\n").write(toFile: dir.path + "/prompts.txt", atomically: true, encoding: .utf8)
        let sets = ["--input", "prompts=prompts.txt", "--set", "max_new_tokens=6", "--set", "temperature=0.8"]
        let full = try run(["run", "coreinfer", "generate", "--out", "full"] + sets)
        #expect(full.status == 0, "\(full.stderr)")
        let whole = try #require(bytes("full/generations.jsonl"))
        #expect(String(decoding: whole, as: UTF8.self).split(separator: "\n").count == 6, "one line per non-blank prompt")
        for i in 0..<3 {
            let r = try run(["run", "coreinfer", "generate", "--shard", "\(i)/3", "--out", "g\(i)"] + sets)
            #expect(r.status == 0 && r.stderr.contains("shard \(i)/3: lines"), "\(r.stderr)")
        }
        let m = try run("merge", "merged", "g0", "g1", "g2")
        #expect(m.status == 0 && bytes("merged/generations.jsonl") == whole, "\(m.stderr)")
        let killed = try run(["run", "coreinfer", "generate", "--chunk", "2", "--resume", "--out", "res"] + sets, env: ["MENAGERIE_FAULT_KILL": "0:1"])
        #expect(killed.status == SIGKILL, "\(killed.stderr)")
        let resumed = try run(["run", "coreinfer", "generate", "--chunk", "2", "--resume", "--out", "res"] + sets)
        #expect(
            resumed.status == 0 && resumed.stderr.contains("1 of 3 chunk(s) already committed") && bytes("res/generations.jsonl") == whole, "\(resumed.stderr)")
    }

    /// faster-tad detect over a list of video ids (the lines of a file): two shards in chunks of
    /// whole detection batches merge into the unsharded predictions.json byte for byte; timelines
    /// (drawn for the first videos of each call) are refused.
    @Test func detectionOverAVideoListShards() throws {
        let export = try run("run", "synthetic-actions", "export", "--set", "videos=30", "--set", "val_videos=20", "--out", "act")
        #expect(export.status == 0, "\(export.stderr)")
        let gtData = try #require(bytes("act/ground_truth.json"))
        let gt = try #require(try JSONSerialization.jsonObject(with: gtData) as? [String: Any])
        let database = try #require(gt["database"] as? [String: [String: Any]])
        let ids = Array(database.filter { $0.value["subset"] as? String == "validation" }.map(\.key).sorted().reversed())
        try (ids.joined(separator: "\n") + "\n").write(toFile: dir.path + "/ids.txt", atomically: true, encoding: .utf8)
        let sets = ["--set", "data=act", "--input", "video_list=ids.txt", "--set", "timelines=0", "--set", "detect_batch=4"]
        let full = try run(["run", "faster-tad", "detect", "--out", "full"] + sets)
        #expect(full.status == 0, "\(full.stderr)")
        for i in 0..<2 {
            let r = try run(["run", "faster-tad", "detect", "--shard", "\(i)/2", "--out", "d\(i)"] + sets)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let m = try run("merge", "merged", "d1", "d0")
        #expect(m.status == 0 && bytes("merged/predictions.json") != nil && bytes("merged/predictions.json") == bytes("full/predictions.json"), "\(m.stderr)")
        let text = String(decoding: try #require(bytes("merged/predictions.json")), as: UTF8.self)
        #expect(text.range(of: "\"\(ids.first!)\"")!.lowerBound < text.range(of: "\"\(ids.last!)\"")!.lowerBound, "the list's order is kept")
        let timelines = try run("run", "faster-tad", "detect", "--set", "data=act", "--input", "video_list=ids.txt", "--shard", "0/2", "--out", "t")
        #expect(timelines.status == 2 && timelines.stderr.contains("timelines=6 cannot be sharded"), "\(timelines.stderr)")
    }

    /// What cannot be split or merged is refused with the reason, and a run that fails before its
    /// first commit leaves nothing behind.
    @Test func refusalsNameTheProblem() throws {
        let train = try run("run", "bioclip2", "train", "--shard", "0/2", "--out", "t")
        #expect(train.status == 2 && train.stderr.contains("does not map over files") && train.stderr.contains("embed, predict"), "\(train.stderr)")
        let noOut = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--shard", "0/2")
        #expect(noOut.status == 2 && noOut.stderr.contains("need --out"), "\(noOut.stderr)")
        let st = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=safetensors", "--shard", "0/2", "--out", "st")
        #expect(st.status == 2 && st.stderr.contains("output=safetensors cannot be sharded"), "\(st.stderr)")
        let bad = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--shard", "2/2", "--out", "b")
        #expect(bad.status == 2 && bad.stderr.contains("0…1"), "\(bad.stderr)")
        let failing = try run("run", "grad-cam", "explain", "--input", "images=imgs", "--shard", "0/2", "--out", "g")
        #expect(failing.status != 0 && !FileManager.default.fileExists(atPath: dir.path + "/g"), "\(failing.stderr)")
        for i in 0..<3 {
            let r = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--shard", "\(i)/3", "--out", "p\(i)")
            #expect(r.status == 0, "\(r.stderr)")
        }
        let other = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=json", "--shard", "2/3", "--out", "q2")
        #expect(other.status == 0, "\(other.stderr)")
        let missing = try run("merge", "m1", "p0", "p2")
        #expect(missing.status == 2 && missing.stderr.contains("missing: 1"), "\(missing.stderr)")
        let twice = try run("merge", "m2", "p0", "p1", "p1", "p2")
        #expect(twice.status == 2 && twice.stderr.contains("exactly once"), "\(twice.stderr)")
        let mixed = try run("merge", "m3", "p0", "p1", "q2")
        #expect(mixed.status == 2 && mixed.stderr.contains("in its options"), "\(mixed.stderr)")
        let plain = try run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--out", "plain")
        #expect(plain.status == 0)
        let notShard = try run("merge", "m4", "plain")
        #expect(notShard.status == 2 && notShard.stderr.contains("not the output of a sharded run"), "\(notShard.stderr)")
        for m in ["m1", "m2", "m3", "m4"] { #expect(!FileManager.default.fileExists(atPath: dir.path + "/" + m), "\(m) was created") }
    }

    /// `menagerie slurm --dry-run` prints an array script (one resumable shard per task, run in
    /// the submitting folder) and a merge script; nothing is written or submitted.
    @Test func slurmDryRunPrintsBothScripts() throws {
        let r = try run(
            "slurm", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--array", "4", "--out", "emb", "--cpus-per-task", "2",
            "--dry-run")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("#SBATCH --array=0-3") && r.stdout.contains("#SBATCH --cpus-per-task=2"), "\(r.stdout)")
        #expect(r.stdout.contains("--input images=imgs") && r.stdout.contains("--shard \"$shard/4\" --resume --out \(dir.path)/emb-slurm/shards/"))
        #expect(r.stdout.contains("merge \(dir.path)/emb \(dir.path)/emb-slurm/shards/*"), "\(r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/emb-slurm"))
        let spaced = try run("slurm", "bioclip2", "embed", "--input", "images=imgs", "--array", "2", "--out", "x", "--time", "1 day", "--dry-run")
        #expect(spaced.status == 2 && spaced.stderr.contains("--time '1 day' must be one word"), "\(spaced.stderr)")
        let refused = try run("slurm", "bioclip2", "train", "--array", "2", "--out", "x", "--dry-run")
        #expect(refused.status == 2 && refused.stderr.contains("cannot run as a job array"), "\(refused.stderr)")
    }
}

/// A result object as sorted JSON text without its timing entry, for comparing two runs.
func withoutSeconds(_ r: [String: Any]) throws -> String {
    var r = r
    r.removeValue(forKey: "seconds")
    return String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self)
}
