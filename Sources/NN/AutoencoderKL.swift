import Formats
import Foundation
import Tensors

/// diffusers' `AutoencoderKL` (the Stable Diffusion VAE): an encoder of DownEncoderBlock2D
/// (ResNet blocks of GroupNorm–SiLU–conv, a stride-2 convolution after right/bottom zero padding),
/// a mid block (ResNet, single-head spatial self-attention with GroupNorm and a residual, ResNet),
/// GroupNorm–SiLU–conv to 2·latent channels (mean and log-variance), `quant_conv`; a decoder of
/// `post_quant_conv`, conv_in, the mid block, UpDecoderBlock2D (layers_per_block + 1 ResNet blocks,
/// nearest ×2 then a 3×3 convolution) and GroupNorm–SiLU–conv_out. All GroupNorms and ResNet
/// epsilons are 1e-6, as diffusers builds them. Differentiable (the decoder's vector–Jacobian product
/// is what D^3HR/CONCORD backpropagate through).
public final class AutoencoderKL: Module {
    public let config: AutoencoderKLConfig
    struct Norm {
        let weight: Parameter, bias: Parameter
    }
    struct ResNet {
        let norm1: Norm, conv1: Conv2d, norm2: Norm, conv2: Conv2d
        let shortcut: Conv2d?
    }
    struct Attention {
        let norm: Norm
        let q: Linear, k: Linear, v: Linear, out: Linear
    }
    struct Mid {
        let first: ResNet, attention: Attention?, second: ResNet
    }
    struct Stage {
        let resnets: [ResNet]
        let resample: Conv2d?
    }
    let encoderIn: Conv2d, encoderStages: [Stage], encoderMid: Mid, encoderNorm: Norm, encoderOut: Conv2d
    let quant: Conv2d?, postQuant: Conv2d?
    let decoderIn: Conv2d, decoderMid: Mid, decoderStages: [Stage], decoderNorm: Norm, decoderOut: Conv2d
    let names: [(String, Parameter)]
    public var isTraining = false

    public convenience init(config: AutoencoderKLConfig, seed: UInt64) throws {
        try config.validate(source: "config")
        try self.init(config: config, source: ParameterSource(seed: seed))
    }

    /// Loads diffusers' names from `checkpoint`; every missing, mis-shaped or unexpected tensor is
    /// named in one error.
    public convenience init(config: AutoencoderKLConfig, checkpoint: Checkpoint) throws {
        try config.validate(source: checkpoint.path)
        let loader = StateDictLoader(checkpoint)
        try self.init(config: config, source: ParameterSource(loader: loader))
        try loader.finish()
    }

    init(config c: AutoencoderKLConfig, source s: ParameterSource) throws {
        config = c
        var named: [(String, Parameter)] = []
        func conv(_ name: String, _ i: Int, _ o: Int, kernel k: Int, stride: Int = 1, padding: Int) -> Conv2d {
            let bound = 1 / Float(i * k * k).squareRoot()
            let w = s.uniform(name + ".weight", [o, i, k, k], bound: bound), b = s.uniform(name + ".bias", [o], bound: bound, decays: false)
            named += [(name + ".weight", w), (name + ".bias", b)]
            return Conv2d(weight: w, bias: b, stride: stride, padding: padding)
        }
        func norm(_ name: String, _ ch: Int) -> Norm {
            let w = s.filled(name + ".weight", [ch], 1), b = s.filled(name + ".bias", [ch], 0)
            named += [(name + ".weight", w), (name + ".bias", b)]
            return Norm(weight: w, bias: b)
        }
        func linear(_ name: String, _ ch: Int) -> Linear {
            let l = s.linear(name, ch, ch)
            named += [(name + ".weight", l.weight), (name + ".bias", l.bias!)]
            return l
        }
        func resnet(_ name: String, _ i: Int, _ o: Int) -> ResNet {
            ResNet(
                norm1: norm(name + ".norm1", i), conv1: conv(name + ".conv1", i, o, kernel: 3, padding: 1), norm2: norm(name + ".norm2", o),
                conv2: conv(name + ".conv2", o, o, kernel: 3, padding: 1),
                shortcut: i == o ? nil : conv(name + ".conv_shortcut", i, o, kernel: 1, padding: 0))
        }
        // Checkpoints written before diffusers 0.14 name the mid attention's projections query, key,
        // value, proj_attn (diffusers renames them on load); both are read.
        let legacy = s.loader?.has("decoder.mid_block.attentions.0.query.weight") ?? false
        let (qn, kn, vn, on) = legacy ? ("query", "key", "value", "proj_attn") : ("to_q", "to_k", "to_v", "to_out.0")
        func mid(_ name: String, _ ch: Int) -> Mid {
            let first = resnet(name + ".resnets.0", ch, ch)
            let a = name + ".attentions.0."
            let attention =
                c.midAttention
                ? Attention(
                    norm: norm(a + "group_norm", ch), q: linear(a + qn, ch), k: linear(a + kn, ch), v: linear(a + vn, ch),
                    out: linear(a + on, ch)) : nil
            return Mid(first: first, attention: attention, second: resnet(name + ".resnets.1", ch, ch))
        }
        let widths = c.blockOutChannels, last = widths.count - 1
        encoderIn = conv("encoder.conv_in", c.inChannels, widths[0], kernel: 3, padding: 1)
        var stages: [Stage] = []
        var channels = widths[0]
        for (i, w) in widths.enumerated() {
            let resnets = (0..<c.layersPerBlock).map { j in resnet("encoder.down_blocks.\(i).resnets.\(j)", j == 0 ? channels : w, w) }
            let down = i == last ? nil : conv("encoder.down_blocks.\(i).downsamplers.0.conv", w, w, kernel: 3, stride: 2, padding: 0)
            stages.append(Stage(resnets: resnets, resample: down))
            channels = w
        }
        encoderStages = stages
        encoderMid = mid("encoder.mid_block", widths[last])
        encoderNorm = norm("encoder.conv_norm_out", widths[last])
        encoderOut = conv("encoder.conv_out", widths[last], 2 * c.latentChannels, kernel: 3, padding: 1)
        quant = c.useQuantConv ? conv("quant_conv", 2 * c.latentChannels, 2 * c.latentChannels, kernel: 1, padding: 0) : nil
        postQuant = c.usePostQuantConv ? conv("post_quant_conv", c.latentChannels, c.latentChannels, kernel: 1, padding: 0) : nil
        decoderIn = conv("decoder.conv_in", c.latentChannels, widths[last], kernel: 3, padding: 1)
        decoderMid = mid("decoder.mid_block", widths[last])
        stages = []
        channels = widths[last]
        for (i, w) in widths.reversed().enumerated() {
            let resnets = (0...c.layersPerBlock).map { j in resnet("decoder.up_blocks.\(i).resnets.\(j)", j == 0 ? channels : w, w) }
            let up = i == last ? nil : conv("decoder.up_blocks.\(i).upsamplers.0.conv", w, w, kernel: 3, padding: 1)
            stages.append(Stage(resnets: resnets, resample: up))
            channels = w
        }
        decoderStages = stages
        decoderNorm = norm("decoder.conv_norm_out", widths[0])
        decoderOut = conv("decoder.conv_out", widths[0], c.outChannels, kernel: 3, padding: 1)
        names = named
    }

    public var namedParameters: [(String, Parameter)] { names }

    func groupNorm(_ x: Variable, _ n: Norm) -> Variable {
        x.groupNorm(groups: config.groups, weight: n.weight.variable, bias: n.bias.variable, eps: 1e-6)
    }

    func resnet(_ x: Variable, _ r: ResNet) -> Variable {
        var h = r.conv1(groupNorm(x, r.norm1).silu())
        h = r.conv2(groupNorm(h, r.norm2).silu())
        return (r.shortcut.map { $0(x) } ?? x) + h
    }

    /// Single-head attention over the H·W positions (diffusers' `Attention` with GroupNorm,
    /// scale 1/√C, residual).
    func attention(_ x: Variable, _ a: Attention) -> Variable {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let tokens = groupNorm(x, a.norm).reshaped([n, c, h * w]).permuted([0, 2, 1]) // [N, HW, C]
        let q = a.q(tokens), k = a.k(tokens), v = a.v(tokens)
        let scores = matmul(q * (1 / Float(c).squareRoot()), k, transposeB: true).softmax() // [N, HW, HW]
        let mixed = a.out(matmul(scores, v)) // [N, HW, C]
        return x + mixed.permuted([0, 2, 1]).reshaped([n, c, h, w])
    }

    func mid(_ x: Variable, _ m: Mid) -> Variable {
        var h = resnet(x, m.first)
        if let a = m.attention { h = attention(h, a) }
        return resnet(h, m.second)
    }

    /// Zero padding on the right and bottom (`F.pad(x, (0, 1, 0, 1))`, Downsample2D with padding 0).
    static func padRightBottom(_ x: Variable) -> Variable {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let right = concat([x, Variable(Tensor(zeros: .float32, shape: [n, c, h, 1]))], axis: 3)
        return concat([right, Variable(Tensor(zeros: .float32, shape: [n, c, 1, w + 1]))], axis: 2)
    }

    /// Nearest-neighbour ×2 (`F.interpolate(scale_factor=2, mode="nearest")`), as a broadcast product.
    static func upsampleNearest2(_ x: Variable) -> Variable {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let ones = Variable(Tensor.filled(1, shape: [1, 1, 1, 2, 1, 2]))
        return (x.reshaped([n, c, h, 1, w, 1]) * ones).reshaped([n, c, 2 * h, 2 * w])
    }

    /// Images [N, in, S, S] in [−1, 1] → the latent distribution's moments [N, 2·latent, S/d, S/d]
    /// (mean, then log-variance), after `quant_conv`.
    public func moments(_ x: Variable) -> Variable {
        var h = encoderIn(x)
        for stage in encoderStages {
            for r in stage.resnets { h = resnet(h, r) }
            if let down = stage.resample { h = down(Self.padRightBottom(h)) }
        }
        h = mid(h, encoderMid)
        h = encoderOut(groupNorm(h, encoderNorm).silu())
        return quant.map { $0(h) } ?? h
    }

    /// The posterior's mean [N, latent, S/d, S/d] (unscaled).
    public func encodeMean(_ x: Variable) -> Variable {
        let m = moments(x)
        return m.slice(axis: 1, 0..<config.latentChannels)
    }

    /// A draw mean + exp(½·clamp(logvar, −30, 20))·noise (`DiagonalGaussianDistribution.sample`),
    /// `noise` [N·latent·(S/d)²] standard normal.
    public func encodeSample(_ x: Variable, noise: [Float]) -> Variable {
        let m = moments(x), l = config.latentChannels
        let mean = m.slice(axis: 1, 0..<l)
        let std = m.slice(axis: 1, l..<(2 * l)).scalars.map { Foundation.exp(0.5 * min(max($0, -30), 20)) }
        return mean + Variable(try! Tensor(std, shape: mean.shape)) * Variable(try! Tensor(noise, shape: mean.shape))
    }

    /// Unscaled latents [N, latent, L, L] → images [N, out, L·d, L·d] (≈ [−1, 1], unclamped).
    public func decode(_ z: Variable) -> Variable {
        var h = decoderIn(postQuant.map { $0(z) } ?? z)
        h = mid(h, decoderMid)
        for stage in decoderStages {
            for r in stage.resnets { h = resnet(h, r) }
            if let up = stage.resample { h = up(Self.upsampleNearest2(h)) }
        }
        return decoderOut(groupNorm(h, decoderNorm).silu())
    }
}
