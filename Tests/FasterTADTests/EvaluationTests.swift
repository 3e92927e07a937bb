import FasterTAD
import Formats
import Foundation
import TestSupport
import Testing

/// The ActivityNet evaluation against the official code's output (`anet-small`), hand-computed
/// cases, and what bad files produce.
@Suite struct EvaluationTests {
    let fixture = TestPaths.fixtures + "/anet-small"

    struct Expected: Decodable {
        let tiou_thresholds: [Double]
        let mAP: [Double]
        let average_mAP: Double
    }

    @Test func detectionMatchesTheOfficialEvaluator() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: fixture + "/expected.json")))
        let r = try ActivityNetEvaluation.detection(
            groundTruth: try ActivityNet.readGroundTruth(fixture + "/ground_truth.json"),
            predictions: try ActivityNet.readPredictions(fixture + "/predictions.json"))
        #expect(r.thresholds.count == expected.tiou_thresholds.count)
        for (a, b) in zip(r.thresholds, expected.tiou_thresholds) { #expect(abs(a - b) < 1e-12) }
        for (t, (ours, theirs)) in zip(r.mAP, expected.mAP).enumerated() {
            #expect(abs(ours - theirs) <= 1e-9, "mAP at tIoU \(expected.tiou_thresholds[t]): \(ours) vs \(theirs)")
        }
        #expect(abs(r.averageMAP - expected.average_mAP) <= 1e-9)
    }

    struct ProposalRun: Decodable {
        let max_avg_nr_proposals: Double
        let average_recall: [Double]
        let proposals_per_video: [Double]
        let auc: Double
    }
    struct ProposalExpected: Decodable { let runs: [ProposalRun] }

    @Test func proposalsMatchTheOfficialEvaluator() throws {
        let expected = try JSONDecoder().decode(ProposalExpected.self, from: Data(contentsOf: URL(fileURLWithPath: fixture + "/proposals_expected.json")))
        let gt = try ActivityNet.readGroundTruth(fixture + "/ground_truth.json")
        let proposals = try ActivityNet.readPredictions(fixture + "/predictions.json", requireLabels: false)
        for run in expected.runs {
            let r = try ActivityNetEvaluation.proposals(groundTruth: gt, proposals: proposals, maxAverageProposals: run.max_avg_nr_proposals)
            #expect(r.averageRecall.count == run.average_recall.count)
            let recall = zip(r.averageRecall, run.average_recall).map { abs($0 - $1) }.max()!
            let an = zip(r.proposalsPerVideo, run.proposals_per_video).map { abs($0 - $1) }.max()!
            #expect(recall <= 1e-9 && an <= 1e-9, "max AN \(run.max_avg_nr_proposals): recall Δ \(recall), AN Δ \(an)")
            #expect(abs(r.auc - run.auc) <= 1e-9 * max(1, run.auc))
        }
    }

    func gt(_ annotations: [(String, [(Double, Double, String)])]) -> ActivityNet.GroundTruth {
        ActivityNet.GroundTruth(
            videos: annotations.map { id, anns in
                ActivityNet.Video(id: id, subset: "validation", duration: 100, annotations: anns.map { .init(start: $0.0, end: $0.1, label: $0.2) })
            })
    }

    func predictions(_ list: [(String, [(Double, Double, Double, String)])]) -> ActivityNet.Predictions {
        ActivityNet.Predictions(videos: list.map { id, dets in (id, dets.map { .init(start: $0.0, end: $0.1, score: $0.2, label: $0.3) }) })
    }

    /// Two ground truths; a hit, a duplicate of it (false positive: the ground truth is taken), a
    /// second hit: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → VOC AP = 1/2 · 1 + 1/2 · 2/3 = 5/6.
    @Test func handComputedAveragePrecision() throws {
        let g = gt([("v", [(0, 10, "A"), (20, 30, "A")])])
        let p = predictions([("v", [(0, 10, 0.9, "A"), (1, 10, 0.8, "A"), (20, 30, 0.7, "A")])])
        let r = try ActivityNetEvaluation.detection(groundTruth: g, predictions: p)
        for m in r.mAP { #expect(abs(m - 5.0 / 6) < 1e-12) }
        // A prediction in a video without ground truth of its class is a false positive everywhere.
        let q = predictions([("w", [(0, 10, 0.95, "A")]), ("v", [(0, 10, 0.9, "A"), (20, 30, 0.7, "A")])])
        let s = try ActivityNetEvaluation.detection(groundTruth: gt([("v", [(0, 10, "A"), (20, 30, "A")]), ("w", [(50, 60, "B")])]), predictions: q)
        // Class A: FP, TP, TP → precision 0, 1/2, 2/3 at recall 0, 1/2, 1 → 1/2 · 2/3 + 1/2 · 2/3; class B has no prediction: 0.
        for m in s.mAP { #expect(abs(m - (2.0 / 3) / 2) < 1e-12) }
        #expect(s.classesWithoutPredictions == ["B"])
    }

    /// Equal scores keep input order (documented): a miss listed before a hit ranks first.
    @Test func tiesKeepInputOrder() throws {
        let g = gt([("v", [(0, 10, "A")])])
        let missFirst = try ActivityNetEvaluation.detection(groundTruth: g, predictions: predictions([("v", [(50, 60, 0.5, "A"), (0, 10, 0.5, "A")])]))
        let hitFirst = try ActivityNetEvaluation.detection(groundTruth: g, predictions: predictions([("v", [(0, 10, 0.5, "A"), (50, 60, 0.5, "A")])]))
        #expect(abs(missFirst.averageMAP - 0.5) < 1e-12)
        #expect(abs(hitFirst.averageMAP - 1) < 1e-12)
    }

    /// A hit needs tIoU ≥ threshold, as the official evaluator counts it: gt [0, 10] and a prediction
    /// [0, 5] overlap with tIoU exactly 0.5, a hit at 0.5 and a miss at 0.6 (mAP [1, 0]).
    @Test func aTIoUEqualToTheThresholdIsAHit() throws {
        let r = try ActivityNetEvaluation.detection(
            groundTruth: gt([("v", [(0, 10, "A")])]), predictions: predictions([("v", [(0, 5, 0.9, "A")])]), thresholds: [0.5, 0.6])
        #expect(ActivityNetEvaluation.tIoU(0, 10, 0, 5) == 0.5)
        #expect(r.mAP == [1, 0])
    }

    /// The precision envelope matters: precision 1/2 then 1 at recall 1/2 and 1 gives AP 1 with
    /// VOC 2011's right-to-left maximum (mprec [0, .5, 1, 0] → [1, 1, 1, 0]), 3/4 without it.
    @Test func thePrecisionEnvelopeIsTheRightMaximum() {
        #expect(abs(ActivityNetEvaluation.interpolatedAP(precision: [0.5, 1], recall: [0.5, 1]) - 1) < 1e-12)
    }

    @Test func interpolatedPrecisionIsVOC2011() {
        // mprec [0, 1, .5, 2/3, 0] → right-max [1, 1, 2/3, 2/3, 0]; recall steps at 1/2 and 1.
        #expect(abs(ActivityNetEvaluation.interpolatedAP(precision: [1, 0.5, 2.0 / 3], recall: [0.5, 0.5, 1]) - 5.0 / 6) < 1e-12)
        // Where the envelope changes the value (by hand, VOC 2011's rule as in the official
        // `interpolated_prec_rec`): hit, miss, hit, hit on four ground truths gives precision
        // 1, 1/2, 2/3, 3/4 at recall 1/4, 1/4, 1/2, 3/4. mprec [0, 1, .5, 2/3, .75, 0] → right-max
        // [1, 1, .75, .75, .75, 0]; recall steps at indices 1, 3, 4, 5 (mrec [0, .25, .25, .5, .75, 1]):
        // AP = .25·1 + .25·.75 + .25·.75 + .25·0 = 0.625. Without the envelope it would be
        // .25·(1 + 2/3 + .75) = 0.6041…, with a left-to-right maximum 1, with mprec[i − 1] 0.8125.
        #expect(abs(ActivityNetEvaluation.interpolatedAP(precision: [1, 0.5, 2.0 / 3, 0.75], recall: [0.25, 0.25, 0.5, 0.75]) - 0.625) < 1e-12)
        #expect(ActivityNetEvaluation.tIoU(0, 10, 5, 15) == 5.0 / 15)
        #expect(ActivityNetEvaluation.tIoU(0, 10, 20, 30) == 0)
    }

    func write(_ text: String, _ dir: TempDir, _ name: String) throws -> String {
        let path = dir.sub(name)
        try? FileManager.default.removeItem(atPath: path)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func badFilesAreNamed() throws {
        let dir = TempDir("anet-bad")
        let noDatabase = try write(#"{"version": "1.3", "taxonomy": []}"#, dir, "nodb.json")
        #expect(throws: (any Error).self) { try ActivityNet.readGroundTruth(noDatabase) }
        do { _ = try ActivityNet.readGroundTruth(noDatabase) } catch { #expect("\(error)".contains("no 'database'") && "\(error)".contains("nodb.json")) }

        let backwards = try write(
            #"{"database": {"vid7": {"subset": "validation", "duration": 9, "annotations": [{"segment": [5, 2], "label": "A"}]}}}"#, dir, "back.json")
        do {
            _ = try ActivityNet.readGroundTruth(backwards)
            Issue.record("end < start accepted")
        } catch {
            #expect("\(error)".contains("vid7") && "\(error)".contains("end < start"))
        }
        let noResults = try write(#"{"version": "1.3"}"#, dir, "nores.json")
        do {
            _ = try ActivityNet.readPredictions(noResults)
            Issue.record("missing results accepted")
        } catch { #expect("\(error)".contains("no 'results'")) }
        let broken = try write(#"{"database": {"a": [}"#, dir, "broken.json")
        do {
            _ = try ActivityNet.readGroundTruth(broken)
            Issue.record("broken JSON accepted")
        } catch { #expect("\(error)".contains("broken.json") && "\(error)".contains("line")) }

        // A label the ground truth lacks: an error by default (as the official KeyError), dropped with `ignore`.
        let g = gt([("v", [(0, 10, "A")])])
        let p = predictions([("v", [(0, 10, 0.9, "A"), (0, 10, 0.95, "Alpha")])])
        do {
            _ = try ActivityNetEvaluation.detection(groundTruth: g, predictions: p)
            Issue.record("unknown label accepted")
        } catch {
            #expect("\(error)".contains("'Alpha'") && "\(error)".contains("unknown_labels=ignore"))
        }
        let ignored = try ActivityNetEvaluation.detection(groundTruth: g, predictions: p, unknownLabels: .ignore)
        #expect(ignored.ignoredPredictions == 1 && abs(ignored.averageMAP - 1) < 1e-12)
        do {
            _ = try ActivityNetEvaluation.detection(groundTruth: g, predictions: p, subset: "testing")
            Issue.record("empty subset accepted")
        } catch {
            #expect("\(error)".contains("subset 'testing'"))
        }
    }

    /// Written files read back unchanged, in order.
    @Test func jsonRoundTrip() throws {
        let dir = TempDir("anet-json")
        let g = gt([("b", [(1.5, 2.25, "X \"quoted\"")]), ("a", [(0, 1, "Y")])])
        let p = predictions([("b", [(1, 2, 0.25, "Y"), (0.5, 0.75, 0.5, "X \"quoted\"")]), ("a", [])])
        let gp = try write(ActivityNet.json(g), dir, "g.json"), pp = try write(ActivityNet.json(p), dir, "p.json")
        let g2 = try ActivityNet.readGroundTruth(gp), p2 = try ActivityNet.readPredictions(pp)
        #expect(g2.videos.map(\.id) == ["b", "a"] && g2.videos[0].annotations == g.videos[0].annotations)
        #expect(p2.videos.map(\.id) == ["b", "a"] && p2.videos[0].detections == p.videos[0].detections)
    }

    @Test func metricThroughTheCLI() throws {
        let dir = TempDir("anet-cli")
        let cli = CLI()
        let r = try cli.run(
            "run", "anet-detection", "--set", "ground_truth=\(fixture)/ground_truth.json", "--set", "predictions=\(fixture)/predictions.json",
            "--out", dir.sub("out"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let saved = try JSONValue.parse(try String(contentsOfFile: dir.sub("out") + "/result.json", encoding: .utf8))
        let result = saved["result"] ?? saved
        #expect(result["mAP"]?.arrayValue?.count == 10 && result["tiou_thresholds"]?.arrayValue?.count == 10)
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: fixture + "/expected.json")))
        #expect(abs((result["average_mAP"]?.doubleValue ?? 0) - expected.average_mAP) <= 1e-9)
        #expect(FileManager.default.fileExists(atPath: dir.sub("out") + "/per_class.csv"))
        let bad = try cli.run("run", "anet-detection", "--set", "ground_truth=\(dir.path)/missing.json", "--set", "predictions=x.json")
        #expect(bad.status != 0 && bad.stderr.contains("missing.json") && bad.stderr.contains("does not exist"))
    }
}
