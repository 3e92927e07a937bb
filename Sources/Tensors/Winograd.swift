/// 3×3 convolution with stride 1 and padding 1 by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
/// Gray 2016), for inference: every 2×2 block of outputs comes from a 4×4 input tile d and the
/// 3×3 filter g as Y = Aᵀ[Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)]A, i.e. 16 multiplications per channel pair where
/// the direct sum takes 36 — 2.25× fewer flops. The channel sums are 16 matrix products
/// M[ξ] = U[ξ] · V[ξ] (U[ξ]: [O, C] filter elements, V[ξ]: [C, tiles] input elements), through sgemm.
/// The transforms (correlation, as torch's conv2d):
///   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
///   Aᵀ = [1 1 1 0; 0 1 −1 −1].
/// The result equals the direct convolution up to float rounding (the transforms add a few
/// roundings; relative error ~1e-6 on unit-scale data). Tiles are processed in bands of whole tile
/// rows (about 16 MB of transformed input or output at a time); odd sizes are zero-padded and the
/// extra outputs dropped.
public func conv3x3Winograd(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let o = weight.shape[0]
    let (tilesY, tilesX) = ((h + 1) / 2, (w + 1) / 2)
    let xp = x.fp, wp = weight.fp, bp = bias?.fp
    // U[ξ][o][c] = (G g Gᵀ)[ξ] for filter g = weight[o, c].
    let u = UnsafeMutablePointer<Float>.allocate(capacity: 16 * o * c)
    defer { u.deallocate() }
    Parallel.chunks(o * c, grain: 256) { range in
        for oc in range {
            let g = wp + oc * 9
            // G g (4 × 3, as four rows over the filter's columns), then (G g) Gᵀ row by row.
            let g0 = SIMD4<Float>(g[0], g[1], g[2], 0), g1 = SIMD4<Float>(g[3], g[4], g[5], 0), g2 = SIMD4<Float>(g[6], g[7], g[8], 0)
            let gRows = (g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2)
            func store(_ i: Int, _ r: SIMD4<Float>) {
                u[(4 * i) * o * c + oc] = r[0]
                u[(4 * i + 1) * o * c + oc] = 0.5 * (r[0] + r[1] + r[2])
                u[(4 * i + 2) * o * c + oc] = 0.5 * (r[0] - r[1] + r[2])
                u[(4 * i + 3) * o * c + oc] = r[2]
            }
            store(0, gRows.0)
            store(1, gRows.1)
            store(2, gRows.2)
            store(3, gRows.3)
        }
    }
    let bandRows = winogradBandRows(channels: c, outputs: o, height: h, width: w)
    let most = bandRows * tilesX
    let v = UnsafeMutablePointer<Float>.allocate(capacity: 16 * c * most)
    let m = UnsafeMutablePointer<Float>.allocate(capacity: 16 * o * most)
    defer {
        v.deallocate()
        m.deallocate()
    }
    let box = UncheckedBox((v, m))
    return Tensor.makeUninitialized([n, o, h, w]) { out in
        let outBox = UncheckedBox(out)
        for b in 0..<n {
            let image = xp + b * c * h * w
            var ty0 = 0
            while ty0 < tilesY {
                let rows = Swift.min(bandRows, tilesY - ty0), t = rows * tilesX
                // V[ξ][ch][tile] = (Bᵀ d B)[ξ] for the 4×4 tile at input rows 2ty − 1 …, columns 2tx − 1 ….
                Parallel.chunks(c, grain: 1) { range in
                    let v = box.value.0
                    for ch in range {
                        let plane = image + ch * h * w
                        for r in 0..<rows {
                            let y0 = 2 * (ty0 + r) - 1
                            for tx in 0..<tilesX {
                                let x0 = 2 * tx - 1
                                func load(_ i: Int) -> SIMD4<Float> {
                                    let y = y0 + i
                                    guard y >= 0 && y < h else { return SIMD4() }
                                    let p = plane + y * w
                                    if x0 >= 0 && x0 + 3 < w { return SIMD4(p[x0], p[x0 + 1], p[x0 + 2], p[x0 + 3]) }
                                    var q = SIMD4<Float>()
                                    for k in 0..<4 where x0 + k >= 0 && x0 + k < w { q[k] = p[x0 + k] }
                                    return q
                                }
                                let d0 = load(0), d1 = load(1), d2 = load(2), d3 = load(3)
                                // Bᵀ d: rows d0 − d2, d1 + d2, d2 − d1, d1 − d3; then (Bᵀ d) B: the same on columns.
                                let idx = ch * t + r * tilesX + tx
                                func store(_ i: Int, _ row: SIMD4<Float>) {
                                    let base = 4 * i * c * t + idx
                                    v[base] = row[0] - row[2]
                                    v[base + c * t] = row[1] + row[2]
                                    v[base + 2 * c * t] = row[2] - row[1]
                                    v[base + 3 * c * t] = row[1] - row[3]
                                }
                                store(0, d0 - d2)
                                store(1, d1 + d2)
                                store(2, d2 - d1)
                                store(3, d1 - d3)
                            }
                        }
                    }
                }
                for xi in 0..<16 {
                    GEMM.sgemm(m: o, n: t, k: c, a: u + xi * o * c, lda: c, b: v + xi * c * t, ldb: t, c: m + xi * o * t, ldc: t)
                }
                // Y = Aᵀ M A for each output channel and tile, plus the bias; edges beyond h × w dropped.
                Parallel.chunks(o, grain: 1) { range in
                    let m = box.value.1, out = outBox.value
                    for oc in range {
                        let plane = out + (b * o + oc) * h * w
                        let shift = bp?[oc] ?? 0
                        for r in 0..<rows {
                            for tx in 0..<tilesX {
                                let idx = oc * t + r * tilesX + tx
                                func row(_ i: Int) -> SIMD4<Float> {
                                    let base = 4 * i * o * t + idx
                                    return SIMD4(m[base], m[base + o * t], m[base + 2 * o * t], m[base + 3 * o * t])
                                }
                                let mm = (row(0), row(1), row(2), row(3))
                                let top = mm.0 + mm.1 + mm.2, bottom = mm.1 - mm.2 - mm.3
                                let y = 2 * (ty0 + r), xx = 2 * tx
                                plane[y * w + xx] = top[0] + top[1] + top[2] + shift
                                if xx + 1 < w { plane[y * w + xx + 1] = top[1] - top[2] - top[3] + shift }
                                if y + 1 < h {
                                    plane[(y + 1) * w + xx] = bottom[0] + bottom[1] + bottom[2] + shift
                                    if xx + 1 < w { plane[(y + 1) * w + xx + 1] = bottom[1] - bottom[2] - bottom[3] + shift }
                                }
                            }
                        }
                    }
                }
                ty0 += rows
            }
        }
    }
}

/// Tile rows per band: about 4 Mi floats of transformed input or output (16 × channels × tiles).
func winogradBandRows(channels c: Int, outputs o: Int, height h: Int, width w: Int) -> Int {
    let (tilesY, tilesX) = ((h + 1) / 2, (w + 1) / 2)
    return Swift.max(1, Swift.min(tilesY, (1 << 22) / Swift.max(1, 16 * Swift.max(c, o) * tilesX)))
}

/// Multiply-adds in each of a band's 16 products (outputs × channels × tiles).
func winogradProductSize(channels c: Int, outputs o: Int, height h: Int, width w: Int) -> Int {
    o * c * winogradBandRows(channels: c, outputs: o, height: h, width: w) * ((w + 1) / 2)
}
