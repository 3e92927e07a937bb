import Foundation
import Tensors

/// Differentiable Siamese Augmentation (Zhao & Bilen 2021), as the DC/DSA/DM code runs it
/// (`ParamDiffAug`: aug_mode 'S', Siamese): each call picks ONE of the strategy's transforms and
/// one set of its random parameters, shared by every image — so a real and a synthetic batch given
/// the same draw get the identical transform, and gradients flow to the synthetic pixels.
public struct DSA: Sendable {
    public var strategy = ["color", "crop", "cutout", "flip", "scale", "rotate"]
    public var scale = 1.2
    public var rotate = 15.0
    public var brightness = 1.0
    public var saturation = 2.0
    public var contrast = 0.5
    public var cropPad = 0.125
    public var cutout = 0.5

    public init() {}

    /// A transform with its random parameters fixed.
    public enum Draw: Sendable {
        /// brightness shift, saturation factor, contrast factor (applied in that order).
        case color(brightness: Float, saturation: Float, contrast: Float)
        /// out[:, p] = Σ_q in[:, q] · M[q, p] over the S·S pixels (crop, flip, scale, rotate, cutout).
        case spatial(name: String, matrix: Tensor)
    }

    public func draw(size s: Int, rng: inout SeededGenerator) -> Draw {
        let op = strategy[Int(rng.next() % UInt64(strategy.count))]
        func u() -> Float { Float(rng.nextUniform()) }
        switch op {
        case "color":
            return .color(brightness: (u() - 0.5) * Float(brightness), saturation: u() * Float(saturation), contrast: u() + Float(contrast))
        case "crop":
            let shift = Int(Double(s) * cropPad + 0.5)
            let tx = Int(rng.next() % UInt64(2 * shift + 1)) - shift, ty = Int(rng.next() % UInt64(2 * shift + 1)) - shift
            // out(y, x) = in(y + ty, x + tx), zero outside (the reference pads by one and clamps).
            return .spatial(name: "crop", matrix: Self.resample(s) { x, y in (Double(x + tx), Double(y + ty)) })
        case "cutout":
            let side = Int(Double(s) * cutout + 0.5)
            let ox = Int(rng.next() % UInt64(s + (1 - side % 2))), oy = Int(rng.next() % UInt64(s + (1 - side % 2)))
            return .spatial(
                name: "cutout",
                matrix: Tensor.make([s * s, s * s]) { m in
                    for y in 0..<s {
                        for x in 0..<s {
                            let inside = (oy - side / 2..<oy + side / 2).contains(y) && (ox - side / 2..<ox + side / 2).contains(x)
                            if !inside { m[(y * s + x) * s * s + y * s + x] = 1 }
                        }
                    }
                })
        case "flip":
            let flip = u() < 0.5
            return .spatial(name: "flip", matrix: Self.resample(s) { x, y in (Double(flip ? s - 1 - x : x), Double(y)) })
        case "scale":
            let sx = Double(u()) * (scale - 1 / scale) + 1 / scale, sy = Double(u()) * (scale - 1 / scale) + 1 / scale
            return .spatial(name: "scale", matrix: Self.affine(s, [sx, 0, 0, 0, sy, 0]))
        default:
            let theta = (Double(u()) - 0.5) * 2 * rotate / 180 * Double.pi
            return .spatial(name: "rotate", matrix: Self.affine(s, [cos(theta), sin(theta), 0, -sin(theta), cos(theta), 0]))
        }
    }

    /// Applies a draw to images [N, C, S, S].
    public static func apply(_ draw: Draw, _ x: Variable) -> Variable {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        switch draw {
        case .color(let b, let s, let k):
            var y = x + b
            let channelMean = y.mean(axis: 1, keepDims: true)
            y = (y - channelMean) * s + channelMean
            let imageMean = y.reshaped([n, c * h * w]).mean(axis: 1, keepDims: true).reshaped([n, 1, 1, 1])
            return (y - imageMean) * k + imageMean
        case .spatial(_, let m):
            return matmul(x.reshaped([n * c, h * w]), Variable(m)).reshaped([n, c, h, w])
        }
    }

    /// The matrix of bilinear sampling with zeros outside: output pixel (x, y) reads the source at
    /// `source(x, y)` (pixel coordinates).
    static func resample(_ s: Int, _ source: (Int, Int) -> (Double, Double)) -> Tensor {
        Tensor.make([s * s, s * s]) { m in
            for y in 0..<s {
                for x in 0..<s {
                    let (fx, fy) = source(x, y)
                    let x0 = Int(fx.rounded(.down)), y0 = Int(fy.rounded(.down))
                    let wx = fx - Double(x0), wy = fy - Double(y0)
                    for (dx, dy, wgt) in [(0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)), (0, 1, (1 - wx) * wy), (1, 1, wx * wy)] where wgt > 0 {
                        let sx = x0 + dx, sy = y0 + dy
                        if sx >= 0 && sx < s && sy >= 0 && sy < s { m[(sy * s + sx) * s * s + y * s + x] += Float(wgt) }
                    }
                }
            }
        }
    }

    /// `F.affine_grid(θ, align_corners=True)` + `F.grid_sample(bilinear, zeros, align_corners=True)`:
    /// normalised output coordinates (−1 … 1) mapped by θ (row-major 2×3) to source coordinates.
    static func affine(_ s: Int, _ t: [Double]) -> Tensor {
        let d = Double(s - 1)
        return resample(s) { x, y in
            let xn = -1 + 2 * Double(x) / d, yn = -1 + 2 * Double(y) / d
            let sx = t[0] * xn + t[1] * yn + t[2], sy = t[3] * xn + t[4] * yn + t[5]
            return ((sx + 1) / 2 * d, (sy + 1) / 2 * d)
        }
    }
}
