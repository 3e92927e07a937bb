/// Index utilities (not differentiable): stable sorting, top-k, one-hot, masks.
extension Tensor {
    /// Indices that sort the last axis, stable (ties keep their order), ascending unless
    /// `descending`. Returns i64 of the same shape.
    public func argsort(descending: Bool = false) throws -> Tensor {
        let values = try doubles()
        let w = shape.last ?? 1, rows = count / Swift.max(w, 1)
        var out = [Int64](repeating: 0, count: count)
        for r in 0..<rows {
            let base = r * w
            let order = (0..<w).sorted { a, b in
                let (x, y) = (values[base + a], values[base + b])
                if x != y { return descending ? x > y : x < y }
                return a < b
            }
            for (i, o) in order.enumerated() { out[base + i] = Int64(o) }
        }
        return try Tensor(out, shape: shape)
    }

    /// The k largest values of the last axis and their indices (ties: lower index first).
    public func topK(_ k: Int) throws -> (values: Tensor, indices: Tensor) {
        let w = shape.last ?? 1
        guard (0...w).contains(k) else { throw TensorError("topK(\(k)) of an axis of length \(w)") }
        let order: [Int64] = try argsort(descending: true).scalars()
        let values = try doubles()
        let rows = count / Swift.max(w, 1)
        var idx: [Int64] = [], vals: [Float] = []
        for r in 0..<rows {
            for i in 0..<k {
                let j = order[r * w + i]
                idx.append(j)
                vals.append(Float(values[r * w + Int(j)]))
            }
        }
        let outShape = Array(shape.dropLast()) + [k]
        return (try Tensor(vals, shape: outShape), try Tensor(idx, shape: outShape))
    }

    /// One-hot rows: labels [N] → f32 [N, classes].
    public static func oneHot(_ labels: [Int], classes: Int) throws -> Tensor {
        guard labels.allSatisfy({ (0..<classes).contains($0) }) else { throw TensorError("one-hot label outside 0..<\(classes)") }
        var out = [Float](repeating: 0, count: labels.count * classes)
        for (i, y) in labels.enumerated() { out[i * classes + y] = 1 }
        return try Tensor(out, shape: [labels.count, classes])
    }

    /// Elementwise choice: where `mask` is non-zero take `a`, else `b` (same shapes, f32).
    public static func `where`(_ mask: Tensor, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        guard mask.shape == a.shape, a.shape == b.shape, a.dtype == .float32, b.dtype == .float32 else {
            throw TensorError("where() needs one shape for mask, a and b and f32 values")
        }
        let m = try mask.doubles()
        let x: [Float] = try a.scalars(), y: [Float] = try b.scalars()
        return try Tensor((0..<count(of: a)).map { m[$0] != 0 ? x[$0] : y[$0] }, shape: a.shape)
    }

    private static func count(of t: Tensor) -> Int { t.count }
}
