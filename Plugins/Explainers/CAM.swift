import Foundation
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

/// Runs `method` on `images` (normalised [N, 3, S, S]) with the target layer `blocks[layer].norm1`
/// (default: the last block). `targets[i]` nil: the top class. With `finer`, the score is Finer-CAM's.
public func explain(_ classifier: ViTClassifier, images: Tensor, method: BaseMethod, targets: [Int?], finer: FinerOptions?,
                    layer: Int = -1) throws -> Explanation {
    let c = classifier.config
    let n = images.shape[0]
    guard images.rank == 4, images.shape[1] == c.inChannels, images.shape[2] == c.imageSize, images.shape[3] == c.imageSize else {
        throw CAMError("images must be [N, \(c.inChannels), \(c.imageSize), \(c.imageSize)] for this model, got \(images.shape)")
    }
    let depth = c.depth
    let block = layer < 0 ? depth + layer : layer
    guard (0..<depth).contains(block) else { throw CAMError("target layer \(layer) does not exist: the model has \(depth) blocks") }
    let prefix = c.classToken ? 1 : 0
    let patches = c.tokens - prefix
    let g = Int(Double(patches).squareRoot().rounded())
    guard g * g == patches else {
        throw CAMError("the target layer has \(patches) patch tokens, which is not a square grid: cannot reshape it into an activation map")
    }
    let out = GradMode.with(true) { classifier.model.forward(Variable(images)) }
    let logits = out.logits
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
    let target = out.norm1Outputs[block]                                   // [N, T, D]
    let a = try target.value.scalars(as: Float.self)
    let d = c.width, t = c.tokens
    let da: [Float]
    var scoreWeights: [[Float]] = []
    if method == .scorecam {
        da = []
        let pixels = try images.scalars(as: Float.self)
        for i in 0..<n {
            let row = Array(y[(i * classes)..<((i + 1) * classes)])
            scoreWeights.append(try scoreCAMWeights(classifier, image: Array(pixels[(i * 3 * c.imageSize * c.imageSize)..<((i + 1) * 3 * c.imageSize * c.imageSize)]),
                                                    activations: a, item: i, grid: g, prefix: prefix, score: { logits in
                                                        finerScore(logits, target: chosen[i], comparisons: comparisons[i], finer: finer, original: row)
                                                    }))
        }
    } else {
        let grads = Autograd.gradients(of: score!.sum(), wrt: [target])[0]
        da = try grads.map { try $0.value.scalars(as: Float.self) } ?? [Float](repeating: 0, count: a.count)
    }
    var grid = [Float](repeating: 0, count: n * g * g)
    for i in 0..<n {
        var weights = [Float](repeating: 0, count: d)
        if method == .gradcam {
            for p in 0..<patches { for k in 0..<d { weights[k] += da[(i * t + prefix + p) * d + k] } }
            for k in 0..<d { weights[k] /= Float(patches) }
        } else if method == .scorecam {
            weights = scoreWeights[i]
        }
        for p in 0..<patches {
            var v: Float = 0
            let base = (i * t + prefix + p) * d
            switch method {
            case .gradcam, .scorecam: for k in 0..<d { v += weights[k] * a[base + k] }
            case .layercam: for k in 0..<d { v += max(da[base + k], 0) * a[base + k] }
            }
            grid[i * g * g + p] = max(v, 0)
        }
        minMaxScale(&grid[(i * g * g)..<((i + 1) * g * g)])
    }
    let gridT = try Tensor(grid, shape: [n, g, g])
    let s = c.imageSize
    let lowRes = Variable(try gridT.reshaped([n, 1, g, g]))
    var maps = try GradMode.disabled { lowRes.upsampleBilinear(height: s, width: s) }.value.scalars(as: Float.self)
    for i in 0..<n {
        for j in (i * s * s)..<((i + 1) * s * s) { maps[j] = max(maps[j], 0) }
        minMaxScale(&maps[(i * s * s)..<((i + 1) * s * s)])
    }
    return Explanation(grid: gridT, maps: try Tensor(maps, shape: [n, s, s]), logits: logits.value, targets: chosen, comparisons: comparisons)
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
func scoreCAMWeights(_ classifier: ViTClassifier, image: [Float], activations a: [Float], item i: Int, grid g: Int, prefix: Int,
                     score: ([Float]) -> Float) throws -> [Float] {
    let c = classifier.config, s = c.imageSize, d = c.width, t = c.tokens, plane = s * s
    // Interpolation taps along one axis for align_corners = True.
    let taps: [(Int, Int, Float)] = (0..<s).map { o in
        let src = s == 1 ? 0 : Double(o) * Double(g - 1) / Double(s - 1)
        let i0 = min(Int(src), g - 1), i1 = min(i0 + 1, g - 1)
        return (i0, i1, Float(src - Double(i0)))
    }
    var scores = [Float](repeating: 0, count: d)
    var k0 = 0
    while k0 < d {
        let chunk = min(16, d - k0)
        var batch = [Float](repeating: 0, count: chunk * 3 * plane)
        for kk in 0..<chunk {
            let k = k0 + kk
            var up = [Float](repeating: 0, count: plane)
            func act(_ y: Int, _ x: Int) -> Float { a[(i * t + prefix + y * g + x) * d + k] }
            for oy in 0..<s {
                let (y0, y1, fy) = taps[oy]
                for ox in 0..<s {
                    let (x0, x1, fx) = taps[ox]
                    let top = act(y0, x0) * (1 - fx) + act(y0, x1) * fx, bottom = act(y1, x0) * (1 - fx) + act(y1, x1) * fx
                    up[oy * s + ox] = top * (1 - fy) + bottom * fy
                }
            }
            let lo = up.min()!, hi = up.max()!
            for p in 0..<plane { up[p] = (up[p] - lo) / (hi - lo + 1e-8) }
            for ch in 0..<3 { for p in 0..<plane { batch[(kk * 3 + ch) * plane + p] = image[ch * plane + p] * up[p] } }
        }
        let logits = try GradMode.disabled { classifier.model.forward(Variable(try Tensor(batch, shape: [chunk, 3, s, s]))).logits }.value.scalars(as: Float.self)
        let classes = logits.count / chunk
        for kk in 0..<chunk { scores[k0 + kk] = score(Array(logits[(kk * classes)..<((kk + 1) * classes)])) }
        k0 += chunk
    }
    let m = scores.max()!
    let e = scores.map { Foundation.exp($0 - m) }
    let z = e.reduce(0, +)
    return e.map { $0 / z }
}
