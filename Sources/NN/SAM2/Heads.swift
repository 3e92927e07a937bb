import Formats
import Foundation
import Tensors

/// The SAM heads of SAM 2 (sam2 1.x `modeling/sam`): the prompt encoder (points, boxes, masks; the
/// random-Fourier position encoding) and the mask decoder (two-way transformer, hypernetwork masks,
/// IoU head, object-score head, dynamic multimask via stability), with the sizes
/// `SAM2Base._build_sam_heads` fixes (transformer depth 2, 8 heads, MLP 2048, mask channels 16, IoU
/// head 3 × 256). Differentiable; the checkpoint's names (`sam_prompt_encoder.…`, `sam_mask_decoder.…`).
public final class SAM2Heads: Module {
    public let config: SAM2Config
    let dim: Int
    /// [2, dim/2]: the random-Fourier matrix (a buffer of the checkpoint).
    public let gaussian: Parameter
    public let pointEmbeddings: [Parameter]
    public let notAPoint: Parameter
    public let noMask: Parameter
    let maskConv1: Conv2d, maskNorm1: (Parameter, Parameter), maskConv2: Conv2d, maskNorm2: (Parameter, Parameter), maskConv3: Conv2d
    public let transformer: TwoWayTransformer
    public let iouToken: Parameter, maskTokens: Parameter, objectScoreToken: Parameter?
    let upscale1: (weight: Parameter, bias: Parameter), upscaleNorm: (Parameter, Parameter), upscale2: (weight: Parameter, bias: Parameter)
    public let hypernetworks: [SAMMLP]
    public let iouHead: SAMMLP
    public let objectScoreHead: SAMMLP?
    public var isTraining = false
    public static let multimaskOutputs = 3

    public convenience init(config: SAM2Config, checkpoint: Checkpoint) throws {
        let loader = StateDictLoader(checkpoint)
        self.init(config: config, source: ParameterSource(loader: loader))
        try loader.finish(allowUnused: {
            !(($0.hasPrefix("sam_prompt_encoder.") || $0.hasPrefix("sam_mask_decoder.")) && !$0.hasPrefix("sam_mask_decoder.conv_s"))
        })
    }

    public convenience init(config: SAM2Config, seed: UInt64) { self.init(config: config, source: ParameterSource(seed: seed)) }

    init(config c: SAM2Config, source p: ParameterSource) {
        config = c
        let d = c.neck.dModel
        dim = d
        let pe = "sam_prompt_encoder."
        gaussian = p.parameter(pe + "pe_layer.positional_encoding_gaussian_matrix", [2, d / 2], decays: false) { NN.normal([2, d / 2], std: 1, &$0) }
        pointEmbeddings = (0..<4).map { i in p.parameter(pe + "point_embeddings.\(i).weight", [1, d]) { NN.normal([1, d], std: 1, &$0) } }
        notAPoint = p.parameter(pe + "not_a_point_embed.weight", [1, d]) { NN.normal([1, d], std: 1, &$0) }
        noMask = p.parameter(pe + "no_mask_embed.weight", [1, d]) { NN.normal([1, d], std: 1, &$0) }
        let m = 16
        func conv(_ name: String, _ cin: Int, _ cout: Int, _ k: Int, stride: Int = 1) -> Conv2d {
            let b = 1 / Float(cin * k * k).squareRoot()
            return Conv2d(
                weight: p.uniform(name + ".weight", [cout, cin, k, k], bound: b), bias: p.uniform(name + ".bias", [cout], bound: b, decays: false),
                stride: stride)
        }
        func norm(_ name: String, _ n: Int) -> (Parameter, Parameter) { (p.filled(name + ".weight", [n], 1), p.filled(name + ".bias", [n], 0)) }
        maskConv1 = conv(pe + "mask_downscaling.0", 1, m / 4, 2, stride: 2)
        maskNorm1 = norm(pe + "mask_downscaling.1", m / 4)
        maskConv2 = conv(pe + "mask_downscaling.3", m / 4, m, 2, stride: 2)
        maskNorm2 = norm(pe + "mask_downscaling.4", m)
        maskConv3 = conv(pe + "mask_downscaling.6", m, d, 1)
        let md = "sam_mask_decoder."
        transformer = TwoWayTransformer(prefix: md + "transformer.", dim: d, depth: 2, heads: 8, mlp: 2048, source: p)
        iouToken = p.parameter(md + "iou_token.weight", [1, d]) { NN.normal([1, d], std: 1, &$0) }
        let tokens = Self.multimaskOutputs + 1
        maskTokens = p.parameter(md + "mask_tokens.weight", [tokens, d]) { NN.normal([tokens, d], std: 1, &$0) }
        objectScoreToken = c.heads.predictObjectScores ? p.parameter(md + "obj_score_token.weight", [1, d]) { NN.normal([1, d], std: 1, &$0) } : nil
        func deconv(_ name: String, _ cin: Int, _ cout: Int) -> (weight: Parameter, bias: Parameter) {
            let b = 1 / Float(cout * 4).squareRoot()
            return (p.uniform(name + ".weight", [cin, cout, 2, 2], bound: b), p.uniform(name + ".bias", [cout], bound: b, decays: false))
        }
        upscale1 = deconv(md + "output_upscaling.0", d, d / 4)
        upscaleNorm = norm(md + "output_upscaling.1", d / 4)
        upscale2 = deconv(md + "output_upscaling.3", d / 4, d / 8)
        hypernetworks = (0..<tokens).map { SAMMLP(prefix: md + "output_hypernetworks_mlps.\($0).", sizes: [d, d, d, d / 8], source: p) }
        iouHead = SAMMLP(prefix: md + "iou_prediction_head.", sizes: [d, 256, 256, tokens], sigmoid: c.heads.iouPredictionUseSigmoid, source: p)
        if c.heads.predictObjectScores {
            objectScoreHead =
                c.heads.predictObjectScoresMLP
                ? SAMMLP(prefix: md + "pred_obj_score_head.", sizes: [d, d, d, 1], source: p)
                : SAMMLP(prefix: md + "pred_obj_score_head", sizes: [d, 1], source: p, single: true)
        } else {
            objectScoreHead = nil
        }
    }

    public var namedParameters: [(String, Parameter)] {
        let pe = "sam_prompt_encoder.", md = "sam_mask_decoder."
        var out: [(String, Parameter)] = [(pe + "pe_layer.positional_encoding_gaussian_matrix", gaussian)]
        out += pointEmbeddings.enumerated().map { (pe + "point_embeddings.\($0).weight", $1) }
        out += [(pe + "not_a_point_embed.weight", notAPoint), (pe + "no_mask_embed.weight", noMask)]
        out +=
            prefixed(pe + "mask_downscaling.0.", maskConv1.namedParameters) + [
                (pe + "mask_downscaling.1.weight", maskNorm1.0), (pe + "mask_downscaling.1.bias", maskNorm1.1),
            ]
        out +=
            prefixed(pe + "mask_downscaling.3.", maskConv2.namedParameters) + [
                (pe + "mask_downscaling.4.weight", maskNorm2.0), (pe + "mask_downscaling.4.bias", maskNorm2.1),
            ]
        out += prefixed(pe + "mask_downscaling.6.", maskConv3.namedParameters)
        out += transformer.namedParameters
        out += [(md + "iou_token.weight", iouToken), (md + "mask_tokens.weight", maskTokens)]
        if let objectScoreToken { out.append((md + "obj_score_token.weight", objectScoreToken)) }
        out += [
            (md + "output_upscaling.0.weight", upscale1.weight), (md + "output_upscaling.0.bias", upscale1.bias),
            (md + "output_upscaling.1.weight", upscaleNorm.0), (md + "output_upscaling.1.bias", upscaleNorm.1),
            (md + "output_upscaling.3.weight", upscale2.weight), (md + "output_upscaling.3.bias", upscale2.bias),
        ]
        out += hypernetworks.flatMap(\.namedParameters) + iouHead.namedParameters + (objectScoreHead?.namedParameters ?? [])
        return out
    }

    /// The image-embedding side: H = W = image_size / 16.
    public var embeddingSize: Int { config.imageSize / 16 }
    /// The mask prompt's side (4 × the embedding's).
    public var maskInputSize: Int { 4 * embeddingSize }

    /// Random-Fourier features [n, dim] of normalised coordinates (n pairs (x, y) in [0, 1]):
    /// [sin(2π(2c−1)·G), cos(2π(2c−1)·G)], in float32 as torch computes it. The matrix G is a buffer
    /// (never trained), so the features are constants of the graph.
    func fourier(_ coords: [Float]) -> Variable {
        let n = coords.count / 2, half = dim / 2
        let g = gaussian.variable.scalars
        var out = [Float](repeating: 0, count: n * dim)
        for i in 0..<n {
            let x = 2 * coords[2 * i] - 1, y = 2 * coords[2 * i + 1] - 1
            for j in 0..<half {
                let v = 2 * Float.pi * (x * g[j] + y * g[half + j])
                out[i * dim + j] = sinf(v)
                out[i * dim + half + j] = cosf(v)
            }
        }
        return Variable(Tensor(shape: [n, dim], scalars: out))
    }

    /// The dense position encoding [1, dim, h, w] of the image embedding (`get_dense_pe`).
    public func densePositionEncoding() -> Variable {
        let h = embeddingSize, w = embeddingSize
        var grid = [Float](repeating: 0, count: h * w * 2)
        for y in 0..<h {
            for x in 0..<w {
                grid[(y * w + x) * 2] = (Float(x) + 0.5) / Float(w)
                grid[(y * w + x) * 2 + 1] = (Float(y) + 0.5) / Float(h)
            }
        }
        return fourier(grid).reshaped([h, w, dim]).permuted([2, 0, 1]).reshaped([1, dim, h, w])
    }

    /// Sparse embeddings [B, P(+1), dim] of points in image pixels [B, P, 2] with labels [B][P]
    /// (1 positive, 0 negative, 2/3 box corners, −1 padding); a padding point is appended when
    /// `pad` (no boxes), as sam2 does.
    public func embedPoints(_ points: [[(Float, Float)]], labels: [[Int]], pad: Bool = true) -> Variable {
        let b = points.count, n = (points.first?.count ?? 0) + (pad ? 1 : 0)
        let s = Float(config.imageSize)
        var coords = [Float](), flat: [Int] = []
        for i in 0..<b {
            for (j, pt) in points[i].enumerated() {
                coords += [(pt.0 + 0.5) / s, (pt.1 + 0.5) / s]
                flat.append(labels[i][j])
            }
            if pad {
                coords += [0.5 / s, 0.5 / s]
                flat.append(-1)
            }
        }
        let pe = fourier(coords) // [B·P, dim]
        // Per row: the PE (zeroed for padding) plus the label's embedding.
        var rows: [Variable] = []
        for (r, label) in flat.enumerated() {
            let row = pe.slice(axis: 0, r..<(r + 1))
            switch label {
            case -1: rows.append(notAPoint.variable)
            case 0...3: rows.append(row + pointEmbeddings[label].variable)
            default: rows.append(row)
            }
        }
        return concat(rows, axis: 0).reshaped([b, n, dim])
    }

    /// Dense embeddings [B, dim, h, w] of mask logits [B, 1, 4h, 4w] (`mask_downscaling`), or the
    /// `no_mask_embed` everywhere.
    public func embedMasks(_ masks: Variable?, batch: Int) -> Variable {
        guard let masks else {
            let h = embeddingSize
            return noMask.variable.reshaped([1, dim, 1, 1]) * Variable(Tensor.filled(1, shape: [batch, 1, h, h]))
        }
        var x = layerNorm2d(maskConv1(masks), maskNorm1).gelu()
        x = layerNorm2d(maskConv2(x), maskNorm2).gelu()
        return maskConv3(x)
    }

    /// What the mask decoder returns (`MaskDecoder.forward`).
    public struct Output {
        /// [B, M, 4h, 4w]: three masks with multimask output, else one (dynamically chosen when the config says so).
        public var masks: Variable
        public var ious: Variable
        /// The mask tokens behind them [B, M, dim] (the object pointer's input).
        public var tokens: Variable
        public var objectScore: Variable
    }

    /// The mask decoder on image embeddings [B, dim, h, w] with the two high-resolution levels
    /// ([B, dim/8, 4h, 4w], [B, dim/4, 2h, 2w]), sparse and dense prompt embeddings.
    public func decode(image: Variable, highRes: [Variable], sparse: Variable, dense: Variable, multimask: Bool) -> Output {
        let b = sparse.shape[0], d = dim
        let tokenCount = Self.multimaskOutputs + 1
        var outputTokens = [iouToken.variable, maskTokens.variable]
        if let objectScoreToken { outputTokens.insert(objectScoreToken.variable, at: 0) }
        let fixed = concat(outputTokens, axis: 0) // [T0, d]
        let expanded = Variable(Tensor.filled(1, shape: [b, 1, 1])) * fixed.reshaped([1, fixed.shape[0], d])
        let tokens = concat([expanded, sparse], axis: 1)
        let src = image + dense
        let pos = densePositionEncoding()
        let (h, w) = (src.shape[2], src.shape[3])
        let (hs, keys) = transformer(image: src, position: pos, points: tokens)
        let s = objectScoreToken == nil ? 0 : 1
        let iouOut = hs.slice(axis: 1, s..<(s + 1)).reshaped([b, d])
        let maskOut = hs.slice(axis: 1, (s + 1)..<(s + 1 + tokenCount)) // [B, 4, d]
        let grid = keys.permuted([0, 2, 1]).reshaped([b, d, h, w])
        var up: Variable
        if config.useHighResFeatures {
            up = layerNorm2d(convTranspose2x2(grid, upscale1.weight.variable, upscale1.bias.variable) + highRes[1], upscaleNorm).gelu()
            up = (convTranspose2x2(up, upscale2.weight.variable, upscale2.bias.variable) + highRes[0]).gelu()
        } else {
            up = layerNorm2d(convTranspose2x2(grid, upscale1.weight.variable, upscale1.bias.variable), upscaleNorm).gelu()
            up = convTranspose2x2(up, upscale2.weight.variable, upscale2.bias.variable).gelu()
        }
        let hyper = concat(
            (0..<tokenCount).map { i in hypernetworks[i](maskOut.slice(axis: 1, i..<(i + 1)).reshaped([b, d])).reshaped([b, 1, d / 8]) }, axis: 1)
        let (uh, uw) = (up.shape[2], up.shape[3])
        let masks = matmul(hyper, up.reshaped([b, d / 8, uh * uw])).reshaped([b, tokenCount, uh, uw])
        let ious = iouHead(iouOut)
        let score =
            objectScoreHead.map { $0(hs.slice(axis: 1, 0..<1).reshaped([b, d])) } ?? Variable(Tensor.filled(10, shape: [b, 1]))
        if multimask {
            return Output(
                masks: masks.slice(axis: 1, 1..<tokenCount), ious: ious.slice(axis: 1, 1..<tokenCount),
                tokens: config.heads.useMultimaskTokenForObjectPointer ? maskOut.slice(axis: 1, 1..<tokenCount) : maskOut.slice(axis: 1, 0..<1),
                objectScore: score)
        }
        var chosen = masks.slice(axis: 1, 0..<1), chosenIoU = ious.slice(axis: 1, 0..<1)
        if config.heads.dynamicMultimaskViaStability && !isTraining {
            (chosen, chosenIoU) = dynamicMultimask(masks: masks, ious: ious)
        }
        return Output(masks: chosen, ious: chosenIoU, tokens: maskOut.slice(axis: 1, 0..<1), objectScore: score)
    }

    /// Per item: the single-mask output when its stability (area above +δ over area above −δ) reaches
    /// the threshold, else the best of the three multimask outputs by predicted IoU.
    func dynamicMultimask(masks: Variable, ious: Variable) -> (Variable, Variable) {
        let b = masks.shape[0], plane = masks.shape[2] * masks.shape[3]
        let values = masks.scalars
        let scores = ious.scalars
        let delta = Float(config.heads.stabilityDelta), threshold = Float(config.heads.stabilityThreshold)
        var maskRows: [Variable] = [], iouRows: [Variable] = []
        for i in 0..<b {
            let single = values[(i * 4 * plane)..<(i * 4 * plane + plane)]
            let inter = single.filter { $0 > delta }.count, union = single.filter { $0 > -delta }.count
            let stability: Float = union > 0 ? Float(inter) / Float(union) : 1
            var pick = 0
            if stability < threshold {
                // argmax over the three multimask IoUs (first on ties, as torch.argmax).
                pick = 1
                for k in 2...3 where scores[i * 4 + k] > scores[i * 4 + pick] { pick = k }
            }
            maskRows.append(masks.slice(axis: 0, i..<(i + 1)).slice(axis: 1, pick..<(pick + 1)))
            iouRows.append(ious.slice(axis: 0, i..<(i + 1)).slice(axis: 1, pick..<(pick + 1)))
        }
        return (concat(maskRows, axis: 0), concat(iouRows, axis: 0))
    }
}

/// sam2's `MLP`: Linear layers with ReLU between them, optionally a sigmoid at the end.
public final class SAMMLP: Module {
    public let layers: [Linear]
    public var isTraining = false
    let sigmoid: Bool
    let names: [String]

    init(prefix: String, sizes: [Int], sigmoid: Bool = false, source p: ParameterSource, single: Bool = false) {
        self.sigmoid = sigmoid
        let names = single ? [prefix + "."] : (0..<(sizes.count - 1)).map { prefix + "layers.\($0)." }
        self.names = names
        layers = (0..<(sizes.count - 1)).map { i in p.linear(String(names[i].dropLast()), sizes[i], sizes[i + 1]) }
    }

    public var namedParameters: [(String, Parameter)] { zip(names, layers).flatMap { prefixed($0, $1.namedParameters) } }

    public func callAsFunction(_ x: Variable) -> Variable {
        var y = x
        for (i, layer) in layers.enumerated() { y = i < layers.count - 1 ? layer(y).relu() : layer(y) }
        return sigmoid ? y.sigmoid() : y
    }
}

/// sam2's `Attention`: q, k, v projections to `dim / downsample` channels, heads, softmax(q kᵀ/√hd) v, out.
public final class SAMAttention: Module {
    public let q: Linear, k: Linear, v: Linear, out: Linear
    public var isTraining = false
    let heads: Int
    let prefix: String

    init(prefix: String, dim: Int, heads: Int, downsample: Int = 1, keyDim: Int? = nil, source p: ParameterSource) {
        let inner = dim / downsample, kv = keyDim ?? dim
        self.prefix = prefix
        self.heads = heads
        q = p.linear(prefix + "q_proj", dim, inner)
        k = p.linear(prefix + "k_proj", kv, inner)
        v = p.linear(prefix + "v_proj", kv, inner)
        out = p.linear(prefix + "out_proj", inner, dim)
    }

    public var namedParameters: [(String, Parameter)] {
        prefixed(prefix + "q_proj.", q.namedParameters) + prefixed(prefix + "k_proj.", k.namedParameters)
            + prefixed(prefix + "v_proj.", v.namedParameters) + prefixed(prefix + "out_proj.", out.namedParameters)
    }

    func split(_ x: Variable) -> Variable {
        let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
        return x.reshaped([b, n, heads, c / heads]).permuted([0, 2, 1, 3])
    }

    /// q [B, Nq, C], k and v [B, Nk, C_kv] → [B, Nq, C].
    public func callAsFunction(q x: Variable, k y: Variable, v z: Variable) -> Variable {
        if !GradMode.isEnabled { return fused(q: x, k: y, v: z) }
        let qh = split(q(x)), kh = split(k(y)), vh = split(v(z))
        let hd = qh.shape[3]
        let mixed = matmul(matmul(qh * (1 / Float(hd).squareRoot()), kh, transposeB: true).softmax(), vh)
        let (b, n) = (x.shape[0], x.shape[1])
        return out(mixed.permuted([0, 2, 1, 3]).reshaped([b, n, heads * hd]))
    }
}

/// SAM's two-way transformer: tokens attend to themselves and to the image, the image to the tokens.
public final class TwoWayTransformer: Module {
    public struct Block {
        let selfAttention: SAMAttention, tokenToImage: SAMAttention, imageToToken: SAMAttention
        let norms: [LayerNorm]
        let mlp: SAMMLP
        let skipFirstPE: Bool
    }
    let blocks: [Block]
    public var isTraining = false
    let finalAttention: SAMAttention
    let finalNorm: LayerNorm
    let prefix: String

    init(prefix: String, dim: Int, depth: Int, heads: Int, mlp: Int, source p: ParameterSource) {
        self.prefix = prefix
        blocks = (0..<depth).map { i in
            let l = prefix + "layers.\(i)."
            return Block(
                selfAttention: SAMAttention(prefix: l + "self_attn.", dim: dim, heads: heads, source: p),
                tokenToImage: SAMAttention(prefix: l + "cross_attn_token_to_image.", dim: dim, heads: heads, downsample: 2, source: p),
                imageToToken: SAMAttention(prefix: l + "cross_attn_image_to_token.", dim: dim, heads: heads, downsample: 2, source: p),
                norms: (1...4).map { p.layerNorm(l + "norm\($0)", dim, eps: 1e-5) },
                mlp: SAMMLP(prefix: l + "mlp.", sizes: [dim, mlp, dim], source: p), skipFirstPE: i == 0)
        }
        finalAttention = SAMAttention(prefix: prefix + "final_attn_token_to_image.", dim: dim, heads: heads, downsample: 2, source: p)
        finalNorm = p.layerNorm(prefix + "norm_final_attn", dim, eps: 1e-5)
    }

    public var namedParameters: [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        for (i, b) in blocks.enumerated() {
            out += b.selfAttention.namedParameters + b.tokenToImage.namedParameters + b.imageToToken.namedParameters + b.mlp.namedParameters
            out += b.norms.enumerated().flatMap { j, n in prefixed(prefix + "layers.\(i).norm\(j + 1).", n.namedParameters) }
        }
        return out + finalAttention.namedParameters + prefixed(prefix + "norm_final_attn.", finalNorm.namedParameters)
    }

    /// image [B, C, h, w], its position encoding [1, C, h, w], tokens [B, N, C] → (tokens, image keys [B, hw, C]).
    public func callAsFunction(image: Variable, position: Variable, points: Variable) -> (Variable, Variable) {
        let (b, c, h, w) = (image.shape[0], image.shape[1], image.shape[2], image.shape[3])
        var keys = image.reshaped([b, c, h * w]).permuted([0, 2, 1])
        let keyPE = Variable(Tensor.filled(1, shape: [b, 1, 1])) * position.reshaped([1, c, h * w]).permuted([0, 2, 1])
        var queries = points
        for block in blocks {
            if block.skipFirstPE {
                queries = block.selfAttention(q: queries, k: queries, v: queries)
            } else {
                let q = queries + points
                queries = queries + block.selfAttention(q: q, k: q, v: queries)
            }
            queries = block.norms[0](queries)
            queries = block.norms[1](queries + block.tokenToImage(q: queries + points, k: keys + keyPE, v: keys))
            queries = block.norms[2](queries + block.mlp(queries))
            keys = block.norms[3](keys + block.imageToToken(q: keys + keyPE, k: queries + points, v: queries))
        }
        queries = finalNorm(queries + finalAttention(q: queries + points, k: keys + keyPE, v: keys))
        return (queries, keys)
    }
}

/// LayerNorm over the channels of an NCHW map (sam2's `LayerNorm2d`, eps 1e-6).
func layerNorm2d(_ x: Variable, _ affine: (Parameter, Parameter)) -> Variable {
    x.permuted([0, 2, 3, 1]).layerNorm(weight: affine.0.variable, bias: affine.1.variable, eps: 1e-6).permuted([0, 3, 1, 2])
}

/// ConvTranspose2d with kernel 2 and stride 2 (weight [C_in, C_out, 2, 2]): each input pixel spreads
/// to a 2 × 2 block — a matrix product and a pixel shuffle.
func convTranspose2x2(_ x: Variable, _ weight: Variable, _ bias: Variable) -> Variable {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let cout = weight.shape[1]
    let rows = x.permuted([0, 2, 3, 1]).reshaped([n * h * w, cin])
    let y = matmul(rows, weight.reshaped([cin, cout * 4])) // [NHW, Cout·2·2]
    let shuffled = y.reshaped([n, h, w, cout, 2, 2]).permuted([0, 3, 1, 4, 2, 5]).reshaped([n, cout, 2 * h, 2 * w])
    return shuffled + bias.reshaped([1, cout, 1, 1])
}
