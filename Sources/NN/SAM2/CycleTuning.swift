import Formats
import Foundation
import Tensors

/// One-shot fine-tuning of SAM 2 with a cycle-consistent loss (SST's OC-CCL). The recipe follows
/// SST's `src/sst/oc_ccl.py` (published after REFERENCES.md §3.4 was written; Docs/methods/sam2.md
/// lists where this differs and which choices are ours):
///
/// - the palindrome x0 → x1 → x0 as two two-frame videos with the memory reset between them, each
///   frame through sam2's `track_step` (not the video predictor's preflight): the support x0
///   conditioned on its mask, x1 tracked from that memory; then x1 conditioned on its predicted mask
///   — **soft**, sigmoid(logits), by default (ours, as the issue asks), or `(logits > 0)` as
///   oc_ccl.py does (`soft` false) — and x0 tracked;
/// - loss: BCE (on the logits) + Dice (smoothing 1) between the x0 prediction's high-resolution
///   logits [S, S] and the support mask at S × S, back-propagated through both halves;
/// - the image encoder is frozen (its features computed once, without the tape); a named subset of
///   the rest is tuned (`SAM2Tuning.groups`; oc_ccl.py tunes all of them: `all`), AdamW (weight
///   decay 0.01), cosine decay to 1 % of the rate, the gradient's global norm clipped at 1;
/// - no dropout (oc_ccl.py trains in train mode: memory attention's dropout 0.1 is active there).
public enum SAM2Tuning {
    /// Parameter groups that can be tuned, by the checkpoint's module names.
    public static let groups = ["mask_decoder", "memory_attention", "memory_encoder", "prompt_encoder", "object_pointer", "memory_embeddings"]
    public static let defaultGroups = ["mask_decoder", "memory_attention"]
    /// Whether a tensor is an attention projection's weight (LoRA's targets).
    public static func isAttentionProjection(_ name: String) -> Bool {
        ["q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight"].contains { name.hasSuffix("." + $0) }
    }

    /// `all`: every group, i.e. everything but the image encoder (as SST's oc_ccl.py).
    public static func expanded(_ groups: [String]) -> [String] { groups.contains("all") ? Self.groups : groups }

    /// The named parameters of `groups` (checkpoint names), in the model's order, each once.
    public static func parameters(_ model: SAM2Model, groups: [String]) throws -> [(String, Parameter)] {
        let groups = expanded(groups)
        guard !groups.isEmpty else { throw SAM2Error("tune: name at least one parameter group (\(Self.groups.joined(separator: ", ")))") }
        for g in groups where !Self.groups.contains(g) {
            let why = g == "image_encoder" ? " (the image encoder stays frozen: its features are computed once, without gradients)" : ""
            throw SAM2Error("tune: unknown parameter group '\(g)'\(why); choose from \(Self.groups.joined(separator: ", ")) or all")
        }
        let chosen = Set(groups)
        var out: [(String, Parameter)] = []
        func take(_ group: String, _ items: [(String, Parameter)]) { if chosen.contains(group) { out += items } }
        take("prompt_encoder", model.heads.namedParameters.filter { $0.0.hasPrefix("sam_prompt_encoder.") })
        take("mask_decoder", model.heads.namedParameters.filter { $0.0.hasPrefix("sam_mask_decoder.") })
        take("memory_encoder", model.memoryEncoder.namedParameters)
        take("memory_attention", model.memoryAttention.namedParameters)
        let pointer: Set<String> = ["mask_downsample.", "obj_ptr_proj", "obj_ptr_tpos_proj.", "no_obj_ptr"]
        let embeddings: Set<String> = ["maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_embed_spatial"]
        let rest = model.namedParameters.filter { name, _ in
            !name.hasPrefix("image_encoder.") && !name.hasPrefix("sam_") && !name.hasPrefix("memory_encoder.") && !name.hasPrefix("memory_attention.")
        }
        take("object_pointer", rest.filter { name, _ in pointer.contains { name.hasPrefix($0) } })
        take("memory_embeddings", rest.filter { embeddings.contains($0.0) })
        return out
    }

    /// A mask [H, W] (0/1) as the predictor prompts with it: resized to S × S with the antialiased
    /// bilinear filter and thresholded at 0.5 (`add_new_mask`), [S, S].
    public static func promptMask(_ mask: Tensor, size s: Int) throws -> Tensor {
        guard mask.rank == 2 else { throw SAM2Error("a mask is [H, W], got \(mask.shape)") }
        let m = Variable(try mask.converted(to: .float32))
        if mask.shape == [s, s] { return Tensor(shape: [s, s], scalars: m.scalars.map { $0 >= 0.5 ? Float(1) : 0 }) }
        let resized = GradMode.disabled { antialiasedResize(m.reshaped([1, 1, mask.shape[0], mask.shape[1]]), height: s, width: s) }
        return Tensor(shape: [s, s], scalars: resized.scalars.map { $0 >= 0.5 ? Float(1) : 0 })
    }

    /// Writes the tuned parameters (`groups`) as safetensors under their checkpoint names.
    public static func save(_ model: SAM2Model, groups: [String], to path: String, metadata: [String: String] = [:]) throws {
        let tensors = try parameters(model, groups: groups).map { (name: $0.0, tensor: $0.1.value) }
        var meta = metadata
        meta["sam2_tune"] = expanded(groups).joined(separator: ",")
        try SafeTensors.write(tensors, metadata: meta, to: path)
    }

    /// Replaces the model's parameters by those in `checkpoint` (tuned weights: any subset of the
    /// model's tensors by name). Every unknown or mis-shaped tensor is named in one error, before
    /// anything is replaced.
    public static func apply(_ checkpoint: Checkpoint, to model: SAM2Model) throws {
        let byName = Dictionary(model.namedParameters.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = [], values: [(Parameter, Tensor)] = []
        for name in checkpoint.names {
            guard let p = byName[name] else {
                problems.append("unexpected tensor '\(name)' (not a parameter of this SAM 2)")
                continue
            }
            do { values.append((p, try checkpoint.float32(name, shape: p.shape))) } catch { problems.append("\(error)") }
        }
        if checkpoint.names.isEmpty { problems.append("it holds no tensor") }
        guard problems.isEmpty else { throw SAM2Error("tuned weights '\(checkpoint.path)': " + problems.joined(separator: "; ")) }
        for (p, t) in values { p.assign(t) }
    }
}

/// BCE + Dice between mask logits and a 0/1 target of the same shape: the mean over pixels of
/// torch's `binary_cross_entropy_with_logits` (max(x, 0) − x·y + log(1 + e^−|x|)), plus
/// 1 − (2·Σ σ(x)·y + 1)/(Σ σ(x) + Σ y + 1) (Dice with smoothing 1, as SST's patch-feature loss).
public func sigmoidBCEDice(logits x: Variable, target: Tensor) -> Variable {
    let y = Variable(target)
    let absolute = x.relu() + (-x).relu()
    // max(x, 0) as (x + |x|)/2, |x| with the subgradient 0 at 0: the gradient is σ(x) − y everywhere,
    // x = 0 included, as torch's.
    let bce = ((x + absolute) * 0.5 - x * y + ((-absolute).exp() + 1).log()).mean()
    let p = x.sigmoid()
    let dice = 1 - ((p * y).sum() * 2 + 1) / (p.sum() + y.sum() + 1)
    return bce + dice
}

extension SAM2VideoTracker {
    /// A frame's output kept on the tape.
    public struct TapeState {
        public var lowRes: Variable // [1, 1, S/4, S/4]
        public var highRes: Variable // [1, 1, S, S]
        public var pointer: Variable // [1, C]
        public var memory: Variable // [1, mem, h, w]
        public var memoryPosition: Tensor
        public var objectScore: Float
    }

    /// The conditioning frame of a two-frame video, recorded for gradients, as sam2's `track_step`
    /// computes it with `mask_inputs` (what SST's released `oc_ccl.py` calls): `mask` [1, 1, S, S] in
    /// [0, 1] (the support's 0/1 mask, or a soft mask); with `use_mask_input_as_output_without_sam`
    /// its logits are 20·m − 10 (present when any value is > 0), else the SAM heads prompted with it;
    /// the memory is encoded from the sigmoid of the high-resolution logits (not binarised: the
    /// prompt did not come from points).
    public func conditionOnTape(mask m: Variable, features f: Features) -> TapeState {
        let s = config.imageSize, t = config.tracking
        var low: Variable, high: Variable, pointer: Variable, score: Float
        if t.useMaskInputAsOutput {
            high = m * 20 - 10
            low = antialiasedResize(high, height: s / 4, width: s / 4)
            pointer = Variable(Tensor(zeros: .float32, shape: [1, model.hiddenDim]))
            if t.useObjectPointers, let down = model.maskDownsample {
                pointer = samHeads(backbone: f.top, features: f, mask: down(m), multimask: false).pointer
            }
            let present: Float = m.scalars.contains { $0 > 0 } ? 1 : 0
            if config.heads.predictObjectScores, let noPointer = model.noObjectPointer {
                if t.fixedNoObjectPointer { pointer = pointer * present }
                pointer = pointer + noPointer.variable * (1 - present)
            }
            score = 20 * present - 10
        } else {
            let out = samHeads(backbone: withNoMemory(f), features: f, mask: m, multimask: useMultimask(initial: true))
            (low, high, pointer, score) = (out.lowRes, out.highRes, out.pointer, out.objectScore)
        }
        let (memory, position) = encodeMemoryOnTape(features: f, mask: high.sigmoid(), objectScore: score)
        return TapeState(lowRes: low, highRes: high, pointer: pointer, memory: memory, memoryPosition: position, objectScore: score)
    }

    /// Frame 1 of a two-frame video tracked from the conditioning frame 0 (`propagate_in_video`'s
    /// `track_step` with one memory and one object pointer), recorded for gradients.
    public func trackOnTape(features f: Features, from c: TapeState) -> TapeState {
        let t = config.tracking, ch = model.hiddenDim, mem = model.memoryDim
        let (h, w) = (f.top.shape[2], f.top.shape[3])
        var conditioned = f.top
        if t.numMaskmem > 0 {
            var memories = [c.memory.reshaped([1, mem, h * w]).permuted([2, 0, 1])]
            let tpos = model.maskmemTemporalEncoding.variable.slice(axis: 0, (t.numMaskmem - 1)..<t.numMaskmem).reshaped([1, 1, mem])
            var positions = [Variable(c.memoryPosition).reshaped([1, mem, h * w]).permuted([2, 0, 1]) + tpos]
            var pointerTokens = 0
            if t.useObjectPointers {
                let maxPointers = min(2, t.maxObjectPointers)
                var position: Variable
                if t.addTemporalEncodingToPointers {
                    let dim = t.projectTemporalEncoding ? ch : mem
                    let pe = sinePositionEncoding1D([1 / Float(maxPointers - 1)], dim: dim)
                    position = (model.pointerTemporalProjection.map { $0(Variable(pe)) } ?? Variable(pe)).reshaped([1, 1, mem])
                } else {
                    position = Variable(Tensor(zeros: .float32, shape: [1, 1, mem]))
                }
                var tokens = c.pointer.reshaped([1, 1, ch])
                if mem < ch {
                    let split = ch / mem
                    tokens = tokens.reshaped([1, 1, split, mem]).permuted([0, 2, 1, 3]).reshaped([split, 1, mem])
                    position = concat([Variable](repeating: position, count: split), axis: 0)
                }
                memories.append(tokens)
                positions.append(position)
                pointerTokens = tokens.shape[0]
            }
            let out = model.memoryAttention(
                current: f.top.reshaped([1, ch, h * w]).permuted([2, 0, 1]), position: Variable(f.topPosition).reshaped([1, ch, h * w]).permuted([2, 0, 1]),
                memory: concat(memories, axis: 0), memoryPosition: concat(positions, axis: 0), objectPointerTokens: pointerTokens)
            conditioned = out.permuted([1, 2, 0]).reshaped([1, ch, h, w])
        }
        let out = samHeads(backbone: conditioned, features: f, mask: nil, multimask: useMultimask(initial: false))
        let (memory, position) = encodeMemoryOnTape(features: f, mask: out.highRes.sigmoid(), objectScore: out.objectScore)
        return TapeState(lowRes: out.lowRes, highRes: out.highRes, pointer: out.pointer, memory: memory, memoryPosition: position, objectScore: out.objectScore)
    }

    /// `_encode_new_memory` on a mask already in [0, 1] (scale, bias, the no-object embedding), not
    /// rounded to bfloat16.
    func encodeMemoryOnTape(features f: Features, mask: Variable, objectScore: Float) -> (Variable, Tensor) {
        let t = config.tracking
        var m = mask
        if t.sigmoidScale != 1 { m = m * Float(t.sigmoidScale) }
        if t.sigmoidBias != 0 { m = m + Float(t.sigmoidBias) }
        var (memory, position) = model.memoryEncoder(pixels: f.top, mask: m)
        if let spatial = model.noObjectEmbedSpatial, !(objectScore > 0) {
            memory = memory + spatial.variable.reshaped([1, model.memoryDim, 1, 1])
        }
        return (memory, position)
    }
}

/// The palindrome's loss for one object: `support` (x0) conditioned on `mask` [S, S] (0/1) → x1
/// (`query`) tracked; memory reset; x1 conditioned on its prediction (sigmoid of the logits when
/// `soft`, else logits > 0 as oc_ccl.py) → x0 tracked; BCE + Dice of x0's logits against `mask`.
/// Recorded for gradients when `GradMode` is on. Also returns x1's and x0's logits [1, 1, S, S].
public func sam2CycleLoss(
    model: SAM2Model, support: SAM2VideoTracker.Features, mask: Tensor, query: SAM2VideoTracker.Features, soft: Bool = true
) -> (loss: Variable, intermediate: Variable, back: Variable) {
    let s = model.config.imageSize
    let forward = SAM2VideoTracker(model: model, frameCount: 2)
    let c0 = forward.conditionOnTape(mask: Variable(mask).reshaped([1, 1, s, s]), features: support)
    let x1 = forward.trackOnTape(features: query, from: c0)
    let backward = SAM2VideoTracker(model: model, frameCount: 2)
    let intermediate = soft ? x1.highRes.sigmoid() : Variable(Tensor(shape: x1.highRes.shape, scalars: x1.highRes.scalars.map { $0 > 0 ? Float(1) : 0 }))
    let c1 = backward.conditionOnTape(mask: intermediate, features: query)
    let x0 = backward.trackOnTape(features: support, from: c1)
    return (sigmoidBCEDice(logits: x0.highRes.reshaped([s, s]), target: mask), x1.highRes, x0.highRes)
}

/// One-shot cycle-consistent fine-tuning of a SAM 2 (see `SAM2Tuning`): each step draws one
/// unlabelled frame x1 (seeded), averages the palindrome loss over the support's objects, and takes
/// one AdamW step on the chosen groups (cosine decay to 1 % of `learningRate` over the steps, as
/// oc_ccl.py; gradient norm clipped at `maxGradientNorm`, 0: off).
public struct SAM2CycleTuner: Sendable {
    public var groups = SAM2Tuning.defaultGroups
    public var steps = 20
    /// oc_ccl.py's default rate.
    public var learningRate: Float = 1e-5
    public var soft = true
    /// > 0: LoRA adapters of this rank on the chosen groups' attention projections (`q_proj`,
    /// `k_proj`, `v_proj`, `out_proj` weights) are trained instead of the tensors themselves:
    /// W = W₀ + B·A (A [r, in] uniform ±1/√in, B [out, r] zeros, scale 1, i.e. α = r), merged
    /// into W when the run ends.
    public var loraRank = 0
    public var weightDecay: Float = 0.01
    public var maxGradientNorm: Float = 1
    public var seed: UInt64 = 0
    public init() {}

    /// `support` [1, 3, S, S] preprocessed; `masks` one [S, S] 0/1 prompt per object
    /// (`SAM2Tuning.promptMask`); `query(i)` the i-th unlabelled frame preprocessed, i < `queryCount`.
    /// Returns the loss of every step (before its update).
    public func run(
        model: SAM2Model, support: Tensor, masks: [Tensor], queryCount: Int, query: (Int) throws -> Tensor,
        progress: (Int, Float) throws -> Void = { _, _ in }
    ) throws -> [Float] {
        let s = model.config.imageSize
        guard queryCount > 0 else { throw SAM2Error("fine-tuning needs at least one unlabelled frame") }
        guard !masks.isEmpty else { throw SAM2Error("fine-tuning needs at least one object mask on the support") }
        for m in masks where m.shape != [s, s] { throw SAM2Error("a prompt mask is \(m.shape); the model's image size is \(s)") }
        guard learningRate.isFinite, learningRate > 0, weightDecay.isFinite, weightDecay >= 0, maxGradientNorm >= 0 else {
            throw SAM2Error("fine-tuning needs lr > 0, weight decay ≥ 0 and a gradient norm limit ≥ 0")
        }
        let named = try SAM2Tuning.parameters(model, groups: groups)
        var tuned = named.map(\.1)
        var adapters: [(target: Parameter, base: Variable, a: Parameter, b: Parameter)] = []
        if loraRank > 0 {
            var rng = SeededGenerator(seed: seed ^ 0x4C6F_5241)
            for (name, p) in named where SAM2Tuning.isAttentionProjection(name) && p.shape.count == 2 {
                let (rows, cols) = (p.shape[0], p.shape[1]), r = min(loraRank, rows, cols)
                let a = Parameter(NN.uniform([r, cols], bound: 1 / Float(cols).squareRoot(), &rng))
                let b = Parameter(Tensor(zeros: .float32, shape: [rows, r]))
                adapters.append((p, Variable(p.value), a, b))
            }
            guard !adapters.isEmpty else { throw SAM2Error("lora_rank: the groups \(groups) have no attention projection to adapt") }
            tuned = adapters.flatMap { [$0.a, $0.b] }
        }
        // The adapters merged into their tensors, whatever happens.
        defer { for ad in adapters { ad.target.assign(GradMode.disabled { ad.base + matmul(ad.b.variable, ad.a.variable) }.value) } }
        let optimizer = AdamW(tuned, learningRate: learningRate, weightDecay: weightDecay)
        let encoder = SAM2VideoTracker(model: model, frameCount: 2)
        let supportFeatures = GradMode.disabled { encoder.features(support) }
        var rng = SeededGenerator(seed: seed)
        var losses: [Float] = []
        let schedule = Schedule.cosine(warmup: 0, floor: 0.01)
        for step in 0..<steps {
            optimizer.learningRate = schedule.rate(base: learningRate, step: step, total: steps)
            let pick = Int(rng.next() % UInt64(queryCount))
            let image = try query(pick)
            guard image.shape == [1, 3, s, s] else { throw SAM2Error("unlabelled frame \(pick) is \(image.shape), not [1, 3, \(s), \(s)]") }
            let features = GradMode.disabled { encoder.features(image) }
            let loss = GradMode.with(true) {
                for ad in adapters { ad.target.variable = ad.base + matmul(ad.b.variable, ad.a.variable) }
                var total: Variable?
                for m in masks {
                    let l = sam2CycleLoss(model: model, support: supportFeatures, mask: m, query: features, soft: soft).loss
                    total = total.map { $0 + l } ?? l
                }
                return total! * (1 / Float(masks.count))
            }
            let value = loss.scalars[0]
            guard value.isFinite else { throw SAM2Error("the cycle loss is \(value) at step \(step + 1): lower the learning rate") }
            var gradients = Autograd.gradients(of: loss, wrt: tuned.map(\.variable))
            if maxGradientNorm > 0 { clipGradients(&gradients, maxNorm: maxGradientNorm) }
            optimizer.step(gradients)
            losses.append(value)
            try progress(step + 1, value)
        }
        return losses
    }
}
