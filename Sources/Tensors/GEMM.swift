import COpenBLAS
import Dispatch
import Synchronization

/// Every matrix product of Menagerie goes through this one interface, so that a faster backend
/// (oneDNN: `OneDNNBackend`) drops in without touching the layers. Matrices are row-major.
public protocol GEMMBackend: Sendable {
    var name: String { get }
    /// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, op = transpose when the flag is set.
    func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int)
}

/// fp32 through OpenBLAS's `cblas_sgemm` (~190 GFLOP/s on this 2-core machine at 1024³).
public struct OpenBLASBackend: GEMMBackend {
    public init() {}
    public var name: String { "openblas-fp32" }
    public func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

public enum GEMM {
    private static let initial = backendFromEnvironment()
    private static let current = Mutex<any GEMMBackend>(initial.0)

    /// Why the backend asked for in `MENAGERIE_BACKEND` is not the one in use (nil when it is).
    public static var backendNote: String? { initial.note }

    /// The backend in use. Set it once at start-up, before any computation (a lock per product).
    public static var backend: any GEMMBackend {
        get { current.withLock { $0 } }
        set { current.withLock { $0 = newValue } }
    }

    /// OpenBLAS threads for the whole process (host and plugins share one OpenBLAS).
    public static func setThreads(_ n: Int) {
        configured.store(max(1, n), ordering: .relaxed)
        openblas_set_num_threads(Int32(max(1, n)))
    }
    /// The configured thread count. It is stored here, not read back from OpenBLAS, because
    /// `concurrently` lowers OpenBLAS's count to 1 for a while: buffers sized per thread must not see
    /// that (another thread's temporary 1 would make them too small).
    public static var threads: Int { configured.load(ordering: .relaxed) }
    private static let configured = Atomic<Int>(Int(openblas_get_num_threads()))

    /// C = alpha · op(A) · op(B) + beta · C (row-major). Cost: 2·m·n·k flops.
    @inlinable
    public static func sgemm(
        transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        backend.sgemm(
            transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
            a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// This process's sgemm rate in GFLOP/s: `samples` timed n³ products (constant operands) after one
    /// untimed warm-up. `menagerie bench`'s `sgemm.1024` reports it, and the benchmarks that state a
    /// share of the machine's rate divide by it.
    public static func measureRate(samples: Int, size n: Int = 1024) -> [Double] {
        measureRate(samples: samples, m: n, n: n, k: n, backend: backend)
    }

    /// The rate of one backend on C[m×n] = A[m×k] · op(B) (B stored [n×k] when `transposeB`, as a
    /// linear layer's weight), in GFLOP/s, after one untimed warm-up.
    public static func measureRate(samples: Int, m: Int, n: Int, k: Int, transposeB: Bool = false, backend: any GEMMBackend) -> [Double] {
        let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
        var c = [Float](repeating: 0, count: m * n)
        func product() {
            backend.sgemm(
                transposeA: false, transposeB: transposeB, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: transposeB ? k : n,
                beta: 0, c: &c, ldc: n)
        }
        product()
        return (0..<max(1, samples)).map { _ in
            let t0 = DispatchTime.now().uptimeNanoseconds
            product()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            return 2 * Double(m) * Double(n) * Double(k) / (seconds * 1e9)
        }
    }

    /// y = A·x + beta·y for A [m, n] row-major (OpenBLAS `cblas_sgemv`; not routed through the
    /// backend: matrix–vector products are memory-bound and BLAS-agnostic).
    public static func sgemv(
        m: Int, n: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
        beta: Float = 0, y: UnsafeMutablePointer<Float>
    ) {
        guard m > 0 else { return }
        guard n > 0 else {
            for i in 0..<m { y[i] = beta == 0 ? 0 : beta * y[i] }
            return
        }
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(n), alpha, a, Int32(lda), x, 1, beta, y, 1)
    }

    /// `batch` independent products with fixed strides between consecutive A, B and C matrices.
    public static func batched(
        transposeA: Bool = false, transposeB: Bool = false, batch: Int, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, strideA: Int,
        b: UnsafePointer<Float>, ldb: Int, strideB: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int
    ) {
        // Many small products: a share of them per thread, each single-threaded, beats splitting
        // every small product across threads (whose start/stop then dominates).
        if batch >= 2 * GEMM.threads && 2 * m * n * k < 1 << 28 {
            let pointers = UncheckedBox((a, b, c))
            concurrently(batch) { _, items in
                let (a, b, c) = pointers.value
                for i in items {
                    sgemm(
                        transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                        a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb, beta: beta, c: c + i * strideC, ldc: ldc)
                }
            }
            return
        }
        for i in 0..<batch {
            sgemm(
                transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb, beta: beta, c: c + i * strideC, ldc: ldc)
        }
    }

    /// C[m×n] = Σ_i A_i · B_iᵀ for A_i [m×k] and B_i [n×k] stored back to back (a convolution's
    /// weight gradient). With several threads, each sums its share of items into its own block,
    /// single-threaded, and the blocks are added in a fixed order (same bits for the same threads).
    public static func sumOfProductsNT(
        batch: Int, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        c: UnsafeMutablePointer<Float>
    ) {
        let threads = GEMM.threads
        if threads > 1 && batch >= 2 * threads && 2 * m * n * k < 1 << 28 {
            let partials = UnsafeMutablePointer<Float>.allocate(capacity: threads * m * n)
            defer { partials.deallocate() }
            partials.update(repeating: 0, count: threads * m * n)
            let pointers = UncheckedBox((a, b, partials))
            concurrently(batch, threads: threads) { t, items in
                let (a, b, partials) = pointers.value
                for i in items {
                    sgemm(
                        transposeB: true, m: m, n: n, k: k, a: a + i * m * k, lda: k, b: b + i * n * k, ldb: k,
                        beta: 1, c: partials + t * m * n, ldc: n)
                }
            }
            c.update(from: partials, count: m * n)
            for t in 1..<threads {
                let block = partials + t * m * n
                for j in 0..<(m * n) { c[j] += block[j] }
            }
            return
        }
        for i in 0..<batch {
            sgemm(transposeB: true, m: m, n: n, k: k, a: a + i * m * k, lda: k, b: b + i * n * k, ldb: k, beta: i == 0 ? 0 : 1, c: c, ldc: n)
        }
    }

    /// Splits items 0..<count into one contiguous share per thread and runs `body(thread, share)`
    /// on each, with OpenBLAS single-threaded meanwhile: for many small independent products
    /// (per image, per attention head). Shares are fixed by count and threads, so results do not
    /// depend on scheduling.
    public static func concurrently(_ count: Int, threads requested: Int? = nil, _ body: (Int, Range<Int>) -> Void) {
        let threads = requested ?? GEMM.threads
        guard threads > 1 && count > 1 else {
            body(0, 0..<count)
            return
        }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(GEMM.threads)) }
        let per = (count + threads - 1) / threads
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let items = Swift.min(count, t * per)..<Swift.min(count, (t + 1) * per)
                if !items.isEmpty { box.value(t, items) }
            }
        }
    }
}
