import Formats
import Foundation
import MenagerieKit
import Tensors

/// Faster-TAD's benchmarks (moved from the CLI, which no longer knows any model). Temporal action detection: the ActivityNet evaluator on a generated 5,000-video set beside the
/// Python evaluator on the same files in the same run (when a Python with numpy and pandas is
/// found), and Faster-TAD's training and detection throughput on synthetic-actions.
extension DetectionMetricComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "faster_tad.evaluate_5000", unit: "ms",
            summary: "anet-detection on a generated 5,000-video ActivityNet set, JSON parsing included (beside the Python evaluator when found)",
            ratioTarget: 0.1)
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.detectionBenchmarks() }
}

extension FasterTADComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "faster_tad.train", unit: "videos/s", summary: "Faster-TAD training throughput (2 epochs on 600 synthetic-actions videos), through the host"),
        BenchmarkSpec("faster_tad.detect", unit: "videos/s", summary: "Faster-TAD detection throughput (150 videos, embedded model), through the host"),
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.detectionBenchmarks() }
}

extension BenchmarkRun {
    func detectionBenchmarks() throws {

        if wanted("faster_tad.evaluate_5000"), has("anet-detection") {
            let dir = scratch + "/bench-anet"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let (gt, pred) = Self.activityNetSet(videos: 5000, classes: 200, predictionsPerVideo: 20, seed: 3)
            try gt.write(toFile: dir + "/ground_truth.json", atomically: true, encoding: .utf8)
            try pred.write(toFile: dir + "/predictions.json", atomically: true, encoding: .utf8)
            let options: JSONValue = ["ground_truth": .string(dir + "/ground_truth.json"), "predictions": .string(dir + "/predictions.json")]
            var samples: [Double] = []
            var ours = 0.0
            for _ in 0..<max(3, repeats / 3) {
                let t0 = now()
                let r = try invoke("anet-detection", operation: "evaluate", options: options)
                samples.append(now() - t0)
                ours = r.result["average_mAP"]?.doubleValue ?? .nan
            }
            var record = record("faster_tad.evaluate_5000", unit: "ms", samples)
            record.ratioTarget = 0.1
            if let python = Self.pythonWithPandas(), let script = Self.sourceFile("scripts/anet_eval_python.py") {
                host.log(.notice, "faster_tad.evaluate_5000: timing the Python evaluator on the same files (about a minute)…")
                let p = Process()
                p.executableURL = URL(fileURLWithPath: python)
                p.arguments = [script, dir + "/ground_truth.json", dir + "/predictions.json"]
                let pipe = Pipe()
                p.standardOutput = pipe
                try p.run()
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                if p.terminationStatus == 0, let line = String(data: data, encoding: .utf8)?.split(separator: "\n").last,
                    let r = try? JSONValue.parse(String(line)), let seconds = r["seconds"]?.doubleValue
                {
                    let theirs = r["average_mAP"]?.doubleValue ?? .nan
                    record.reference = .init(tool: r["evaluator"]?.stringValue ?? "python", median: seconds * 1000)
                    notes.append(
                        String(
                            format: "faster_tad.evaluate_5000: average mAP %.12f (ours) vs %.12f (%@), |Δ| %.1e",
                            ours, theirs, r["evaluator"]?.stringValue ?? "python", abs(ours - theirs)))
                }
            }
            records.append(record)
        }

        // Training and detection throughput with the default network on synthetic-actions.
        if wanted("faster_tad.train"), has("faster-tad") {
            let r = try invoke("faster-tad", operation: "train", options: ["epochs": 2, "evaluate": false, "timelines": 0])
            records.append(self.record("faster_tad.train", unit: "videos/s", [r.result["train_videos_per_s"]?.doubleValue ?? 0]))
        }
        if wanted("faster_tad.detect"), has("faster-tad") {
            var samples: [Double] = []
            for _ in 0..<max(2, repeats / 5) {
                let r = try invoke("faster-tad", operation: "detect", options: ["timelines": 0])
                samples.append(r.result["videos_per_s"]?.doubleValue ?? 0)
            }
            records.append(record("faster_tad.detect", unit: "videos/s", samples))
        }
    }

    /// An ActivityNet-shaped set: 1–3 ground-truth segments per video over `classes` classes, and
    /// per video a jittered copy of each segment (often mislabelled) plus random segments. Scores
    /// are distinct (a running 1e-10 offset), so evaluators that break ties differently agree.
    static func activityNetSet(videos: Int, classes: Int, predictionsPerVideo: Int, seed: UInt64) -> (String, String) {
        var rng = SeededGenerator(seed: seed)
        var serial = 0.0
        func score(_ s: Double) -> Double {
            serial += 1
            return s + serial * 1e-10
        }
        var gt = "{\"version\": \"VERSION 1.3\", \"taxonomy\": [], \"database\": {"
        var pred = "{\"version\": \"VERSION 1.3\", \"external_data\": {}, \"results\": {"
        for v in 0..<videos {
            let id = String(format: "v_%06d", v), duration = 30 + 200 * rng.nextUniform()
            var anns: [String] = [], dets: [String] = []
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let s = rng.nextUniform() * duration * 0.8, e = min(duration, s + (0.05 + 0.5 * rng.nextUniform()) * duration)
                let label = Int(rng.next() % UInt64(classes))
                anns.append(String(format: "{\"segment\": [%.2f, %.2f], \"label\": \"class %d\"}", s, e, label))
                let len = e - s
                let shown = rng.nextUniform() < 0.7 ? label : Int(rng.next() % UInt64(classes))
                dets.append(
                    String(
                        format: "{\"label\": \"class %d\", \"score\": %.10f, \"segment\": [%.2f, %.2f]}", shown, score(0.3 + 0.7 * rng.nextUniform()),
                        s + 0.1 * len * rng.nextNormal(), e + 0.1 * len * rng.nextNormal()))
            }
            while dets.count < predictionsPerVideo {
                let s = rng.nextUniform() * duration, e = min(duration, s + rng.nextUniform() * duration * 0.5)
                dets.append(
                    String(
                        format: "{\"label\": \"class %d\", \"score\": %.10f, \"segment\": [%.2f, %.2f]}", Int(rng.next() % UInt64(classes)),
                        score(0.6 * rng.nextUniform()), s, e))
            }
            gt +=
                (v > 0 ? ", " : "")
                + "\"\(id)\": {\"subset\": \"validation\", \"duration\": \(String(format: "%.2f", duration)), \"annotations\": [\(anns.joined(separator: ", "))]}"
            pred += (v > 0 ? ", " : "") + "\"\(id)\": [\(dets.joined(separator: ", "))]"
        }
        return (gt + "}}\n", pred + "}}\n")
    }

    /// A Python that imports numpy and pandas: MENAGERIE_PYTHON, the reference venv, or python3.
    static func pythonWithPandas() -> String? {
        var candidates: [String] = []
        if let p = ProcessInfo.processInfo.environment["MENAGERIE_PYTHON"] { candidates.append(p) }
        candidates += [FileManager.default.currentDirectoryPath + "/.venv-reference/bin/python", "/usr/bin/python3", "/usr/local/bin/python3"]
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: c)
            p.arguments = ["-c", "import numpy, pandas"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { continue }
            p.waitUntilExit()
            if p.terminationStatus == 0 { return c }
        }
        return nil
    }

    /// A file of the source tree, when `menagerie bench` runs from it (as `make bench` does).
    static func sourceFile(_ relative: String) -> String? {
        let path = FileManager.default.currentDirectoryPath + "/" + relative
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
}
