/// Shape arithmetic and the strided loops behind broadcasting ops (numpy rules: shapes align on
/// the right; a dimension of 1 stretches).
enum Shapes {
    static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc *= shape[i]
        }
        return s
    }

    static func broadcast(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = max(a.count, b.count)
        let pa = [Int](repeating: 1, count: r - a.count) + a, pb = [Int](repeating: 1, count: r - b.count) + b
        var out: [Int] = []
        for (x, y) in zip(pa, pb) {
            if x == y || y == 1 { out.append(x) } else if x == 1 { out.append(y) } else { return nil }
        }
        return out
    }

    /// Strides of `shape` read as `target` (right-aligned; 0 where `shape` has 1 or lacks the dim).
    static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let padded = [Int](repeating: 1, count: target.count - shape.count) + shape
        let s = strides(padded)
        return zip(padded, zip(s, target)).map { d, st in d == 1 && st.1 != 1 ? 0 : st.0 }
    }

    /// Calls `body(offsetA, offsetB, outStart, count, strideA, strideB)` once per innermost row
    /// of `shape`, so that inner loops run over contiguous (or constant) memory.
    @inline(__always)
    static func forEachRow(_ shape: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int, Int, Int, Int) -> Void) {
        let r = shape.count
        if r == 0 {
            body(0, 0, 0, 1, 0, 0)
            return
        }
        let inner = shape[r - 1]
        let rows = shape.dropLast().reduce(1, *)
        if inner == 0 || rows == 0 { return }
        var index = [Int](repeating: 0, count: max(r - 1, 0))
        var oa = 0, ob = 0
        for row in 0..<rows {
            body(oa, ob, row * inner, inner, sa[r - 1], sb[r - 1])
            var d = r - 2
            while d >= 0 {
                index[d] += 1
                oa += sa[d]
                ob += sb[d]
                if index[d] < shape[d] { break }
                oa -= sa[d] * shape[d]
                ob -= sb[d] * shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }
}

extension Tensor {
    /// A zeroed float32 tensor filled by `body` through a pointer to its elements.
    public static func make(_ shape: [Int], _ body: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        var t = Tensor(zeros: .float32, shape: shape)
        t.withUnsafeMutableBytes { body($0.baseAddress!.assumingMemoryBound(to: Float.self)) }
        return t
    }

    /// Pointer to the float32 elements (the storage must stay alive while it is used).
    var fp: UnsafePointer<Float> { UnsafePointer(storage.bytes.assumingMemoryBound(to: Float.self)) }
}

/// Elementwise binary kernel with broadcasting.
@inline(__always)
func broadcastBinary(_ a: Tensor, _ b: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
    if a.shape == b.shape {
        let pa = a.fp, pb = b.fp
        return Tensor.makeUninitialized(a.shape) { o in for i in 0..<a.count { o[i] = f(pa[i], pb[i]) } }
    }
    guard let shape = Shapes.broadcast(a.shape, b.shape) else {
        preconditionFailure("shapes \(a.shape) and \(b.shape) do not broadcast")
    }
    let sa = Shapes.broadcastStrides(a.shape, to: shape), sb = Shapes.broadcastStrides(b.shape, to: shape)
    let pa = a.fp, pb = b.fp
    return Tensor.makeUninitialized(shape) { o in
        Shapes.forEachRow(shape, sa, sb) { oa, ob, start, n, da, db in
            // The common rows get loops the compiler can vectorise.
            if da == 1 && db == 1 {
                for i in 0..<n { o[start + i] = f(pa[oa + i], pb[ob + i]) }
            } else if da == 1 && db == 0 {
                let c = pb[ob]
                for i in 0..<n { o[start + i] = f(pa[oa + i], c) }
            } else if da == 0 && db == 1 {
                let c = pa[oa]
                for i in 0..<n { o[start + i] = f(c, pb[ob + i]) }
            } else {
                for i in 0..<n { o[start + i] = f(pa[oa + i * da], pb[ob + i * db]) }
            }
        }
    }
}

/// Sums `t` down to `shape` (the inverse of broadcasting `shape` up to `t.shape`).
func reduceTo(_ t: Tensor, _ shape: [Int]) -> Tensor {
    if t.shape == shape { return t }
    let ss = Shapes.broadcastStrides(shape, to: t.shape)
    let zero = [Int](repeating: 0, count: t.rank)
    let p = t.fp
    return Tensor.make(shape) { o in
        Shapes.forEachRow(t.shape, ss, zero) { oo, _, start, n, d, _ in
            if d == 0 {
                // The whole row lands on one element: sum it first.
                var s: Float = 0
                for i in 0..<n { s += p[start + i] }
                o[oo] += s
            } else if d == 1 {
                for i in 0..<n { o[oo + i] += p[start + i] }
            } else {
                for i in 0..<n { o[oo + i * d] += p[start + i] }
            }
        }
    }
}

/// Repeats `t` up to `shape` (broadcasting).
func expandTo(_ t: Tensor, _ shape: [Int]) -> Tensor {
    if t.shape == shape { return t }
    let st = Shapes.broadcastStrides(t.shape, to: shape)
    let zero = [Int](repeating: 0, count: shape.count)
    let p = t.fp
    return Tensor.makeUninitialized(shape) { o in
        Shapes.forEachRow(shape, st, zero) { ot, _, start, n, d, _ in
            if d == 0 {
                let c = p[ot]
                for i in 0..<n { o[start + i] = c }
            } else {
                for i in 0..<n { o[start + i] = p[ot + i * d] }
            }
        }
    }
}
