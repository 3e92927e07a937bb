import Formats
import Foundation

/// SAM 2's configuration, read from the official hydra yaml (`sam2.1_hiera_{t,s,b+,l}.yaml`) or a
/// resolved `config.yaml` (the `model:` mapping); absent keys take the sam2 code's defaults. Every
/// size is checked before a model is built from it. So far: the image encoder (Hiera trunk, FPN neck,
/// sine position encodings, `scalp`) and the mask decoder's high-resolution projections.
public struct SAM2Config: Sendable, Equatable {
    public struct Trunk: Sendable, Equatable {
        public var embedDim = 96
        public var numHeads = 1
        public var stages = [2, 3, 16, 3]
        public var qPool = 3
        public var qStride = 2
        public var dimMul = 2.0
        public var headMul = 2.0
        public var windowPosEmbedBackground = [14, 14]
        public var windowSpec = [8, 4, 14, 7]
        public var globalAttentionBlocks = [12, 16, 20]
        public init() {}

        /// The last block of each stage.
        public var stageEnds: [Int] { stages.indices.map { stages[...$0].reduce(0, +) - 1 } }
        public var depth: Int { stages.reduce(0, +) }
    }

    public struct Neck: Sendable, Equatable {
        public var dModel = 256
        public var channels = [768, 384, 192, 96]
        /// Levels (0 = highest resolution) that receive the top-down path; nil: all.
        public var topDownLevels: [Int]? = nil
        /// "nearest" or "bilinear".
        public var interpolation = "bilinear"
        /// "sum" or "avg".
        public var fuse = "sum"
        public var positionFeatures = 256
        public var temperature = 10000.0
        public var normalize = true
        public var scale: Double? = nil
        public init() {}
    }

    /// The SAM heads' switches (`SAM2Base` and `sam_mask_decoder_extra_args`).
    public struct Heads: Sendable, Equatable {
        public var predictObjectScores = false
        public var predictObjectScoresMLP = false
        public var iouPredictionUseSigmoid = false
        public var useMultimaskTokenForObjectPointer = false
        public var dynamicMultimaskViaStability = false
        public var stabilityDelta = 0.05
        public var stabilityThreshold = 0.98
        public init() {}
    }

    /// `memory_encoder` (sam2.1_hiera_* defaults).
    public struct MemoryEncoder: Sendable, Equatable {
        public var inDim = 256
        public var outDim = 64
        public var maskKernel = 3, maskStride = 2, maskPadding = 1, maskTotalStride = 16
        public var fuserLayers = 2, fuserKernel = 7, fuserPadding = 3
        public var fuserDepthwise = true
        public var fuserInputProjection = false
        public var layerScale = 1e-6
        public var positionFeatures = 64
        public var temperature = 10000.0
        public var normalize = true
        public var scale: Double? = nil
        public init() {}
        /// log₂(total stride) / log₂(stride) strided convolutions.
        public var downsampleLayers: Int { Int((log2(Double(maskTotalStride)) / log2(Double(maskStride))).rounded(.down)) }
    }

    /// `memory_attention` (sam2.1_hiera_* defaults).
    public struct MemoryAttention: Sendable, Equatable {
        public var dModel = 256
        public var layers = 4
        public var feedforward = 2048
        public var positionAtInput = true
        public var positionAtAttention = false
        public var positionAtCrossKeys = true
        public var positionAtCrossQueries = false
        public var selfHeads = 1, selfDownsample = 1
        public var crossHeads = 1, crossDownsample = 1
        public var ropeTheta = 10000.0
        public var ropeKeyRepeat = true
        public var activation = "relu"
        public init() {}
    }

    /// How `SAM2Base` tracks (its constructor's switches; sam2 1.x defaults where a yaml omits them).
    public struct Tracking: Sendable, Equatable {
        public var numMaskmem = 7
        public var maxObjectPointers = 16
        public var maxConditioningFrames = -1
        public var memoryTemporalStride = 1
        public var sigmoidScale = 1.0
        public var sigmoidBias = 0.0
        public var binarizeMaskFromPoints = false
        public var useMaskInputAsOutput = false
        public var directlyAddNoMemEmbed = false
        public var noObjectEmbedSpatial = false
        public var useObjectPointers = false
        public var addTemporalEncodingToPointers = true
        public var projectTemporalEncoding = false
        public var signedTemporalEncoding = false
        public var onlyPastPointers = false
        public var fixedNoObjectPointer = false
        public var softNoObjectPointer = false
        public var mlpForPointerProjection = false
        public var multimaskOutputInSAM = false
        public var multimaskOutputForTracking = false
        public var multimaskMinPoints = 1
        public var multimaskMaxPoints = 1
        public init() {}
    }

    public var imageSize = 1024
    public var tracking = Tracking()
    public var memoryEncoder = MemoryEncoder()
    public var memoryAttention = MemoryAttention()
    public var heads = Heads()
    public var trunk = Trunk()
    public var neck = Neck()
    public var scalp = 0
    public var useHighResFeatures = true
    public init() {}

    /// Reads `path` (YAML) and checks it.
    public static func read(_ path: String) throws -> SAM2Config {
        try SAM2Config(json: try YAML.read(path), source: path)
    }

    /// From the parsed yaml: its `model` mapping (or the root when there is none).
    public init(json root: JSONValue, source: String) throws {
        let model = root["model"] ?? root
        guard model.objectValue != nil else { throw FormatError(path: source, "no 'model' mapping") }
        func int(_ v: JSONValue?, _ key: String, _ range: ClosedRange<Int>, _ d: Int) throws -> Int {
            try Limits.int(v, key: key, in: range, source: source, default: d)
        }
        func ints(_ v: JSONValue?, _ key: String, _ range: ClosedRange<Int>, _ d: [Int], count: ClosedRange<Int> = 0...64) throws -> [Int] {
            guard let v, v != .null else { return d }
            guard let list = v.arrayValue, count.contains(list.count) else {
                throw FormatError(path: source, "\(key) must be a list of \(count.lowerBound)…\(count.upperBound) integers, got \(v.compactText)")
            }
            return try list.enumerated().map { try int($1, "\(key)[\($0)]", range, 0) }
        }
        func double(_ v: JSONValue?, _ key: String, _ range: ClosedRange<Double>, _ d: Double) throws -> Double {
            guard let v, v != .null else { return d }
            guard let x = v.doubleValue, x.isFinite, range.contains(x) else {
                throw FormatError(path: source, "\(key) = \(v.compactText) must be a number in \(range.lowerBound)…\(range.upperBound)")
            }
            return x
        }
        func bool(_ v: JSONValue?, _ key: String, _ d: Bool) throws -> Bool {
            guard let v, v != .null else { return d }
            guard case .bool(let b) = v else { throw FormatError(path: source, "\(key) must be true or false, got \(v.compactText)") }
            return b
        }
        imageSize = try int(model["image_size"], "model.image_size", 32...16384, 1024)
        let encoder = model["image_encoder"]
        scalp = try int(encoder?["scalp"], "image_encoder.scalp", 0...3, 0)
        let t = encoder?["trunk"], k = "image_encoder.trunk."
        trunk.embedDim = try int(t?["embed_dim"], k + "embed_dim", 1...65536, 96)
        trunk.numHeads = try int(t?["num_heads"], k + "num_heads", 1...4096, 1)
        trunk.stages = try ints(t?["stages"], k + "stages", 1...1024, [2, 3, 16, 3], count: 1...8)
        trunk.qPool = try int(t?["q_pool"], k + "q_pool", 0...7, 3)
        let stride = try ints(t?["q_stride"], k + "q_stride", 1...8, [2, 2], count: 2...2)
        guard stride[0] == stride[1] else { throw FormatError(path: source, "\(k)q_stride \(stride): only square strides are supported") }
        trunk.qStride = stride[0]
        trunk.dimMul = try double(t?["dim_mul"], k + "dim_mul", 1...16, 2)
        trunk.headMul = try double(t?["head_mul"], k + "head_mul", 1...16, 2)
        trunk.windowPosEmbedBackground = try ints(
            t?["window_pos_embed_bkg_spatial_size"], k + "window_pos_embed_bkg_spatial_size", 1...4096, [14, 14], count: 2...2)
        trunk.windowSpec = try ints(t?["window_spec"], k + "window_spec", 0...4096, [8, 4, 14, 7], count: 1...8)
        trunk.globalAttentionBlocks = try ints(t?["global_att_blocks"], k + "global_att_blocks", 0...8192, [12, 16, 20])
        let n = encoder?["neck"], nk = "image_encoder.neck."
        neck.dModel = try int(n?["d_model"], nk + "d_model", 1...65536, 256)
        neck.channels = try ints(n?["backbone_channel_list"], nk + "backbone_channel_list", 1...65536, [768, 384, 192, 96], count: 1...8)
        if let levels = n?["fpn_top_down_levels"], levels != .null {
            neck.topDownLevels = try ints(levels, nk + "fpn_top_down_levels", 0...7, [], count: 0...8)
        }
        neck.interpolation = n?["fpn_interp_model"]?.stringValue ?? "bilinear"
        neck.fuse = n?["fuse_type"]?.stringValue ?? "sum"
        let p = n?["position_encoding"]
        neck.positionFeatures = try int(p?["num_pos_feats"], nk + "position_encoding.num_pos_feats", 2...65536, neck.dModel)
        neck.temperature = try double(p?["temperature"], nk + "position_encoding.temperature", 1...1e12, 10000)
        neck.normalize = try bool(p?["normalize"], nk + "position_encoding.normalize", true)
        if let s = p?["scale"], s != .null { neck.scale = try double(s, nk + "position_encoding.scale", 1e-6...1e6, 0) }
        useHighResFeatures = try bool(model["use_high_res_features_in_sam"], "use_high_res_features_in_sam", false)
        let me = model["memory_encoder"], mk = "memory_encoder."
        memoryEncoder.inDim = try int(me?["in_dim"], mk + "in_dim", 1...65536, 256)
        memoryEncoder.outDim = try int(me?["out_dim"], mk + "out_dim", 1...65536, 64)
        let ds = me?["mask_downsampler"]
        memoryEncoder.maskKernel = try int(ds?["kernel_size"], mk + "mask_downsampler.kernel_size", 1...64, 3)
        memoryEncoder.maskStride = try int(ds?["stride"], mk + "mask_downsampler.stride", 2...16, 2)
        memoryEncoder.maskPadding = try int(ds?["padding"], mk + "mask_downsampler.padding", 0...64, 1)
        memoryEncoder.maskTotalStride = try int(ds?["total_stride"], mk + "mask_downsampler.total_stride", 2...256, 16)
        if let e = ds?["embed_dim"], e != .null {
            guard try int(e, mk + "mask_downsampler.embed_dim", 1...65536, 0) == memoryEncoder.inDim else {
                throw FormatError(path: source, "\(mk)mask_downsampler.embed_dim must equal in_dim \(memoryEncoder.inDim)")
            }
        }
        let fu = me?["fuser"], fl = fu?["layer"]
        memoryEncoder.fuserLayers = try int(fu?["num_layers"], mk + "fuser.num_layers", 0...64, 2)
        memoryEncoder.fuserInputProjection = try bool(fu?["input_projection"], mk + "fuser.input_projection", false)
        memoryEncoder.fuserKernel = try int(fl?["kernel_size"], mk + "fuser.layer.kernel_size", 1...64, 7)
        memoryEncoder.fuserPadding = try int(fl?["padding"], mk + "fuser.layer.padding", 0...64, 3)
        memoryEncoder.fuserDepthwise = try bool(fl?["use_dwconv"], mk + "fuser.layer.use_dwconv", true)
        memoryEncoder.layerScale = try double(fl?["layer_scale_init_value"], mk + "fuser.layer.layer_scale_init_value", 0...1e6, 1e-6)
        let mp = me?["position_encoding"]
        memoryEncoder.positionFeatures = try int(mp?["num_pos_feats"], mk + "position_encoding.num_pos_feats", 4...65536, memoryEncoder.outDim)
        memoryEncoder.temperature = try double(mp?["temperature"], mk + "position_encoding.temperature", 1...1e12, 10000)
        memoryEncoder.normalize = try bool(mp?["normalize"], mk + "position_encoding.normalize", true)
        if let s = mp?["scale"], s != .null { memoryEncoder.scale = try double(s, mk + "position_encoding.scale", 1e-6...1e6, 0) }
        let ma = model["memory_attention"], ak = "memory_attention.", layer = ma?["layer"]
        memoryAttention.dModel = try int(ma?["d_model"], ak + "d_model", 1...65536, 256)
        memoryAttention.layers = try int(ma?["num_layers"], ak + "num_layers", 0...256, 4)
        memoryAttention.positionAtInput = try bool(ma?["pos_enc_at_input"], ak + "pos_enc_at_input", true)
        memoryAttention.feedforward = try int(layer?["dim_feedforward"], ak + "layer.dim_feedforward", 1...1 << 20, 2048)
        memoryAttention.positionAtAttention = try bool(layer?["pos_enc_at_attn"], ak + "layer.pos_enc_at_attn", false)
        memoryAttention.positionAtCrossKeys = try bool(layer?["pos_enc_at_cross_attn_keys"], ak + "layer.pos_enc_at_cross_attn_keys", true)
        memoryAttention.positionAtCrossQueries = try bool(layer?["pos_enc_at_cross_attn_queries"], ak + "layer.pos_enc_at_cross_attn_queries", false)
        memoryAttention.activation = layer?["activation"]?.stringValue ?? "relu"
        let sa = layer?["self_attention"], ca = layer?["cross_attention"]
        memoryAttention.selfHeads = try int(sa?["num_heads"], ak + "layer.self_attention.num_heads", 1...4096, 1)
        memoryAttention.selfDownsample = try int(sa?["downsample_rate"], ak + "layer.self_attention.downsample_rate", 1...64, 1)
        memoryAttention.crossHeads = try int(ca?["num_heads"], ak + "layer.cross_attention.num_heads", 1...4096, 1)
        memoryAttention.crossDownsample = try int(ca?["downsample_rate"], ak + "layer.cross_attention.downsample_rate", 1...64, 1)
        memoryAttention.ropeTheta = try double(ca?["rope_theta"], ak + "layer.cross_attention.rope_theta", 1...1e12, 10000)
        memoryAttention.ropeKeyRepeat = try bool(ca?["rope_k_repeat"], ak + "layer.cross_attention.rope_k_repeat", false)
        if let kv = ca?["kv_in_dim"], kv != .null {
            guard try int(kv, ak + "layer.cross_attention.kv_in_dim", 1...65536, 0) == memoryEncoder.outDim else {
                throw FormatError(path: source, "\(ak)layer.cross_attention.kv_in_dim must equal memory_encoder.out_dim \(memoryEncoder.outDim)")
            }
        }
        tracking.numMaskmem = try int(model["num_maskmem"], "num_maskmem", 0...64, 7)
        tracking.maxObjectPointers = try int(model["max_obj_ptrs_in_encoder"], "max_obj_ptrs_in_encoder", 1...1024, 16)
        tracking.maxConditioningFrames = try int(model["max_cond_frames_in_attn"], "max_cond_frames_in_attn", -1...1024, -1)
        tracking.memoryTemporalStride = try int(model["memory_temporal_stride_for_eval"], "memory_temporal_stride_for_eval", 1...1024, 1)
        tracking.sigmoidScale = try double(model["sigmoid_scale_for_mem_enc"], "sigmoid_scale_for_mem_enc", -1e6...1e6, 1)
        tracking.sigmoidBias = try double(model["sigmoid_bias_for_mem_enc"], "sigmoid_bias_for_mem_enc", -1e6...1e6, 0)
        tracking.binarizeMaskFromPoints = try bool(model["binarize_mask_from_pts_for_mem_enc"], "binarize_mask_from_pts_for_mem_enc", false)
        tracking.useMaskInputAsOutput = try bool(model["use_mask_input_as_output_without_sam"], "use_mask_input_as_output_without_sam", false)
        tracking.directlyAddNoMemEmbed = try bool(model["directly_add_no_mem_embed"], "directly_add_no_mem_embed", false)
        tracking.noObjectEmbedSpatial = try bool(model["no_obj_embed_spatial"], "no_obj_embed_spatial", false)
        tracking.useObjectPointers = try bool(model["use_obj_ptrs_in_encoder"], "use_obj_ptrs_in_encoder", false)
        tracking.addTemporalEncodingToPointers = try bool(model["add_tpos_enc_to_obj_ptrs"], "add_tpos_enc_to_obj_ptrs", true)
        tracking.projectTemporalEncoding = try bool(model["proj_tpos_enc_in_obj_ptrs"], "proj_tpos_enc_in_obj_ptrs", false)
        tracking.signedTemporalEncoding = try bool(model["use_signed_tpos_enc_to_obj_ptrs"], "use_signed_tpos_enc_to_obj_ptrs", false)
        tracking.onlyPastPointers = try bool(model["only_obj_ptrs_in_the_past_for_eval"], "only_obj_ptrs_in_the_past_for_eval", false)
        tracking.fixedNoObjectPointer = try bool(model["fixed_no_obj_ptr"], "fixed_no_obj_ptr", false)
        tracking.softNoObjectPointer = try bool(model["soft_no_obj_ptr"], "soft_no_obj_ptr", false)
        tracking.mlpForPointerProjection = try bool(model["use_mlp_for_obj_ptr_proj"], "use_mlp_for_obj_ptr_proj", false)
        tracking.multimaskOutputInSAM = try bool(model["multimask_output_in_sam"], "multimask_output_in_sam", false)
        tracking.multimaskOutputForTracking = try bool(model["multimask_output_for_tracking"], "multimask_output_for_tracking", false)
        tracking.multimaskMinPoints = try int(model["multimask_min_pt_num"], "multimask_min_pt_num", 0...1024, 1)
        tracking.multimaskMaxPoints = try int(model["multimask_max_pt_num"], "multimask_max_pt_num", 0...1024, 1)
        if let v = model["non_overlap_masks_for_mem_enc"], v == .bool(true) {
            throw FormatError(path: source, "non_overlap_masks_for_mem_enc: true is not supported (one object per tracker here)")
        }
        heads.predictObjectScores = try bool(model["pred_obj_scores"], "pred_obj_scores", false)
        heads.predictObjectScoresMLP = try bool(model["pred_obj_scores_mlp"], "pred_obj_scores_mlp", false)
        heads.iouPredictionUseSigmoid = try bool(model["iou_prediction_use_sigmoid"], "iou_prediction_use_sigmoid", false)
        heads.useMultimaskTokenForObjectPointer = try bool(model["use_multimask_token_for_obj_ptr"], "use_multimask_token_for_obj_ptr", false)
        let extra = model["sam_mask_decoder_extra_args"]
        heads.dynamicMultimaskViaStability = try bool(extra?["dynamic_multimask_via_stability"], "dynamic_multimask_via_stability", false)
        heads.stabilityDelta = try double(extra?["dynamic_multimask_stability_delta"], "dynamic_multimask_stability_delta", 0...1e6, 0.05)
        heads.stabilityThreshold = try double(extra?["dynamic_multimask_stability_thresh"], "dynamic_multimask_stability_thresh", 0...1, 0.98)
        try validate(source: source)
    }

    /// The checks a model's construction relies on (also for configs built in code).
    public func validate(source: String) throws {
        func fail(_ m: String) -> FormatError { FormatError(path: source, m) }
        let s = trunk.stages.count
        guard trunk.windowSpec.count == s else { throw fail("window_spec has \(trunk.windowSpec.count) entries for \(s) stages") }
        guard trunk.qPool <= s - 1 else { throw fail("q_pool \(trunk.qPool) exceeds the \(s - 1) stage changes") }
        guard trunk.depth <= 4096 else { throw fail("the trunk has \(trunk.depth) blocks") }
        // Widths and heads of every stage, as Hiera computes them.
        var dim = trunk.embedDim, heads = trunk.numHeads
        var dims: [Int] = []
        for i in 0..<s {
            if i > 0 {
                dim = Int(Double(dim) * trunk.dimMul)
                heads = Int(Double(heads) * trunk.headMul)
            }
            guard dim <= 1 << 20, heads >= 1, dim % heads == 0 else {
                throw fail("stage \(i + 1) has width \(dim) and \(heads) heads: the heads must divide the width")
            }
            dims.append(dim)
        }
        guard neck.channels == dims.reversed() else {
            throw fail("neck.backbone_channel_list \(neck.channels) does not match the trunk's stage widths \(Array(dims.reversed()))")
        }
        guard scalp < s else { throw fail("scalp \(scalp) drops every level") }
        // Each stage halves the grid (q_pool stages); windows and the FPN's ×2 path need exact sizes.
        let total = 4 * Int(pow(Double(trunk.qStride), Double(trunk.qPool)))
        guard imageSize % total == 0 else { throw fail("image_size \(imageSize) must be a multiple of \(total) (patch 4 × q_stride^q_pool)") }
        if let w0 = trunk.windowSpec.first, w0 > 0 {
            guard (imageSize / 4) % w0 == 0 else {
                throw fail("image_size \(imageSize) / 4 must be a multiple of window_spec[0] = \(w0) (the windowed position embedding is tiled)")
            }
        }
        guard neck.dModel % 16 == 0 else {
            throw fail(
                "d_model \(neck.dModel) must be a multiple of 16 (the mask decoder's 8 heads on d_model / 2 channels, and d_model / 8 upscaled channels)")
        }
        let ma = memoryAttention, me = memoryEncoder
        guard ma.dModel == neck.dModel, me.inDim == neck.dModel else {
            throw fail("memory_attention.d_model \(ma.dModel) and memory_encoder.in_dim \(me.inDim) must equal the neck's d_model \(neck.dModel)")
        }
        for (name, heads, down) in [("self_attention", ma.selfHeads, ma.selfDownsample), ("cross_attention", ma.crossHeads, ma.crossDownsample)] {
            guard ma.dModel % down == 0, (ma.dModel / down) % (4 * heads) == 0 else {
                throw fail("memory_attention \(name): d_model / downsample_rate must split into \(heads) heads of a multiple of 4 channels (axial RoPE)")
            }
        }
        guard ma.activation == "relu" else { throw fail("memory_attention.layer.activation '\(ma.activation)': only relu is supported") }
        guard me.maskStride > 1, Int(pow(Double(me.maskStride), Double(me.downsampleLayers))) == me.maskTotalStride else {
            throw fail("memory_encoder.mask_downsampler: total_stride \(me.maskTotalStride) must be a power of stride \(me.maskStride)")
        }
        guard me.positionFeatures % 4 == 0, me.positionFeatures == me.outDim else {
            throw fail("memory_encoder.position_encoding.num_pos_feats \(me.positionFeatures) must equal out_dim \(me.outDim) (a multiple of 4)")
        }
        if !tracking.directlyAddNoMemEmbed && tracking.numMaskmem > 0 {
            guard me.outDim == neck.dModel else {
                throw fail("directly_add_no_mem_embed false attends to no_mem_embed as memory: memory_encoder.out_dim must equal d_model")
            }
        }
        guard (imageSize / 4) <= 8192 else { throw fail("image_size \(imageSize) is too large") }
        guard ["nearest", "bilinear"].contains(neck.interpolation) else { throw fail("fpn_interp_model '\(neck.interpolation)': nearest or bilinear") }
        guard ["sum", "avg"].contains(neck.fuse) else { throw fail("fuse_type '\(neck.fuse)': sum or avg") }
        guard neck.positionFeatures % 4 == 0 else {
            throw fail("num_pos_feats \(neck.positionFeatures) must be a multiple of 4 (sine and cosine pairs per axis)")
        }
        guard neck.positionFeatures == neck.dModel else {
            throw fail("the neck's position encoding has \(neck.positionFeatures) features for d_model \(neck.dModel): they must match")
        }
        if useHighResFeatures {
            guard s - scalp >= 3 else { throw fail("use_high_res_features_in_sam needs at least 3 levels after scalp") }
            guard neck.dModel % 8 == 0 else { throw fail("use_high_res_features_in_sam needs d_model divisible by 8, got \(neck.dModel)") }
        }
    }
}
