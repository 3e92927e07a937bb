import Foundation

/// Splits large elementwise work across threads. The thread count is OpenBLAS's (one setting,
/// `MENAGERIE_THREADS` / `--threads`, governs both), so products and loops never oversubscribe.
public enum Parallel {
    /// Threads used for elementwise loops.
    public static var threads: Int { GEMM.threads }

    /// Calls `body` on contiguous chunks covering 0..<count: one chunk per thread when there are at
    /// least `grain` items per thread, else the whole range on the calling thread.
    @inline(__always)
    public static func chunks(_ count: Int, grain: Int = 1 << 15, _ body: (Range<Int>) -> Void) {
        let t = Swift.min(threads, count / Swift.max(grain, 1))
        if t <= 1 {
            body(0..<count)
            return
        }
        let per = (count + t - 1) / t
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: t) { i in
                let lo = i * per, hi = Swift.min(count, lo + per)
                if lo < hi { box.value(lo..<hi) }
            }
        }
    }
}

/// Carries a non-Sendable value (a buffer's base pointer) into `Parallel.chunks`, whose workers
/// touch disjoint parts of it.
// @unchecked by design: it carries a buffer pointer into Parallel.chunks, whose workers write disjoint ranges of it.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

extension Tensor {
    /// A float32 tensor whose every element `body` writes (the memory is not cleared first).
    public static func makeUninitialized(_ shape: [Int], _ body: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let storage = TensorStorage(uninitialized: shape.reduce(1, *) * 4)
        body(storage.bytes.assumingMemoryBound(to: Float.self))
        return Tensor(dtype: .float32, shape: shape, exactStorage: storage)
    }
}

/// Σ p[i] over `n` floats (16 lanes, then a scalar tail).
@inlinable
public func vectorSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var s = SIMD16<Float>()
    var i = 0
    while i + 16 <= n {
        s += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
        i += 16
    }
    var t = s.sum()
    while i < n {
        t += p[i]
        i += 1
    }
    return t
}

/// Σ (p[i] − c)² over `n` floats.
@inline(__always)
func vectorCentredSquares(_ p: UnsafePointer<Float>, _ n: Int, _ c: Float) -> Float {
    var q = SIMD16<Float>()
    let cv = SIMD16<Float>(repeating: c)
    var i = 0
    while i + 16 <= n {
        let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self) - cv
        q += d * d
        i += 16
    }
    var t = q.sum()
    while i < n {
        let d = p[i] - c
        t += d * d
        i += 1
    }
    return t
}
