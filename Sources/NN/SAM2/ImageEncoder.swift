import Formats
import Foundation
import Synchronization
import Tensors

/// SAM 2's image encoder as sam2 1.x computes it (`sam2.modeling.backbones`): the Hiera trunk
/// (patch embedding, windowed position embedding, windowed and global multi-scale attention with
/// query pooling at stage changes), the FPN neck (1×1 laterals, top-down ×2 path on the chosen
/// levels, sine position encodings), `scalp`, and the mask decoder's `conv_s0` / `conv_s1` that
/// `SAM2Base.forward_image` applies to the two highest-resolution levels. Differentiable; parameter
/// names are the checkpoint's (`image_encoder.trunk.…`, `image_encoder.neck.…`, `sam_mask_decoder.conv_s*`).
public final class SAM2ImageEncoder: Module {
    public let config: SAM2Config
    public let patchEmbed: Conv2d
    public let posEmbed: Parameter
    public let posEmbedWindow: Parameter
    public let blocks: [HieraBlock]
    public let neckConvs: [Conv2d]
    public let convS0: Conv2d?
    public let convS1: Conv2d?
    public var isTraining = false

    /// What `forward` returns: the feature pyramid after `scalp` (highest resolution first; levels 0 and
    /// 1 projected by conv_s0 / conv_s1 when the config uses high-resolution features) and the sine
    /// position encodings of each level.
    public struct Output {
        public var features: [Variable]
        public var positions: [Tensor]
        /// The trunk's stage outputs [N, C, H, W] (highest resolution first).
        public var trunk: [Variable]
    }

    /// Loads from a checkpoint (every missing, mis-shaped or unexpected tensor of the encoder's
    /// prefixes named in one error).
    public convenience init(config: SAM2Config, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        self.init(config: config, source: ParameterSource(loader: loader))
        try loader.finish(allowUnused: { !($0.hasPrefix("image_encoder.") || $0.hasPrefix("sam_mask_decoder.conv_s")) })
    }

    /// Fresh random weights (tests, benchmarks).
    public convenience init(config: SAM2Config, seed: UInt64) {
        self.init(config: config, source: ParameterSource(seed: seed))
    }

    init(config c: SAM2Config, source p: ParameterSource) {
        config = c
        let t = c.trunk, e = t.embedDim
        patchEmbed = Conv2d(
            weight: p.uniform("image_encoder.trunk.patch_embed.proj.weight", [e, 3, 7, 7], bound: 1 / Float(3 * 49).squareRoot()),
            bias: p.uniform("image_encoder.trunk.patch_embed.proj.bias", [e], bound: 1 / Float(3 * 49).squareRoot(), decays: false),
            stride: 4, padding: 3)
        posEmbed = p.parameter("image_encoder.trunk.pos_embed", [1, e] + t.windowPosEmbedBackground, decays: false) {
            NN.normal([1, e] + t.windowPosEmbedBackground, std: 0.02, &$0)
        }
        let w0 = max(t.windowSpec[0], 1)
        posEmbedWindow = p.parameter("image_encoder.trunk.pos_embed_window", [1, e, w0, w0], decays: false) { NN.normal([1, e, w0, w0], std: 0.02, &$0) }
        // The blocks, as Hiera.__init__ lays them out: the window size lags a block behind the stage
        // change, query pooling at the first block of the first `q_pool` new stages.
        let stageEnds = t.stageEnds
        let qPoolBlocks = Set(stageEnds.dropLast().map { $0 + 1 }.prefix(t.qPool))
        var dim = e, heads = t.numHeads, stage = 1
        var made: [HieraBlock] = []
        for i in 0..<t.depth {
            var dimOut = dim
            var window = t.windowSpec[stage - 1]
            if t.globalAttentionBlocks.contains(i) { window = 0 }
            if stageEnds.contains(i - 1) {
                dimOut = Int(Double(dim) * t.dimMul)
                heads = Int(Double(heads) * t.headMul)
                stage += 1
            }
            made.append(
                HieraBlock(
                    prefix: "image_encoder.trunk.blocks.\(i).", dim: dim, dimOut: dimOut, heads: heads, window: window,
                    qStride: qPoolBlocks.contains(i) ? t.qStride : nil, source: p))
            dim = dimOut
        }
        blocks = made
        let d = c.neck.dModel
        neckConvs = c.neck.channels.enumerated().map { j, ch in
            Conv2d(
                weight: p.uniform("image_encoder.neck.convs.\(j).conv.weight", [d, ch, 1, 1], bound: 1 / Float(ch).squareRoot()),
                bias: p.uniform("image_encoder.neck.convs.\(j).conv.bias", [d], bound: 1 / Float(ch).squareRoot(), decays: false))
        }
        if c.useHighResFeatures {
            let b = 1 / Float(d).squareRoot()
            convS0 = Conv2d(
                weight: p.uniform("sam_mask_decoder.conv_s0.weight", [d / 8, d, 1, 1], bound: b),
                bias: p.uniform("sam_mask_decoder.conv_s0.bias", [d / 8], bound: b, decays: false))
            convS1 = Conv2d(
                weight: p.uniform("sam_mask_decoder.conv_s1.weight", [d / 4, d, 1, 1], bound: b),
                bias: p.uniform("sam_mask_decoder.conv_s1.bias", [d / 4], bound: b, decays: false))
        } else {
            (convS0, convS1) = (nil, nil)
        }
    }

    public var namedParameters: [(String, Parameter)] {
        var out: [(String, Parameter)] = [
            ("image_encoder.trunk.pos_embed", posEmbed), ("image_encoder.trunk.pos_embed_window", posEmbedWindow),
        ]
        out += prefixed("image_encoder.trunk.patch_embed.proj.", patchEmbed.namedParameters)
        for (i, b) in blocks.enumerated() { out += prefixed("image_encoder.trunk.blocks.\(i).", b.namedParameters) }
        for (j, c) in neckConvs.enumerated() { out += prefixed("image_encoder.neck.convs.\(j).conv.", c.namedParameters) }
        if let convS0, let convS1 {
            out += prefixed("sam_mask_decoder.conv_s0.", convS0.namedParameters) + prefixed("sam_mask_decoder.conv_s1.", convS1.namedParameters)
        }
        return out
    }

    /// Images [N, 3, S, S] (S = image_size, normalised) → the pyramid and its position encodings.
    public func forward(_ images: Variable) -> Output {
        // Patch embedding, then NHWC as Hiera works.
        var x = patchEmbed(images).permuted([0, 2, 3, 1])
        let (h, w) = (x.shape[1], x.shape[2])
        x = x + windowedPositionEmbedding(height: h, width: w)
        var stages: [Variable] = []
        let ends = Set(config.trunk.stageEnds)
        for (i, block) in blocks.enumerated() {
            x = block(x)
            if ends.contains(i) { stages.append(x.permuted([0, 3, 1, 2])) }
        }
        // The FPN neck, from the lowest resolution up.
        let n = neckConvs.count - 1
        var out = [Variable?](repeating: nil, count: neckConvs.count)
        var positions = [Tensor?](repeating: nil, count: neckConvs.count)
        var previous: Variable? = nil
        let topDown = Set(config.neck.topDownLevels ?? Array(0...n))
        for i in stride(from: n, through: 0, by: -1) {
            let lateral = neckConvs[n - i](stages[i])
            if topDown.contains(i), let prev = previous {
                let up =
                    config.neck.interpolation == "nearest"
                    ? resample(
                        prev, rows: nearestMatrix(from: prev.shape[2], to: 2 * prev.shape[2]), cols: nearestMatrix(from: prev.shape[3], to: 2 * prev.shape[3]))
                    : prev.upsampleBilinear(height: 2 * prev.shape[2], width: 2 * prev.shape[3])
                var fused = lateral + up
                if config.neck.fuse == "avg" { fused = fused * 0.5 }
                previous = fused
            } else {
                previous = lateral
            }
            out[i] = previous
            positions[i] = sinePositionEncoding(
                features: config.neck.positionFeatures, height: previous!.shape[2], width: previous!.shape[3], batch: previous!.shape[0],
                temperature: config.neck.temperature, normalize: config.neck.normalize, scale: config.neck.scale)
        }
        let kept = neckConvs.count - config.scalp
        var features = out.prefix(kept).map { $0! }
        if let convS0, let convS1 {
            features[0] = convS0(features[0])
            features[1] = convS1(features[1])
        }
        return Output(features: features, positions: positions.prefix(kept).map { $0! }, trunk: stages)
    }

    /// `pos_embed` resized (PyTorch bicubic, align_corners False) to the token grid, plus
    /// `pos_embed_window` tiled over it; NHWC [1, H, W, C].
    func windowedPositionEmbedding(height h: Int, width w: Int) -> Variable {
        let (bh, bw) = (posEmbed.variable.shape[2], posEmbed.variable.shape[3])
        let background = resample(posEmbed.variable, rows: bicubicMatrix(from: bh, to: h), cols: bicubicMatrix(from: bw, to: w))
        let w0 = posEmbedWindow.variable.shape[2]
        let tiled = resample(posEmbedWindow.variable, rows: tileMatrix(period: w0, to: h), cols: tileMatrix(period: w0, to: w))
        return (background + tiled).permuted([0, 2, 3, 1])
    }
}

/// One Hiera block (`MultiScaleBlock`): norm1 → (projected, pooled shortcut at a width change) →
/// window partition → attention with optional query pooling → unpartition → residual → MLP.
public final class HieraBlock: Module {
    public let dim: Int, dimOut: Int, heads: Int, window: Int
    public let qStride: Int?
    public let norm1: LayerNorm, norm2: LayerNorm
    public let qkv: Linear, attnProj: Linear
    public let fc1: Linear, fc2: Linear
    public let proj: Linear?
    public var isTraining = false

    init(prefix: String, dim: Int, dimOut: Int, heads: Int, window: Int, qStride: Int?, source p: ParameterSource) {
        (self.dim, self.dimOut, self.heads, self.window, self.qStride) = (dim, dimOut, heads, window, qStride)
        norm1 = p.layerNorm(prefix + "norm1", dim, eps: 1e-6)
        qkv = p.linear(prefix + "attn.qkv", dim, 3 * dimOut)
        attnProj = p.linear(prefix + "attn.proj", dimOut, dimOut)
        norm2 = p.layerNorm(prefix + "norm2", dimOut, eps: 1e-6)
        fc1 = p.linear(prefix + "mlp.layers.0", dimOut, 4 * dimOut)
        fc2 = p.linear(prefix + "mlp.layers.1", 4 * dimOut, dimOut)
        proj = dim != dimOut ? p.linear(prefix + "proj", dim, dimOut) : nil
    }

    public var namedParameters: [(String, Parameter)] {
        prefixed("norm1.", norm1.namedParameters) + prefixed("attn.qkv.", qkv.namedParameters) + prefixed("attn.proj.", attnProj.namedParameters)
            + prefixed("norm2.", norm2.namedParameters) + prefixed("mlp.layers.0.", fc1.namedParameters) + prefixed("mlp.layers.1.", fc2.namedParameters)
            + (proj.map { prefixed("proj.", $0.namedParameters) } ?? [])
    }

    /// Max pooling of an NHWC map with kernel and stride `s` (nn.MaxPool2d, floor).
    func pool(_ x: Variable, _ s: Int) -> Variable { x.permuted([0, 3, 1, 2]).maxPool2d(kernel: s, stride: s).permuted([0, 2, 3, 1]) }

    /// x [N, H, W, C] → [N, H', W', C_out].
    public func callAsFunction(_ x: Variable) -> Variable {
        var shortcut = x
        let normed = norm1(x)
        if let proj {
            shortcut = proj(normed)
            if let qStride { shortcut = GradMode.isEnabled ? pool(shortcut, qStride) : Variable(maxPoolNHWC(shortcut.value, qStride)) }
        }
        var (h, w) = (x.shape[1], x.shape[2])
        var windows = normed
        var padded = (h, w)
        if window > 0 { (windows, padded) = windowPartition(normed, window) }
        var y = attention(windows)
        var size = window
        if let qStride {
            size = window / qStride
            (h, w) = (shortcut.shape[1], shortcut.shape[2])
            if size > 0 { padded = (h + (size - h % size) % size, w + (size - w % size) % size) }
        }
        if window > 0 { y = windowUnpartition(y, size, padded: padded, original: (h, w)) }
        let mixed = shortcut + y
        return mixed + fc2(fc1(norm2(mixed)).gelu())
    }

    /// MultiScaleAttention on [B, H, W, C] windows: packed qkv, optional query pooling, softmax(q kᵀ/√hd) v.
    func attention(_ x: Variable) -> Variable {
        if !GradMode.isEnabled { return fusedWindowAttention(x) }
        let (b, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let hd = dimOut / heads
        let all = qkv(x).reshaped([b, h * w, 3, heads, hd]).permuted([2, 0, 3, 1, 4]) // [3, B, heads, HW, hd]
        var q = all.slice(axis: 0, 0..<1).reshaped([b, heads, h * w, hd])
        let k = all.slice(axis: 0, 1..<2).reshaped([b, heads, h * w, hd])
        let v = all.slice(axis: 0, 2..<3).reshaped([b, heads, h * w, hd])
        var (oh, ow) = (h, w)
        if let qStride {
            // [B, heads, HW, hd] → [B, H, W, heads·hd] → pooled → back.
            let grid = q.permuted([0, 2, 1, 3]).reshaped([b, h, w, heads * hd])
            let pooled = pool(grid, qStride)
            (oh, ow) = (pooled.shape[1], pooled.shape[2])
            q = pooled.reshaped([b, oh * ow, heads, hd]).permuted([0, 2, 1, 3])
        }
        let scores = matmul(q * (1 / Float(hd).squareRoot()), k, transposeB: true)
        let mixed = matmul(scores.softmax(), v).permuted([0, 2, 1, 3]).reshaped([b, oh, ow, dimOut])
        return attnProj(mixed)
    }
}

/// [B, H, W, C] → [B·nh·nw, s, s, C], zero-padded to multiples of s (sam2's `window_partition`).
public func windowPartition(_ x: Variable, _ s: Int) -> (Variable, (Int, Int)) {
    let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (ph, pw) = ((s - h % s) % s, (s - w % s) % s)
    var y = x
    if ph > 0 { y = concat([y, Variable(Tensor(zeros: .float32, shape: [b, ph, w, c]))], axis: 1) }
    if pw > 0 { y = concat([y, Variable(Tensor(zeros: .float32, shape: [b, h + ph, pw, c]))], axis: 2) }
    let (hp, wp) = (h + ph, w + pw)
    let windows = y.reshaped([b, hp / s, s, wp / s, s, c]).permuted([0, 1, 3, 2, 4, 5]).reshaped([b * (hp / s) * (wp / s), s, s, c])
    return (windows, (hp, wp))
}

/// The inverse of `windowPartition`, the padding cut off.
public func windowUnpartition(_ windows: Variable, _ s: Int, padded: (Int, Int), original: (Int, Int)) -> Variable {
    let (hp, wp) = padded, (h, w) = original
    let c = windows.shape[3]
    let b = windows.shape[0] / ((hp / s) * (wp / s))
    var x = windows.reshaped([b, hp / s, wp / s, s, s, c]).permuted([0, 1, 3, 2, 4, 5]).reshaped([b, hp, wp, c])
    if hp > h { x = x.slice(axis: 1, 0..<h) }
    if wp > w { x = x.slice(axis: 2, 0..<w) }
    return x
}

/// x [N, C, h, w] → [N, C, oh, ow] = R·x·Cᵀ per plane, for resampling matrices R [oh, h], C [ow, w].
func resample(_ x: Variable, rows: [Float], cols: [Float]) -> Variable {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let oh = rows.count / h, ow = cols.count / w
    let r = Variable(Tensor(shape: [oh, h], scalars: rows)), cm = Variable(Tensor(shape: [ow, w], scalars: cols))
    let a = matmul(x.reshaped([n * c * h, w]), cm, transposeB: true) // [N·C·h, ow]
    let t = a.reshaped([n * c, h, ow]).permuted([0, 2, 1]).reshaped([n * c * ow, h])
    return matmul(t, r, transposeB: true).reshaped([n * c, ow, oh]).permuted([0, 2, 1]).reshaped([n, c, oh, ow])
}

/// PyTorch's nearest resampling [out, in]: source floor(i · in/out).
func nearestMatrix(from n: Int, to m: Int) -> [Float] {
    var out = [Float](repeating: 0, count: m * n)
    for i in 0..<m { out[i * n + min(Int(Double(i) * Double(n) / Double(m)), n - 1)] = 1 }
    return out
}

/// Tiling by `period` [out, period]: output i takes input i mod period.
func tileMatrix(period p: Int, to m: Int) -> [Float] {
    var out = [Float](repeating: 0, count: m * p)
    for i in 0..<m { out[i * p + i % p] = 1 }
    return out
}

/// `PositionEmbeddingSine` of sam2 for an H × W map: [N, F, H, W], the y half then the x half, each
/// interleaving sin and cos of (position / temperature^(2⌊i/2⌋/(F/2))), positions 1…H (1…W) scaled
/// to (0, 2π] when `normalize` (eps 1e-6). Float32 arithmetic as torch's.
public func sinePositionEncoding(
    features f: Int, height h: Int, width w: Int, batch: Int = 1, temperature: Double = 10000, normalize: Bool = true, scale: Double? = nil
) -> Tensor {
    // The same few encodings are asked for on every frame: the planes are kept (a handful of sizes).
    let key = "\(f) \(h) \(w) \(temperature) \(normalize) \(scale ?? -1)"
    let plane = sinePlanes.withLock { $0[key] } ?? sinePlane(features: f, height: h, width: w, temperature: temperature, normalize: normalize, scale: scale)
    sinePlanes.withLock { cache in
        if cache[key] == nil {
            if cache.count >= 16 { cache.removeAll() }
            cache[key] = plane
        }
    }
    var all: [Float] = []
    all.reserveCapacity(batch * plane.count)
    for _ in 0..<batch { all += plane }
    return Tensor(shape: [batch, f, h, w], scalars: all)
}

private let sinePlanes = Mutex<[String: [Float]]>([:])

/// One [F, H, W] plane of `sinePositionEncoding`.
private func sinePlane(features f: Int, height h: Int, width w: Int, temperature: Double, normalize: Bool, scale: Double?) -> [Float] {
    let half = f / 2
    let s = Float(scale ?? 2 * Double.pi)
    let dimT: [Float] = (0..<half).map { i in powf(Float(temperature), Float(2 * (i / 2)) / Float(half)) }
    var plane = [Float](repeating: 0, count: f * h * w)
    for y in 0..<h {
        for x in 0..<w {
            var ye = Float(y + 1), xe = Float(x + 1)
            if normalize {
                ye = ye / (Float(h) + 1e-6) * s
                xe = xe / (Float(w) + 1e-6) * s
            }
            for i in 0..<half {
                let py = ye / dimT[i], px = xe / dimT[i]
                // stack((even: sin, odd: cos), dim=…).flatten: channel i takes sin for even i, cos for odd i.
                plane[(i * h + y) * w + x] = i % 2 == 0 ? sinf(py) : cosf(py)
                plane[((half + i) * h + y) * w + x] = i % 2 == 0 ? sinf(px) : cosf(px)
            }
        }
    }
    return plane
}
