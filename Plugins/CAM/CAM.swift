import Foundation
import NN
import Tensors
import Vision

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

/// The score S_i whose gradient (or, for Score-CAM, whose value on masked inputs) weights the
/// activations of image i, as a function of its logits y_i [C].
public enum CAMTarget {
    /// S_i = y_{i,t_i}: the target class's logit (pytorch-grad-cam's ClassifierOutputTarget).
    case classes
    /// S_i = Σ_c w_ic·y_ic with w [N, C] row-major (pytorch-grad-cam's linear targets).
    case weights([Float])
    /// A nonlinear target: `score(logits [M, C], reference [M, C], targets [M])` returns S of each
    /// row and ∂S/∂y [M, C] (the reference rows are each row's unmasked logits; gradient CAMs call it
    /// once with the unmasked logits, Score-CAM once per image with its masked batches).
    case scorer((_ logits: Tensor, _ reference: Tensor, _ targets: [Int]) throws -> (scores: [Float], gradients: [Float]))
}

/// What an explanation returns per image.
public struct Explanation: Sendable {
    /// [N, h, w]: ReLU, then min–max scaled (with pytorch-grad-cam's 1e-7), before resizing.
    public var grid: Tensor
    /// [N, S, S]: the grid resized (bilinear, half-pixel centres as cv2.resize) and min–max scaled again.
    public var maps: Tensor
    /// [N, C]: the unmasked logits.
    public var logits: Tensor
    public var targets: [Int]
}

/// Runs `method` on `images` (normalised [N, C, S, S]) with the target layer `layer` (ViT:
/// `blocks[layer].norm1` output; ConvNet: block `layer`'s ReLU output; default the last).
/// `targets[i]` nil: the top class. `target`: the score S (default: the target class's logit).
public func explain(
    _ classifier: some CAMClassifier, images: Tensor, method: BaseMethod, targets: [Int?], target scoreTarget: CAMTarget = .classes,
    layer: Int = -1
) throws -> Explanation {
    let n = images.shape[0], size = classifier.inputSize
    guard images.rank == 4, images.shape[1] == classifier.inputChannels, images.shape[2] == size, images.shape[3] == size else {
        throw CAMError("images must be [N, \(classifier.inputChannels), \(size), \(size)] for this model, got \(images.shape)")
    }
    let (logits, target, layout) = try classifier.forwardForCAM(Variable(images), layer: layer)
    let classes = logits.shape[1]
    let y = logits.scalars
    var chosen: [Int] = []
    for i in 0..<n {
        let row = Array(y[(i * classes)..<((i + 1) * classes)])
        if let given = targets[i] {
            guard (0..<classes).contains(given) else { throw CAMError("target class \(given) is outside 0..<\(classes)") }
            chosen.append(given)
        } else {
            chosen.append(row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!)
        }
    }
    if case .weights(let w) = scoreTarget, w.count != n * classes {
        throw CAMError("target_weights must be [\(n), \(classes)] (one weight per image and class), got \(w.count) values")
    }
    // ∂S/∂y at the unmasked logits [N, C]: the gradient CAMs backpropagate Σ_i Σ_c g_ic·y_ic.
    func logitGradients() throws -> [Float] {
        switch scoreTarget {
        case .classes:
            var g = [Float](repeating: 0, count: n * classes)
            for i in 0..<n { g[i * classes + chosen[i]] = 1 }
            return g
        case .weights(let w): return w
        case .scorer(let score):
            let value = logits.value
            let (_, g) = try score(value, value, chosen)
            guard g.count == n * classes, g.allSatisfy(\.isFinite) else {
                throw CAMError("the scorer returned \(g.count) gradient values (finite ones needed: [\(n), \(classes)])")
            }
            return g
        }
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
            let masked = try scoreCAMLogits(
                classifier, image: Array(pixels[(i * per)..<((i + 1) * per)]), channels: d, layout: layout,
                activation: { k, p in a[at(i, k, p)] })
            // The score of each masked output row.
            let scores: [Float]
            switch scoreTarget {
            case .classes: scores = (0..<d).map { masked[$0 * classes + chosen[i]] }
            case .weights(let w):
                scores = (0..<d).map { k in (0..<classes).reduce(Float(0)) { $0 + w[i * classes + $1] * masked[k * classes + $1] } }
            case .scorer(let score):
                let reference = try Tensor((0..<d).flatMap { _ in row }, shape: [d, classes])
                scores = try score(try Tensor(masked, shape: [d, classes]), reference, Array(repeating: chosen[i], count: d)).scores
                guard scores.count == d, scores.allSatisfy(\.isFinite) else {
                    throw CAMError("the scorer returned \(scores.count) scores for \(d) masked inputs (finite ones needed)")
                }
            }
            let m = scores.max()!
            let e = scores.map { Foundation.exp($0 - m) }
            let z = e.reduce(0, +)
            scoreWeights.append(e.map { $0 / z })
        }
    } else {
        let g = try Tensor(try logitGradients(), shape: [n, classes])
        let grads = Autograd.gradients(of: (Variable(g) * logits).sum(), wrt: [target])[0]
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
    return Explanation(grid: gridT, maps: maps, logits: logits.value, targets: chosen)
}

/// Score-CAM's masked outputs for one image: each activation channel, upsampled to the input with
/// align_corners = True bilinear and min–max scaled (+1e-8), masks the input; the masked inputs go
/// through the model 16 at a time. Returns their logits [d × C] (the weights are the softmax over
/// channels of their scores).
func scoreCAMLogits(
    _ classifier: some CAMClassifier, image: [Float], channels d: Int, layout: ActivationLayout,
    activation act: (Int, Int) -> Float
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
    var out: [Float] = []
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
        out += try classifier.logits(try Tensor(batch, shape: [chunk, ch, s, s]))
        k0 += chunk
    }
    return out
}
