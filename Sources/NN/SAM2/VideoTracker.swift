import Formats
import Foundation
import Tensors

/// A whole SAM 2 (sam2 1.x `SAM2Base`): the image encoder, the SAM heads, the memory encoder and
/// memory attention, and the tracking parameters (`maskmem_tpos_enc`, `no_mem_embed`,
/// `no_mem_pos_enc`, `no_obj_ptr`, `no_obj_embed_spatial`, `mask_downsample`, `obj_ptr_proj`,
/// `obj_ptr_tpos_proj`). Loaded from the released `.pt` (or safetensors) with every missing,
/// mis-shaped or unexpected tensor named in one error.
public final class SAM2Model: Module {
    public let config: SAM2Config
    public let encoder: SAM2ImageEncoder
    public let heads: SAM2Heads
    public let memoryEncoder: SAM2MemoryEncoder
    public let memoryAttention: SAM2MemoryAttention
    public let maskmemTemporalEncoding: Parameter
    public let noMemEmbed: Parameter, noMemPosition: Parameter
    public let noObjectPointer: Parameter?
    public let noObjectEmbedSpatial: Parameter?
    public let maskDownsample: Conv2d?
    public let pointerProjection: SAMMLP?
    public let pointerTemporalProjection: Linear?
    public var isTraining = false

    /// The memory width (memory_encoder.out_dim) and the model width (d_model).
    public var memoryDim: Int { config.memoryEncoder.outDim }
    public var hiddenDim: Int { config.neck.dModel }

    public convenience init(config: SAM2Config, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        self.init(config: config, source: ParameterSource(loader: loader))
        try loader.finish()
    }

    public convenience init(config: SAM2Config, seed: UInt64) { self.init(config: config, source: ParameterSource(seed: seed)) }

    init(config c: SAM2Config, source p: ParameterSource) {
        config = c
        encoder = SAM2ImageEncoder(config: c, source: p)
        heads = SAM2Heads(config: c, source: p)
        memoryEncoder = SAM2MemoryEncoder(config: c.memoryEncoder, source: p)
        memoryAttention = SAM2MemoryAttention(config: c.memoryAttention, memoryDim: c.memoryEncoder.outDim, source: p)
        let t = c.tracking, d = c.neck.dModel, m = c.memoryEncoder.outDim
        maskmemTemporalEncoding = p.parameter("maskmem_tpos_enc", [max(t.numMaskmem, 1), 1, 1, m]) {
            NN.normal([max(t.numMaskmem, 1), 1, 1, m], std: 0.02, &$0)
        }
        noMemEmbed = p.parameter("no_mem_embed", [1, 1, d]) { NN.normal([1, 1, d], std: 0.02, &$0) }
        noMemPosition = p.parameter("no_mem_pos_enc", [1, 1, d]) { NN.normal([1, 1, d], std: 0.02, &$0) }
        noObjectPointer = c.heads.predictObjectScores && t.useObjectPointers ? p.parameter("no_obj_ptr", [1, d]) { NN.normal([1, d], std: 0.02, &$0) } : nil
        noObjectEmbedSpatial = t.noObjectEmbedSpatial ? p.parameter("no_obj_embed_spatial", [1, m]) { NN.normal([1, m], std: 0.02, &$0) } : nil
        if t.useObjectPointers {
            maskDownsample = Conv2d(
                weight: p.uniform("mask_downsample.weight", [1, 1, 4, 4], bound: 0.25),
                bias: p.uniform("mask_downsample.bias", [1], bound: 0.25, decays: false),
                stride: 4)
            pointerProjection =
                t.mlpForPointerProjection
                ? SAMMLP(prefix: "obj_ptr_proj.", sizes: [d, d, d, d], source: p) : SAMMLP(prefix: "obj_ptr_proj", sizes: [d, d], source: p, single: true)
        } else {
            (maskDownsample, pointerProjection) = (nil, nil)
        }
        pointerTemporalProjection = t.projectTemporalEncoding ? p.linear("obj_ptr_tpos_proj", d, m) : nil
    }

    public var namedParameters: [(String, Parameter)] {
        var out = encoder.namedParameters + heads.namedParameters + memoryEncoder.namedParameters + memoryAttention.namedParameters
        out += [("maskmem_tpos_enc", maskmemTemporalEncoding), ("no_mem_embed", noMemEmbed), ("no_mem_pos_enc", noMemPosition)]
        if let noObjectPointer { out.append(("no_obj_ptr", noObjectPointer)) }
        if let noObjectEmbedSpatial { out.append(("no_obj_embed_spatial", noObjectEmbedSpatial)) }
        if let maskDownsample { out += prefixed("mask_downsample.", maskDownsample.namedParameters) }
        out += pointerProjection?.namedParameters ?? []
        if let pointerTemporalProjection { out += prefixed("obj_ptr_tpos_proj.", pointerTemporalProjection.namedParameters) }
        return out
    }
}

/// What SAM 2 keeps of a tracked frame (sam2's `compact_current_out`).
public struct SAM2FrameState {
    /// Low-resolution mask logits [1, 1, S/4, S/4].
    public var masks: Tensor
    public var objectPointer: Tensor
    public var objectScore: Float
    /// The frame's memory [1, mem, h, w] (rounded to bfloat16 as sam2 stores it) and its position encoding.
    public var memory: Tensor?
    public var memoryPosition: Tensor?
}

/// SAM 2's video predictor for one object, as `SAM2VideoPredictor.add_new_mask` + `propagate_in_video`
/// compute it: a mask on a conditioning frame, then every later frame conditioned on the memory of
/// the conditioning frame, the `num_maskmem − 1` previous frames and the object pointers. Frames are
/// given preprocessed ([1, 3, S, S], the predictor's resize and normalisation), one at a time, so a
/// long video never holds more than the memory bank.
public final class SAM2VideoTracker {
    public let model: SAM2Model
    public let frameCount: Int
    public private(set) var conditioning: [Int: SAM2FrameState] = [:]
    public private(set) var tracked: [Int: SAM2FrameState] = [:]
    /// Frames whose memory is no longer reachable are dropped (bounded by num_maskmem and the pointers).
    public var dropUnreachable = true

    public init(model: SAM2Model, frameCount: Int) {
        self.model = model
        self.frameCount = frameCount
    }

    var config: SAM2Config { model.config }

    /// The image features of a frame: the levels kept for the SAM heads and the top level's position
    /// encoding. Computed once per frame and shared by the trackers of several objects.
    // @unchecked: immutable after the encoder made it; only read.
    public struct Features: @unchecked Sendable {
        var top: Variable // [1, C, h, w]
        var topPosition: Tensor // [1, C, h, w]
        var highRes: [Variable]
    }

    /// The image encoder on one preprocessed frame [1, 3, S, S].
    public func features(_ image: Tensor) -> Features {
        let out = model.encoder.forward(Variable(image))
        let levels = config.useHighResFeatures ? 3 : 1
        let feats = Array(out.features.suffix(levels)), pos = Array(out.positions.suffix(levels))
        return Features(top: feats.last!, topPosition: pos.last!, highRes: Array(feats.dropLast()))
    }

    /// Adds the mask [H, W] (0/1, at the video's resolution) on frame `index` and returns its logits
    /// [1, 1, S/4, S/4] (`add_new_mask`), then encodes its memory (`propagate_in_video_preflight`).
    public func addMask(_ mask: Tensor, frame index: Int, image: Tensor) throws -> SAM2FrameState {
        try addMask(mask, frame: index, features: features(image))
    }

    /// `addMask` on a frame's precomputed features.
    public func addMask(_ mask: Tensor, frame index: Int, features f: Features) throws -> SAM2FrameState {
        guard mask.rank == 2, (0..<frameCount).contains(index) else { throw SAM2Error("a mask is [H, W] on a frame in 0..<\(frameCount)") }
        let s = config.imageSize
        var m = Variable(try mask.converted(to: .float32)).reshaped([1, 1, mask.shape[0], mask.shape[1]])
        if mask.shape != [s, s] {
            let resized = antialiasedResize(m, height: s, width: s)
            m = Variable(Tensor(shape: [1, 1, s, s], scalars: resized.scalars.map { $0 >= 0.5 ? Float(1) : 0 }))
        }
        var state: SAM2FrameState
        if config.tracking.useMaskInputAsOutput {
            state = maskAsOutput(m, features: f)
        } else {
            let out = samHeads(backbone: withNoMemory(f), features: f, mask: m, multimask: useMultimask(initial: true))
            state = SAM2FrameState(masks: out.lowRes.value, objectPointer: out.pointer.value, objectScore: out.objectScore)
        }
        // The memory of the conditioning frame: its low-resolution logits upsampled, binarised (a prompt).
        let high = model.encoder.upsample(Variable(state.masks), to: s)
        (state.memory, state.memoryPosition) = encodeMemory(features: f, highRes: high, objectScore: state.objectScore, fromPrompt: true)
        conditioning[index] = state
        tracked.removeValue(forKey: index)
        return state
    }

    /// `add_new_points_or_box` (normalize_coords) on frame `index`, then its memory
    /// (`propagate_in_video_preflight`): points (x, y) in the video's pixel coordinates
    /// (`videoWidth` × `videoHeight`) with labels 1 (positive) or 0 (negative), and optionally a box
    /// (x0, y0, x1, y1) that goes first as two points labelled 2 and 3. The coordinates are scaled to
    /// image_size (÷ video size × image_size, in float32 as torch); the frame is an initial
    /// conditioning frame (`no_mem_embed`, no memory); multimask output when the config's
    /// `multimask_min_pt_num…multimask_max_pt_num` holds the point count (a box counts two). When the
    /// frame already has an output (a mask or points added before), its low-resolution logits,
    /// clamped to ±32, are the mask input (`prev_sam_mask_logits`); the new points replace any earlier
    /// ones (`clear_old_points`). A frame that was tracked (a correction) is refused.
    public func addPoints(
        _ points: [(x: Float, y: Float)], labels: [Int], box: (x0: Float, y0: Float, x1: Float, y1: Float)? = nil, videoHeight: Int, videoWidth: Int,
        frame index: Int, image: Tensor
    ) throws -> SAM2FrameState {
        try addPoints(points, labels: labels, box: box, videoHeight: videoHeight, videoWidth: videoWidth, frame: index, features: features(image))
    }

    /// `addPoints` on a frame's precomputed features.
    public func addPoints(
        _ points: [(x: Float, y: Float)], labels: [Int], box: (x0: Float, y0: Float, x1: Float, y1: Float)? = nil, videoHeight: Int, videoWidth: Int,
        frame index: Int, features f: Features
    ) throws -> SAM2FrameState {
        guard (0..<frameCount).contains(index) else { throw SAM2Error("points go on a frame in 0..<\(frameCount), not \(index)") }
        guard tracked[index] == nil else { throw SAM2Error("frame \(index) was already tracked: correcting a tracked frame with points is not supported") }
        guard videoHeight > 0, videoWidth > 0 else { throw SAM2Error("the video size \(videoWidth)×\(videoHeight) must be positive") }
        guard points.count == labels.count else { throw SAM2Error("\(points.count) points but \(labels.count) labels: give one label per point") }
        guard !points.isEmpty || box != nil else { throw SAM2Error("at least one point or a box is needed") }
        guard labels.allSatisfy({ $0 == 0 || $0 == 1 }) else { throw SAM2Error("point labels are 1 (positive) or 0 (negative), got \(labels)") }
        var all: [(Float, Float)] = [], allLabels: [Int] = []
        if let box {
            all += [(box.x0, box.y0), (box.x1, box.y1)]
            allLabels += [2, 3]
        }
        all += points.map { ($0.x, $0.y) }
        allLabels += labels
        guard all.allSatisfy({ $0.0.isFinite && $0.1.isFinite }) else { throw SAM2Error("a point or box coordinate is not a finite number") }
        let s = Float(config.imageSize), (vw, vh) = (Float(videoWidth), Float(videoHeight))
        let scaled = all.map { ($0.0 / vw * s, $0.1 / vh * s) }
        let previous = conditioning[index].map { c in Variable(Tensor(shape: c.masks.shape, scalars: Variable(c.masks).scalars.map { min(max($0, -32), 32) })) }
        let out = samHeads(
            backbone: withNoMemory(f), features: f, mask: previous, multimask: useMultimask(initial: true, points: scaled.count),
            points: (scaled, allLabels))
        var state = SAM2FrameState(masks: out.lowRes.value, objectPointer: out.pointer.value, objectScore: out.objectScore)
        let high = model.encoder.upsample(Variable(state.masks), to: config.imageSize)
        (state.memory, state.memoryPosition) = encodeMemory(features: f, highRes: high, objectScore: state.objectScore, fromPrompt: true)
        conditioning[index] = state
        return state
    }

    /// Tracks frame `index` (not a conditioning frame) from the memory: its logits [1, 1, S/4, S/4].
    public func track(frame index: Int, image: Tensor) throws -> SAM2FrameState {
        try track(frame: index, features: features(image))
    }

    /// `track` on a frame's precomputed features.
    public func track(frame index: Int, features f: Features) throws -> SAM2FrameState {
        guard !conditioning.isEmpty else { throw SAM2Error("no mask was added: add one on a conditioning frame first") }
        if let c = conditioning[index] { return c }
        let conditioned = memoryConditioned(frame: index, features: f)
        let out = samHeads(backbone: conditioned, features: f, mask: nil, multimask: useMultimask(initial: false))
        var state = SAM2FrameState(masks: out.lowRes.value, objectPointer: out.pointer.value, objectScore: out.objectScore)
        (state.memory, state.memoryPosition) = encodeMemory(features: f, highRes: out.highRes, objectScore: out.objectScore, fromPrompt: false)
        tracked[index] = state
        if dropUnreachable {
            let keep = max(config.tracking.numMaskmem, config.tracking.maxObjectPointers) * config.tracking.memoryTemporalStride + 2
            for k in tracked.keys where k < index - keep { tracked.removeValue(forKey: k) }
        }
        return state
    }

    /// Low-resolution logits [1, 1, s, s] at a video's resolution (bilinear, align_corners False).
    public func videoResolution(_ masks: Tensor, height: Int, width: Int) -> Tensor {
        Variable(masks).upsampleBilinear(height: height, width: width).value
    }

    func useMultimask(initial: Bool, points: Int = 0) -> Bool {
        let t = config.tracking
        return t.multimaskOutputInSAM && (initial || t.multimaskOutputForTracking) && t.multimaskMinPoints <= points && points <= t.multimaskMaxPoints
    }

    /// An initial conditioning frame's features: `no_mem_embed` added directly, or attended to as the
    /// only memory (`directly_add_no_mem_embed` false; needs mem_dim = d_model, as sam2's expand does).
    func withNoMemory(_ f: Features) -> Variable {
        let c = model.hiddenDim
        if config.tracking.directlyAddNoMemEmbed || config.tracking.numMaskmem == 0 {
            return f.top + model.noMemEmbed.variable.reshaped([1, c, 1, 1])
        }
        let (h, w) = (f.top.shape[2], f.top.shape[3])
        let out = model.memoryAttention(
            current: f.top.reshaped([1, c, h * w]).permuted([2, 0, 1]), position: Variable(f.topPosition).reshaped([1, c, h * w]).permuted([2, 0, 1]),
            memory: model.noMemEmbed.variable, memoryPosition: model.noMemPosition.variable, objectPointerTokens: 0)
        return out.permuted([1, 2, 0]).reshaped([1, c, h, w])
    }

    struct HeadsOutput {
        var lowRes: Variable
        var highRes: Variable
        var pointer: Variable
        var objectScore: Float
    }

    /// `_forward_sam_heads`; `points` in image_size pixels with their labels (none: one padding point).
    func samHeads(backbone: Variable, features f: Features, mask: Variable?, multimask: Bool, points: ([(Float, Float)], [Int])? = nil) -> HeadsOutput {
        let h = model.heads, s = config.imageSize
        var maskPrompt = mask
        if let m = mask, m.shape[2] != h.maskInputSize { maskPrompt = antialiasedResize(m, height: h.maskInputSize, width: h.maskInputSize) }
        let sparse = points.map { h.embedPoints([$0.0], labels: [$0.1]) } ?? h.embedPoints([[(0, 0)]], labels: [[-1]])
        let out = h.decode(image: backbone, highRes: f.highRes, sparse: sparse, dense: h.embedMasks(maskPrompt, batch: 1), multimask: multimask)
        let score = out.objectScore.scalars[0]
        var low = out.masks
        let appearing = !config.heads.predictObjectScores || score > 0
        if !appearing { low = Variable(Tensor.filled(-1024, shape: low.shape)) }
        let high = model.encoder.upsample(low, to: s)
        var best = 0
        if multimask {
            let ious = out.ious.scalars
            for k in ious.indices where ious[k] > ious[best] { best = k }
        }
        let lowBest = low.slice(axis: 1, best..<(best + 1)), highBest = high.slice(axis: 1, best..<(best + 1))
        let tokenIndex = out.tokens.shape[1] > 1 ? best : 0
        var pointer =
            model.pointerProjection.map { $0(out.tokens.slice(axis: 1, tokenIndex..<(tokenIndex + 1)).reshaped([1, model.hiddenDim])) }
            ?? Variable(Tensor(zeros: .float32, shape: [1, model.hiddenDim]))
        if config.heads.predictObjectScores, let noPointer = model.noObjectPointer {
            let lambda: Float = config.tracking.softNoObjectPointer ? 1 / (1 + expf(-score)) : (appearing ? 1 : 0)
            if config.tracking.fixedNoObjectPointer { pointer = pointer * lambda }
            pointer = pointer + noPointer.variable * (1 - lambda)
        }
        return HeadsOutput(lowRes: lowBest, highRes: highBest, pointer: pointer, objectScore: score)
    }

    /// `_use_mask_as_output`: the mask itself as ±10 logits; the object pointer from the SAM heads
    /// prompted with the downsampled mask.
    func maskAsOutput(_ m: Variable, features f: Features) -> SAM2FrameState {
        let high = m * 20 - 10
        let s = config.imageSize
        let low = antialiasedResize(high, height: s / 4, width: s / 4)
        var pointer = Variable(Tensor(zeros: .float32, shape: [1, model.hiddenDim]))
        if config.tracking.useObjectPointers, let down = model.maskDownsample {
            pointer = samHeads(backbone: f.top, features: f, mask: down(m), multimask: false).pointer
        }
        let present: Float = m.scalars.contains { $0 > 0 } ? 1 : 0
        if config.heads.predictObjectScores, let noPointer = model.noObjectPointer {
            if config.tracking.fixedNoObjectPointer { pointer = pointer * present }
            pointer = pointer + noPointer.variable * (1 - present)
        }
        return SAM2FrameState(masks: low.value, objectPointer: pointer.value, objectScore: 20 * present - 10)
    }

    /// `_encode_new_memory`: the mask (binarised when it came from a prompt, else its sigmoid), scaled,
    /// encoded with the frame's top-level features; the no-object embedding where the object is absent;
    /// the features rounded to bfloat16 as the predictor stores them.
    func encodeMemory(features f: Features, highRes: Variable, objectScore: Float, fromPrompt: Bool) -> (Tensor, Tensor) {
        let t = config.tracking
        var mask =
            fromPrompt && t.binarizeMaskFromPoints
            ? Variable(Tensor(shape: highRes.shape, scalars: highRes.scalars.map { $0 > 0 ? Float(1) : 0 })) : highRes.sigmoid()
        if t.sigmoidScale != 1 { mask = mask * Float(t.sigmoidScale) }
        if t.sigmoidBias != 0 { mask = mask + Float(t.sigmoidBias) }
        var (memory, position) = model.memoryEncoder(pixels: f.top, mask: mask)
        if let spatial = model.noObjectEmbedSpatial, !(objectScore > 0) {
            memory = memory + spatial.variable.reshaped([1, model.memoryDim, 1, 1])
        }
        return (roundedToBFloat16(memory.value), position)
    }

    /// `_prepare_memory_conditioned_features` for a frame that is not a conditioning frame.
    func memoryConditioned(frame index: Int, features f: Features) -> Variable {
        let t = config.tracking, c = model.hiddenDim, mem = model.memoryDim
        let (h, w) = (f.top.shape[2], f.top.shape[3])
        guard t.numMaskmem > 0 else { return f.top }
        // The conditioning frames attended to (all, or the closest `max_cond_frames_in_attn`).
        let selected = selectConditioning(index)
        var memories: [Variable] = [], positions: [Variable] = []
        func add(_ state: SAM2FrameState, slot: Int) {
            guard let m = state.memory, let p = state.memoryPosition else { return }
            memories.append(Variable(m).reshaped([1, mem, h * w]).permuted([2, 0, 1]))
            let tpos = model.maskmemTemporalEncoding.variable.slice(axis: 0, slot..<(slot + 1)).reshaped([1, 1, mem])
            positions.append(Variable(p).reshaped([1, mem, h * w]).permuted([2, 0, 1]) + tpos)
        }
        for k in selected.keys.sorted() { add(selected[k]!, slot: t.numMaskmem - 1) }
        let stride = t.memoryTemporalStride
        for slot in 1..<t.numMaskmem {
            let rel = t.numMaskmem - slot
            let previous = rel == 1 ? index - 1 : floorDiv(index - 2, stride) * stride - (rel - 2) * stride
            if let state = tracked[previous] ?? unselectedConditioning(index)[previous] { add(state, slot: t.numMaskmem - slot - 1) }
        }
        var pointerTokens = 0
        if t.useObjectPointers {
            let maxPointers = min(frameCount, t.maxObjectPointers)
            var pairs: [(Int, Tensor)] = []
            for k in selected.keys.sorted() where !t.onlyPastPointers || k <= index {
                pairs.append((t.signedTemporalEncoding ? index - k : abs(index - k), selected[k]!.objectPointer))
            }
            for diff in 1..<max(maxPointers, 1) {
                let k = index - diff
                if k < 0 || k >= frameCount { break }
                if let state = tracked[k] ?? unselectedConditioning(index)[k] { pairs.append((diff, state.objectPointer)) }
            }
            if !pairs.isEmpty {
                let pointers = concat(pairs.map { Variable($0.1).reshaped([1, 1, c]) }, axis: 0) // [P, 1, C]
                var pointerPosition: Variable
                if t.addTemporalEncodingToPointers {
                    let maxDiff = Float(maxPointers - 1)
                    let dim = t.projectTemporalEncoding ? c : mem
                    let pe = sinePositionEncoding1D(pairs.map { Float($0.0) / maxDiff }, dim: dim)
                    pointerPosition = (model.pointerTemporalProjection.map { $0(Variable(pe)) } ?? Variable(pe)).reshaped([pairs.count, 1, mem])
                } else {
                    pointerPosition = Variable(Tensor(zeros: .float32, shape: [pairs.count, 1, mem]))
                }
                var tokens = pointers
                if mem < c {
                    let split = c / mem
                    tokens = pointers.reshaped([pairs.count, 1, split, mem]).permuted([0, 2, 1, 3]).reshaped([pairs.count * split, 1, mem])
                    // repeat_interleave along the pointers.
                    pointerPosition = concat(
                        (0..<pairs.count).flatMap { i in [Variable](repeating: pointerPosition.slice(axis: 0, i..<(i + 1)), count: split) }, axis: 0)
                }
                memories.append(tokens)
                positions.append(pointerPosition)
                pointerTokens = tokens.shape[0]
            }
        }
        let current = f.top.reshaped([1, c, h * w]).permuted([2, 0, 1])
        let currentPosition = Variable(f.topPosition).reshaped([1, c, h * w]).permuted([2, 0, 1])
        let out = model.memoryAttention(
            current: current, position: currentPosition, memory: concat(memories, axis: 0), memoryPosition: concat(positions, axis: 0),
            objectPointerTokens: pointerTokens)
        return out.permuted([1, 2, 0]).reshaped([1, c, h, w])
    }

    /// `select_closest_cond_frames`: all conditioning frames, or the closest before, after, then by distance.
    func selectConditioning(_ index: Int) -> [Int: SAM2FrameState] {
        let limit = config.tracking.maxConditioningFrames
        if limit == -1 || conditioning.count <= limit { return conditioning }
        var chosen: [Int] = []
        if let before = conditioning.keys.filter({ $0 < index }).max() { chosen.append(before) }
        if let after = conditioning.keys.filter({ $0 >= index }).min() { chosen.append(after) }
        let rest = conditioning.keys.filter { !chosen.contains($0) }.sorted {
            abs(index - $0) < abs(index - $1) || (abs(index - $0) == abs(index - $1) && $0 < $1)
        }
        chosen += rest.prefix(max(0, limit - chosen.count))
        return conditioning.filter { chosen.contains($0.key) }
    }

    func unselectedConditioning(_ index: Int) -> [Int: SAM2FrameState] {
        let selected = selectConditioning(index)
        return conditioning.filter { selected[$0.key] == nil }
    }
}

public struct SAM2Error: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

func floorDiv(_ a: Int, _ b: Int) -> Int { Int((Double(a) / Double(b)).rounded(.down)) }

/// sam2's `get_1d_sine_pe`: [sin(p/T^(2⌊i/2⌋/(d/2))) …, cos(…) …] for i < d/2, float32.
func sinePositionEncoding1D(_ positions: [Float], dim: Int, temperature: Float = 10000) -> Tensor {
    let half = dim / 2
    let dimT: [Float] = (0..<half).map { powf(temperature, Float(2 * ($0 / 2)) / Float(half)) }
    var out = [Float](repeating: 0, count: positions.count * dim)
    for (i, p) in positions.enumerated() {
        for j in 0..<half {
            out[i * dim + j] = sinf(p / dimT[j])
            out[i * dim + half + j] = cosf(p / dimT[j])
        }
    }
    return Tensor(shape: [positions.count, dim], scalars: out)
}

/// Rounds to the nearest bfloat16 (ties to even) and back, as `tensor.to(torch.bfloat16)` then float.
public func roundedToBFloat16(_ t: Tensor) -> Tensor {
    let v = (try? t.scalars(as: Float.self)) ?? []
    return Tensor(
        shape: t.shape,
        scalars: v.map { x in
            guard x.isFinite else { return x }
            let bits = x.bitPattern
            let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
            return Float(bitPattern: rounded)
        })
}

/// PyTorch's bilinear resize with `antialias=True` (the PIL-style triangle filter widened by the
/// scale when downsampling, weights normalised over the taps inside the image; plain bilinear when
/// upsampling) of x [N, C, h, w].
func antialiasedResize(_ x: Variable, height: Int, width: Int) -> Variable {
    resample(x, rows: antialiasMatrix(from: x.shape[2], to: height), cols: antialiasMatrix(from: x.shape[3], to: width))
}

func antialiasMatrix(from n: Int, to m: Int) -> [Float] {
    let scale = Double(n) / Double(m)
    let support = scale >= 1 ? scale : 1
    let invScale = scale >= 1 ? 1 / scale : 1
    var out = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
        let center = scale * (Double(i) + 0.5)
        let lo = max(Int(center - support + 0.5), 0)
        let hi = min(Int(center + support + 0.5), n)
        var weights: [Double] = []
        for j in lo..<max(hi, lo) {
            let x = abs((Double(j) - center + 0.5) * invScale)
            weights.append(x < 1 ? 1 - x : 0)
        }
        let total = weights.reduce(0, +)
        for (k, w) in weights.enumerated() where total > 0 { out[i * n + lo + k] = Float(w / total) }
    }
    return out
}

extension SAM2ImageEncoder {
    /// Bilinear (align_corners False) upsampling of [N, C, h, w] to side `s`.
    func upsample(_ x: Variable, to s: Int) -> Variable { x.upsampleBilinear(height: s, width: s) }
}
