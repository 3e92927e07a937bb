import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

/// `sam2-tracker finetune` (one-shot cycle-consistent fine-tuning of SAM 2) through the CLI on the
/// sam2-tiny fixture, the tuned weights used by `segment`/`propagate` (`tuned=`), and SST routing its
/// `finetune_steps` and its trait retrieval to sam2-tracker through the host.
@Suite(.serialized) struct SAM2FinetuneTests {
    static let fixture = SAM2TrackerComponentTests.fixture

    static func queries(_ dir: TempDir) throws -> String {
        let q = dir.sub("queries")
        for i in 1...3 { try copyFile(fixture + "/frames/0000\(i).jpg", to: q + "/0000\(i).jpg") }
        return q
    }

    /// Two steps write tuned.safetensors holding exactly the default groups (mask decoder + memory
    /// attention) and finetune.csv; `propagate` with `tuned=` reads them and its logits move away from
    /// the untuned model's (which match sam2 within 1e-3, SAM2TrackerComponentTests); bad groups and
    /// a bad tuned file are named.
    @Test func finetuneWritesTunedWeightsThatPropagateUses() throws {
        let dir = TempDir("sam2-ft")
        let cli = CLI()
        let model = try SAM2TrackerComponentTests.modelFolder(dir)
        let r = try cli.run(
            "run", "sam2-tracker", "finetune", "--set", "model=" + model, "--set", "support=\(Self.fixture)/frames/00000.jpg",
            "--set", "mask=\(Self.fixture)/mask.png", "--set", "queries=" + (try Self.queries(dir)), "--set", "steps=2", "--set", "lr=1e-3",
            "--out", dir.path + "/ft")
        #expect(r.status == 0, "\(r.stderr)")
        let tuned = dir.path + "/ft/tuned.safetensors"
        let checkpoint = try Checkpoint(path: tuned)
        #expect(!checkpoint.names.isEmpty)
        #expect(checkpoint.names.allSatisfy { $0.hasPrefix("sam_mask_decoder.") || $0.hasPrefix("memory_attention.") }, "\(checkpoint.names)")
        #expect(checkpoint.names.contains { $0.hasPrefix("memory_attention.") } && checkpoint.names.contains { $0.hasPrefix("sam_mask_decoder.") })
        let csv = try String(contentsOfFile: dir.path + "/ft/finetune.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 3 && csv[0] == "step,cycle_loss", "\(csv)")

        func propagate(_ extra: [String], out: String) throws -> [Float] {
            let p = try cli.run(
                [
                    "run", "sam2-tracker", "propagate", "--set", "model=" + model, "--set", "frames=\(Self.fixture)/frames",
                    "--set", "mask=\(Self.fixture)/mask.png", "--set", "masks=false", "--out", out,
                ] + extra)
            #expect(p.status == 0, "\(p.stderr)")
            return try NPY.read(path: out + "/mask_logits.npy").scalars(as: Float.self)
        }
        let plain = try propagate([], out: dir.path + "/plain"), withTuned = try propagate(["--set", "tuned=" + tuned], out: dir.path + "/tuned")
        let change = zip(plain, withTuned).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
        #expect(change > 1e-3, "the tuned weights did not change the logits (max change \(change))")

        var bad = try cli.run(
            "run", "sam2-tracker", "finetune", "--set", "model=" + model, "--set", "support=\(Self.fixture)/frames/00000.jpg",
            "--set", "mask=\(Self.fixture)/mask.png", "--set", "queries=" + (try Self.queries(dir)), "--set", "tune=image_encoder")
        #expect(bad.status != 0 && bad.stderr.contains("unknown parameter group 'image_encoder'"), "\(bad.stderr)")
        try SafeTensors.write([("no_such.weight", Tensor(shape: [1], scalars: [1] as [Float]))], to: dir.path + "/bad.safetensors")
        bad = try cli.run(
            "run", "sam2-tracker", "propagate", "--set", "model=" + model, "--set", "frames=\(Self.fixture)/frames", "--set", "mask=\(Self.fixture)/mask.png",
            "--set", "tuned=" + dir.path + "/bad.safetensors")
        #expect(bad.status != 0 && bad.stderr.contains("unexpected tensor 'no_such.weight'"), "\(bad.stderr)")
    }

    /// `sst segment --set tracker=sam2-tracker --set finetune_steps=2`: SST calls sam2-tracker's
    /// finetune through the host, keeps the tuned weights (sam2_tuned.safetensors) and segments with
    /// them; the loss curve is written.
    @Test func sstFineTunesSAM2ThroughTheHost() throws {
        let dir = TempDir("sst-sam2-ft")
        let cli = CLI()
        let model = try SAM2TrackerComponentTests.modelFolder(dir)
        let r = try cli.run(
            "run", "sst", "--set", "support=\(Self.fixture)/frames/00000.jpg", "--set", "mask=\(Self.fixture)/mask.png",
            "--set", "queries=" + (try Self.queries(dir)), "--set", "tracker=sam2-tracker", "--set", "tracker_options=[\"model=\(model)\",\"lr=1e-3\"]",
            "--set", "backbone=pixels", "--set", "size=256", "--set", "finetune_steps=2", "--out", dir.path + "/sst")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/sst/sam2_tuned.safetensors"))
        let csv = try String(contentsOfFile: dir.path + "/sst/finetune.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 3, "\(csv)")
        for i in 1...3 { #expect(FileManager.default.fileExists(atPath: dir.path + "/sst/masks/0000\(i).png")) }
    }

    /// `sst retrieve` with sam2-tracker: each query scored by the cycle support → query → support
    /// (paper) or support → query, then the support frame prompted with that prediction read on the
    /// query (released), as two-frame pseudo-videos. Scores are IoUs in [0, 1], sorted descending
    /// (paper) or ascending (released). (The random-weight model scores every query ≈ 0.20, the
    /// support itself among them: these numbers say nothing about retrieval quality.)
    @Test(arguments: ["paper", "released"]) func sstRetrievesWithSAM2(_ ranking: String) throws {
        let dir = TempDir("sst-sam2-retrieve")
        let cli = CLI()
        let model = try SAM2TrackerComponentTests.modelFolder(dir)
        let queries = try Self.queries(dir)
        try copyFile(Self.fixture + "/frames/00000.jpg", to: queries + "/00000.jpg")
        let r = try cli.run(
            "run", "sst", "retrieve", "--set", "support=\(Self.fixture)/frames/00000.jpg", "--set", "mask=\(Self.fixture)/mask.png",
            "--set", "queries=" + queries, "--set", "tracker=sam2-tracker", "--set", "tracker_options=[\"model=\(model)\"]", "--set", "backbone=pixels",
            "--set", "size=256", "--set", "ranking=" + ranking, "--out", dir.path + "/r")
        #expect(r.status == 0, "\(r.stderr)")
        let rows = try String(contentsOfFile: dir.path + "/r/retrieval.csv", encoding: .utf8).split(separator: "\n").dropFirst().map {
            $0.split(separator: ",")
        }
        #expect(rows.count == 4)
        let scores = rows.compactMap { Double($0[2]) }
        #expect(scores.count == 4 && scores.allSatisfy { (0...1).contains($0) }, "\(rows)")
        #expect(ranking == "paper" ? scores == scores.sorted(by: >) : scores == scores.sorted(), "\(scores)")
    }
}
