import Formats
import Foundation
import SST
import Tensors
import TestSupport
import Testing

/// The label-propagation tracker: identity, shifts, the affinity's top-k and normalisation, and bad
/// masks through the CLI.
@Suite struct PropagationTests {
    /// Random unit features on a rows × cols grid (dim 32), reproducible.
    func features(rows: Int, cols: Int, seed: UInt64) -> [[Float]] {
        var rng = SeededGenerator(seed: seed)
        return (0..<(rows * cols)).map { _ in (0..<32).map { _ in Float(rng.nextNormal()) } }
    }

    /// A mask aligned to 8-pixel patches: label of patch (i, j) → pixels.
    func blockMask(_ patch: [Int], rows: Int, cols: Int) -> [Int] {
        (0..<(rows * 8)).flatMap { y in (0..<(cols * 8)).map { x in patch[(y / 8) * cols + x / 8] } }
    }

    func patchPattern(rows: Int, cols: Int) -> [Int] {
        (0..<(rows * cols)).map { p in
            let i = p / cols, j = p % cols
            if (2..<6).contains(i) && (2..<5).contains(j) { return 1 }
            if (6..<8).contains(i) && (5..<9).contains(j) { return 2 }
            return 0
        }
    }

    @Test func identicalFrameGetsTheSameMask() {
        let (rows, cols) = (10, 12)
        let f = features(rows: rows, cols: cols, seed: 1).flatMap { $0 }
        let patches = patchPattern(rows: rows, cols: cols)
        let mask = blockMask(patches, rows: rows, cols: cols)
        let memory = SpaceTimeMemory(
            settings: PropagationSettings(), rows: rows, cols: cols, dim: 32, features: f,
            labels: patchLabels(mask, height: rows * 8, width: cols * 8, rows: rows, cols: cols, channels: 3), channels: 3)
        for _ in 0..<3 { // again with its own predictions in the queue
            let seg = memory.propagate(f)
            // At patch resolution the mask comes back exactly (mIoU 1).
            #expect(labelImage(seg, rows: rows, cols: cols, channels: 3, height: rows, width: cols) == patches)
            // At pixel resolution bilinear upsampling rounds the regions' corners (DINO's choice):
            // every label keeps IoU > 0.85 with the block mask.
            let pixels = labelImage(seg, rows: rows, cols: cols, channels: 3, height: rows * 8, width: cols * 8)
            for k in 0..<3 {
                let inter = zip(pixels, mask).filter { $0 == k && $1 == k }.count, union = zip(pixels, mask).filter { $0 == k || $1 == k }.count
                #expect(Double(inter) / Double(union) > 0.85, "label \(k): IoU \(Double(inter) / Double(union))")
            }
        }
    }

    /// The query is the support moved 2 patches down and 3 right (new patches enter at the border):
    /// the labels move with it.
    @Test func shiftedCopyFollowsTheShift() {
        let (rows, cols, dy, dx) = (10, 12, 2, 3)
        let base = features(rows: rows, cols: cols, seed: 2), fresh = features(rows: rows, cols: cols, seed: 3)
        var shifted: [[Float]] = []
        for i in 0..<rows {
            for j in 0..<cols {
                let si = i - dy, sj = j - dx
                shifted.append(si >= 0 && sj >= 0 ? base[si * cols + sj] : fresh[i * cols + j])
            }
        }
        let patches = patchPattern(rows: rows, cols: cols)
        let memory = SpaceTimeMemory(
            settings: PropagationSettings(), rows: rows, cols: cols, dim: 32, features: base.flatMap { $0 },
            labels: patchLabels(blockMask(patches, rows: rows, cols: cols), height: rows * 8, width: cols * 8, rows: rows, cols: cols, channels: 3),
            channels: 3)
        let seg = memory.propagate(shifted.flatMap { $0 })
        let predicted = labelImage(seg, rows: rows, cols: cols, channels: 3, height: rows, width: cols)
        for i in dy..<rows {
            for j in dx..<cols {
                #expect(predicted[i * cols + j] == patches[(i - dy) * cols + (j - dx)], "patch (\(i), \(j))")
            }
        }
    }

    /// A 1 × 3 grid in 2-D: support features e0, e1, (e0 + e1)/√2; one query e0. With τ = 1, no
    /// radius, k = 2: the two largest of exp(1), exp(0), exp(1/√2) stay, normalised.
    @Test func affinityKeepsTopKAndNormalises() {
        var s = PropagationSettings()
        s.temperature = 1
        s.topK = 2
        s.radius = 0
        let r = Float(0.5).squareRoot()
        let memory = SpaceTimeMemory(settings: s, rows: 1, cols: 3, dim: 2, features: [1, 0, 0, 1, r, r], labels: [1, 0, 0, 1, 0, 1], channels: 2)
        let a = memory.affinity(query: [1, 0, 1, 0, 1, 0]) // three identical query patches
        let e1 = exp(Float(1)), e2 = exp(r)
        for q in 0..<3 {
            #expect(abs(a[0 * 3 + q] - e1 / (e1 + e2)) < 1e-6)
            #expect(a[1 * 3 + q] == 0)
            #expect(abs(a[2 * 3 + q] - e2 / (e1 + e2)) < 1e-6)
        }
        // A radius of 1 on a 1×3 grid hides source 2 from query 0 (|Δcol| = 2): then e0 and e1 stay.
        s.radius = 1
        let near = SpaceTimeMemory(settings: s, rows: 1, cols: 3, dim: 2, features: [1, 0, 0, 1, r, r], labels: [1, 0, 0, 1, 0, 1], channels: 2)
            .affinity(query: [1, 0, 1, 0, 1, 0])
        #expect(abs(near[0] - e1 / (e1 + 1)) < 1e-6 && abs(near[3] - 1 / (e1 + 1)) < 1e-6 && near[6] == 0)
    }

    @Test func badMasksAreNamed() throws {
        let dir = TempDir("stm")
        let f = try Tensor((0..<(2 * 4 * 4 * 8)).map { Float($0 % 7) }, shape: [2, 4, 4, 8])
        try NPY.encode(f).write(to: URL(fileURLWithPath: dir.path + "/f.npy"))
        try NPY.encode(try Tensor([Int64](repeating: 0, count: 32 * 32), shape: [32, 32])).write(to: URL(fileURLWithPath: dir.path + "/empty.npy"))
        try NPY.encode(try Tensor((0..<(32 * 32)).map { Int64($0 % 5) }, shape: [32, 32])).write(to: URL(fileURLWithPath: dir.path + "/five.npy"))
        let cli = CLI()
        let empty = try cli.run("run", "stm-tracker", "--input", "features=\(dir.path)/f.npy", "--input", "labels=\(dir.path)/empty.npy")
        #expect(empty.status != 0 && empty.stderr.contains("no trait label"))
        let beyond = try cli.run("run", "stm-tracker", "--input", "features=\(dir.path)/f.npy", "--input", "labels=\(dir.path)/five.npy", "--set", "parts=3")
        #expect(beyond.status != 0 && beyond.stderr.contains("label 4") && beyond.stderr.contains("3 parts"))
        let ok = try cli.run("run", "stm-tracker", "--input", "features=\(dir.path)/f.npy", "--input", "labels=\(dir.path)/five.npy", "--out", dir.sub("o"))
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try NPY.read(path: dir.sub("o") + "/masks.npy").shape == [1, 32, 32])
    }
}
