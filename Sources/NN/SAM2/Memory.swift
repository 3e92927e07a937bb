import Formats
import Foundation
import Tensors

/// SAM 2's memory encoder (sam2 `MemoryEncoder`): the mask (already scaled by the caller, sigmoid ·
/// scale + bias) downsampled by strided convolutions with LayerNorm2d and GELU, added to the projected
/// pixel features, fused by ConvNeXt blocks (depthwise 7 × 7, LayerNorm2d, pointwise MLP, layer scale),
/// projected to the memory width; with its sine position encoding. Checkpoint names `memory_encoder.…`.
public final class SAM2MemoryEncoder: Module {
    public let config: SAM2Config.MemoryEncoder
    let down: [(conv: Conv2d, norm: (Parameter, Parameter))]
    let downOut: Conv2d
    let pixProj: Conv2d
    let fuserProj: Conv2d?
    let blocks: [(dw: Conv2d, norm: (Parameter, Parameter), fc1: Linear, fc2: Linear, gamma: Parameter?)]
    let outProj: Conv2d?
    public var isTraining = false

    init(config c: SAM2Config.MemoryEncoder, source p: ParameterSource) {
        config = c
        let m = "memory_encoder."
        func conv(_ name: String, _ cin: Int, _ cout: Int, _ k: Int, stride: Int = 1, padding: Int = 0, groups: Int = 1) -> Conv2d {
            let b = 1 / Float(cin / groups * k * k).squareRoot()
            return Conv2d(
                weight: p.uniform(name + ".weight", [cout, cin / groups, k, k], bound: b), bias: p.uniform(name + ".bias", [cout], bound: b, decays: false),
                stride: stride, padding: padding, groups: groups)
        }
        func norm(_ name: String, _ n: Int) -> (Parameter, Parameter) { (p.filled(name + ".weight", [n], 1), p.filled(name + ".bias", [n], 0)) }
        var layers: [(Conv2d, (Parameter, Parameter))] = []
        var cin = 1, index = 0
        for _ in 0..<c.downsampleLayers {
            let cout = cin * c.maskStride * c.maskStride
            layers.append(
                (
                    conv(m + "mask_downsampler.encoder.\(index)", cin, cout, c.maskKernel, stride: c.maskStride, padding: c.maskPadding),
                    norm(m + "mask_downsampler.encoder.\(index + 1)", cout)
                ))
            index += 3
            cin = cout
        }
        down = layers.map { (conv: $0.0, norm: $0.1) }
        downOut = conv(m + "mask_downsampler.encoder.\(index)", cin, c.inDim, 1)
        pixProj = conv(m + "pix_feat_proj", c.inDim, c.inDim, 1)
        fuserProj = c.fuserInputProjection ? conv(m + "fuser.proj", c.inDim, c.inDim, 1) : nil
        blocks = (0..<c.fuserLayers).map { i in
            let l = m + "fuser.layers.\(i)."
            return (
                dw: conv(
                    l + "dwconv", c.inDim, c.inDim, c.fuserKernel, padding: c.fuserPadding, groups: c.fuserDepthwise ? c.inDim : 1),
                norm: norm(l + "norm", c.inDim), fc1: p.linear(l + "pwconv1", c.inDim, 4 * c.inDim), fc2: p.linear(l + "pwconv2", 4 * c.inDim, c.inDim),
                gamma: c.layerScale > 0 ? p.filled(l + "gamma", [c.inDim], Float(c.layerScale)) : nil
            )
        }
        outProj = c.outDim != c.inDim ? conv(m + "out_proj", c.inDim, c.outDim, 1) : nil
    }

    public var namedParameters: [(String, Parameter)] {
        let m = "memory_encoder."
        var out: [(String, Parameter)] = []
        for (i, d) in down.enumerated() {
            out += prefixed(m + "mask_downsampler.encoder.\(3 * i).", d.conv.namedParameters)
            out += [(m + "mask_downsampler.encoder.\(3 * i + 1).weight", d.norm.0), (m + "mask_downsampler.encoder.\(3 * i + 1).bias", d.norm.1)]
        }
        out += prefixed(m + "mask_downsampler.encoder.\(3 * down.count).", downOut.namedParameters) + prefixed(m + "pix_feat_proj.", pixProj.namedParameters)
        if let fuserProj { out += prefixed(m + "fuser.proj.", fuserProj.namedParameters) }
        for (i, b) in blocks.enumerated() {
            let l = m + "fuser.layers.\(i)."
            out += prefixed(l + "dwconv.", b.dw.namedParameters) + [(l + "norm.weight", b.norm.0), (l + "norm.bias", b.norm.1)]
            out += prefixed(l + "pwconv1.", b.fc1.namedParameters) + prefixed(l + "pwconv2.", b.fc2.namedParameters)
            if let g = b.gamma { out.append((l + "gamma", g)) }
        }
        if let outProj { out += prefixed(m + "out_proj.", outProj.namedParameters) }
        return out
    }

    /// Pixel features [B, C, h, w] and the scaled mask [B, 1, S, S] → (memory features [B, mem, h, w],
    /// their position encoding).
    public func callAsFunction(pixels: Variable, mask: Variable) -> (features: Variable, position: Tensor) {
        var m = mask
        for d in down { m = layerNorm2d(d.conv(m), d.norm).gelu() }
        m = downOut(m)
        var x = pixProj(pixels) + m
        if let fuserProj { x = fuserProj(x) }
        for b in blocks {
            let y = layerNorm2d(b.dw(x), b.norm).permuted([0, 2, 3, 1])
            var z = b.fc2(b.fc1(y).gelu())
            if let g = b.gamma { z = z * g.variable }
            x = x + z.permuted([0, 3, 1, 2])
        }
        if let outProj { x = outProj(x) }
        let pos = sinePositionEncoding(
            features: config.positionFeatures, height: x.shape[2], width: x.shape[3], batch: x.shape[0], temperature: config.temperature,
            normalize: config.normalize, scale: config.scale)
        return (x, pos)
    }
}

/// SAM 2's memory attention (sam2 `MemoryAttention`): layers of RoPE self-attention on the current
/// frame's tokens, RoPE cross-attention to the memory (keys repeated over the memory's frames; the
/// trailing object-pointer tokens without RoPE), and a ReLU MLP, pre-norm; a final LayerNorm.
/// Sequence-first tensors as sam2's: current [HW, B, C], memory [M, B, mem]. Names `memory_attention.…`.
public final class SAM2MemoryAttention: Module {
    public let config: SAM2Config.MemoryAttention
    struct Layer {
        let selfAttention: SAMAttention, crossAttention: SAMAttention
        let norms: [LayerNorm]
        let linear1: Linear, linear2: Linear
    }
    let layers: [Layer]
    let norm: LayerNorm
    public var isTraining = false

    init(config c: SAM2Config.MemoryAttention, memoryDim: Int, source p: ParameterSource) {
        config = c
        layers = (0..<c.layers).map { i in
            let l = "memory_attention.layers.\(i)."
            return Layer(
                selfAttention: SAMAttention(prefix: l + "self_attn.", dim: c.dModel, heads: c.selfHeads, downsample: c.selfDownsample, source: p),
                crossAttention: SAMAttention(
                    prefix: l + "cross_attn_image.", dim: c.dModel, heads: c.crossHeads, downsample: c.crossDownsample, keyDim: memoryDim, source: p),
                norms: (1...3).map { p.layerNorm(l + "norm\($0)", c.dModel, eps: 1e-5) },
                linear1: p.linear(l + "linear1", c.dModel, c.feedforward), linear2: p.linear(l + "linear2", c.feedforward, c.dModel))
        }
        norm = p.layerNorm("memory_attention.norm", c.dModel, eps: 1e-5)
    }

    public var namedParameters: [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        for (i, l) in layers.enumerated() {
            let n = "memory_attention.layers.\(i)."
            out += l.selfAttention.namedParameters + l.crossAttention.namedParameters
            out += l.norms.enumerated().flatMap { j, x in prefixed(n + "norm\(j + 1).", x.namedParameters) }
            out += prefixed(n + "linear1.", l.linear1.namedParameters) + prefixed(n + "linear2.", l.linear2.namedParameters)
        }
        return out + prefixed("memory_attention.norm.", norm.namedParameters)
    }

    /// current [HW, B, C] with its position [HW, B, C]; memory [M, B, mem] with its position; the last
    /// `objectPointerTokens` memory tokens take no rotary encoding → [HW, B, C].
    public func callAsFunction(current: Variable, position: Variable, memory: Variable, memoryPosition: Variable, objectPointerTokens: Int) -> Variable {
        var x = current
        if config.positionAtInput { x = x + position * 0.1 }
        // Batch first.
        x = x.permuted([1, 0, 2])
        let pos = position.permuted([1, 0, 2]), mem = memory.permuted([1, 0, 2]), memPos = memoryPosition.permuted([1, 0, 2])
        for layer in layers {
            var y = layer.norms[0](x)
            let q = config.positionAtAttention ? y + pos : y
            x = x + ropeAttention(layer.selfAttention, q: q, k: q, v: y, excluded: 0, repeatKeys: false)
            y = layer.norms[1](x)
            x =
                x
                + ropeAttention(
                    layer.crossAttention, q: config.positionAtCrossQueries ? y + pos : y, k: config.positionAtCrossKeys ? mem + memPos : mem, v: mem,
                    excluded: objectPointerTokens, repeatKeys: config.ropeKeyRepeat)
            y = layer.norms[2](x)
            x = x + layer.linear2(layer.linear1(y).relu())
        }
        return norm(x).permuted([1, 0, 2])
    }

    /// sam2's `RoPEAttention`: q, k, v projected and split into heads; q and the first k tokens rotated
    /// by axial RoPE over a √T × √T grid (k's frequencies tiled over its frames when `repeatKeys`).
    func ropeAttention(_ a: SAMAttention, q x: Variable, k y: Variable, v z: Variable, excluded: Int, repeatKeys: Bool) -> Variable {
        if !GradMode.isEnabled { return fusedRopeAttention(a, q: x, k: y, v: z, excluded: excluded) }
        let qh = a.split(a.q(x)), kh = a.split(a.k(y)), vh = a.split(a.v(z))
        let (b, heads, t, hd) = (qh.shape[0], qh.shape[1], qh.shape[2], qh.shape[3])
        let side = Int(Double(t).squareRoot().rounded())
        let (cosT, sinT) = axialRotation(headDim: hd, side: side, theta: config.ropeTheta)
        let qr = rotate(qh, cos: cosT, sin: sinT, tokens: t)
        let keys = kh.shape[2], rotated = keys - excluded
        var kr = rotate(kh.slice(axis: 2, 0..<rotated), cos: cosT, sin: sinT, tokens: t)
        if excluded > 0 { kr = concat([kr, kh.slice(axis: 2, rotated..<keys)], axis: 2) }
        let mixed = matmul(matmul(qr * (1 / Float(hd).squareRoot()), kr, transposeB: true).softmax(), vh)
        return a.out(mixed.permuted([0, 2, 1, 3]).reshaped([b, t, heads * hd]))
    }

    /// x [B, H, N, hd] with N a multiple of `tokens`: pairs (x₂ᵢ, x₂ᵢ₊₁) rotated by the angles of
    /// token n mod `tokens`.
    func rotate(_ x: Variable, cos: [Float], sin: [Float], tokens t: Int) -> Variable {
        let (b, h, n, hd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let half = hd / 2
        var c = [Float](repeating: 0, count: n * half), s = c
        for i in 0..<n {
            for j in 0..<half {
                c[i * half + j] = cos[(i % t) * half + j]
                s[i * half + j] = sin[(i % t) * half + j]
            }
        }
        let pairs = x.reshaped([b, h, n, half, 2])
        let re = pairs.slice(axis: 4, 0..<1), im = pairs.slice(axis: 4, 1..<2)
        let cv = Variable(Tensor(shape: [1, 1, n, half, 1], scalars: c)), sv = Variable(Tensor(shape: [1, 1, n, half, 1], scalars: s))
        return concat([re * cv - im * sv, re * sv + im * cv], axis: 4).reshaped([b, h, n, hd])
    }
}

/// sam2's `compute_axial_cis` for a side × side grid: per token t (x = t mod side, y = t div side)
/// hd/4 angles x·θ^(−4k/hd) then hd/4 angles y·θ^(−4k/hd); float32 as torch. Returns cos and sin [T, hd/2].
func axialRotation(headDim hd: Int, side: Int, theta: Double) -> (cos: [Float], sin: [Float]) {
    let quarter = hd / 4, half = hd / 2, t = side * side
    let freqs: [Float] = (0..<quarter).map { k in 1 / powf(Float(theta), Float(4 * k) / Float(hd)) }
    var c = [Float](repeating: 0, count: t * half), s = c
    for i in 0..<t {
        let x = Float(i % side), y = Float(i / side)
        for k in 0..<quarter {
            let ax = x * freqs[k], ay = y * freqs[k]
            c[i * half + k] = cosf(ax)
            s[i * half + k] = sinf(ax)
            c[i * half + quarter + k] = cosf(ay)
            s[i * half + quarter + k] = sinf(ay)
        }
    }
    return (c, s)
}

extension SAM2MemoryEncoder {
    public convenience init(config: SAM2Config, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        self.init(config: config.memoryEncoder, source: ParameterSource(loader: loader))
        try loader.finish(allowUnused: { !$0.hasPrefix("memory_encoder.") })
    }
}

extension SAM2MemoryAttention {
    public convenience init(config: SAM2Config, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        self.init(config: config.memoryAttention, memoryDim: config.memoryEncoder.outDim, source: ParameterSource(loader: loader))
        try loader.finish(allowUnused: { !$0.hasPrefix("memory_attention.") })
    }
}
