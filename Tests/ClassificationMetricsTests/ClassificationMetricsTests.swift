import ClassificationMetrics
import Foundation
import TestSupport
import Testing

/// Hand-computed cases for `classificationReport`, and one run through the CLI.
@Suite struct ClassificationMetricsTests {
    // 4 samples, 3 classes (probabilities). Predictions (argmax): 0, 1, 1, 0; labels: 0, 1, 0, 0.
    let probs: [Double] = [
        0.7, 0.2, 0.1,
        0.1, 0.6, 0.3,
        0.3, 0.5, 0.2,
        0.4, 0.35, 0.25,
    ]
    let labels = [0, 1, 0, 0]

    @Test func accuracyTopKConfusionAndRecall() throws {
        let r = try classificationReport(scores: probs, samples: 4, classes: 3, labels: labels, topK: [1, 2, 3], bins: 10, probabilities: true)
        #expect(r.accuracy == 0.75)
        #expect(r.topK["1"] == 0.75)
        #expect(r.topK["2"] == 1.0) // sample 2: class 0 (0.3) is second
        #expect(r.topK["3"] == 1.0)
        #expect(r.confusion == [[2, 1, 0], [0, 1, 0], [0, 0, 0]])
        #expect(r.perClassRecall[0] == 2.0 / 3.0)
        #expect(r.perClassRecall[1] == 1.0)
        #expect(r.perClassRecall[2] == nil) // class 2 has no samples
        #expect(r.balancedAccuracy == (2.0 / 3.0 + 1.0) / 2)
    }

    @Test func expectedCalibrationErrorByHand() throws {
        // Confidences 0.7 (✓), 0.6 (✓), 0.5 (✗), 0.4 (✓) with 10 bins (b/10, (b+1)/10]:
        // bins 6, 5, 4, 3 hold one sample each: ECE = (|1−.7| + |1−.6| + |0−.5| + |1−.4|)/4 = 0.45.
        let r = try classificationReport(scores: probs, samples: 4, classes: 3, labels: labels, topK: [1], bins: 10, probabilities: true)
        #expect(abs(r.ece - 0.45) < 1e-12)
        #expect(r.reliability.map(\.count) == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
        #expect(r.reliability[6].accuracy == 1 && r.reliability[4].accuracy == 0)
    }

    @Test func logitsGoThroughSoftmax() throws {
        // log-probabilities are logits whose softmax gives back the probabilities.
        let logits = probs.map { Foundation.log($0) + 3 }
        let a = try classificationReport(scores: logits, samples: 4, classes: 3, labels: labels, topK: [1], bins: 10, probabilities: false)
        #expect(abs(a.ece - 0.45) < 1e-9)
    }

    @Test func tiesRankByLowerClassIndex() throws {
        let r = try classificationReport(scores: [0.5, 0.5, 0.5, 0.5], samples: 2, classes: 2, labels: [0, 1], topK: [1], bins: 2, probabilities: true)
        #expect(r.topK["1"] == 0.5)
        #expect(r.confusion == [[1, 0], [1, 0]])
    }

    @Test func badShapesAndLabelsAreRefused() {
        #expect(throws: ClassificationMetricsError.self) {
            try classificationReport(scores: [1, 2, 3], samples: 2, classes: 2, labels: [0, 1], topK: [1], bins: 5, probabilities: false)
        }
        #expect(throws: ClassificationMetricsError.self) {
            try classificationReport(scores: [1, 2, 3, 4], samples: 2, classes: 2, labels: [0, 2], topK: [1], bins: 5, probabilities: false)
        }
    }

    @Test func throughTheCLI() throws {
        let dir = TempDir("cm")
        let make = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import numpy as np
                np.save('\(dir.path)/s.npy', np.array(\(probs), dtype=np.float64).reshape(4, 3))
                np.save('\(dir.path)/l.npy', np.array(\(labels), dtype=np.int64))
                """,
            ])
        #expect(make.status == 0)
        let cli = CLI()
        let r = try cli.run(
            "run", "classification-metrics", "--input", "scores=\(dir.path)/s.npy", "--input", "labels=\(dir.path)/l.npy",
            "--set", "scores=probabilities", "--set", "bins=10", "--set", "top_k=1,2", "--out", dir.path + "/out", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let result = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["result"] as! [String: Any]
        #expect(result["accuracy"] as? Double == 0.75)
        #expect(abs((result["ece"] as! Double) - 0.45) < 1e-12)
        #expect((result["per_class_recall"] as! [Any])[2] is NSNull)
        let check = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                "import numpy as np; c = np.load('\(dir.path)/out/confusion.npy'); assert c.dtype == np.int64 and c.tolist() == [[2,1,0],[0,1,0],[0,0,0]], c",
            ])
        #expect(check.status == 0, "\(check.stderr)")
        let bad = try cli.run(
            "run", "classification-metrics", "--input", "scores=\(dir.path)/s.npy", "--input", "labels=\(dir.path)/l.npy",
            "--set", "scores=probs")
        #expect(bad.status == 2 && bad.stderr.contains("one of \"logits\", \"probabilities\""))
    }
}
