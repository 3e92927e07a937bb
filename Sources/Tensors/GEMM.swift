import COpenBLAS

/// Every matrix product of Menagerie goes through this one interface, so that a faster backend
/// (BF16 through oneDNN is planned) drops in without touching the layers. Matrices are row-major.
public protocol GEMMBackend: Sendable {
    var name: String { get }
    /// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, op = transpose when the flag is set.
    func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
               a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
               beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int)
}

/// fp32 through OpenBLAS's `cblas_sgemm` (~190 GFLOP/s on this 2-core machine at 1024³).
public struct OpenBLASBackend: GEMMBackend {
    public init() {}
    public var name: String { "openblas-fp32" }
    public func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

public enum GEMM {
    nonisolated(unsafe) private static var current: any GEMMBackend = OpenBLASBackend()

    /// The backend in use. Set it once at start-up, before any computation.
    public static var backend: any GEMMBackend {
        get { current }
        set { current = newValue }
    }

    /// OpenBLAS threads for the whole process (host and plugins share one OpenBLAS).
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// C = alpha · op(A) · op(B) + beta · C (row-major). Cost: 2·m·n·k flops.
    @inlinable
    public static func sgemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        backend.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                      a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// `batch` independent products with fixed strides between consecutive A, B and C matrices.
    public static func batched(transposeA: Bool = false, transposeB: Bool = false, batch: Int, m: Int, n: Int, k: Int,
                               alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, strideA: Int,
                               b: UnsafePointer<Float>, ldb: Int, strideB: Int,
                               beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int) {
        for i in 0..<batch {
            sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                  a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb, beta: beta, c: c + i * strideC, ldc: ldc)
        }
    }
}
