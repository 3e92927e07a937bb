import Foundation
import Synchronization
import Tensors
import Testing

/// The oneDNN backend against OpenBLAS on the same operands: every transpose combination, alpha
/// and beta, leading dimensions wider than the matrices, shapes below the size rule (which go to
/// OpenBLAS) and above it, from two threads at once, and bf16 within bfloat16's rounding.
@Suite struct OneDNNTests {
    static let available: Bool = { if case .success = OneDNNBackend.load() { return true } else { return false } }()

    /// When the library is installed, the loader must find it (a broken loader would otherwise only
    /// disable the tests below).
    @Test func loadsWhereTheLibraryIsInstalled() {
        let installed = ["/usr/lib/x86_64-linux-gnu/libdnnl.so.2", "/usr/lib/aarch64-linux-gnu/libdnnl.so.2", "/usr/lib/libdnnl.so.2"]
            .contains { FileManager.default.fileExists(atPath: $0) }
        switch OneDNNBackend.load() {
        case .success(let version): #expect(version.hasPrefix("2.") || version.hasPrefix("3."), "\(version)")
        case .failure(let why): #expect(!installed, "libdnnl.so.2 is installed but did not load: \(why)")
        }
    }

    struct Case: CustomStringConvertible, Sendable {
        var ta: Bool, tb: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float, pad: Int
        var description: String { "\(ta ? "T" : "N")\(tb ? "T" : "N") \(m)×\(n)×\(k) α\(alpha) β\(beta) pad\(pad)" }
    }

    static let cases: [Case] = [
        Case(ta: false, tb: false, m: 197, n: 300, k: 96, alpha: 1, beta: 0, pad: 0),
        Case(ta: false, tb: true, m: 64, n: 130, k: 257, alpha: 1, beta: 0, pad: 3),
        Case(ta: true, tb: false, m: 33, n: 64, k: 100, alpha: 0.5, beta: 0, pad: 1),
        Case(ta: true, tb: true, m: 40, n: 72, k: 50, alpha: 1, beta: 1, pad: 0),
        Case(ta: false, tb: true, m: 128, n: 128, k: 128, alpha: -2, beta: 0.25, pad: 5),
        Case(ta: false, tb: false, m: 3, n: 5, k: 7, alpha: 1, beta: 1, pad: 2), // below the rule: OpenBLAS
    ]

    func operands(_ c: Case, seed: UInt64) -> (a: [Float], lda: Int, b: [Float], ldb: Int, c: [Float], ldc: Int) {
        var rng = SplitMix(seed)
        // Stored shapes: A [m×k] or [k×m]; B [k×n] or [n×k]; each row padded by `pad`.
        let (ra, ca) = c.ta ? (c.k, c.m) : (c.m, c.k), (rb, cb) = c.tb ? (c.n, c.k) : (c.k, c.n)
        let lda = ca + c.pad, ldb = cb + c.pad, ldc = c.n + c.pad
        return (
            (0..<(ra * lda)).map { _ in rng.uniform() }, lda, (0..<(rb * ldb)).map { _ in rng.uniform() }, ldb,
            (0..<(c.m * ldc)).map { _ in rng.uniform() }, ldc
        )
    }

    func product(_ backend: any GEMMBackend, _ c: Case, seed: UInt64) -> [Float] {
        var (a, lda, b, ldb, out, ldc) = operands(c, seed: seed)
        backend.sgemm(
            transposeA: c.ta, transposeB: c.tb, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a: &a, lda: lda, b: &b, ldb: ldb,
            beta: c.beta, c: &out, ldc: ldc)
        return out
    }

    /// Largest |x − y| relative to the largest |y| (padding columns included: they must be untouched).
    func relativeError(_ x: [Float], _ y: [Float]) -> Float {
        let scale = y.map(abs).max() ?? 1
        return zip(x, y).map { abs($0 - $1) }.max()! / scale
    }

    @Test(.enabled(if: available), arguments: cases)
    func fp32MatchesOpenBLAS(_ c: Case) {
        let ours = product(OneDNNBackend(minimumFlops: 0), c, seed: 7)
        let reference = product(OpenBLASBackend(), c, seed: 7)
        #expect(relativeError(ours, reference) < 1e-5, "\(c)")
        // The size rule: the last case stays below it; the others are above it at minimumFlops 0.
        #expect(OneDNNBackend().takes(m: c.m, n: c.n, k: c.k) == (2 * c.m * c.n * c.k >= 1 << 22 && c.m >= 16))
    }

    /// bfloat16 keeps 8 significant bits: each rounded operand is within 2^-9 relative, so a product
    /// of uniform(−1, 1) operands over k terms errs by about 2^-8 · sqrt(k) of a typical |term| —
    /// within 1e-2 of the largest output here. Padding columns stay exactly as they were.
    @Test(.enabled(if: available), arguments: cases)
    func bf16IsWithinBFloat16Rounding(_ c: Case) {
        let ours = product(OneDNNBackend(bf16: true), c, seed: 11)
        let reference = product(OpenBLASBackend(), c, seed: 11)
        let error = relativeError(ours, reference)
        #expect(error < 1e-2, "\(c): \(error)")
        // And it is really bf16, not fp32: the error is far above fp32's on the larger products.
        if c.k >= 96 { #expect(error > 1e-5, "\(c): \(error) — operands were not rounded") }
        let (_, _, _, _, before, ldc) = operands(c, seed: 11)
        for i in 0..<c.m { for j in c.n..<ldc { #expect(ours[i * ldc + j] == before[i * ldc + j]) } }
    }

    /// Two threads running products at once, as `GEMM.batched` does for attention heads (one OpenMP
    /// thread each): the same results as one at a time. The shapes are one head of the attention
    /// test's reference (133 queries × 1037 keys, head dim 20, value dim 12), whose primitives use a
    /// scratchpad: with oneDNN's default library scratchpad the two threads overwrote each other's
    /// (errors of order 1 under MENAGERIE_BACKEND=onednn); each product now brings its own.
    @Test(.enabled(if: available)) func concurrentProductsAgree() {
        let cases = [
            Case(ta: false, tb: true, m: 133, n: 1037, k: 20, alpha: 1, beta: 0, pad: 0),
            Case(ta: false, tb: false, m: 133, n: 12, k: 1037, alpha: 1, beta: 0, pad: 0),
        ]
        let references = cases.map { product(OpenBLASBackend(), $0, seed: 3) }
        let results = Mutex<[Int: Float]>([:])
        GEMM.concurrently(512, threads: 2) { _, items in
            for i in items {
                let out = product(OneDNNBackend(minimumFlops: 0), cases[i % cases.count], seed: 3)
                let error = relativeError(out, references[i % cases.count])
                results.withLock { $0[i] = error }
            }
        }
        let errors = results.withLock { $0 }
        #expect(errors.count == 512 && errors.values.allSatisfy { $0 < 1e-5 }, "largest error \(errors.values.max() ?? -1)")
    }
}

/// A small seeded generator for the operands (uniform in [−1, 1)).
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
}
