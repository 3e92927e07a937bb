import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

/// `sam2-tracker` through the CLI on the sam2-tiny fixture's files (JPEG frames, PNG mask, model.pt,
/// config.yaml), against sam2 1.1.0's `propagate_in_video` (expected.npz as .npy): the frames read and
/// resized here (libjpeg, Pillow-exact bicubic), so this also checks the predictor's preprocessing.
@Suite(.serialized) struct SAM2TrackerComponentTests {
    static let fixture = TestPaths.fixtures + "/sam2-tiny"

    /// A model folder as a user has it: config.yaml + model.pt.
    static func modelFolder(_ dir: TempDir) throws -> String {
        let m = dir.sub("model")
        try copyFile(fixture + "/config.yaml", to: m + "/config.yaml")
        try copyFile(TestPaths.sourceRoot + "/Plugins/SAM2/Resources/sam2-tiny/model.pt", to: m + "/model.pt")
        return m
    }

    @Test func propagateMatchesSam2() throws {
        let dir = TempDir("sam2")
        let cli = CLI()
        let r = try cli.run(
            "run", "sam2-tracker", "propagate", "--set", "model=" + (try Self.modelFolder(dir)), "--set", "frames=\(Self.fixture)/frames",
            "--set", "mask=\(Self.fixture)/mask.png", "--out", dir.path + "/out")
        #expect(r.status == 0, "\(r.stderr)")
        let logits = try NPY.read(path: dir.path + "/out/mask_logits.npy"), scores = try NPY.read(path: dir.path + "/out/object_score_logits.npy")
        let want = try NPY.read(path: Self.fixture + "/tracker/mask_logits.npy"), wantScores = try NPY.read(path: Self.fixture + "/tracker/object_scores.npy")
        #expect(logits.shape == want.shape)
        let a = try logits.scalars(as: Float.self), b = try want.scalars(as: Float.self)
        let plane = want.shape[1] * want.shape[2]
        for f in 0..<want.shape[0] {
            let e = zip(a[(f * plane)..<((f + 1) * plane)], b[(f * plane)..<((f + 1) * plane)]).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
            #expect(e < 1e-3, "frame \(f): mask logits max error \(e)")
        }
        let s = try scores.scalars(as: Float.self), t = try wantScores.scalars(as: Float.self)
        #expect(s[0].isNaN && t[0].isNaN)
        for f in 1..<t.count { #expect(abs(s[f] - t[f]) < 1e-3, "frame \(f): object score \(s[f]) vs \(t[f])") }
        #expect(FileManager.default.fileExists(atPath: dir.path + "/out/masks/00003.png"))
    }

    @Test func badInputIsNamed() throws {
        let dir = TempDir("sam2-bad")
        let cli = CLI()
        let model = try Self.modelFolder(dir)
        func run(_ extra: [String]) throws -> CommandResult { try cli.run(["run", "sam2-tracker", "propagate", "--set", "model=" + model] + extra) }
        // A mask of another size than frame 0.
        let small = dir.sub("small") + "/mask.png"
        let png = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/images/rgb16.png"))
        try png.write(to: URL(fileURLWithPath: small))
        var r = try run(["--set", "frames=\(Self.fixture)/frames", "--set", "mask=" + small])
        #expect(r.status != 0 && r.stderr.contains("they must match"), "\(r.stderr)")
        // An empty mask (object 9 is not in it).
        r = try run(["--set", "frames=\(Self.fixture)/frames", "--set", "mask=\(Self.fixture)/mask.png", "--set", "object=9"])
        #expect(r.status != 0 && r.stderr.contains("is empty for object 9"), "\(r.stderr)")
        // Frames of different sizes.
        let mixed = dir.sub("mixed")
        try copyFile(Self.fixture + "/frames/00000.jpg", to: mixed + "/00000.jpg")
        try copyFile(TestPaths.fixtures + "/images/rgb16.png", to: mixed + "/00001.png")
        r = try run(["--set", "frames=" + mixed, "--set", "mask=\(Self.fixture)/mask.png"])
        #expect(r.status != 0 && r.stderr.contains("all frames must have one size"), "\(r.stderr)")
        // A config that disagrees with the checkpoint: every problem named.
        let wrong = dir.sub("wrong")
        try copyFile(TestPaths.sourceRoot + "/Plugins/SAM2/Resources/sam2-tiny/model.pt", to: wrong + "/model.pt")
        let yaml = try String(contentsOfFile: Self.fixture + "/config.yaml", encoding: .utf8).replacingOccurrences(of: "num_maskmem: 3", with: "num_maskmem: 7")
        try yaml.write(toFile: wrong + "/config.yaml", atomically: true, encoding: .utf8)
        r = try cli.run([
            "run", "sam2-tracker", "propagate", "--set", "model=" + wrong, "--set", "frames=\(Self.fixture)/frames", "--set", "mask=\(Self.fixture)/mask.png",
        ])
        #expect(r.status != 0 && r.stderr.contains("maskmem_tpos_enc: shape [3, 1, 1, 16] in the checkpoint, [7, 1, 1, 16] expected"), "\(r.stderr)")
    }
}

/// SST with SAM 2 as its tracker (`--set tracker=sam2-tracker --set tracker_options=["model=DIR"]`):
/// the fixture's frame 0 and its mask as the labelled support, frames 1–3 as queries. SST stretches
/// the frames to `size` (bilinear) before the tracker stretches them to SAM 2's 256 (Pillow bicubic in
/// sam2's own loader), so the masks are compared with `sam2-tracker propagate`'s by IoU, not equality.
@Suite(.serialized) struct SSTWithSAM2Tests {
    @Test func sstSegmentsWithSAM2AsItsTracker() throws {
        let fixture = SAM2TrackerComponentTests.fixture
        let dir = TempDir("sst-sam2")
        let cli = CLI()
        let model = try SAM2TrackerComponentTests.modelFolder(dir)
        let queries = dir.sub("queries")
        for i in 1...3 { try copyFile(fixture + "/frames/0000\(i).jpg", to: queries + "/0000\(i).jpg") }
        let r = try cli.run(
            "run", "sst", "--set", "support=\(fixture)/frames/00000.jpg", "--set", "mask=\(fixture)/mask.png", "--set", "queries=" + queries,
            "--set", "tracker=sam2-tracker", "--set", "tracker_options=[\"model=\(model)\"]", "--set", "backbone=pixels", "--set", "size=256",
            "--out", dir.path + "/sst")
        #expect(r.status == 0, "\(r.stderr)")
        let direct = try NPY.read(path: fixture + "/tracker/mask_logits.npy")
        let (h, w) = (direct.shape[1], direct.shape[2])
        let logits = try direct.scalars(as: Float.self)
        for i in 1...3 {
            let path = dir.path + "/sst/masks/0000\(i).png"
            #expect(FileManager.default.fileExists(atPath: path), "no \(path)")
            let mask = try readPNGLabels(path)
            #expect(mask.width == w && mask.height == h)
            let predicted = mask.labels.map { $0 == 1 }, reference = logits[(i * h * w)..<((i + 1) * h * w)].map { $0 > 0 }
            let inter = zip(predicted, reference).filter { $0 && $1 }.count, union = zip(predicted, reference).filter { $0 || $1 }.count
            let iou = Double(inter) / Double(max(union, 1))
            #expect(iou > 0.8, "query \(i): IoU \(iou) with sam2-tracker propagate's mask")
        }
        // Retrieval with sam2-tracker: SAM2FinetuneTests.sstRetrievesWithSAM2.
    }
}

/// A label PNG (8-bit; the first channel) as labels.
func readPNGLabels(_ path: String) throws -> (width: Int, height: Int, labels: [Int]) {
    let image = try PNG.read(path: path)
    return (image.width, image.height, (0..<(image.width * image.height)).map { Int(image.pixels[$0 * image.channels]) })
}
