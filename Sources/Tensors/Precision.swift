import CDNNL
import COpenBLAS
import Glibc

/// The arithmetic of inference products (forward passes that record nothing): `fp32`, or `bf16` —
/// linear layers' weights rounded once to bfloat16 and their inputs per product (or produced in
/// bfloat16 by the previous fused product), multiplied by oneDNN with fp32 accumulation; in the
/// transformer blocks' fused path the attention products too. Normalisations, softmax and the
/// attention scores stay fp32. Training
/// (recording) is always fp32. Set per operation (`precision=bf16`) or for a process
/// (`MENAGERIE_PRECISION=bf16`).
public enum Precision: String, Sendable, CaseIterable {
    case fp32, bf16
}

extension GEMM {
    private static let initialPrecision: (Precision, note: String?) = {
        guard let value = getenvString("MENAGERIE_PRECISION")?.lowercased(), !value.isEmpty else { return (.fp32, nil) }
        guard let asked = Precision(rawValue: value) else {
            return (.fp32, "MENAGERIE_PRECISION=\(value) is not a precision (fp32 or bf16); using fp32")
        }
        if let why = bf16Unavailable(), asked == .bf16 { return (.fp32, "MENAGERIE_PRECISION=bf16: \(why); using fp32") }
        return (asked, nil)
    }()
    /// Per thread, like `GradMode`: nil = the process's default (MENAGERIE_PRECISION), 1 = fp32,
    /// 2 = bf16. Inference products run on the thread that asked for them (threads that
    /// `concurrently` starts only run attention, which stays fp32).
    private static let precisionKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The precision of this thread's inference products (see `Precision`).
    public static var precision: Precision {
        switch Int(bitPattern: pthread_getspecific(precisionKey)) {
        case 1: .fp32
        case 2: .bf16
        default: initialPrecision.0
        }
    }

    /// Why MENAGERIE_PRECISION is not in effect (nil when it is, or unset).
    public static var precisionNote: String? { initialPrecision.note }

    /// Why bf16 products cannot run here (nil when they can): they need oneDNN and a CPU with
    /// native BF16 dot products (avx512_bf16 or AMX) — emulated BF16 would be slower than fp32.
    public static func bf16Unavailable() -> String? {
        switch OneDNNBackend.load() {
        case .failure(let why): return "bf16 needs oneDNN: \(why.reason)"
        case .success:
            return OneDNNBackend.hasNativeBF16 ? nil : "this CPU has no native BF16 dot products (avx512_bf16 or AMX)"
        }
    }

    /// Sets the precision of this thread's inference products. Asking for bf16 where it cannot run
    /// keeps fp32 and returns the reason (for the operation to report); nil when the precision is
    /// now `precision`.
    @discardableResult
    public static func setPrecision(_ precision: Precision) -> String? {
        var why: String? = nil
        var effective = precision
        if precision == .bf16, let reason = bf16Unavailable() {
            why = reason + "; running in fp32"
            effective = .fp32
        }
        pthread_setspecific(precisionKey, UnsafeRawPointer(bitPattern: effective == .bf16 ? 2 : 1))
        return why
    }

    /// Runs `body` with inference products in `precision`, then restores the previous setting;
    /// `note` receives the reason when bf16 was asked for but cannot run.
    public static func withPrecision<R>(_ precision: Precision, note: (String) -> Void = { _ in }, _ body: () throws -> R) rethrows -> R {
        let previous = self.precision
        if let why = setPrecision(precision) { note(why) }
        defer { setPrecision(previous) }
        return try body()
    }
}

extension Kernels {
    /// x rounded to bfloat16 (nearest, ties to even), as `linearBF16` takes its weights.
    public static func roundedBF16(_ x: [Float]) -> [UInt16] {
        [UInt16](unsafeUninitializedCapacity: x.count) { out, n in
            if let o = out.baseAddress, !x.isEmpty { x.withUnsafeBufferPointer { mng_round_bf16($0.baseAddress!, o, x.count) } }
            n = x.count
        }
    }

    /// out[i] = x[i] rounded to bfloat16 (nearest, ties to even) for i < count.
    public static func roundBF16(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<UInt16>, count: Int) {
        if count > 0 { mng_round_bf16(x, out, count) }
    }

    /// y = x·Wᵀ + bias (or, with `accumulate`, y += x·Wᵀ + bias) for a weight W [out, in] already
    /// in bfloat16 (`Tensor.converted(to: .bfloat16)`); x is rounded per call. One row: our own
    /// AVX-512 BF16 matrix–vector product (`mng_bf16_gemv`); more: oneDNN's bf16 matmul; both with
    /// fp32 accumulation. Where neither runs, the weight is widened and OpenBLAS multiplies.
    public static func linearBF16(
        _ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: UnsafePointer<UInt16>, bias: UnsafePointer<Float>?,
        outFeatures: Int, accumulate: Bool = false, into y: UnsafeMutablePointer<Float>
    ) {
        guard rows > 0, outFeatures > 0 else { return }
        if rows > 1, inFeatures > 0,
            fusedLinear(
                UnsafeRawPointer(x), rows: rows, inFeatures: inFeatures, weight: UnsafeRawPointer(weight), bf16: true, bias: bias,
                outFeatures: outFeatures, accumulate: accumulate, into: UnsafeMutableRawPointer(y))
        {
            return
        }
        if let bias {
            for r in 0..<rows {
                let row = y + r * outFeatures
                if accumulate { for j in 0..<outFeatures { row[j] += bias[j] } } else { row.update(from: bias, count: outFeatures) }
            }
        }
        let beta: Float = bias != nil || accumulate ? 1 : 0
        if rows == 1, inFeatures > 0, mng_bf16_gemv_available() != 0 {
            // One row (a decode step): memory-bound, so our own AVX-512 BF16 matrix–vector product,
            // the output rows split over the threads (the 199M LLaMA's bf16 decode: 1.48× fp32's
            // tokens/s with it, 0.55× through oneDNN's m = 1 matmul — Docs/methods/coreinfer.md).
            let x16 = UnsafeMutablePointer<UInt16>.allocate(capacity: inFeatures)
            defer { x16.deallocate() }
            mng_round_bf16(x, x16, inFeatures)
            let box = UncheckedBox((weight, UnsafePointer(x16), y))
            Parallel.chunks(outFeatures, grain: Swift.max(64, (1 << 17) / inFeatures)) { range in
                let (w, xp, yp) = box.value
                mng_bf16_gemv(range.lowerBound, range.upperBound, inFeatures, w, xp, beta == 1 ? 1 : 0, yp)
            }
            return
        }
        let wide = UnsafeMutablePointer<Float>.allocate(capacity: max(1, outFeatures * inFeatures))
        defer { wide.deallocate() }
        for i in 0..<(outFeatures * inFeatures) { wide[i] = Float(bitPattern: UInt32(weight[i]) << 16) }
        GEMM.sgemm(
            transposeB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: wide, ldb: inFeatures, beta: beta, c: y,
            ldc: outFeatures)
    }

    /// One operand of `stridedProduct`: its dimensions (up to two batch dimensions, then rows ×
    /// columns) and strides in elements, and whether it is bfloat16 (otherwise fp32).
    public struct StridedOperand: Sendable {
        public var dims: [Int], strides: [Int], bf16: Bool
        public init(dims: [Int], strides: [Int], bf16: Bool) { (self.dims, self.strides, self.bf16) = (dims, strides, bf16) }
    }

    /// C = alpha · A · B over strided (batched) operands in one oneDNN matmul (`mng_dnnl_matmul`):
    /// e.g. every head of an attention read in place from the packed qkv rows. A and B both bfloat16
    /// (fp32 accumulation) or both fp32. False when oneDNN cannot run it (nothing written then).
    public static func stridedProduct(
        _ a: StridedOperand, _ ap: UnsafeRawPointer, _ b: StridedOperand, _ bp: UnsafeRawPointer, _ c: StridedOperand,
        _ cp: UnsafeMutableRawPointer, alpha: Float = 1
    ) -> Bool {
        let nd = a.dims.count
        guard (2...4).contains(nd), [a.strides, b.dims, b.strides, c.dims, c.strides].allSatisfy({ $0.count == nd }) else { return false }
        var spec = MngMatmul()
        spec.ndims = Int32(nd)
        func fill<T>(_ tuple: inout T, _ values: [Int]) {
            withUnsafeMutableBytes(of: &tuple) { raw in
                for (i, v) in values.enumerated() { raw.storeBytes(of: v, toByteOffset: i * MemoryLayout<Int>.stride, as: Int.self) }
            }
        }
        fill(&spec.a_dims, a.dims)
        fill(&spec.a_strides, a.strides)
        fill(&spec.b_dims, b.dims)
        fill(&spec.b_strides, b.strides)
        fill(&spec.c_dims, c.dims)
        fill(&spec.c_strides, c.strides)
        (spec.a_bf16, spec.b_bf16, spec.c_bf16) = (a.bf16 ? 1 : 0, b.bf16 ? 1 : 0, c.bf16 ? 1 : 0)
        spec.alpha = alpha
        return mng_dnnl_matmul(&spec, ap, bp, cp, openblas_get_num_threads()) == 0
    }

    /// An activation fused into `fusedLinear`'s product (oneDNN post-operations).
    public enum FusedActivation: Equatable, Sendable {
        case none
        /// GELU, the erf form (torch's default `nn.GELU()`).
        case gelu
        /// x·σ(1.702·x), CLIP's quick GELU.
        case quickGELU
    }

    /// y = act(x·Wᵀ + bias) (or y += …) in one oneDNN product for a weight W [out, in]. In bf16
    /// (`bf16`: W in bfloat16) x is fp32 (rounded per call) or, with `sourceBF16`, already bfloat16,
    /// and y fp32 or, with `outputBF16`, bfloat16 (the next product's input, never rounded again);
    /// otherwise W, x and y are all fp32. The bias, the activation and the accumulation are
    /// post-operations of the product: no pass over y of ours. False when oneDNN cannot run it (no
    /// library, no bf16 CPU, a bf16 output with `accumulate`); the caller then takes the unfused path.
    public static func fusedLinear(
        _ x: UnsafeRawPointer, sourceBF16: Bool = false, rows: Int, inFeatures: Int, weight: UnsafeRawPointer, bf16: Bool,
        bias: UnsafePointer<Float>?, outFeatures: Int, activation: FusedActivation = .none, accumulate: Bool = false,
        outputBF16: Bool = false, into y: UnsafeMutableRawPointer
    ) -> Bool {
        guard rows > 0, inFeatures > 0, outFeatures > 0, !(accumulate && outputBF16), bf16 || !(sourceBF16 || outputBF16) else { return false }
        var spec = MngLinear()
        (spec.m, spec.n, spec.k, spec.lda, spec.ldc) = (rows, outFeatures, inFeatures, inFeatures, outFeatures)
        spec.fp32 = bf16 ? 0 : 1
        spec.a_bf16 = sourceBF16 ? 1 : 0
        spec.c_bf16 = outputBF16 ? 1 : 0
        spec.accumulate = accumulate ? 1 : 0
        switch activation {
        case .none: spec.activation = Int32(MNG_ACTIVATION_NONE)
        case .gelu: spec.activation = Int32(MNG_ACTIVATION_GELU_ERF)
        case .quickGELU: (spec.activation, spec.alpha) = (Int32(MNG_ACTIVATION_SWISH), 1.702)
        }
        return mng_dnnl_linear(&spec, x, weight, bias, y, openblas_get_num_threads()) == 0
    }
}
