import Foundation
import Imaging
import NN
import Tensors

/// The base class-activation methods (pytorch-grad-cam's definitions, for a ViT token grid:
/// activations A [N, D, h, w] = the target layer's patch tokens, CLS dropped).
public enum BaseMethod: String, Sendable, CaseIterable {
    /// w_k = mean_hw ∂S/∂A_k ; cam = ReLU(Σ_k w_k A_k)  (Selvaraju et al. 2017)
    case gradcam
    /// cam = ReLU(Σ_k ReLU(∂S/∂A_k) ⊙ A_k)  (Jiang et al. 2021)
    case layercam
    /// w = softmax_k S(f(x ⊙ H_k)) with H_k = A_k upsampled (bilinear, align_corners = True) and
    /// min–max scaled; cam = ReLU(Σ_k w_k A_k)  (Wang et al. 2020; no gradients)
    case scorecam
    /// w_k = Σ_hw ReLU(g) · g² / (2g² + (Σ_hw A_k)·g³ + 1e-6), 0 where g = 0 (Chattopadhay et al. 2018,
    /// pytorch-grad-cam's closed form); cam = ReLU(Σ_k w_k A_k)
    case gradcampp
    /// cam = ReLU(Σ_k ∂S/∂A_k ⊙ A_k): gradients multiplied in place, not averaged (Draelos & Carin 2020)
    case hirescam
}

/// How Finer-CAM compares the target with its most similar classes.
public struct FinerOptions: Sendable {
    /// α: the weight of the comparison classes (0 gives the base CAM).
    public var alpha: Float = 1
    /// Positions in the order of closeness of logits (0 is the target itself); clamped to C − 1.
    public var ranks: [Int] = [1, 2, 3]
    /// "code": S = Σ_i p_i·(y_t − α·y_i) / (Σ_i p_i + 1e-9) with p = softmax(y), not detached (the
    /// released code and pytorch-grad-cam); "paper": S = (1/T) Σ_i (y_t − α·y_i), uniform weights.
    public var weighting = "code"
    public init(alpha: Float = 1, ranks: [Int] = [1, 2, 3], weighting: String = "code") {
        (self.alpha, self.ranks, self.weighting) = (alpha, ranks, weighting)
    }
}

/// What an explanation returns per image.
public struct Explanation: Sendable {
    /// [N, h, w]: ReLU, then min–max scaled (with pytorch-grad-cam's 1e-7), before resizing.
    public var grid: Tensor
    /// [N, S, S]: the grid resized (bilinear, half-pixel centres as cv2.resize) and min–max scaled again.
    public var maps: Tensor
    public var logits: Tensor
    public var targets: [Int]
    /// The comparison classes per image (empty for the base methods).
    public var comparisons: [[Int]]
}

public struct CAMError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// What the CAM methods need of a classifier: a forward pass that records the graph and returns the
/// target layer, and plain logits (Score-CAM's masked inputs).
public protocol CAMClassifier {
    var inputChannels: Int { get }
    var inputSize: Int { get }
    /// Logits [N, C] and the target layer `layer` (negative counts from the end) with its layout.
    func forwardForCAM(_ images: Variable, layer: Int) throws -> (logits: Variable, target: Variable, layout: ActivationLayout)
    /// Logits [N·C values] without recording a graph.
    func logits(_ images: Tensor) throws -> [Float]
    /// An image at the input size (and whether it had to be resized, with how).
    func fit(_ image: Image) -> (Image, resized: Bool)
    /// Normalised [N, C, S, S] of images already at the input size.
    func normalized(_ images: [Image]) throws -> Tensor
}

/// How a target layer's activations are laid out.
public enum ActivationLayout: Sendable {
    /// ViT tokens [N, T, D]: `prefix` leading tokens (CLS) dropped, the rest a `height` × `width` grid.
    case tokens(prefix: Int, height: Int, width: Int)
    /// CNN feature maps [N, D, height, width].
    case channels(height: Int, width: Int)

    var height: Int {
        switch self {
        case .tokens(_, let h, _), .channels(let h, _): h
        }
    }
    var width: Int {
        switch self {
        case .tokens(_, _, let w), .channels(_, let w): w
        }
    }

    /// Flat index of channel k at position p of item i, for an activation tensor of `shape`.
    func index(_ i: Int, _ k: Int, _ p: Int, shape: [Int]) -> Int {
        switch self {
        case .tokens(let prefix, _, _): return (i * shape[1] + prefix + p) * shape[2] + k
        case .channels(let h, let w): return (i * shape[1] + k) * h * w + p
        }
    }
}

extension ViTClassifier: CAMClassifier {
    public var inputChannels: Int { config.inChannels }
    public var inputSize: Int { config.imageSize }
    public func forwardForCAM(_ images: Variable, layer: Int) throws -> (logits: Variable, target: Variable, layout: ActivationLayout) {
        let c = config
        let block = layer < 0 ? c.depth + layer : layer
        guard (0..<c.depth).contains(block) else { throw CAMError("target layer \(layer) does not exist: the model has \(c.depth) blocks") }
        let prefix = c.prefixTokens
        let patches = c.tokens - prefix
        let g = Int(Double(patches).squareRoot().rounded())
        guard g * g == patches else {
            throw CAMError("the target layer has \(patches) patch tokens, which is not a square grid: cannot reshape it into an activation map")
        }
        let out = GradMode.with(true) { model.forward(images) }
        return (out.logits, out.norm1Outputs[block], .tokens(prefix: prefix, height: g, width: g))
    }
    public func logits(_ images: Tensor) throws -> [Float] {
        try model.forward(images).logits.scalars(as: Float.self) // the no-grad fast path
    }
}

/// Runs `method` on `images` (normalised [N, C, S, S]) with the target layer `layer` (ViT:
/// `blocks[layer].norm1` output; ConvNet: block `layer`'s ReLU output; default the last).
/// `targets[i]` nil: the top class. With `finer`, the score is Finer-CAM's.
public func explain(
    _ classifier: some CAMClassifier, images: Tensor, method: BaseMethod, targets: [Int?], finer: FinerOptions?,
    layer: Int = -1
) throws -> Explanation {
    let n = images.shape[0], size = classifier.inputSize
    guard images.rank == 4, images.shape[1] == classifier.inputChannels, images.shape[2] == size, images.shape[3] == size else {
        throw CAMError("images must be [N, \(classifier.inputChannels), \(size), \(size)] for this model, got \(images.shape)")
    }
    let (logits, target, layout) = try classifier.forwardForCAM(Variable(images), layer: layer)
    let classes = logits.shape[1]
    let y = logits.scalars
    var chosen: [Int] = [], comparisons: [[Int]] = []
    for i in 0..<n {
        let row = Array(y[(i * classes)..<((i + 1) * classes)])
        let t: Int
        if let given = targets[i] {
            guard (0..<classes).contains(given) else { throw CAMError("target class \(given) is outside 0..<\(classes)") }
            t = given
        } else {
            t = row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!
        }
        chosen.append(t)
        if let finer {
            // Classes by closeness of logit to the target's (stable: ties to the lower index).
            let order = row.indices.sorted { a, b in
                let da = abs(row[a] - row[t]), db = abs(row[b] - row[t])
                return da < db || (da == db && a < b)
            }
            comparisons.append(finer.ranks.map { order[min(max($0, 0), classes - 1)] })
        } else {
            comparisons.append([])
        }
    }
    // The score whose gradient weights the activations: Σ over images of each image's score.
    var score: Variable? = nil
    let probabilities = logits.softmax()
    for i in 0..<n {
        let yi = logits.slice(axis: 0, i..<(i + 1)).reshaped([classes])
        let yt = yi.slice(axis: 0, chosen[i]..<(chosen[i] + 1))
        var s: Variable
        if let finer, !comparisons[i].isEmpty {
            let pi = probabilities.slice(axis: 0, i..<(i + 1)).reshaped([classes])
            var numerator: Variable? = nil, denominator: Variable? = nil
            for j in comparisons[i] {
                let term = yt - yi.slice(axis: 0, j..<(j + 1)) * finer.alpha
                let w = finer.weighting == "paper" ? Variable(Tensor.filled(1, shape: [1])) : pi.slice(axis: 0, j..<(j + 1))
                numerator = numerator.map { $0 + w * term } ?? w * term
                denominator = denominator.map { $0 + w } ?? w
            }
            s = numerator! / (denominator! + 1e-9)
        } else {
            s = yt
        }
        score = score.map { $0 + s } ?? s
    }
    let a = try target.value.scalars(as: Float.self)
    let shape = target.shape
    let d: Int
    switch layout {
    case .tokens: d = shape[2]
    case .channels: d = shape[1]
    }
    let positions = layout.height * layout.width
    func at(_ i: Int, _ k: Int, _ p: Int) -> Int { layout.index(i, k, p, shape: shape) }
    let da: [Float]
    var scoreWeights: [[Float]] = []
    if method == .scorecam {
        da = []
        let pixels = try images.scalars(as: Float.self), per = images.count / max(n, 1)
        for i in 0..<n {
            let row = Array(y[(i * classes)..<((i + 1) * classes)])
            scoreWeights.append(
                try scoreCAMWeights(
                    classifier, image: Array(pixels[(i * per)..<((i + 1) * per)]), channels: d, layout: layout,
                    activation: { k, p in a[at(i, k, p)] },
                    score: { logits in
                        finerScore(logits, target: chosen[i], comparisons: comparisons[i], finer: finer, original: row)
                    }))
        }
    } else {
        let grads = Autograd.gradients(of: score!.sum(), wrt: [target])[0]
        da = try grads.map { try $0.value.scalars(as: Float.self) } ?? [Float](repeating: 0, count: a.count)
    }
    var grid = [Float](repeating: 0, count: n * positions)
    for i in 0..<n {
        var weights = [Float](repeating: 0, count: d)
        if method == .gradcam {
            for p in 0..<positions { for k in 0..<d { weights[k] += da[at(i, k, p)] } }
            for k in 0..<d { weights[k] /= Float(positions) }
        } else if method == .scorecam {
            weights = scoreWeights[i]
        } else if method == .gradcampp {
            for k in 0..<d {
                var sumA: Float = 0
                for p in 0..<positions { sumA += a[at(i, k, p)] }
                var w: Float = 0
                for p in 0..<positions {
                    let g = da[at(i, k, p)]
                    guard g != 0 else { continue }
                    let g2 = g * g
                    w += max(g, 0) * g2 / (2 * g2 + sumA * g2 * g + 1e-6)
                }
                weights[k] = w
            }
        }
        for p in 0..<positions {
            var v: Float = 0
            switch method {
            case .gradcam, .scorecam, .gradcampp: for k in 0..<d { v += weights[k] * a[at(i, k, p)] }
            case .layercam: for k in 0..<d { v += max(da[at(i, k, p)], 0) * a[at(i, k, p)] }
            case .hirescam: for k in 0..<d { v += da[at(i, k, p)] * a[at(i, k, p)] }
            }
            grid[i * positions + p] = max(v, 0)
        }
        minMaxScale(&grid[(i * positions)..<((i + 1) * positions)])
    }
    let gridT = try Tensor(grid, shape: [n, layout.height, layout.width])
    let maps = try scaledMaps(grid: gridT, size: size)
    return Explanation(grid: gridT, maps: maps, logits: logits.value, targets: chosen, comparisons: comparisons)
}

/// Low-resolution maps [N, h, w] to the input size as pytorch-grad-cam does: bilinear resize, ReLU,
/// min–max scaling per image.
func scaledMaps(grid: Tensor, size s: Int) throws -> Tensor {
    let n = grid.shape[0]
    let lowRes = Variable(try grid.reshaped([n, 1, grid.shape[1], grid.shape[2]]))
    var maps = try GradMode.disabled { lowRes.upsampleBilinear(height: s, width: s) }.value.scalars(as: Float.self)
    for i in 0..<n {
        for j in (i * s * s)..<((i + 1) * s * s) { maps[j] = max(maps[j], 0) }
        minMaxScale(&maps[(i * s * s)..<((i + 1) * s * s)])
    }
    return try Tensor(maps, shape: [n, s, s])
}

/// pytorch-grad-cam's `scale_cam_image`: x − min, then / (1e-7 + max).
func minMaxScale(_ x: inout ArraySlice<Float>) {
    guard let lo = x.min() else { return }
    for j in x.indices { x[j] -= lo }
    let hi = x.max()!
    for j in x.indices { x[j] /= (1e-7 + hi) }
}

/// The score of one output row: the target logit, or Finer-CAM's comparison with the classes chosen
/// from the unmasked output (softmax weights from this row, as pytorch-grad-cam's target does).
func finerScore(_ logits: [Float], target t: Int, comparisons: [Int], finer: FinerOptions?, original: [Float]) -> Float {
    guard let finer, !comparisons.isEmpty else { return logits[t] }
    let m = logits.max()!
    let e = logits.map { Foundation.exp($0 - m) }
    let z = e.reduce(0, +)
    var numerator: Float = 0, denominator: Float = 0
    for j in comparisons {
        let w: Float = finer.weighting == "paper" ? 1 : e[j] / z
        numerator += w * (logits[t] - finer.alpha * logits[j])
        denominator += w
    }
    return numerator / (denominator + 1e-9)
}

/// Score-CAM's channel weights for one image: each activation channel, upsampled to the input with
/// align_corners = True bilinear and min–max scaled (+1e-8), masks the input; the masked inputs go
/// through the model 16 at a time; the weights are the softmax of their scores over channels.
func scoreCAMWeights(
    _ classifier: some CAMClassifier, image: [Float], channels d: Int, layout: ActivationLayout,
    activation act: (Int, Int) -> Float, score: ([Float]) -> Float
) throws -> [Float] {
    let s = classifier.inputSize, plane = s * s, ch = classifier.inputChannels
    let (gh, gw) = (layout.height, layout.width)
    // Interpolation taps along one axis for align_corners = True.
    func taps(_ g: Int) -> [(Int, Int, Float)] {
        (0..<s).map { o in
            let src = s == 1 ? 0 : Double(o) * Double(g - 1) / Double(s - 1)
            let i0 = min(Int(src), g - 1), i1 = min(i0 + 1, g - 1)
            return (i0, i1, Float(src - Double(i0)))
        }
    }
    let ty = taps(gh), tx = taps(gw)
    var scores = [Float](repeating: 0, count: d)
    var k0 = 0
    while k0 < d {
        let chunk = min(16, d - k0)
        var batch = [Float](repeating: 0, count: chunk * ch * plane)
        for kk in 0..<chunk {
            let k = k0 + kk
            var up = [Float](repeating: 0, count: plane)
            for oy in 0..<s {
                let (y0, y1, fy) = ty[oy]
                for ox in 0..<s {
                    let (x0, x1, fx) = tx[ox]
                    let top = act(k, y0 * gw + x0) * (1 - fx) + act(k, y0 * gw + x1) * fx
                    let bottom = act(k, y1 * gw + x0) * (1 - fx) + act(k, y1 * gw + x1) * fx
                    up[oy * s + ox] = top * (1 - fy) + bottom * fy
                }
            }
            let lo = up.min()!, hi = up.max()!
            for p in 0..<plane { up[p] = (up[p] - lo) / (hi - lo + 1e-8) }
            for c in 0..<ch { for p in 0..<plane { batch[(kk * ch + c) * plane + p] = image[c * plane + p] * up[p] } }
        }
        let logits = try classifier.logits(try Tensor(batch, shape: [chunk, ch, s, s]))
        let classes = logits.count / chunk
        for kk in 0..<chunk { scores[k0 + kk] = score(Array(logits[(kk * classes)..<((kk + 1) * classes)])) }
        k0 += chunk
    }
    let m = scores.max()!
    let e = scores.map { Foundation.exp($0 - m) }
    let z = e.reduce(0, +)
    return e.map { $0 / z }
}
