import FasterTAD
import Formats
import Foundation
import TestSupport
import Testing

/// Soft-NMS and ensembling on hand-computed cases, the data path (rescaling, synthetic-actions,
/// ActivityNet export), and the detector trained and run through the CLI.
@Suite struct DetectorTests {
    func seg(_ s: Double, _ e: Double, _ score: Double, _ label: Int = 0) -> ScoredSegment { ScoredSegment(start: s, end: e, score: score, label: label) }

    /// A [0, 10] 0.9; B [0, 5] 0.8 overlaps A by tIoU 0.5; C [20, 30] 0.7 overlaps nothing.
    @Test func softNMSHandCases() {
        let input = [seg(0, 10, 0.9), seg(0, 5, 0.8), seg(20, 30, 0.7)]
        let gaussian = SoftNMS(sigma: 0.4, method: .gaussian)(input)
        #expect(gaussian.map(\.start) == [0, 20, 0] && gaussian.map(\.end) == [10, 30, 5])
        #expect(abs(gaussian[2].score - 0.8 * exp(-0.25 / 0.4)) < 1e-12 && gaussian[1].score == 0.7)
        let linear = SoftNMS(method: .linear, threshold: 0.3)(input)
        #expect(abs(linear[2].score - 0.4) < 1e-12)
        // Linear below its threshold leaves B alone.
        #expect(SoftNMS(method: .linear, threshold: 0.6)(input).map(\.score) == [0.9, 0.8, 0.7])
        let hard = SoftNMS(method: .hard, threshold: 0.4)(input)
        #expect(hard.map(\.score) == [0.9, 0.7])
        #expect(SoftNMS(topN: 2)(input).count == 2)
        // Decay compounds: D overlaps both A and B.
        let chain = SoftNMS(sigma: 0.5)([seg(0, 10, 1), seg(5, 15, 0.9), seg(0, 10, 0.5)])
        // After A: B·exp(-(1/3)²/0.5), the copy of A · exp(-1/0.5); B is kept next and decays the copy by its tIoU 1/3 again.
        let b = 0.9 * exp(-(1.0 / 9) / 0.5), copy = 0.5 * exp(-1 / 0.5) * exp(-(1.0 / 9) / 0.5)
        #expect(abs(chain[1].score - b) < 1e-12 && abs(chain[2].score - copy) < 1e-12)
        // Per label: overlapping segments of different classes do not suppress each other.
        let perLabel = SoftNMS(perLabel: true)([seg(0, 10, 0.9, 0), seg(0, 10, 0.8, 1)])
        #expect(perLabel.map(\.score) == [0.9, 0.8])
    }

    @Test func ensembleFusionHandCase() {
        let a = [seg(0, 10, 0.8)], b = [seg(2, 12, 0.6), seg(40, 50, 0.5)]
        let fused = Ensemble.combine([a, b], weights: [1, 1], mode: .fusion, fusionIoU: 0.55, nms: SoftNMS(threshold: 0.99))
        // tIoU 8/12 joins the first two: bounds weighted by score, score 0.7 · 2/2; the lone one 0.5 · 1/2.
        #expect(fused.count == 2)
        #expect(abs(fused[0].start - 1.2 / 1.4) < 1e-12 && abs(fused[0].end - (8 + 7.2) / 1.4) < 1e-12 && abs(fused[0].score - 0.7) < 1e-12)
        #expect(abs(fused[1].score - 0.25) < 1e-12)
        let merged = Ensemble.combine([a, b], weights: [2, 1], mode: .merge, fusionIoU: 0.55, nms: SoftNMS(sigma: 0.4))
        #expect(merged.count == 3 && merged[0].score == 1.6)
    }

    @Test func rescalingIsLinearWithAlignedEnds() {
        // Two channels: a ramp and a constant, 5 snippets → 9.
        let x: [Float] = (0..<5).flatMap { [Float($0), 3] }
        let y = rescaleSnippets(x, snippets: 5, channels: 2, to: 9)
        for i in 0..<9 {
            #expect(abs(y[2 * i] - Float(i) * 0.5) < 1e-6)
            #expect(y[2 * i + 1] == 3)
        }
        #expect(rescaleSnippets(x, snippets: 5, channels: 2, to: 5) == x)
        let down = rescaleSnippets(x, snippets: 5, channels: 2, to: 3)
        #expect(down[0] == 0 && down[2] == 2 && down[4] == 4)
    }

    @Test func boundaryTargetsFollowBMN() {
        // T = 10, a start at 0.5: the 3-snippet region [0.35, 0.65] covers snippets 4 and 5 fully, 3 and 6 by half.
        let t = TAD.boundaryTargets([(start: 0.5, end: 0.9, label: 0)], snippets: 10)
        let start = Array(t[0..<10])
        #expect(abs(start[3] - 0.5) < 1e-6 && abs(start[4] - 1) < 1e-6 && abs(start[5] - 1) < 1e-6 && abs(start[6] - 0.5) < 1e-6 && start[2] == 0)
        #expect(abs(t[10 + 9] - 1) < 1e-6 && abs(t[10 + 7] - 0.5) < 1e-6)
    }

    @Test func syntheticActionsAreDeterministicAndPlanted() {
        var c = SyntheticActions.Config()
        c.trainVideos = 12
        c.validationVideos = 4
        let a = SyntheticActions(c), b = SyntheticActions(c)
        #expect(a.features(3) == b.features(3) && a.videos.count == 16)
        c.seed = 1
        #expect(SyntheticActions(c).features(3) != a.features(3))
        for v in a.videos {
            #expect(!v.actions.isEmpty && v.actions.count <= c.maxActions)
            #expect((c.minSnippets...c.maxSnippets).contains(v.snippets))
            // In time order, inside the video, not overlapping.
            for (k, s) in v.actions.enumerated() {
                #expect(s.start >= 0 && s.end <= v.duration && s.end > s.start)
                if k > 0 { #expect(s.start >= v.actions[k - 1].end) }
            }
        }
        // The planted segments stand out: an action's snippets are further from the video's mean than background ones.
        let v = a.videos[0], f = a.features(0), ch = c.channels
        let mean = (0..<ch).map { j in (0..<v.snippets).reduce(Float(0)) { $0 + f[$1 * ch + j] } / Float(v.snippets) }
        func dist(_ i: Int) -> Float { (0..<ch).reduce(Float(0)) { $0 + (f[i * ch + $1] - mean[$1]) * (f[i * ch + $1] - mean[$1]) } }
        let inside = Set(v.actions.flatMap { Int(($0.start / c.secondsPerSnippet).rounded())..<Int(($0.end / c.secondsPerSnippet).rounded()) })
        let dIn = inside.map(dist).reduce(0, +) / Float(inside.count)
        let outside = (0..<v.snippets).filter { !inside.contains($0) }
        if !outside.isEmpty { #expect(dIn > outside.map(dist).reduce(0, +) / Float(outside.count)) }
    }

    /// Export → ActivityNet files → train a small, non-default network on them → detect with the
    /// saved model (its sizes read from config.json) → evaluate; bad inputs named on the way.
    @Test func trainDetectEvaluateThroughTheCLI() throws {
        let dir = TempDir("faster-tad")
        let cli = CLI()
        let export = try cli.run(
            "run", "synthetic-actions", "export", "--set", "videos=48", "--set", "val_videos=16", "--set", "channels=24",
            "--set", "classes=4", "--set", "max_snippets=96", "--out", dir.sub("data"), "--json")
        #expect(export.status == 0, "\(export.stderr)")
        let gt = try ActivityNet.readGroundTruth(dir.sub("data") + "/ground_truth.json")
        #expect(gt.videos.count == 64 && gt.labels(subset: "training").count == 4)

        let train = try cli.run(
            "run", "faster-tad", "train", "--set", "data=\(dir.sub("data"))", "--set", "epochs=4", "--set", "hidden=32",
            "--set", "heads=2", "--set", "snippets=48", "--set", "roi_channels=16", "--set", "head_hidden=64", "--set", "batch=8",
            "--set", "timelines=2", "--set", "checkpoint_every=2", "--out", dir.sub("train"), "--json")
        #expect(train.status == 0, "\(train.stderr)")
        let result = try JSONValue.parse(train.stdout)["result"]!
        #expect(result["aux_channels"]?.intValue == 4)
        #expect(result["mAP"]?.arrayValue?.count == 10)
        let curve = try String(contentsOfFile: dir.sub("train") + "/curve.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { Double($0.split(separator: ",")[1])! }
        #expect(curve.count == 4 && curve.last! < curve.first!, "loss \(curve)")
        #expect(FileManager.default.fileExists(atPath: dir.sub("train") + "/timelines/v_00048.png"))
        #expect(FileManager.default.fileExists(atPath: dir.sub("train") + "/checkpoints/epoch-2/model.safetensors"))

        let model = dir.sub("train") + "/model"
        let detect = try cli.run(
            "run", "faster-tad", "detect", "--set", "data=\(dir.sub("data"))", "--set", "model=\(model)", "--out", dir.sub("detect"), "--json")
        #expect(detect.status == 0, "\(detect.stderr)")
        let predictions = try ActivityNet.readPredictions(dir.sub("detect") + "/predictions.json")
        #expect(predictions.videos.count == 16 && predictions.videos.allSatisfy { $0.detections.count <= 100 })
        let evaluate = try cli.run(
            "run", "faster-tad", "evaluate", "--set", "data=\(dir.sub("data"))", "--set", "predictions=\(dir.sub("detect"))/predictions.json",
            "--out", dir.sub("eval"), "--json")
        #expect(evaluate.status == 0, "\(evaluate.stderr)")
        let e = try JSONValue.parse(evaluate.stdout)["result"]!
        #expect(e["average_mAP"]?.doubleValue == result["average_mAP"]?.doubleValue)

        // Ensembling a detector with itself under `merge` keeps its detections' order and count bound.
        let ens = try cli.run(
            "run", "faster-tad", "ensemble", "--set", "members=[\"\(dir.sub("detect"))/predictions.json\",\"\(dir.sub("detect"))/predictions.json\"]",
            "--set", "data=\(dir.sub("data"))", "--out", dir.sub("ens"), "--json")
        #expect(ens.status == 0, "\(ens.stderr)")

        // One video as tensors: segments [K, 3] within the video, labels [K]; the aux stream is required.
        let one = dir.sub("data") + "/features/v_00050.npy", oneAux = dir.sub("data") + "/aux_features/v_00050.npy"
        let noAux = try cli.run("run", "faster-tad", "detect", "--set", "model=\(model)", "--input", "features=\(one)")
        #expect(noAux.status != 0 && noAux.stderr.contains("--input aux="))
        let tensor = try cli.run(
            "run", "faster-tad", "detect", "--set", "model=\(model)", "--input", "features=\(one)", "--input", "aux=\(oneAux)",
            "--out", dir.sub("one"), "--json")
        #expect(tensor.status == 0, "\(tensor.stderr)")
        let segments = try NPY.read(path: dir.sub("one") + "/segments.npy"), labels = try NPY.read(path: dir.sub("one") + "/labels.npy")
        #expect(segments.rank == 2 && segments.shape[1] == 3 && labels.shape == [segments.shape[0]] && segments.shape[0] > 0)
        let values = try segments.doubles()
        for k in 0..<segments.shape[0] { #expect(values[3 * k] >= 0 && values[3 * k] < values[3 * k + 1] && values[3 * k + 1] <= 1) }

        // Bad input: features of another width, a folder without features, a model folder without config.
        let wrong = try cli.run("run", "faster-tad", "detect", "--set", "model=\(model)", "--out", dir.sub("wrong"))
        #expect(wrong.status != 0 && wrong.stderr.contains("channels"))
        let noFeatures = try cli.run(
            "run", "faster-tad", "detect", "--set", "ground_truth=\(dir.sub("data"))/ground_truth.json",
            "--set", "features=\(dir.sub("nowhere"))", "--set", "model=\(model)")
        #expect(noFeatures.status != 0 && noFeatures.stderr.contains("nowhere"))
        let noModel = try cli.run("run", "faster-tad", "detect", "--set", "model=\(dir.sub("data"))")
        #expect(noModel.status != 0 && noModel.stderr.contains("no config.json"))
    }

    /// The embedded model detects the embedded validation videos well (it reached ≈ 0.97 average
    /// mAP when trained; Docs/methods/faster-tad.md).
    @Test func embeddedModelDetects() throws {
        let dir = TempDir("faster-tad-embedded")
        let r = try CLI().run("run", "faster-tad", "evaluate", "--set", "timelines=0", "--out", dir.sub("out"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let result = try JSONValue.parse(r.stdout)["result"]!
        #expect((result["average_mAP"]?.doubleValue ?? 0) > 0.8, "\(result)")
    }
}

/// Issue 19: a Faster-TAD model folder's config.json is validated (positivity before
/// `hidden % heads`, upper bounds, parameter memory) and read as a regular file.
@Suite struct FasterTADConfigLimitsTests {
    func run(_ edit: (String) -> String) throws -> (CommandResult, String) {
        let dir = TempDir("tad-limits")
        let folder = dir.sub("model")
        let shipped = TestPaths.sourceRoot + "/Plugins/FasterTAD/Resources/faster-tad-synthetic"
        try FileManager.default.copyItem(atPath: shipped + "/model.safetensors", toPath: folder + "/model.safetensors")
        let config = try String(contentsOfFile: shipped + "/config.json", encoding: .utf8)
        try edit(config).write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
        let r = try CLI().run("run", "faster-tad", "detect", "--set", "model=\(folder)", "--out", dir.path + "/out")
        return (r, folder + "/config.json")
    }

    @Test func zeroHeadsIsRefusedNamingTheFile() throws {
        let (r, path) = try run { $0.replacingOccurrences(of: #""heads": 4"#, with: #""heads": 0"#) }
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(path) && r.stderr.contains("'hidden' (128) must be a positive multiple of 'heads' (0)"), "\(r.stderr)")
    }

    @Test func hugeWidthIsRefusedBeforeAllocating() throws {
        let (r, path) = try run { $0.replacingOccurrences(of: #""hidden": 128"#, with: #""hidden": 1000000000"#) }
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(path) && r.stderr.contains("'hidden' = 1000000000 is out of range"), "\(r.stderr)")
    }
}
