import Foundation
import TestSupport
import Testing

/// Figures written outside the tour (exports, training curves) pass the same check as the tour's.
@Suite struct FigureOutputTests {
    let dir = TempDir("figures")
    let cli = CLI()

    /// Runs `args` into a fresh folder and returns the problems of every SVG it wrote.
    func figures(_ name: String, _ args: [String]) throws -> (svgs: [String], problems: [String]) {
        let out = dir.path + "/" + name
        let r = try cli.run(["run"] + args + ["--out", out])
        #expect(r.status == 0, "\(args): \(r.stderr.suffix(1500))")
        let svgs = (try FileManager.default.subpathsOfDirectory(atPath: out)).filter { $0.hasSuffix(".svg") }
        return (svgs, svgs.flatMap { figureProblems(svgAt: out + "/" + $0) })
    }

    @Test func exportsAndTrainingCurves() throws {
        let cases: [(String, [String], [String])] = [
            ("actions", ["synthetic-actions", "export", "--set", "videos=4", "--set", "val_videos=2", "--set", "preview=2"], ["preview.svg"]),
            ("cmnist", ["cmnist-dd", "export", "--set", "per_class=20", "--set", "test_per_class=5"], ["contact_sheet.svg"]),
            ("ccifar", ["ccifar10-dd", "export"], ["corruptions.svg"]),
            (
                "convnet",
                [
                    "convnet-classifier", "train", "--set", "dataset=cmnist-dd", "--set", "epochs=2", "--set", "width=16",
                    "--set", "dataset_options=per_class=20,test_per_class=5", "--set", "size=28",
                ], ["curve.svg"]
            ),
        ]
        // The bias study redrawn from a table (its own CSV layout): three methods over three ρ.
        var csv = "rho,method,target,mean,std,accuracies,distill_seconds\n"
        for (k, rho) in [0.5, 0.8, 0.95].enumerated() {
            for (m, method) in ["random-selection", "dm", "dc"].enumerated() {
                csv += "\(rho),\(method),none,\(0.9 - 0.1 * Double(k) - 0.05 * Double(m)),0.01,0.9;0.89,1.5\n"
            }
        }
        try csv.write(toFile: dir.path + "/bias_study.csv", atomically: true, encoding: .utf8)
        let all = cases + [("bias", ["distilled-eval", "bias-study", "--set", "from_csv=\(dir.path)/bias_study.csv"], ["bias_study.svg"])]
        for (name, args, expected) in all {
            let (svgs, problems) = try figures(name, args)
            #expect(Set(expected).isSubset(of: Set(svgs)), "\(name) wrote \(svgs)")
            #expect(problems.isEmpty, "\(name): \(problems)")
        }
    }
}
