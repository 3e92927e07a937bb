import Formats
import Foundation
import Tensors
import TestSupport
import Testing

/// `sam2-tracker propagate` with point and box prompts on frame 0, through the CLI on the sam2-tiny
/// fixture (JPEG frames, model.pt, config.yaml), against sam2 1.1.0's
/// `add_new_points_or_box` + `propagate_in_video` (Tests/Fixtures/sam2-tiny/prompts.npz, written by
/// make_prompts_fixture.py): mask logits at video resolution within 1e-3 on every frame, object
/// scores within 1e-3 (frame 0's too: a SAM output now, not NaN).
@Suite(.serialized) struct SAM2PromptTests {
    static let fixture = SAM2TrackerComponentTests.fixture

    /// The arrays of prompts.npz (np.savez: a zip of uncompressed .npy records).
    static let reference: [String: Tensor] = {
        let path = fixture + "/prompts.npz"
        guard let file = try? MappedFile(path: path),
            let zip = try? ZipArchive(bytes: UnsafeRawBufferPointer(start: file.bytes, count: file.count), path: path)
        else { return [:] }
        var out: [String: Tensor] = [:]
        for (name, r) in zip.records {
            let data = Data(bytes: file.bytes + r.offset, count: r.count)
            if let t = try? NPY.decode(data, path: path + ":" + name) { out[String(name.dropLast(".npy".count))] = t }
        }
        return out
    }()

    /// The prompt of a case as --set arguments (frame-0 pixel coordinates, as the fixture gave them to sam2).
    static func promptArguments(_ name: String) throws -> [String] {
        let points = try #require(reference[name + "_points"]), labels = try #require(reference[name + "_labels"])
        let box = try #require(reference[name + "_box"])
        let p = try points.scalars(as: Float.self), l = try labels.integers(), b = try box.scalars(as: Float.self)
        var args: [String] = []
        if !l.isEmpty {
            let pairs = (0..<l.count).map { "[\(Double(p[2 * $0])),\(Double(p[2 * $0 + 1]))]" }
            args += ["--set", "points=[" + pairs.joined(separator: ",") + "]", "--set", "point_labels=[" + l.map(String.init).joined(separator: ",") + "]"]
        }
        if !b[0].isNaN { args += ["--set", "box=[" + b.map { "\(Double($0))" }.joined(separator: ",") + "]"] }
        if name == "mask_click" { args += ["--set", "mask=\(fixture)/mask.png"] }
        return args
    }

    @Test(arguments: ["click", "clicks", "box", "box_point", "mask_click"])
    func promptsMatchSam2(_ name: String) throws {
        let dir = TempDir("sam2-prompt")
        let r = try CLI().run(
            [
                "run", "sam2-tracker", "propagate", "--set", "model=" + (try SAM2TrackerComponentTests.modelFolder(dir)), "--set",
                "frames=\(Self.fixture)/frames",
            ]
                + (try Self.promptArguments(name)) + ["--out", dir.path + "/out"])
        #expect(r.status == 0, "\(r.stderr)")
        let logits = try NPY.read(path: dir.path + "/out/mask_logits.npy"), scores = try NPY.read(path: dir.path + "/out/object_score_logits.npy")
        let want = try #require(Self.reference[name + "_mask_logits"]), wantScores = try #require(Self.reference[name + "_object_scores"])
        #expect(logits.shape == want.shape)
        let a = try logits.scalars(as: Float.self), b = try want.scalars(as: Float.self)
        let plane = want.shape[1] * want.shape[2]
        var errors: [Float] = []
        for f in 0..<want.shape[0] {
            let e = zip(a[(f * plane)..<((f + 1) * plane)], b[(f * plane)..<((f + 1) * plane)]).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
            errors.append(e)
            #expect(e < 1e-3, "\(name) frame \(f): mask logits max error \(e)")
        }
        // Frame 0 is SAM's output, not a ±10 mask: some logits lie strictly inside (−10, 10).
        #expect(a[0..<plane].contains { abs($0) < 9 }, "\(name): frame 0 looks like a ±10 mask prompt")
        let s = try scores.scalars(as: Float.self), t = try wantScores.scalars(as: Float.self)
        #expect(s.count == t.count)
        for f in 0..<min(s.count, t.count) { #expect(abs(s[f] - t[f]) < 1e-3, "\(name) frame \(f): object score \(s[f]) vs \(t[f])") }
        print("sam2 prompt \(name): mask logits max error per frame \(errors), object scores max error \(zip(s, t).map { abs($0 - $1) }.max() ?? .nan)")
    }

    @Test func badPromptsAreNamed() throws {
        let dir = TempDir("sam2-prompt-bad")
        let cli = CLI()
        let model = try SAM2TrackerComponentTests.modelFolder(dir)
        func run(_ extra: String...) throws -> CommandResult {
            try cli.run(
                ["run", "sam2-tracker", "propagate", "--set", "model=" + model, "--set", "frames=\(Self.fixture)/frames"] + extra.flatMap { ["--set", $0] })
        }
        // The frames are 320 × 214.
        var r = try run("points=[[400,20]]", "point_labels=[1]")
        #expect(r.status != 0 && r.stderr.contains("option 'points[0]' = [400, 20] lies outside the first frame"), "\(r.stderr)")
        r = try run("points=[[10,20],[30,-1]]", "point_labels=[1,0]")
        #expect(r.status != 0 && r.stderr.contains("option 'points[1]' = [30, -1] lies outside"), "\(r.stderr)")
        r = try run("points=[[10,20]]", "point_labels=[2]")
        #expect(r.status != 0 && r.stderr.contains("point_labels[0]"), "\(r.stderr)")
        r = try run("points=[[10,20]]", "point_labels=[0.5]")
        #expect(r.status != 0 && r.stderr.contains("option 'point_labels'"), "\(r.stderr)")
        r = try run("points=[[10,20]]", "point_labels=[-1]")
        #expect(r.status != 0 && r.stderr.contains("point_labels[0]"), "\(r.stderr)")
        r = try run("box=[200,10,100,50]")
        #expect(r.status != 0 && r.stderr.contains("option 'box' = [200, 10, 100, 50] must have x0 < x1 and y0 < y1"), "\(r.stderr)")
        r = try run("box=[10,10,100]")
        #expect(r.status != 0 && r.stderr.contains("option 'box' must be [x0, y0, x1, y1]"), "\(r.stderr)")
        r = try run("box=[10,10,100,300]")
        #expect(r.status != 0 && r.stderr.contains("option 'box' = [10, 10, 100, 300] lies outside the first frame"), "\(r.stderr)")
        r = try run("points=[[10,20],[30,40]]", "point_labels=[1]")
        #expect(r.status != 0 && r.stderr.contains("options 'points' (2 points) and 'point_labels' (1 labels) must have the same length"), "\(r.stderr)")
        r = try run("point_labels=[1]")
        #expect(r.status != 0 && r.stderr.contains("options 'points' (0 points) and 'point_labels' (1 labels)"), "\(r.stderr)")
        r = try run("points=[[10,20,30]]", "point_labels=[1]")
        #expect(r.status != 0 && r.stderr.contains("option 'points[0]' must be [x, y]"), "\(r.stderr)")
        // NaN is no JSON number: the option parser refuses it, naming the option.
        r = try run("points=[[NaN,20]]", "point_labels=[1]")
        #expect(r.status != 0 && r.stderr.contains("option 'points'"), "\(r.stderr)")
        r = try run("box=[NaN,0,10,10]")
        #expect(r.status != 0 && r.stderr.contains("option 'box'"), "\(r.stderr)")
        // No prompt at all.
        r = try run()
        #expect(r.status != 0 && r.stderr.contains("a prompt on the first frame"), "\(r.stderr)")
    }
}
