import ClassificationMetrics
import Foundation
import TestSupport
import Testing

/// Issue 19: scores from outside are checked before they are compared, exponentiated or binned.
@Suite struct ValidatedScoresTests {
    @Test(arguments: [Double.nan, .infinity, -.infinity])
    func nonFiniteScoreIsRefusedNamingTheTensorAndIndex(_ bad: Double) throws {
        var scores: [Double] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        scores[4] = bad
        do {
            _ = try classificationReport(scores: scores, samples: 2, classes: 3, labels: [0, 1], topK: [1], bins: 10, probabilities: false)
            Issue.record("a non-finite score was accepted")
        } catch {
            let text = String(describing: error)
            #expect(text.contains("scores[1, 1]"), "\(text)")
            #expect(text.contains("flat index 4"), "\(text)")
            #expect(text.contains("\(bad)"), "\(text)")
            #expect(text.contains("not a finite number"), "\(text)")
        }
    }

    @Test func probabilityOutsideZeroOneIsRefused() throws {
        // 1e300 as a probability made the bin index Int(1e300 × bins): a trap.
        do {
            _ = try classificationReport(scores: [1e300, 0, 0, 1], samples: 2, classes: 2, labels: [0, 1], topK: [1], bins: 10, probabilities: true)
            Issue.record("a probability of 1e300 was accepted")
        } catch {
            let text = String(describing: error)
            #expect(text.contains("scores[0, 0]") && text.contains("1e+300") && text.contains("not a probability"), "\(text)")
        }
    }

    @Test func hugeFiniteLogitsStillScore() throws {
        let r = try classificationReport(
            scores: [1e300, -1e300, -1e300, 1e300], samples: 2, classes: 2, labels: [0, 1], topK: [1], bins: 10,
            probabilities: false)
        #expect(r.accuracy == 1)
    }

    @Test func binsBeyondTheLimitAreRefused() throws {
        #expect(throws: (any Error).self) {
            _ = try classificationReport(scores: [1, 0], samples: 1, classes: 2, labels: [0], topK: [1], bins: maxBins + 1, probabilities: false)
        }
    }

    /// Through the real CLI: a NaN in an .npy of scores is a usage error (exit 2), not SIGILL.
    @Test func nanScoresThroughTheCLI() throws {
        let dir = TempDir("cm-nan")
        let make = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import numpy as np
                np.save('\(dir.path)/s.npy', np.array([[0.1, 0.2], [float('nan'), 1.0]], dtype=np.float32))
                np.save('\(dir.path)/l.npy', np.array([0, 1], dtype=np.int64))
                """,
            ])
        try #require(make.status == 0, "\(make.stderr)")
        let r = try CLI().run(
            "run", "classification-metrics", "--input", "scores=\(dir.path)/s.npy", "--input", "labels=\(dir.path)/l.npy",
            "--out", dir.path + "/out")
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("scores[1, 0] (flat index 2) = nan is not a finite number"), "\(r.stderr)")
    }
}
