import Foundation
import Testing
import TestSupport

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
            ("convnet", ["convnet-classifier", "train", "--set", "dataset=cmnist-dd", "--set", "epochs=2", "--set", "width=16",
                         "--set", "dataset_options=per_class=20,test_per_class=5", "--set", "size=28"], ["curve.svg"]),
        ]
        for (name, args, expected) in cases {
            let (svgs, problems) = try figures(name, args)
            #expect(Set(expected).isSubset(of: Set(svgs)), "\(name) wrote \(svgs)")
            #expect(problems.isEmpty, "\(name): \(problems)")
        }
    }
}
