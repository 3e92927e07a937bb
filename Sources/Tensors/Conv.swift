/// Geometry of a 2-D sliding window (torch.nn.functional.unfold / conv2d conventions).
public struct Window2D: Sendable, Equatable {
    public var kernel: (Int, Int)
    public var stride: (Int, Int) = (1, 1)
    public var padding: (Int, Int) = (0, 0)
    public var dilation: (Int, Int) = (1, 1)

    public init(kernel: (Int, Int), stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    public func outputSize(_ h: Int, _ w: Int) -> (Int, Int) {
        (
            (h + 2 * padding.0 - dilation.0 * (kernel.0 - 1) - 1) / stride.0 + 1,
            (w + 2 * padding.1 - dilation.1 * (kernel.1 - 1) - 1) / stride.1 + 1
        )
    }

    public static func == (a: Window2D, b: Window2D) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation
    }
}

/// Visits im2col for input [n, c, h, w] as runs: `body(i, j, count, step)` covers the image elements
/// i, i + step, … (count of them) and the column elements j, j + 1, … of the [N, C·kh·kw, L]
/// columns. Taps in the zero padding are skipped; with stride 1 every run is contiguous.
@inline(__always)
func forEachWindowRun(n: Int, c: Int, h: Int, w wd: Int, _ w: Window2D, _ body: (Int, Int, Int, Int) -> Void) {
    let (oh, ow) = w.outputSize(h, wd)
    let (kh, kw) = w.kernel, l = oh * ow
    let (sy, sx) = w.stride, (py, px) = w.padding, (dy, dx) = w.dilation
    for b in 0..<n {
        for ch in 0..<c {
            for ky in 0..<kh {
                for kx in 0..<kw {
                    let row = ((b * c + ch) * kh + ky) * kw + kx
                    // ox with 0 ≤ ox·sx − px + kx·dx < wd.
                    let offset = kx * dx - px
                    let lo = offset >= 0 ? 0 : (-offset + sx - 1) / sx
                    let hi = Swift.min(ow, wd - offset <= 0 ? 0 : (wd - offset - 1) / sx + 1)
                    guard lo < hi else { continue }
                    for oy in 0..<oh {
                        let iy = oy * sy - py + ky * dy
                        guard iy >= 0 && iy < h else { continue }
                        body(((b * c + ch) * h + iy) * wd + lo * sx + offset, row * l + oy * ow + lo, hi - lo, sx)
                    }
                }
            }
        }
    }
}

/// im2col: [N, C, H, W] → [N, C·kh·kw, L] with L = oh·ow (zero padding outside the image).
func unfoldForward(_ x: Tensor, _ w: Window2D) -> Tensor {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (oh, ow) = w.outputSize(h, wd)
    let p = x.fp
    return Tensor.make([n, c * w.kernel.0 * w.kernel.1, oh * ow]) { o in
        forEachWindowRun(n: n, c: c, h: h, w: wd, w) { i, j, count, step in
            if step == 1 { (o + j).update(from: p + i, count: count) } else { for t in 0..<count { o[j + t] = p[i + t * step] } }
        }
    }
}

/// col2im, the adjoint of `unfoldForward`: sums columns back into [N, C, H, W].
func foldForward(_ cols: Tensor, channels c: Int, height h: Int, width wd: Int, _ w: Window2D) -> Tensor {
    let n = cols.shape[0]
    let p = cols.fp
    return Tensor.make([n, c, h, wd]) { o in
        forEachWindowRun(n: n, c: c, h: h, w: wd, w) { i, j, count, step in
            for t in 0..<count { o[i + t * step] += p[j + t] }
        }
    }
}

extension Variable {
    /// Sliding windows as columns: [N, C, H, W] → [N, C·kh·kw, oh·ow] (torch `F.unfold`).
    public func unfold(_ w: Window2D) -> Variable {
        let (c, h, wd) = (shape[1], shape[2], shape[3])
        return record("unfold", unfoldForward(value, w), [self]) { g in [g.fold(channels: c, height: h, width: wd, w)] }
    }

    /// Columns back to an image, summing overlaps (torch `F.fold`); the adjoint of `unfold`.
    public func fold(channels c: Int, height h: Int, width wd: Int, _ w: Window2D) -> Variable {
        record("fold", foldForward(value, channels: c, height: h, width: wd, w), [self]) { g in [g.unfold(w)] }
    }

    /// The slice `range` of `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Variable {
        let a = axis < 0 ? shape.count + axis : axis
        let outer = shape[..<a].reduce(1, *), len = shape[a], inner = shape[(a + 1)...].reduce(1, *)
        var outShape = shape
        outShape[a] = range.count
        let p = value.fp
        let out = Tensor.make(outShape) { o in
            for i in 0..<outer {
                (o + i * range.count * inner).update(from: p + (i * len + range.lowerBound) * inner, count: range.count * inner)
            }
        }
        let original = shape
        return record("slice", out, [self]) { g in [g.padded(axis: a, before: range.lowerBound, total: original[a])] }
    }

    /// Places self at `before` in a zero tensor of length `total` along `axis` (the adjoint of slice).
    func padded(axis a: Int, before: Int, total: Int) -> Variable {
        let outer = shape[..<a].reduce(1, *), len = shape[a], inner = shape[(a + 1)...].reduce(1, *)
        var outShape = shape
        outShape[a] = total
        let p = value.fp
        let out = Tensor.make(outShape) { o in
            for i in 0..<outer { (o + (i * total + before) * inner).update(from: p + i * len * inner, count: len * inner) }
        }
        return record("pad", out, [self]) { g in [g.slice(axis: a, before..<(before + len))] }
    }

    /// Rows of a [V, D] table at `indices` → [indices.count, D] (embedding lookup).
    public func gatherRows(_ indices: [Int]) -> Variable {
        let v = shape[0], d = count / Swift.max(v, 1)
        precondition(indices.allSatisfy { (0..<v).contains($0) }, "row index outside 0..<\(v)")
        let p = value.fp
        let out = Tensor.make([indices.count] + shape.dropFirst()) { o in
            for (i, r) in indices.enumerated() { (o + i * d).update(from: p + r * d, count: d) }
        }
        return record("gather", out, [self]) { g in [g.scatterAddRows(indices, rows: v)] }
    }

    /// Adds row i of self into row indices[i] of a zero [rows, D] table (the adjoint of gatherRows).
    func scatterAddRows(_ indices: [Int], rows v: Int) -> Variable {
        let d = count / Swift.max(indices.count, 1)
        let p = value.fp
        let out = Tensor.make([v] + shape.dropFirst()) { o in
            for (i, r) in indices.enumerated() { for j in 0..<d { o[r * d + j] += p[i * d + j] } }
        }
        return record("scatter", out, [self]) { g in [g.gatherRows(indices)] }
    }
}

/// Joins along `axis`.
public func concat(_ parts: [Variable], axis: Int) -> Variable {
    precondition(!parts.isEmpty, "concat of nothing")
    let r = parts[0].shape.count, a = axis < 0 ? r + axis : axis
    var shape = parts[0].shape
    shape[a] = parts.map { $0.shape[a] }.reduce(0, +)
    let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
    let out = Tensor.make(shape) { o in
        var offset = 0
        for part in parts {
            let len = part.shape[a], p = part.value.fp
            for i in 0..<outer { (o + (i * shape[a] + offset) * inner).update(from: p + i * len * inner, count: len * inner) }
            offset += len
        }
    }
    return record("concat", out, parts) { g in
        var start = 0
        return parts.enumerated().map { i, part in
            defer { start += part.shape[a] }
            return Autograd.needsGradient(i) ? g.slice(axis: a, start..<(start + part.shape[a])) : nil
        }
    }
}

/// 2-D convolution (torch `F.conv2d`): x [N, C, H, W], weight [O, C/groups, kh, kw], bias [O].
/// im2col + one matrix product per group, so it is differentiable to any order; with
/// oneDNN as the backend (the default where it loads), oneDNN's direct convolutions where `OneDNNConv.pays` (also
/// differentiable to any order).
public func conv2d(
    _ x: Variable, weight: Variable, bias: Variable?, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
    dilation: (Int, Int) = (1, 1), groups: Int = 1
) -> Variable {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, cg, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
    precondition(c == cg * groups && o % groups == 0, "conv2d: input channels \(c), weight \(weight.shape), groups \(groups) do not fit")
    let window = Window2D(kernel: (kh, kw), stride: stride, padding: padding, dilation: dilation)
    let geometry = OneDNNConv.Geometry(n: n, c: c, h: h, w: w, o: o, window: window, groups: groups)
    // Inference where our banded / Winograd path pays (large images: the SD VAE) stays ours: oneDNN was
    // measured on ConvNet-3's shapes only.
    let inferencePath = groups == 1 && !GradMode.enabled && conv2dInferencePays(channels: c, outputs: o, height: h, width: w, window)
    if !inferencePath && OneDNNConv.routes(geometry), let y = conv2dOneDNN(x, weight: weight, bias: bias, geometry) { return y }
    return conv2dComposite(x, weight: weight, bias: bias, window, groups: groups)
}

/// `conv2d` through our own kernels: im2col + one product per group (recorded), or
/// `conv2dInference` without recording where it pays.
func conv2dComposite(_ x: Variable, weight: Variable, bias: Variable?, _ window: Window2D, groups: Int) -> Variable {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, cg, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
    if groups == 1 && !GradMode.enabled && conv2dInferencePays(channels: c, outputs: o, height: h, width: w, window) {
        return Variable(conv2dInference(x.value, weight: weight.value, bias: bias?.value, window))
    }
    let (oh, ow) = window.outputSize(h, w)
    let og = o / groups
    var outs: [Variable] = []
    for gi in 0..<groups {
        let xg = groups == 1 ? x : x.slice(axis: 1, (gi * cg)..<((gi + 1) * cg))
        let wg = groups == 1 ? weight : weight.slice(axis: 0, (gi * og)..<((gi + 1) * og))
        let cols = xg.unfold(window) // [N, cg·kh·kw, L]
        outs.append(matmulShared(wg.reshaped([og, cg * kh * kw]), cols)) // [N, og, L]
    }
    var y = (groups == 1 ? outs[0] : concat(outs, axis: 1)).reshaped([n, o, oh, ow])
    if let bias { y = y + bias.reshaped([1, o, 1, 1]) }
    return y
}

/// 1-D convolution: x [N, C, L], weight [O, C/groups, k] (a 2-D convolution of height 1).
public func conv1d(_ x: Variable, weight: Variable, bias: Variable?, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) -> Variable {
    let y = conv2d(
        x.reshaped([x.shape[0], x.shape[1], 1, x.shape[2]]),
        weight: weight.reshaped([weight.shape[0], weight.shape[1], 1, weight.shape[2]]), bias: bias,
        stride: (1, stride), padding: (0, padding), dilation: (1, dilation), groups: groups)
    return y.reshaped([y.shape[0], y.shape[1], y.shape[3]])
}

extension Variable {
    /// Average pooling over k×k windows with stride s (no padding): [N, C, H, W] → [N, C, oh, ow].
    public func avgPool2d(kernel k: Int, stride s: Int? = nil) -> Variable {
        if (s ?? k) == k { return avgPoolTiles(k) }
        return pool(k, s ?? k).mean(axis: 1).reshaped(pooledShape(k, s ?? k))
    }

    /// Average pooling over non-overlapping k×k tiles (a remainder that fills no tile is dropped),
    /// a direct kernel; its adjoint spreads each output back over its tile, and each is the other's
    /// backward, so the pair is differentiable to any order.
    func avgPoolTiles(_ k: Int) -> Variable {
        let (h, w) = (shape[2], shape[3])
        let (oh, ow) = (h / k, w / k)
        let planes = shape[0] * shape[1]
        let x = value.fp, scale = 1 / Float(k * k)
        let out = Tensor.makeUninitialized([shape[0], shape[1], oh, ow]) { o in
            Parallel.chunks(planes, grain: Swift.max(1, (1 << 15) / Swift.max(h * w, 1))) { range in
                for p in range {
                    let xp = x + p * h * w, op = o + p * oh * ow
                    for oy in 0..<oh {
                        let orow = op + oy * ow
                        for ox in 0..<ow { orow[ox] = 0 }
                        for ky in 0..<k {
                            let xrow = xp + (oy * k + ky) * w
                            for ox in 0..<ow {
                                var acc: Float = 0
                                for kx in 0..<k { acc += xrow[ox * k + kx] }
                                orow[ox] += acc
                            }
                        }
                        for ox in 0..<ow { orow[ox] *= scale }
                    }
                }
            }
        }
        return record("avgPool", out, [self]) { g in [g.avgPoolTilesAdjoint(k, height: h, width: w)] }
    }

    /// The adjoint of `avgPoolTiles`: [N, C, oh, ow] → [N, C, h, w], each value / k² over its tile.
    func avgPoolTilesAdjoint(_ k: Int, height h: Int, width w: Int) -> Variable {
        let (oh, ow) = (shape[2], shape[3])
        let planes = shape[0] * shape[1]
        let g = value.fp, scale = 1 / Float(k * k)
        let out = Tensor.make([shape[0], shape[1], h, w]) { o in
            Parallel.chunks(planes, grain: Swift.max(1, (1 << 15) / Swift.max(h * w, 1))) { range in
                for p in range {
                    let gp = g + p * oh * ow, op = o + p * h * w
                    for iy in 0..<(oh * k) {
                        let grow = gp + (iy / k) * ow, orow = op + iy * w
                        for ix in 0..<(ow * k) { orow[ix] = grow[ix / k] * scale }
                    }
                }
            }
        }
        return record("avgPoolT", out, [self]) { g in [g.avgPoolTiles(k)] }
    }

    /// Max pooling over k×k windows with stride s (no padding).
    public func maxPool2d(kernel k: Int, stride s: Int? = nil) -> Variable {
        pool(k, s ?? k).max(axis: 1).reshaped(pooledShape(k, s ?? k))
    }

    func pool(_ k: Int, _ s: Int) -> Variable {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        return reshaped([n * c, 1, h, w]).unfold(Window2D(kernel: (k, k), stride: (s, s))) // [N·C, k·k, L]
    }

    func pooledShape(_ k: Int, _ s: Int) -> [Int] {
        let (oh, ow) = Window2D(kernel: (k, k), stride: (s, s)).outputSize(shape[2], shape[3])
        return [shape[0], shape[1], oh, ow]
    }

    /// Bilinear resize of [N, C, H, W] to [N, C, outH, outW] with align_corners=False (torch
    /// `F.interpolate(mode="bilinear")` without antialias), as two products with constant matrices.
    public func upsampleBilinear(height oh: Int, width ow: Int) -> Variable {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let rows = Variable(interpolationMatrix(from: h, to: oh)) // [oh, h]
        let cols = Variable(interpolationMatrix(from: w, to: ow)) // [ow, w]
        let x = matmul(reshaped([n * c * h, w]), cols, transposeB: true) // [N·C·H, ow]
        let t = x.reshaped([n * c, h, ow]).transposed().reshaped([n * c * ow, h]) // [N·C·ow, h]
        let y = matmul(t, rows, transposeB: true).reshaped([n * c, ow, oh]).transposed()
        return y.reshaped([n, c, oh, ow])
    }
}

/// Linear interpolation weights [out, in] with half-pixel centres (align_corners=False).
func interpolationMatrix(from n: Int, to m: Int) -> Tensor {
    Tensor.make([m, n]) { o in
        let scale = Double(n) / Double(m)
        for i in 0..<m {
            var src = (Double(i) + 0.5) * scale - 0.5
            if src < 0 { src = 0 }
            let i0 = Swift.min(Int(src), n - 1), i1 = Swift.min(i0 + 1, n - 1)
            let frac = Float(src - Double(i0))
            o[i * n + i0] += 1 - frac
            o[i * n + i1] += frac
        }
    }
}

/// C[b] = A · B[b] for a shared A [m, k] and a batch B [N, k, n] → [N, m, n] (one sgemm per item,
/// no transposed copies). Its gradients are again `matmulShared` and `matmulSumNT`, so the pair is
/// differentiable to any order; convolution is built on it.
public func matmulShared(_ a: Variable, _ b: Variable) -> Variable {
    let (m, k) = (a.shape[0], a.shape[1])
    let (batch, k2, n) = (b.shape[0], b.shape[1], b.shape[2])
    precondition(a.shape.count == 2 && b.shape.count == 3 && k == k2, "matmulShared: \(a.shape) × \(b.shape)")
    let out = Tensor.make([batch, m, n]) { o in
        GEMM.batched(
            batch: batch, m: m, n: n, k: k, a: a.value.fp, lda: k, strideA: 0, b: b.value.fp, ldb: n, strideB: k * n,
            c: o, ldc: n, strideC: m * n)
    }
    return record("matmulShared", out, [a, b]) { g in
        [Autograd.needsGradient(0) ? matmulSumNT(g, b) : nil, Autograd.needsGradient(1) ? matmulShared(a.transposed(), g) : nil]
    }
}

/// Σ_b X[b] · Y[b]ᵀ for X [N, m, n] and Y [N, k, n] → [m, k] (the weight gradient of a convolution).
public func matmulSumNT(_ x: Variable, _ y: Variable) -> Variable {
    let (batch, m, n) = (x.shape[0], x.shape[1], x.shape[2])
    let k = y.shape[1]
    precondition(y.shape.count == 3 && y.shape[0] == batch && y.shape[2] == n, "matmulSumNT: \(x.shape) · \(y.shape)ᵀ")
    let out = Tensor.make([m, k]) { o in GEMM.sumOfProductsNT(batch: batch, m: m, n: k, k: n, a: x.value.fp, b: y.value.fp, c: o) }
    return record("matmulSumNT", out, [x, y]) { g in
        [Autograd.needsGradient(0) ? matmulShared(g, y) : nil, Autograd.needsGradient(1) ? matmulShared(g.transposed(), x) : nil]
    }
}

/// Whether a 3×3, stride-1, padding-1 convolution goes through Winograd (`conv3x3Winograd`): at least
/// 16 channels in and out, and 16 products per band large enough to run near sgemm's rate (outputs ×
/// channels × tiles ≥ 2^24 multiply-adds — the SD VAE's convolutions; not ConvNet-3's 128 channels at
/// 32 × 32, where products of 128 × 256 × 128 per image made it slower than im2col: measured 635 vs
/// 583 ms for a batch of 256).
func winogradPays(channels c: Int, outputs o: Int, height h: Int, width w: Int, _ window: Window2D) -> Bool {
    window.kernel == (3, 3) && window.stride == (1, 1) && window.padding == (1, 1) && window.dilation == (1, 1) && c >= 16 && o >= 16
        && winogradProductSize(channels: c, outputs: o, height: h, width: w) >= 1 << 24
}

/// Whether `conv2d` without recording takes `conv2dInference`: for Winograd, or when the output has at
/// least 4,096 pixels (64 × 64). Below that the whole batch's im2col is small and the recorded path's
/// unfold + one product per image is as fast or faster (8 × 8 × 128 channels, batch 8: 1.3–2.0 ms
/// against 1.9–8.6 ms for the banded path, whose per-image products are too thin for two threads).
func conv2dInferencePays(channels c: Int, outputs o: Int, height h: Int, width w: Int, _ window: Window2D) -> Bool {
    let (oh, ow) = window.outputSize(h, w)
    return winogradPays(channels: c, outputs: o, height: h, width: w, window) || oh * ow >= 4096
}

/// The forward of `conv2d` (groups 1) without recording, for inference: the bias written first, then
/// per image the output computed in bands of about 1,024 output pixels (whole rows) — each band's
/// im2col columns built in a buffer and multiplied into the band's columns of the output (beta 1).
/// Measured on the SD VAE decoder at 256 px: bands of 1,024 columns 3.8–3.9 s, 2,048 3.9–4.2 s,
/// 8,192 4.5–5.0 s, the whole image at once (300 MB of columns) 5.8–6.0 s. A 1×1 convolution with stride 1 and no padding is a single
/// sgemm on the image itself; a 3×3 with stride 1 and padding 1 goes through Winograd's F(2×2, 3×3)
/// when `winogradPays`. Equal to `conv2d`'s unfold + product
/// up to float rounding.
public func conv2dInference(_ x: Tensor, weight: Tensor, bias: Tensor?, _ w: Window2D) -> Tensor {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, kh, kw) = (weight.shape[0], weight.shape[2], weight.shape[3])
    let (oh, ow) = w.outputSize(h, wd)
    let l = oh * ow, k = c * kh * kw
    if winogradPays(channels: c, outputs: o, height: h, width: wd, w) { return conv3x3Winograd(x, weight: weight, bias: bias) }
    let xp = x.fp, wp = weight.fp, bp = bias?.fp
    return Tensor.makeUninitialized([n, o, oh, ow]) { out in
        guard l > 0, o > 0 else { return }
        for i in 0..<(n * o) {
            let row = out + i * l
            if let bp { row.update(repeating: bp[i % o], count: l) } else { row.update(repeating: 0, count: l) }
        }
        let pointwise = kh == 1 && kw == 1 && w.stride == (1, 1) && w.padding == (0, 0)
        if pointwise {
            for b in 0..<n {
                GEMM.sgemm(m: o, n: l, k: c, a: wp, lda: c, b: xp + b * c * h * wd, ldb: l, beta: 1, c: out + b * o * l, ldc: l)
            }
            return
        }
        let band = Swift.max(1, Swift.min(oh, 1024 / Swift.max(1, ow)))
        let cols = UnsafeMutablePointer<Float>.allocate(capacity: k * band * ow)
        defer { cols.deallocate() }
        let (sy, sx) = w.stride, (py, px) = w.padding, (dy, dx) = w.dilation
        for b in 0..<n {
            let image = xp + b * c * h * wd
            var y0 = 0
            while y0 < oh {
                let rows = Swift.min(band, oh - y0), width = rows * ow
                // cols[(ch·kh + ky)·kw + kx, (oy − y0)·ow + ox] = x[ch, oy·sy − py + ky·dy, ox·sx − px + kx·dx] (0 outside).
                Parallel.chunks(k, grain: Swift.max(1, 4096 / Swift.max(width, 1))) { range in
                    for r in range {
                        let kx = r % kw, ky = (r / kw) % kh, ch = r / (kw * kh)
                        let dst = cols + r * width
                        let offset = kx * dx - px
                        let lo = Swift.min(ow, offset >= 0 ? 0 : (-offset + sx - 1) / sx)
                        let hi = Swift.max(lo, Swift.min(ow, wd - offset <= 0 ? 0 : (wd - offset - 1) / sx + 1))
                        for t in 0..<rows {
                            let d = dst + t * ow
                            let iy = (y0 + t) * sy - py + ky * dy
                            guard iy >= 0 && iy < h else {
                                d.update(repeating: 0, count: ow)
                                continue
                            }
                            if lo > 0 { d.update(repeating: 0, count: lo) }
                            if hi < ow { (d + hi).update(repeating: 0, count: ow - hi) }
                            let src = image + (ch * h + iy) * wd + offset
                            if sx == 1 {
                                (d + lo).update(from: src + lo, count: hi - lo)
                            } else {
                                for ox in lo..<hi { d[ox] = src[ox * sx] }
                            }
                        }
                    }
                }
                GEMM.sgemm(m: o, n: width, k: k, a: wp, lda: k, b: cols, ldb: width, beta: 1, c: out + b * o * l + y0 * ow, ldc: l)
                y0 += rows
            }
        }
    }
}
