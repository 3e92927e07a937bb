import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// One-shot cycle-consistent fine-tuning of SAM 2 (NN/SAM2/CycleTuning.swift) on the random-weight
/// sam2-tiny fixture (256 px): the loss by hand, the gradient of the whole palindrome against central
/// finite differences, a few AdamW steps lowering the loss and touching only the chosen groups, and
/// the tuned weights' file.
@Suite(.serialized) struct SAM2CycleTuningTests {
    static let folder = TestPaths.fixtures + "/sam2-tiny"

    static func model() throws -> SAM2Model {
        try SAM2Model(config: try SAM2Config.read(folder + "/config.yaml"), checkpoint: Checkpoint(path: sam2TinyWeights))
    }

    /// The fixture's preprocessed frames [1, 3, S, S] and frame 0's mask as the prompt [S, S].
    static func frames(_ model: SAM2Model) throws -> (frames: [Tensor], mask: Tensor) {
        let frames = try NPY.read(path: folder + "/tracker/frames.npy")
        let s = model.config.imageSize, plane = 3 * s * s
        let all = try frames.scalars(as: Float.self)
        let images = (0..<frames.shape[0]).map { Tensor(shape: [1, 3, s, s], scalars: Array(all[($0 * plane)..<(($0 + 1) * plane)])) }
        let mask = try SAM2Tuning.promptMask(try NPY.read(path: folder + "/tracker/mask.npy"), size: s)
        return (images, mask)
    }

    /// x = [0, ln 3, −ln 3, 0], y = [1, 1, 0, 0]: σ(x) = [0.5, 0.75, 0.25, 0.5].
    /// BCE = (−ln 0.5 − ln 0.75 − ln 0.75 − ln 0.5)/4 = (2·0.693147 + 2·0.287682)/4 = 0.490415;
    /// Dice = 1 − (2·(0.5 + 0.75) + 1)/(2 + 2 + 1) = 1 − 3.5/5 = 0.3; loss 0.790415.
    /// d/dx of the BCE mean is (σ − y)/4: for pixel 0, −0.125; the Dice part there is
    /// −(2·y·σ'·(Σσ+Σy+1) − (2Σσy+1)·σ')/(…)² = −(2·0.25·5 − 3.5·0.25)/25 = −0.065; total −0.19.
    @Test func theLossIsBCEPlusDiceByHand() throws {
        let x = Variable(Tensor(shape: [2, 2], scalars: [0, logf(3), -logf(3), 0] as [Float]), requiresGrad: true)
        let loss = sigmoidBCEDice(logits: x, target: Tensor(shape: [2, 2], scalars: [1, 1, 0, 0] as [Float]))
        #expect(abs(loss.scalars[0] - 0.790415) < 1e-5)
        let g = Autograd.gradients(of: loss, wrt: [x])[0]!.scalars
        #expect(abs(g[0] - -0.19) < 1e-5, "\(g)")
        // Pixel 3 (x = 0, y = 0): BCE (0.5 − 0)/4 = 0.125; Dice −(0 − 3.5·0.25)/25 = 0.035; total 0.16.
        #expect(abs(g[3] - 0.16) < 1e-5, "\(g)")
    }

    /// The palindrome against sam2 1.1.0's `track_step` with autograd (make_cycle_fixture.py, the way
    /// SST's oc_ccl.py drives it, eval mode): the loss with the soft and the hard intermediate mask
    /// within 1e-4, x0's returning logits within 1e-3, and the soft loss's gradient for a mask-decoder,
    /// a memory-attention and a memory-encoder tensor within 1e-3 of the largest gradient element.
    @Test func theCycleLossAndItsGradientMatchSam2() throws {
        let model = try Self.model()
        let (frames, mask) = try Self.frames(model)
        let tracker = SAM2VideoTracker(model: model, frameCount: 2)
        let (f0, f1) = GradMode.disabled { (tracker.features(frames[0]), tracker.features(frames[1])) }
        let want = try NPY.read(path: Self.folder + "/cycle/loss.npy").scalars(as: Float.self)
        let soft = GradMode.with(true) { sam2CycleLoss(model: model, support: f0, mask: mask, query: f1, soft: true) }
        let hard = GradMode.disabled { sam2CycleLoss(model: model, support: f0, mask: mask, query: f1, soft: false).loss.scalars[0] }
        #expect(abs(soft.loss.scalars[0] - want[0]) < 1e-4, "soft loss \(soft.loss.scalars[0]) vs sam2 \(want[0])")
        #expect(abs(hard - want[1]) < 1e-4, "hard loss \(hard) vs sam2 \(want[1])")
        let back = try NPY.read(path: Self.folder + "/cycle/back_logits_soft.npy")
        #expect(try SAM2EncoderTests.maxError(soft.back.value.reshaped([back.shape[0], back.shape[1]]), back) < 1e-3)
        let names = [
            "sam_mask_decoder.output_upscaling.0.weight", "memory_attention.layers.0.cross_attn_image.v_proj.weight", "memory_encoder.pix_feat_proj.weight",
        ]
        let byName = Dictionary(model.namedParameters.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        let grads = Autograd.gradients(of: soft.loss, wrt: names.map { byName[$0]!.variable })
        for (name, g) in zip(names, grads) {
            let expected = try NPY.read(path: Self.folder + "/cycle/grad_\(name).npy")
            let got = try #require(g, "no gradient for \(name)").value.reshaped(expected.shape)
            let scale = try expected.scalars(as: Float.self).reduce(Float(0)) { max($0, abs($1)) }
            let e = try SAM2EncoderTests.maxError(got, expected)
            #expect(e <= 1e-3 * scale, "\(name): gradient max error \(e), largest element \(scale)")
        }
    }

    /// Parameter elements of three groups (the largest gradient in a decoder, a memory-attention and a
    /// memory-encoder tensor): the tape's gradient of the palindrome loss against central differences
    /// (step 1e-2, float32), within 3 % + 2e-4.
    @Test func theGradientMatchesFiniteDifferences() throws {
        let model = try Self.model()
        let (frames, mask) = try Self.frames(model)
        let tracker = SAM2VideoTracker(model: model, frameCount: 2)
        let (f0, f1) = GradMode.disabled { (tracker.features(frames[0]), tracker.features(frames[1])) }
        let tuned = try SAM2Tuning.parameters(model, groups: ["mask_decoder", "memory_attention", "memory_encoder"])
        let names = [
            "sam_mask_decoder.output_upscaling.0.weight", "memory_attention.layers.0.cross_attn_image.v_proj.weight",
            "memory_encoder.pix_feat_proj.weight",
        ]
        let chosen = try names.map { name in
            guard let p = tuned.first(where: { $0.0 == name })?.1 else { throw SAM2Error("no tuned parameter \(name)") }
            return p
        }
        let loss = GradMode.with(true) { sam2CycleLoss(model: model, support: f0, mask: mask, query: f1).loss }
        let grads = Autograd.gradients(of: loss, wrt: chosen.map(\.variable))
        func value() -> Float { GradMode.disabled { sam2CycleLoss(model: model, support: f0, mask: mask, query: f1).loss.scalars[0] } }
        for (k, p) in chosen.enumerated() {
            let g = try #require(grads[k], "no gradient for \(names[k])").scalars
            let i = g.indices.max { abs(g[$0]) < abs(g[$1]) }!
            let original = p.value, base = try original.scalars(as: Float.self), h: Float = 1e-2
            var plus = base, minus = base
            plus[i] += h
            minus[i] -= h
            p.assign(Tensor(shape: original.shape, scalars: plus))
            let up = value()
            p.assign(Tensor(shape: original.shape, scalars: minus))
            let down = value()
            p.assign(original)
            let numeric = (up - down) / (2 * h)
            #expect(abs(numeric - g[i]) <= 0.03 * abs(g[i]) + 2e-4, "\(names[k])[\(i)]: tape \(g[i]), finite difference \(numeric)")
            #expect(abs(g[i]) > 1e-4, "\(names[k]): the largest gradient \(g[i]) is too small to check")
        }
    }

    /// The palindrome loss (no tape) from frame 0 with `mask` through each later frame, averaged.
    static func meanCycleLoss(_ model: SAM2Model, frames: [Tensor], mask: Tensor) -> Float {
        let tracker = SAM2VideoTracker(model: model, frameCount: 2)
        let queries = frames.dropFirst()
        return GradMode.disabled {
            let f0 = tracker.features(frames[0])
            return queries.map { sam2CycleLoss(model: model, support: f0, mask: mask, query: tracker.features($0)).loss.scalars[0] }.reduce(0, +)
                / Float(queries.count)
        }
    }

    /// Four AdamW steps (lr 1e-3) on the chosen groups lower the mean palindrome loss over the fixture's
    /// three unlabelled frames; every parameter outside the groups is bit-identical afterwards, and
    /// each chosen group has changed.
    @Test func aFewStepsLowerTheLossAndTouchOnlyTheChosenGroups() throws {
        let model = try Self.model()
        let (frames, mask) = try Self.frames(model)
        let queries = Array(frames.dropFirst())
        func meanLoss() -> Float { Self.meanCycleLoss(model, frames: frames, mask: mask) }
        let before = model.namedParameters.map { ($0.0, $0.1.value) }
        let lossBefore = meanLoss()
        var tuner = SAM2CycleTuner()
        tuner.groups = ["mask_decoder", "memory_attention"]
        tuner.steps = 4
        tuner.learningRate = 1e-3
        tuner.seed = 7
        let losses = try tuner.run(model: model, support: frames[0], masks: [mask], queryCount: queries.count, query: { queries[$0] })
        #expect(losses.count == 4 && losses.allSatisfy(\.isFinite))
        let lossAfter = meanLoss()
        #expect(lossAfter < lossBefore, "mean cycle loss \(lossBefore) → \(lossAfter)")
        let tuned = Set(try SAM2Tuning.parameters(model, groups: tuner.groups).map(\.0))
        var changed: Set<String> = []
        for ((name, old), (_, p)) in zip(before, model.namedParameters) {
            let same = try old.scalars(as: Float.self) == p.value.scalars(as: Float.self)
            if !tuned.contains(name) { #expect(same, "\(name) is not in the tuned groups but changed") } else if !same { changed.insert(name) }
        }
        #expect(changed.contains { $0.hasPrefix("sam_mask_decoder.") } && changed.contains { $0.hasPrefix("memory_attention.") })
    }

    /// LoRA (rank 2) on the memory attention's projections: three steps lower the mean palindrome loss;
    /// only attention projections change, each by a matrix of rank ≤ 2 (every 3 × 3 minor of a sampled
    /// block vanishes relative to the change's scale).
    @Test func loraTrainsOnlyLowRankChangesOfTheAttentionProjections() throws {
        let model = try Self.model()
        let (frames, mask) = try Self.frames(model)
        let queries = Array(frames.dropFirst())
        func meanLoss() -> Float { Self.meanCycleLoss(model, frames: frames, mask: mask) }
        let before = model.namedParameters.map { ($0.0, $0.1.value) }
        let lossBefore = meanLoss()
        var tuner = SAM2CycleTuner()
        tuner.groups = ["memory_attention"]
        tuner.loraRank = 2
        tuner.steps = 3
        tuner.learningRate = 1e-2
        _ = try tuner.run(model: model, support: frames[0], masks: [mask], queryCount: queries.count, query: { queries[$0] })
        let lossAfter = meanLoss()
        #expect(lossAfter < lossBefore, "mean cycle loss \(lossBefore) → \(lossAfter)")
        var changed = 0
        for ((name, old), (_, p)) in zip(before, model.namedParameters) {
            let a = try old.scalars(as: Float.self), b = try p.value.scalars(as: Float.self)
            guard a != b else { continue }
            changed += 1
            #expect(name.hasPrefix("memory_attention.") && SAM2Tuning.isAttentionProjection(name), "\(name) changed")
            let cols = old.shape[1], d = zip(b, a).map { $0 - $1 }
            let scale = d.reduce(Float(0)) { max($0, abs($1)) }
            func at(_ i: Int, _ j: Int) -> Double { Double(d[i * cols + j] / scale) }
            // The 3 × 3 minor of rows 0–2 and columns 0–2: zero for a rank-2 change.
            let minor =
                at(0, 0) * (at(1, 1) * at(2, 2) - at(1, 2) * at(2, 1)) - at(0, 1) * (at(1, 0) * at(2, 2) - at(1, 2) * at(2, 0))
                + at(0, 2) * (at(1, 0) * at(2, 1) - at(1, 1) * at(2, 0))
            #expect(abs(minor) < 1e-4, "\(name): a 3 × 3 minor of the change is \(minor)")
        }
        #expect(changed > 0)
    }

    /// The tuned groups saved as safetensors and applied to a fresh model give the same parameters; a
    /// file with a tensor the model does not have, or of another shape, is refused naming it.
    @Test func tunedWeightsRoundTripAndBadFilesAreNamed() throws {
        let dir = TempDir("sam2-tuned")
        let model = try Self.model()
        let decoder = try SAM2Tuning.parameters(model, groups: ["mask_decoder"])
        decoder[0].1.assign(Tensor(shape: decoder[0].1.shape, scalars: [Float](repeating: 0.25, count: decoder[0].1.value.count)))
        try SAM2Tuning.save(model, groups: ["mask_decoder"], to: dir.path + "/tuned.safetensors")
        let fresh = try Self.model()
        try SAM2Tuning.apply(try Checkpoint(path: dir.path + "/tuned.safetensors"), to: fresh)
        let loaded = try SAM2Tuning.parameters(fresh, groups: ["mask_decoder"])
        #expect(try loaded[0].1.value.scalars(as: Float.self).allSatisfy { $0 == 0.25 })
        try SafeTensors.write(
            [("sam_mask_decoder.nonsense", Tensor(shape: [2], scalars: [1, 2] as [Float])), (decoder[1].0, Tensor(shape: [1], scalars: [1] as [Float]))],
            to: dir.path + "/bad.safetensors")
        #expect {
            try SAM2Tuning.apply(try Checkpoint(path: dir.path + "/bad.safetensors"), to: fresh)
        } throws: { e in
            "\(e)".contains("sam_mask_decoder.nonsense") && "\(e)".contains(decoder[1].0)
        }
        #expect(throws: SAM2Error.self) { try SAM2Tuning.parameters(model, groups: ["image_encoder"]) }
    }
}
