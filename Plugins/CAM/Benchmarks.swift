import Foundation
import MenagerieKit
import NN
import Tensors
import Vision

/// The ViT benchmarks of this plugin: timm ViT-B/16's forward at batch 1 and 8 on the tape-free
/// path, its share of the machine's sgemm rate, and Grad-CAM on it through the host (moved from
/// the CLI, which no longer knows any model). Weights are random (speed does not depend on them),
/// written to a temporary safetensors file and memory-mapped back as a real checkpoint would be.
/// The names are those of `scripts/bench-reference.py`, so that `--reference` puts PyTorch's time
/// beside ours. Declared by `grad-cam` (a row of the base-CAM table; the other rows declare none);
/// `vit_b16.finercam` is the finer-cam plugin's.
extension BaseCAMComponent {
    static var benchmarks: [BenchmarkSpec] { Tag.method == .gradcam ? vitB16Benchmarks : [] }
    func benchmark(_ run: BenchmarkRun) throws { try run.vitB16Benchmarks() }
}

private let vitB16Benchmarks = [
    BenchmarkSpec("vit_b16.forward", unit: "ms", summary: "timm ViT-B/16 at 224 px, batch 1, tape-free inference path", ratioTarget: 0.85),
    BenchmarkSpec("vit_b16.forward_batch8", unit: "ms", summary: "timm ViT-B/16 at 224 px, batch 8, tape-free inference path", ratioTarget: 0.85),
    BenchmarkSpec(
        "vit_b16.forward_bf16", unit: "ms", summary: "the batch-1 forward with precision=bf16 (oneDNN bf16 products; absent where bf16 cannot run)"),
    BenchmarkSpec(
        "vit_b16.forward_batch8_bf16", unit: "ms", summary: "the batch-8 forward with precision=bf16"),
    BenchmarkSpec("vit_b16.sgemm_share", unit: "%", summary: "the batch-1 forward's FLOP rate as a share of this process's 1024³ sgemm rate", target: 85),
    BenchmarkSpec(
        "vit_b16.gradcam", unit: "ms", summary: "one 224×224 image through grad-cam on a ViT-B/16 classifier folder, through the host", ratioTarget: 1.0),
]

extension BenchmarkRun {
    func vitB16Benchmarks() throws {
        let scratch = NSTemporaryDirectory() + "/menagerie-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        // timm ViT-B/16 at 224 px, batch 1 and 8, on the tape-free path.
        if wanted("vit_b16.forward") || wanted("vit_b16.forward_batch8") || wanted("vit_b16.sgemm_share") || wanted("vit_b16.gradcam")
            || wanted("vit_b16.forward_bf16") || wanted("vit_b16.forward_batch8_bf16")
        {
            let dir = scratch + "/vit-b16"
            let config = try writeBenchmarkViTB16(to: dir)
            BufferPool.shared.drain()
            let model = try ViT(config: config, checkpoint: Checkpoint(path: dir + "/model.safetensors"))
            for (name, batch, reps) in [("vit_b16.forward", 1, max(3, repeats / 2)), ("vit_b16.forward_batch8", 8, max(2, repeats / 8))]
            where wanted(name) || (batch == 1 && wanted("vit_b16.sgemm_share")) {
                let samples = try timeForward(model, batch: batch, repeats: reps)
                var r = record(name, unit: "ms", samples)
                r.ratioTarget = 0.85
                if wanted(name) { records.append(r) }
                // The share of the machine's sgemm rate this forward reaches (target ≥ 85 %).
                if batch == 1, wanted("vit_b16.sgemm_share"), let rate = sgemmRate() {
                    let gflop = vitForwardFLOPs(tokens: config.tokens, width: 768, depth: 12, hidden: 3072, patchInputs: 3 * 16 * 16) / 1e9
                    let shares = samples.map { 100 * (gflop / ($0 / 1000)) / rate }
                    var share = record("vit_b16.sgemm_share", unit: "%", shares)
                    share.target = 85
                    records.append(share)
                }
            }
            // The same forwards in bf16 (after the fp32 ones, which must not see the rounded copies).
            for (name, batch, reps) in [("vit_b16.forward_bf16", 1, max(3, repeats / 2)), ("vit_b16.forward_batch8_bf16", 8, max(2, repeats / 8))]
            where wanted(name) {
                if let why = GEMM.bf16Unavailable() {
                    notes.append("\(name): \(why)")
                    continue
                }
                let samples = try GEMM.withPrecision(.bf16) { try timeForward(model, batch: batch, repeats: reps) }
                records.append(record(name, unit: "ms", samples))
            }
            // Grad-CAM through the host on the same ViT-B/16 (a timm folder: config.json beside the
            // weights), one 224×224 image per call.
            if wanted("vit_b16.gradcam"), has("grad-cam") {
                try timeExplainer("vit_b16.gradcam", id: "grad-cam", folder: dir)
            }
            BufferPool.shared.drain()
        }
    }

    /// Milliseconds of `repeats` forwards of a [batch, 3, 224, 224] image after one untimed warm-up.
    func timeForward(_ model: ViT, batch: Int, repeats: Int) throws -> [Double] {
        let image = Tensor.filled(0.5, shape: [batch, 3, 224, 224])
        _ = try model.forward(image)
        return try (0..<repeats).map { _ in
            let t0 = now()
            _ = try model.forward(image)
            return now() - t0
        }
    }

    /// One 224×224 image through an explainer per call, through the host (one warm-up call).
    func timeExplainer(_ name: String, id: String, folder: String) throws {
        let image = Tensor.filled(0.5, shape: [1, 3, 224, 224])
        let options: JSONValue = ["classifier": .string(folder)]
        _ = try invoke(id, operation: "explain", options: options, inputs: [("images", image)])
        var samples: [Double] = []
        for _ in 0..<max(3, repeats / 4) {
            let t0 = now()
            _ = try invoke(id, operation: "explain", options: options, inputs: [("images", image)])
            samples.append(now() - t0)
        }
        var r = record(name, unit: "ms", samples)
        r.ratioTarget = 1.0
        records.append(r)
    }

    /// The machine's sgemm rate in this process (GFLOP/s, the median of 1024³ products), the
    /// denominator of `vit_b16.sgemm_share` (the host's `sgemm.1024` measures the same in its own process).
    func sgemmRate() -> Double? { record("sgemm.1024", unit: "GFLOP/s", GEMM.measureRate(samples: max(5, repeats))).median }

    /// Multiply–adds × 2 of a ViT forward: patch embedding, then per block the qkv and output
    /// projections (8·T·D²), the MLP (4·T·D·hidden) and the attention products (4·T²·D).
    func vitForwardFLOPs(tokens t: Int, width d: Int, depth: Int, hidden: Int, patchInputs: Int) -> Double {
        let (t, d, h) = (Double(t), Double(d), Double(hidden))
        return 2 * (t - 1) * Double(patchInputs) * d + Double(depth) * (8 * t * d * d + 4 * t * d * h + 4 * t * t * d)
    }
}
