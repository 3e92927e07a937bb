import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// bf16 inference (`GEMM.withPrecision(.bf16)`: linear layers' weights rounded once, inputs per
/// product, oneDNN bf16 matmul with fp32 accumulation; norms, softmax, attention in fp32) on the
/// parity fixtures of the other model families, against both our fp32 path and the reference
/// numbers the fixtures hold (transformers 5.24, diffusers 0.42, sam2 1.1.0). Each check also asks
/// that the bf16 path really ran: oneDNN's product counter grew and the outputs differ from fp32.
/// The tolerances are ours: bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 2e-3 per
/// operand), so a model's outputs move by a few 1e-3 of their range — the bounds below leave about
/// 3–8× headroom over what was measured on 2026-12-06 (stated at each check).
@Suite struct BF16ModelTests {
    static var executed: Int { OneDNNBackend.counters.executed }

    static func maxAbs(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) } }
    static func range(_ a: [Float]) -> Float { (a.max() ?? 0) - (a.min() ?? 0) }

    // MARK: Decoders

    struct Prompt: Decodable {
        let input_ids: [Int32]
        let last_logits: [Float]
        let greedy_16: [Int32]
        let core_neurons: [String: [Int]]
    }
    struct Expected: Decodable { let prompts: [Prompt] }

    /// Every position's logits of the prompt, then 16 greedy tokens with the cache (one prefill of
    /// the prompt, then one-row decode products).
    static func run(_ model: DecoderLM, _ ids: [Int32]) throws -> (logits: [Float], greedy: [Int32]) {
        let logits = try model.forward(ids, cache: model.makeCache(), allLogits: true)
        let cache = model.makeCache()
        var out: [Int32] = []
        var next = try model.forward(ids, cache: cache)
        for _ in 0..<16 {
            let id = Int32(next.indices.max { next[$0] < next[$1] }!)
            out.append(id)
            next = try model.forward([id], cache: cache)
        }
        return (logits, out)
    }

    /// opt-tiny and llama-tiny (transformers 5.24, random weights): in bf16 every position's logits
    /// within 2e-2 of their range of fp32's (measured 2.2e-3–2.8e-3), the last ones as close to
    /// transformers' (measured ≤ 3.1e-3), and the fixture's 16 greedy tokens identical.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil), arguments: ["opt-tiny", "llama-tiny"])
    func decoderLogitsAndGreedyTokens(_ name: String) throws {
        let folder = TestPaths.fixtures + "/" + name
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
        let model = try DecoderLM(folder: folder)
        let v = model.config.vocabSize
        for p in expected.prompts {
            let fp32 = try Self.run(model, p.input_ids)
            let before = Self.executed
            let bf16 = try GEMM.withPrecision(.bf16) { try Self.run(model, p.input_ids) }
            #expect(Self.executed > before, "\(name): no oneDNN product ran")
            let spread = Self.range(fp32.logits), delta = Self.maxAbs(bf16.logits, fp32.logits)
            #expect(delta > 0, "\(name): bf16 logits equal fp32's (the bf16 path did not run)")
            #expect(delta <= 2e-2 * spread, "\(name): max |Δ| \(delta) over a logit range \(spread)")
            let t = p.input_ids.count
            let last = Array(bf16.logits[((t - 1) * v)..<(t * v)])
            let toReference = Self.maxAbs(last, p.last_logits)
            #expect(toReference <= 2e-2 * Self.range(p.last_logits), "\(name): last logits vs transformers max |Δ| \(toReference)")
            #expect(bf16.greedy == p.greedy_16, "\(name): greedy tokens in bf16")
        }
    }

    /// CoreInfer's sparse FFN in bf16: the gathered core-neuron weights are rounded (when `setSparse`
    /// runs under bf16, or at the first bf16 product after an fp32 `setSparse` — the same numbers
    /// either way, since rounding is element-wise), and the logits stay within 2e-2 of their range of
    /// the fp32 sparse model's (llama-tiny, the fixture's core neurons; measured 2.5e-3).
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func sparseFFNInBF16() throws {
        let folder = TestPaths.fixtures + "/llama-tiny"
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
        let model = try DecoderLM(folder: folder)
        let p = expected.prompts[0]
        func setCore() throws {
            for (layer, neurons) in p.core_neurons { try model.setSparse(layer: Int(layer)!, neurons: neurons) }
        }
        try setCore()
        #expect(p.core_neurons.count == model.config.layers && p.core_neurons.values.allSatisfy { $0.count < model.config.intermediateSize })
        let fp32 = try model.forward(p.input_ids, cache: model.makeCache(), allLogits: true)
        let before = Self.executed
        let lazily = try GEMM.withPrecision(.bf16) { try model.forward(p.input_ids, cache: model.makeCache(), allLogits: true) }
        #expect(Self.executed > before)
        try GEMM.withPrecision(.bf16) { try setCore() }
        let gathered = try GEMM.withPrecision(.bf16) { try model.forward(p.input_ids, cache: model.makeCache(), allLogits: true) }
        #expect(gathered == lazily, "rounded at setSparse vs at the first product")
        let delta = Self.maxAbs(gathered, fp32), spread = Self.range(fp32)
        #expect(delta > 0 && delta <= 2e-2 * spread, "sparse bf16 max |Δ| \(delta) over a logit range \(spread)")
        // Dense again: the sparse layers were really used (their logits differ from the dense model's).
        for l in 0..<model.config.layers { try model.setSparse(layer: l, neurons: nil) }
        let dense = try GEMM.withPrecision(.bf16) { try model.forward(p.input_ids, cache: model.makeCache(), allLogits: true) }
        #expect(Self.maxAbs(dense, gathered) > 10 * delta)
    }

    // MARK: DiT

    /// dit-tiny (diffusers 0.42): the model output ε in bf16 within 2e-2 of max|ε| of diffusers' (fp32:
    /// 1e-4, DiTPipelineTests; bf16 measured 2.6e-3), and the 10-step guided DDIM sample within 1e-2
    /// of diffusers' (fp32: 1e-3; bf16 measured 5.2e-4).
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func ditOutputAndSample() throws {
        let p = try DiTPipelineTests.pipeline.get()
        let x = try DiTPipelineTests.floats("x_t"), t = try DiTPipelineTests.ints("t"), y = try DiTPipelineTests.ints("y")
        let fp32 = try p.modelOutput(x, timesteps: t, classes: y)
        let before = Self.executed
        let bf16 = try GEMM.withPrecision(.bf16) { try p.modelOutput(x, timesteps: t, classes: y) }
        #expect(Self.executed > before)
        #expect(Self.maxAbs(bf16, fp32) > 0, "bf16 ε equals fp32's")
        let error = DiTPipelineTests.relative(bf16, try DiTPipelineTests.floats("eps"))
        #expect(error <= 2e-2, "bf16 ε relative error \(error)")
        let ddim = try DDIM(scheduler: p.scheduler, steps: 10)
        let z = try GEMM.withPrecision(.bf16) {
            try ddim.sample(
                try DiTPipelineTests.floats("noise"), from: ddim.timesteps.count - 1, classes: try DiTPipelineTests.ints("classes"),
                predict: p.predictor(guidance: 2))
        }
        let sampleError = DiTPipelineTests.relative(z, try DiTPipelineTests.floats("sample"))
        #expect(sampleError <= 1e-2, "bf16 sample relative error \(sampleError)")
    }

    // MARK: timm ViT

    /// dinov2-tiny (timm 1.0.31: register tokens, layer scale, no_embed_class): the fast path in bf16
    /// runs the fused transformer products (6 oneDNN calls a block on this thread), and the class
    /// token keeps cosine ≥ 0.999 with timm's while differing from fp32's.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func timmViTTokens() throws {
        let folder = TestPaths.fixtures + "/dinov2-tiny"
        let checkpoint = try SafeTensorsCheckpoint(path: folder + "/model.safetensors")
        let config = try ViTConfig.timm(configPath: folder + "/config.json", checkpoint: checkpoint)
        let model = try ViT(config: config, checkpoint: checkpoint)
        model.isTraining = false
        let input = try NPY.read(path: folder + "/input.npy")
        let fp32 = try model.forward(input)
        let before = OneDNNBackend.threadExecuted
        let bf16 = try GEMM.withPrecision(.bf16) { try model.forward(input) }
        #expect(OneDNNBackend.threadExecuted - before >= 6 * config.depth)
        func cosines(_ a: [Float], _ b: [Float], width d: Int) -> [Float] {
            stride(from: 0, to: a.count, by: d).map { r in
                let x = a[r..<(r + d)], y = b[r..<(r + d)]
                let dot = zip(x, y).map { $0 * $1 }.reduce(0, +)
                return dot / (x.map { $0 * $0 }.reduce(0, +).squareRoot() * y.map { $0 * $0 }.reduce(0, +).squareRoot())
            }
        }
        let d = config.width
        let cls = try bf16.pooled.scalars(as: Float.self)
        let timmCLS: [Float] = try NPY.read(path: folder + "/cls.npy").scalars()
        let cosine = cosines(cls, timmCLS, width: d).min()!
        #expect(cls.count == timmCLS.count && cosine >= 0.999, "cosine \(cosine)")
        #expect(try fp32.pooled.scalars(as: Float.self) != cls, "bf16 class token equals fp32's")
    }

    // MARK: SAM 2

    /// sam2-tiny's video predictor (sam2 1.1.0, make_tracker_fixture.py): a mask on frame 0, frames
    /// 1–3 tracked. In bf16 (Hiera, memory attention, the heads' and memory encoder's linear layers)
    /// the masks (logits > 0 at video resolution) have IoU ≥ 0.99 with fp32's on every frame (measured
    /// 0.991–0.995 on the tracked frames of 214 × 320: pixels on the mask boundary flip), the
    /// mask logits stay within 2e-2 of their range of sam2's (measured ≤ 5.8e-3) and the object scores
    /// (≈ 7.9) within 1e-2 of sam2's (measured ≤ 1.6e-3).
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func sam2TrackedMasks() throws {
        let f = SAM2TrackerTests.folder
        let config = try SAM2Config.read(f + "/config.yaml")
        let model = try SAM2Model(config: config, checkpoint: Checkpoint(path: sam2TinyWeights))
        let frames = try NPY.read(path: f + "/tracker/frames.npy"), mask = try NPY.read(path: f + "/tracker/mask.npy")
        let want = try NPY.read(path: f + "/tracker/mask_logits.npy").scalars(as: Float.self)
        let scores = try NPY.read(path: f + "/tracker/object_scores.npy").scalars(as: Float.self)
        let (n, h, w) = (frames.shape[0], mask.shape[0], mask.shape[1])
        let plane = 3 * config.imageSize * config.imageSize
        let all = try frames.scalars(as: Float.self)
        func track() throws -> [(logits: [Float], score: Float)] {
            let tracker = SAM2VideoTracker(model: model, frameCount: n)
            return try (0..<n).map { i in
                let image = Tensor(shape: [1, 3, config.imageSize, config.imageSize], scalars: Array(all[(i * plane)..<((i + 1) * plane)]))
                let state = try GradMode.disabled { i == 0 ? try tracker.addMask(mask, frame: 0, image: image) : try tracker.track(frame: i, image: image) }
                return (try tracker.videoResolution(state.masks, height: h, width: w).scalars(as: Float.self), state.objectScore)
            }
        }
        let fp32 = try track()
        let before = Self.executed
        let bf16 = try GEMM.withPrecision(.bf16) { try track() }
        #expect(Self.executed > before)
        var moved: Float = 0
        for i in 0..<n {
            let (a, b) = (bf16[i].logits, fp32[i].logits)
            let both = zip(a, b).filter { $0 > 0 && $1 > 0 }.count, either = zip(a, b).filter { $0 > 0 || $1 > 0 }.count
            #expect(either > 0, "frame \(i): empty masks")
            let iou = Double(both) / Double(max(either, 1))
            #expect(iou >= 0.99, "frame \(i): bf16 mask IoU \(iou) with fp32's")
            let reference = Array(want[(i * h * w)..<((i + 1) * h * w)])
            let e = Self.maxAbs(a, reference)
            #expect(e <= 2e-2 * Self.range(reference), "frame \(i): mask logits max |Δ| \(e) to sam2's, range \(Self.range(reference))")
            if i > 0 { #expect(abs(bf16[i].score - scores[i]) <= 1e-2, "frame \(i): object score \(bf16[i].score) vs \(scores[i])") }
            moved = max(moved, Self.maxAbs(a, b))
        }
        #expect(moved > 0, "bf16 logits equal fp32's")
    }
}
