import Concord
import D3HR
import DatasetDistillation
import DistillationKit
import Formats
import Foundation
import LatentDiffusion
import Tensors
import TestSupport
import Testing

/// The diffusion components through the CLI with the embedded synthetic-tol model: the DDIM
/// inversion round trip, a short training run, D^3HR and CONCORD end to end, bad input named.
@Suite struct DiffusionCLITests {
    func realImages(_ cli: CLI, dir: String, count: Int) throws -> (String, String) {
        let r = try cli.run(
            "run", "synthetic-tol", "batch", "--set", "split=train", "--set", "count=\(count)", "--set", "size=32", "--set", "shuffle=false",
            "--out", dir)
        #expect(r.status == 0, "\(r.stderr)")
        return (dir + "/images.npy", dir + "/labels.npy")
    }

    /// DDIM inversion to t = 760 (38 of 50 steps) then sampling back: the latent returns within 10 %
    /// relative error (L2), with and without CFG (measured 5.2 % for both; the inversion evaluates ε
    /// at the latent it starts from, so it is not exact — Docs/methods/diffusion-dd.md).
    @Test func inversionThenSamplingReconstructsTheLatent() throws {
        let cli = CLI(), dir = TempDir("inv")
        let (images, labels) = try realImages(cli, dir: dir.sub("data"), count: 16)
        for (guidance, bound) in [(1.0, 0.10), (4.0, 0.10)] {
            let r = try cli.run(
                "run", "latent-diffusion", "invert", "--input", "images=\(images)", "--input", "labels=\(labels)",
                "--set", "guidance=\(guidance)", "--out", dir.sub("g\(Int(guidance))"), "--json")
            #expect(r.status == 0, "\(r.stderr)")
            let result = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any]
            let error = result?["relative_error"] as? Double ?? 1
            #expect(error < bound, "guidance \(guidance): relative error \(error)")
        }
        let beyond = try cli.run("run", "latent-diffusion", "invert", "--input", "images=\(images)", "--input", "labels=\(labels)", "--set", "to_step=770")
        #expect(beyond.status != 0 && beyond.stderr.contains("to_step") && beyond.stderr.contains("not on the DDIM grid"))
        let past = try cli.run("run", "latent-diffusion", "invert", "--input", "images=\(images)", "--input", "labels=\(labels)", "--set", "to_step=1000")
        #expect(past.status != 0 && past.stderr.contains("to_step"))
    }

    /// Training on another dataset at another size (cmnist-dd, 28 px → a 14 × 14 latent), sampling
    /// from the result, and CONCORD with that model and the concepts file shipped for cmnist-dd.
    @Test func aShortTrainingRunWritesAModelThatSamples() throws {
        let cli = CLI(), dir = TempDir("ldm")
        let r = try cli.run(
            "run", "latent-diffusion", "train", "--set", "dataset=cmnist-dd", "--set", "dataset_options=[\"per_class=8\"]",
            "--set", "size=28", "--set", "autoencoder_steps=3", "--set", "autoencoder_loss=bce", "--set", "dit_steps=3",
            "--set", "batch=8", "--set", "dit_depth=1", "--set", "dit_width=32", "--set", "dit_heads=2", "--set", "steps=4",
            "--set", "autoencoder_widths=[8,16]", "--out", dir.path)
        #expect(r.status == 0, "\(r.stderr)")
        for file in ["model/config.json", "model/model.safetensors", "model/curve.csv", "model/samples.png"] {
            #expect(FileManager.default.fileExists(atPath: dir.path + "/" + file), "\(file)")
        }
        let s = try cli.run(
            "run", "latent-diffusion", "sample", "--set", "model=\(dir.path)/model", "--set", "classes=[1,2]", "--set", "per_class=3",
            "--set", "steps=5", "--out", dir.sub("s"))
        #expect(s.status == 0, "\(s.stderr)")
        let images = try NPY.read(path: dir.sub("s") + "/images.npy")
        #expect(images.shape == [6, 3, 28, 28])
        #expect(try images.scalars(as: Float.self).allSatisfy { (0...1).contains($0) })
        let concord = try cli.run(
            "run", "concord", "--set", "model=\(dir.path)/model", "--set", "dataset=cmnist-dd", "--set", "dataset_options=[\"per_class=8\"]",
            "--set", "classes=[0,1]", "--set", "ipc=1", "--set", "steps=2", "--out", dir.sub("c"))
        #expect(concord.status == 0, "\(concord.stderr)")
        #expect(try SafeTensorsFile(path: dir.sub("c") + "/distilled.safetensors").tensor("labels").integers() == [0, 1])
    }

    @Test func d3hrAndConcordDistilEndToEndAndRefuseBadInput() throws {
        let cli = CLI(), dir = TempDir("dd")
        let d3hr = try cli.run("run", "d3hr", "--set", "classes=[3,7]", "--set", "ipc=3", "--set", "candidates=50", "--out", dir.sub("d3hr"), "--json")
        #expect(d3hr.status == 0, "\(d3hr.stderr)")
        let set = try SafeTensorsFile(path: dir.sub("d3hr") + "/distilled.safetensors")
        #expect(try set.tensor("labels").integers() == [3, 3, 3, 7, 7, 7])
        #expect(d3hr.stdout.contains("mean_group_score"))
        let logged = try JSONValue.parse(d3hr.stdout)["result"]
        #expect(logged?["statistics_step"]?.intValue == 600 && logged?["start_step"]?.intValue == 620)
        let backwards = try cli.run("run", "d3hr", "--set", "classes=[3]", "--set", "sampling_step=780", "--set", "inversion_step=760")
        #expect(backwards.status != 0 && backwards.stderr.contains("sampling_step 780 lies beyond inversion_step 760"))
        let offGrid = try cli.run("run", "d3hr", "--set", "classes=[3]", "--set", "start_step=630")
        #expect(offGrid.status != 0 && offGrid.stderr.contains("start_step") && offGrid.stderr.contains("not on the DDIM grid"), "\(offGrid.stderr)")
        let beyondScale = try cli.run("run", "d3hr", "--set", "classes=[3]", "--set", "inversion_step=1200")
        #expect(beyondScale.status != 0 && beyondScale.stderr.contains("inversion_step") && beyondScale.stderr.contains("1000"))
        let skew = try cli.run("run", "d3hr", "--set", "classes=[3]", "--set", "skewness=sideways")
        #expect(skew.status != 0 && skew.stderr.contains("skewness"))

        let concord = try cli.run("run", "concord", "--set", "classes=[3,7]", "--set", "ipc=2", "--set", "steps=10", "--out", dir.sub("concord"), "--json")
        #expect(concord.status == 0, "\(concord.stderr)")
        #expect(concord.stdout.contains("final_concept_loss"))
        try "{\"0\": [\"a\", [\"x\", \"y\", \"z\", \"w\", \"v\"]]}".write(toFile: dir.path + "/one.json", atomically: true, encoding: .utf8)
        let missing = try cli.run("run", "concord", "--set", "classes=[0]", "--set", "ipc=1", "--set", "concepts=\(dir.path)/one.json")
        #expect(missing.status != 0 && missing.stderr.contains("one.json") && missing.stderr.contains("no entry \"1\""))
        let few = try cli.run("run", "concord", "--set", "classes=[0]", "--set", "ipc=1", "--set", "positives=9")
        #expect(few.status != 0 && few.stderr.contains("8 descriptions, 9 asked"))
        // A CLIP backbone without text embeddings (a plain ViT) is refused by name.
        let noText = try cli.run("run", "concord", "--set", "classes=[0]", "--set", "ipc=1", "--set", "clip=vit-classifier")
        #expect(noText.status != 0 && noText.stderr.contains("vit-classifier"))
    }

    /// A third-party CLIP backbone (C) whose image embeddings are 6-d and text embeddings 8-d.
    @Test func aCLIPBackboneWithMismatchedEmbeddingSizesIsRefused() throws {
        let dir = TempDir("clip")
        try buildCPlugin(named: "libmismatched.so", in: dir.path, source: TestPaths.fixtures + "/plugins/mismatched_clip.c")
        let cli = CLI(pluginPath: [dir.path])
        let r = try cli.run("run", "concord", "--set", "classes=[0]", "--set", "ipc=1", "--set", "steps=2", "--set", "clip=mismatched-clip")
        #expect(r.status != 0 && r.stderr.contains("6 dimensions") && r.stderr.contains("8"), "\(r.stderr)")
    }
}
