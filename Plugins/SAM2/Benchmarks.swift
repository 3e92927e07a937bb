import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// SAM 2.1 Hiera-tiny at 1024 px (the sizes of sam2's `sam2.1_hiera_t.yaml`, random weights: speed
/// does not depend on them): milliseconds per tracked frame of the video predictor — the image
/// encoder, memory attention over the conditioning frame and up to six previous frames with their
/// object pointers, the SAM heads and the memory encoder. `scripts/bench-reference.py` times sam2
/// 1.1.0's `propagate_in_video` on the same model for the ratio.
extension SAM2TrackerComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "sam2.track_frame_1024", unit: "ms",
            summary: "SAM 2.1 Hiera-tiny (random weights) at 1024 px: one tracked frame of the video predictor, image encoder included",
            ratioTarget: 1.0),
        BenchmarkSpec(
            "sam2.track_frame_1024_bf16", unit: "ms",
            summary: "the same frame with precision=bf16 (oneDNN bf16 linear products; a second tracker on the same frames, timed interleaved with fp32)"),
    ]

    func benchmark(_ run: BenchmarkRun) throws {
        let bf16Name = "sam2.track_frame_1024_bf16"
        var bf16Wanted = run.wanted(bf16Name)
        if bf16Wanted, let why = GEMM.bf16Unavailable() {
            run.notes.append("\(bf16Name): \(why)")
            bf16Wanted = false
        }
        guard run.wanted("sam2.track_frame_1024") || bf16Wanted else { return }
        let model = SAM2Model(config: try Self.hieraTiny(), seed: 1)
        let s = model.config.imageSize
        var rng = SeededGenerator(seed: 2)
        let frames = max(4, min(run.repeats / 4, 8))
        let tracker = SAM2VideoTracker(model: model, frameCount: frames)
        // The bf16 tracker follows the same frames, each timed right after the fp32 one.
        let tracker16 = SAM2VideoTracker(model: model, frameCount: frames)
        func frame() -> Tensor { Tensor(shape: [1, 3, s, s], scalars: (0..<(3 * s * s)).map { _ in Float(rng.nextNormal()) }) }
        let mask = Tensor(shape: [s, s], scalars: (0..<(s * s)).map { p in (p / s > s / 4 && p / s < s / 2 && p % s > s / 4 && p % s < s / 2) ? Float(1) : 0 })
        let first = frame()
        _ = try GradMode.disabled { try tracker.addMask(mask, frame: 0, image: first) }
        if bf16Wanted { _ = try GEMM.withPrecision(.bf16) { try GradMode.disabled { try tracker16.addMask(mask, frame: 0, image: first) } } }
        var samples: [Double] = [], bf16: [Double] = []
        for i in 1..<frames {
            let image = frame()
            let t0 = run.now()
            _ = try GradMode.disabled { try tracker.track(frame: i, image: image) }
            samples.append(run.now() - t0)
            if bf16Wanted {
                let t1 = run.now()
                _ = try GEMM.withPrecision(.bf16) { try GradMode.disabled { try tracker16.track(frame: i, image: image) } }
                bf16.append(run.now() - t1)
            }
        }
        if run.wanted("sam2.track_frame_1024") {
            var r = run.record("sam2.track_frame_1024", unit: "ms", samples)
            r.ratioTarget = 1.0
            run.records.append(r)
        }
        if bf16Wanted {
            run.records.append(run.record(bf16Name, unit: "ms", bf16))
            let median = { (v: [Double]) in v.sorted()[v.count / 2] }
            run.notes.append(String(format: "%@: %.2f× faster than the interleaved fp32 frames (medians)", bf16Name, median(samples) / median(bf16)))
        }
    }

    /// sam2.1_hiera_t.yaml's sizes on the embedded model's (resolved sam2.1) switches.
    static func hieraTiny() throws -> SAM2Config {
        var c = try SAM2Config.read(try PluginResources.path(module: "SAM2", item: "sam2-tiny") + "/config.yaml")
        c.imageSize = 1024
        c.trunk.embedDim = 96
        c.trunk.numHeads = 1
        c.trunk.stages = [1, 2, 7, 2]
        c.trunk.globalAttentionBlocks = [5, 7, 9]
        c.trunk.windowPosEmbedBackground = [7, 7]
        c.neck.dModel = 256
        c.neck.channels = [768, 384, 192, 96]
        c.neck.positionFeatures = 256
        c.memoryAttention.dModel = 256
        c.memoryAttention.layers = 4
        c.memoryAttention.feedforward = 2048
        c.memoryEncoder.inDim = 256
        c.memoryEncoder.outDim = 64
        c.memoryEncoder.positionFeatures = 64
        c.tracking.numMaskmem = 7
        try c.validate(source: "sam2.1_hiera_t sizes")
        return c
    }
}
