import CDNNL
import COpenBLAS
import Glibc

/// Products through oneDNN's matmul (its brgemm kernels) where they pay, the rest through OpenBLAS.
///
/// oneDNN is loaded at run time (`Sources/CDNNL`): without it, `load()` says why and Menagerie keeps
/// OpenBLAS. A product goes to oneDNN when it has at least `minimumRows` rows and `minimumFlops`
/// multiply-adds ×2 — below that, OpenBLAS's lower per-call cost wins and primitives for one-off
/// shapes (decoding, growing attention) would fill the cache. Docs/benchmarks.md has the measured rule.
/// `bf16`: both operands are rounded to bfloat16 for the product (fp32 accumulation and output);
/// for inference only, on CPUs with native BF16 dot products.
public struct OneDNNBackend: GEMMBackend {
    public let bf16: Bool
    public let minimumRows: Int
    public let minimumFlops: Int

    public init(bf16: Bool = false, minimumRows: Int = 16, minimumFlops: Int = 1 << 22) {
        self.bf16 = bf16
        self.minimumRows = minimumRows
        self.minimumFlops = minimumFlops
    }

    public var name: String { bf16 ? "onednn-bf16" : "onednn-fp32" }

    /// Loads oneDNN once; `.failure` holds the reason it cannot be used.
    public static func load() -> Result<String, OneDNNUnavailable> {
        var message = [CChar](repeating: 0, count: 512)
        guard mng_dnnl_load(&message, message.count) == 1 else {
            return .failure(OneDNNUnavailable(reason: String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
        return .success(String(cString: mng_dnnl_version()))
    }

    /// True when the CPU multiplies bfloat16 natively (avx512_bf16 or AMX).
    public static var hasNativeBF16: Bool { mng_dnnl_has_bf16() == 1 }

    /// Primitives created (cache misses) and products run through oneDNN in this process's copy.
    public static var counters: (created: Int, executed: Int) {
        var created = 0, executed = 0
        mng_dnnl_counters(&created, &executed)
        return (created, executed)
    }

    /// Products run through oneDNN by the calling thread (tests count a model's calls with it while
    /// other threads run their own).
    public static var threadExecuted: Int { mng_dnnl_thread_executed() }

    public func takes(m: Int, n: Int, k: Int) -> Bool {
        let (mn, o1) = m.multipliedReportingOverflow(by: n)
        let (mnk, o2) = mn.multipliedReportingOverflow(by: k)
        return m >= minimumRows && (o1 || o2 || 2 * mnk >= minimumFlops)
    }

    public func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if bf16 || takes(m: m, n: n, k: k) {
            let status = mng_dnnl_sgemm(
                bf16 ? 1 : 0, transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                openblas_get_num_threads())
            if status == 0 { return }
        }
        OpenBLASBackend().sgemm(
            transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
            beta: beta, c: c, ldc: ldc)
    }
}

public struct OneDNNUnavailable: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

extension GEMM {
    /// The backend this process starts with, from `MENAGERIE_BACKEND`: `onednn` (oneDNN where it
    /// pays, else OpenBLAS; the default where oneDNN loads — measured level or faster on every
    /// benchmark row interleaved on a quiet machine, Docs/benchmarks.md) or `openblas` (OpenBLAS
    /// alone). Unset without oneDNN: OpenBLAS, silently (`menagerie doctor` says why); asked for
    /// but unable to load: the reason is in `backendNote` and OpenBLAS is used.
    static func backendFromEnvironment() -> (any GEMMBackend, note: String?) {
        let value = getenvString("MENAGERIE_BACKEND")?.lowercased() ?? ""
        switch value {
        case "":
            if case .success = OneDNNBackend.load() { return (OneDNNBackend(), nil) }
            return (OpenBLASBackend(), nil)
        case "openblas":
            return (OpenBLASBackend(), nil)
        case "onednn", "dnnl":
            switch OneDNNBackend.load() {
            case .success: return (OneDNNBackend(), nil)
            case .failure(let why): return (OpenBLASBackend(), "MENAGERIE_BACKEND=\(value): \(why.reason); using OpenBLAS")
            }
        default:
            return (OpenBLASBackend(), "MENAGERIE_BACKEND=\(value) is not a backend (openblas or onednn); using OpenBLAS")
        }
    }
}

extension GEMM {
    /// Whether the transformer blocks' inference path (`TransformerStack`) runs as fused oneDNN
    /// products in fp32: yes when oneDNN loads, unless `MENAGERIE_BACKEND=openblas` asks for OpenBLAS
    /// alone. Measured faster at every size benchmarked (ViT-B/16 at batch 1 and 8, the ViT-L/14
    /// towers; Docs/benchmarks.md).
    public static let fusesBlocksThroughOneDNN: Bool = {
        if getenvString("MENAGERIE_BACKEND")?.lowercased() == "openblas" { return false }
        if case .success = OneDNNBackend.load() { return true }
        return false
    }()
}

func getenvString(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}
