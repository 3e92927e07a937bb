import Foundation
import TestSupport
import Testing

/// Issue 20: one seed rule for every component, and many files for one input.
@Suite struct SeedAndInputTests {
    let cli = CLI()
    let dir = TempDir("seeds")

    /// Runs `arguments` with `--seed seed` into a fresh folder; returns the bytes of every output
    /// tensor (sorted by name) and the seed recorded in result.json.
    func outputs(_ arguments: [String], seed: UInt64, tag: String) throws -> (tensors: [String: Data], recorded: Double?) {
        let out = dir.path + "/" + tag
        let r = try cli.run(arguments + ["--seed", "\(seed)", "--out", out])
        #expect(r.status == 0, "\(arguments): \(r.stderr)")
        var tensors: [String: Data] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? [] where name.hasSuffix(".npy") {
            tensors[name] = try Data(contentsOf: URL(fileURLWithPath: out + "/" + name))
        }
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))) as? [String: Any]
        return (tensors, manifest?["seed"] as? Double)
    }

    /// Every component that draws random numbers from its own seed option: the run's --seed is that
    /// option's default (same seed → the same bytes, another seed → other bytes); an explicit option
    /// wins; result.json records the seed in force.
    @Test(arguments: [
        ["run", "synthetic-tol", "batch", "--set", "count=4", "--set", "size=32"],
        ["run", "cmnist-dd", "batch", "--set", "count=6"],
        ["run", "ccifar10-dd", "batch", "--set", "count=4"],
        ["run", "synthetic-actions", "batch", "--set", "count=2"],
        ["run", "latent-diffusion", "sample", "--set", "per_class=1", "--set", "classes=[0,1]", "--set", "steps=2"],
    ])
    func theRunSeedIsEverySeedOptionsDefault(arguments: [String]) throws {
        let tag = arguments[1]
        let a = try outputs(arguments, seed: 3, tag: tag + "-a")
        let b = try outputs(arguments, seed: 3, tag: tag + "-b")
        let c = try outputs(arguments, seed: 4, tag: tag + "-c")
        #expect(!a.tensors.isEmpty)
        #expect(a.tensors == b.tensors, "same --seed, same bytes")
        #expect(a.tensors != c.tensors, "another --seed must change the output of \(tag)")
        #expect(a.recorded == 3 && c.recorded == 4)
        // An explicit seed option wins over --seed, and is what result.json records.
        let d = try outputs(arguments + ["--set", "seed=3"], seed: 4, tag: tag + "-d")
        #expect(d.tensors == a.tensors)
        #expect(d.recorded == 3)
    }

    @Test func manyFilesAndGlobsForOneInput() throws {
        let fixture = TestPaths.fixtures + "/openclip-tiny"
        let base = ["run", "bioclip2", "predict", "--set", "model=" + fixture, "--set", "cls=a,b"]
        let two = try cli.run(base + ["--input", "images=\(fixture)/image0.png", "--input", "images=\(fixture)/image2.png", "--out", dir.path + "/two"])
        #expect(two.status == 0, "\(two.stderr)")
        let csv = try String(contentsOfFile: dir.path + "/two/predictions.csv", encoding: .utf8)
        // The files as the user named them, each once per label, and no other file.
        #expect(csv.components(separatedBy: "\(fixture)/image0.png,").count - 1 == 2)
        #expect(csv.components(separatedBy: "\(fixture)/image2.png,").count - 1 == 2)
        #expect(!csv.contains("image1.png") && !csv.contains("menagerie-run-inputs"))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path + "/two/result.json"))) as? [String: Any]
        #expect((manifest?["inputs"] as? [String: String])?["images"] == "\(fixture)/image0.png, \(fixture)/image2.png")

        let glob = try cli.run(base + ["--input", "images=\(fixture)/image*.png", "--out", dir.path + "/glob"])
        #expect(glob.status == 0, "\(glob.stderr)")
        let all = try String(contentsOfFile: dir.path + "/glob/predictions.csv", encoding: .utf8)
        #expect(all.split(separator: "\n").count == 1 + 3 * 2)
        let none = try cli.run(base + ["--input", "images=\(fixture)/nothing*.png"])
        #expect(none.status == 2)
        #expect(none.stderr.contains("matches no file"))
        // A tensor input takes one file.
        let npy = dir.path + "/x.npy"
        try writeNPYFloat32([1], shape: [1], to: npy)
        let twice = try cli.run("run", "classification-metrics", "--input", "scores=\(npy)", "--input", "scores=\(npy)")
        #expect(twice.status == 2)
        #expect(twice.stderr.contains("takes one tensor file"))
    }
}
