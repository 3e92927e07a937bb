import Foundation
import TestSupport
import Testing

/// The C plugin through the CLI, against hand-computed IoU and Dice.
@Suite struct SegmentationMetricsTests {
    let dir = TempDir("seg")
    let cli = CLI()

    func evaluate(_ prediction: String, _ target: String, dtype: String = "uint8", _ sets: [String] = []) throws -> (CommandResult, [String: Any]?) {
        let make = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import numpy as np
                np.save('\(dir.path)/p.npy', np.array(\(prediction), dtype=np.\(dtype)))
                np.save('\(dir.path)/t.npy', np.array(\(target), dtype=np.\(dtype)))
                """,
            ])
        guard make.status == 0 else { throw TestSupportError(make.stderr) }
        let r = try cli.run(
            ["run", "segmentation-metrics", "--input", "prediction=\(dir.path)/p.npy", "--input", "target=\(dir.path)/t.npy", "--json"]
                + sets.flatMap { ["--set", $0] })
        let result = r.status == 0 ? (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any] : nil
        return (r, result)
    }

    @Test func iouAndDiceByHand() throws {
        // target  [[0,0,1],[1,1,2]]   prediction [[0,1,1],[1,2,2]]
        // class 0: TP 1, FN 1, FP 0 → IoU 1/2, Dice 2/3
        // class 1: TP 2, FN 1, FP 1 → IoU 2/4, Dice 4/6
        // class 2: TP 1, FN 0, FP 1 → IoU 1/2, Dice 2/3
        let (r, res) = try evaluate("[[0,1,1],[1,2,2]]", "[[0,0,1],[1,1,2]]", dtype: "int32")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(res?["iou"] as? [Double] == [0.5, 0.5, 0.5])
        let dice = res?["dice"] as! [Double]
        #expect(dice.allSatisfy { abs($0 - 2.0 / 3.0) < 1e-15 })
        #expect(res?["pixel_accuracy"] as? Double == 4.0 / 6.0)
        #expect(res?["pixels"] as? Int == 6)
    }

    @Test func absentClassIsNullAndLeftOutOfTheMean() throws {
        // classes=4: class 2 appears nowhere → null; class 3 only predicted → IoU 0.
        let (r, res) = try evaluate("[[0,1],[1,3]]", "[[0,1],[1,1]]", ["classes=4"])
        #expect(r.status == 0, "\(r.stderr)")
        let iou = res?["iou"] as! [Any]
        #expect(iou[0] as? Double == 1 && (iou[1] as? Double) == 2.0 / 3.0)
        #expect(iou[2] is NSNull)
        #expect(iou[3] as? Double == 0)
        #expect(abs((res?["miou"] as! Double) - (1 + 2.0 / 3.0 + 0) / 3) < 1e-15)
    }

    @Test func ignoreLabelPixelsAreNotScored() throws {
        let (_, res) = try evaluate("[[0,1],[1,0]]", "[[0,1],[255,255]]")
        #expect(res?["pixels"] as? Int == 2)
        #expect(res?["miou"] as? Double == 1)
        let (_, none) = try evaluate("[[0,1],[1,0]]", "[[0,1],[7,7]]", ["ignore_label=7"])
        #expect(none?["miou"] as? Double == 1)
    }

    @Test func outOfRangeAndMismatchedInputsAreRefused() throws {
        let (r1, _) = try evaluate("[[0,5]]", "[[0,1]]", ["classes=2"])
        #expect(r1.status == 2)
        #expect(r1.stderr.contains("label out of range at flat index 1 (target 1, prediction 5)"))
        let (r2, _) = try evaluate("[[0,1,1]]", "[[0,1]]")
        #expect(r2.status == 2)
        #expect(r2.stderr.contains("must have the same shape"))
        let (r3, _) = try evaluate("[[0,1]]", "[[0,1]]", ["classes=-1"])
        #expect(r3.status == 2)
    }
}

/// Issue 19: the class count sizes a C×C confusion matrix; it is bounded before calloc.
@Suite struct SegmentationMetricsLimitsTests {
    let dir = TempDir("seg-limits")
    let cli = CLI()

    func run(_ sets: [String], label: Int = 0) throws -> CommandResult {
        let make = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import numpy as np
                np.save('\(dir.path)/p.npy', np.array([[\(label)]], dtype=np.int32))
                np.save('\(dir.path)/t.npy', np.array([[\(label)]], dtype=np.int32))
                """,
            ])
        guard make.status == 0 else { throw TestSupportError(make.stderr) }
        return try cli.run(
            [
                "run", "segmentation-metrics", "--input", "prediction=\(dir.path)/p.npy", "--input", "target=\(dir.path)/t.npy",
                "--out", dir.path + "/out",
            ] + sets.flatMap { ["--set", $0] })
    }

    @Test func classesBeyondTheSchemaMaximumIsAUsageError() throws {
        // 100,000 classes on one pixel was an unchecked 80 GB calloc (SIGSEGV).
        let r = try run(["classes=100000"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("option 'classes' of 'segmentation-metrics' = 100000 is out of range"), "\(r.stderr)")
        #expect(r.stderr.contains("≤ 65536"), "\(r.stderr)")
    }

    @Test func confusionMatrixBeyondTheCapIsRefusedByThePlugin() throws {
        // Within the schema's range, but 20,000² × 8 bytes = 3 GiB: the plugin's own check.
        let r = try run(["classes=20000"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("classes = 20000 is too many"), "\(r.stderr)")
        #expect(r.stderr.contains("limit of 1 GiB"), "\(r.stderr)")
    }

    @Test func largestLabelSizingTheMatrixIsRefused() throws {
        // classes=0: the largest label (60,000) + 1 sizes the matrix: the same cap applies.
        let r = try run([], label: 60000)
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("classes = 60001 is too many"), "\(r.stderr)")
    }

    @Test(arguments: ["classes=1e300", "classes=3.5", "classes=-1"])
    func nonIntegerOrNegativeClassesAreUsageErrors(_ set: String) throws {
        let r = try run([set])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("option 'classes'"), "\(r.stderr)")
    }

    @Test func aModerateClassCountStillWorks() throws {
        let r = try run(["classes=300"])
        #expect(r.status == 0, "\(r.output)")
    }
}
