import ArgumentParser
import CLaunch
import COpenBLAS
import Foundation
import MenagerieHost
import MenagerieKit
import Tensors

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check BLAS, threads, the search path, the cache and permissions.")

    @Flag(name: .long, help: "Print JSON on stdout.")
    var json = false

    @Flag(name: .long, help: "Remove scratch folders (in $TMPDIR) and partial outputs (in the given --out folders) left by runs that were killed.")
    var clean = false

    @Argument(help: ArgumentHelp("With --clean: output folders to clear of stale partial outputs.", valueName: "OUT_DIR"))
    var outputs: [String] = []

    @OptionGroup var global: GlobalOptions

    struct Check: Codable {
        let name: String
        let ok: Bool
        let detail: String
    }

    func run() throws {
        var checks: [Check] = []
        checks.append(Check(name: "menagerie", ok: true, detail: "\(Menagerie.configuration.version)"))

        let config = openblas_get_config().map { String(cString: $0) } ?? "unknown"
        let threads = Int(openblas_get_num_threads())
        let timeout = mng_openblas_thread_timeout().map { String(cString: $0) } ?? "unset (2^28 cycles)"
        checks.append(
            Check(
                name: "blas", ok: true,
                detail: "OpenBLAS \(config); \(threads) thread(s) (set with MENAGERIE_THREADS or OPENBLAS_NUM_THREADS); "
                    + "idle threads spin 2^n cycles, OPENBLAS_THREAD_TIMEOUT=\(timeout)"))
        // The GEMM backend (MENAGERIE_BACKEND) and whether oneDNN can be used at all.
        let onednn: String
        switch OneDNNBackend.load() {
        case .success(let version):
            onednn = "oneDNN \(version) available" + (OneDNNBackend.hasNativeBF16 ? ", native BF16" : ", no native BF16 (bf16 products emulated: slow)")
        case .failure(let why): onednn = "oneDNN unavailable: \(why.reason)"
        }
        checks.append(
            Check(
                name: "gemm backend", ok: GEMM.backendNote == nil && GEMM.precisionNote == nil,
                detail: "\(GEMM.backend.name) (MENAGERIE_BACKEND=openblas|onednn); transformer blocks "
                    + (GEMM.fusesBlocksThroughOneDNN ? "fused through oneDNN" : "on OpenBLAS") + "; inference precision \(GEMM.precision.rawValue) "
                    + "(MENAGERIE_PRECISION or run --precision fp32|bf16); "
                    + ([GEMM.backendNote, GEMM.precisionNote].compactMap { $0 }.map { $0 + "; " }.joined())
                    + onednn))
        let (gflops, error) = sgemmCheck(n: 256)
        checks.append(
            Check(name: "sgemm", ok: error < 1e-3, detail: String(format: "256³ in %.1f GFLOP/s, max error %.2e against a direct sum", gflops, error)))

        let searchPath = SearchPath(safeMode: global.isSafeMode)
        for f in searchPath.folders {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: f.path, isDirectory: &isDir) && isDir.boolValue
            let count = (try? FileManager.default.contentsOfDirectory(atPath: f.path).filter { $0.hasSuffix(".so") }.count) ?? 0
            let trust = exists ? Trust.check(f.path, what: "folder") : nil
            checks.append(
                Check(
                    name: "search path (\(f.origin))", ok: trust == nil,
                    detail: exists ? "\(f.path): \(count) .so file(s)" + (trust.map { "; \($0)" } ?? "") : "\(f.path): absent (fine)"))
        }
        if global.isSafeMode { checks.append(Check(name: "safe mode", ok: true, detail: "on: built-in plugins only")) }
        let lock = try global.lockFile()
        checks.append(
            Check(
                name: "lock file", ok: true,
                detail: lock.map { "\($0.path): \($0.file.plugins.count) pinned plugin(s)" } ?? "none (\(LockFile.defaultPath()) absent)"))
        let registry = try global.registry()
        checks.append(
            Check(
                name: "registry cache", ok: FileManager.default.isWritableFile(atPath: (registry.cachePath as NSString).deletingLastPathComponent),
                detail: "\(registry.cachePath): \(registry.entries.count) plugin(s), \(registry.failed.count) failed, \(registry.scanned) scanned now"))
        for e in registry.failed { checks.append(Check(name: "plugin", ok: false, detail: "\(e.path): \(e.reason ?? "")")) }
        checks.append(Check(name: "scratch", ok: access(NSTemporaryDirectory(), W_OK) == 0, detail: "temporary folder \(NSTemporaryDirectory())"))
        if clean {
            let removed = Lifecycle.sweep(outputs: outputs)
            checks.append(
                Check(
                    name: "clean", ok: true,
                    detail: removed.isEmpty
                        ? "no stale folders"
                        : "removed \(removed.count) stale folder(s): " + removed.joined(separator: ", ")))
        } else if !outputs.isEmpty {
            throw ValidationError("output folders are only read with --clean")
        }

        if json {
            try printJSON(checks)
        } else {
            print(table(checks.map { [$0.ok ? "ok" : "FAIL", $0.name, $0.detail] }))
        }
        if checks.contains(where: { !$0.ok }) { throw ExitCode(1) }
    }

    /// Multiplies two n×n matrices with cblas_sgemm, checks a few entries against a direct sum.
    func sgemmCheck(n: Int) -> (Double, Double) {
        var a = [Float](repeating: 0, count: n * n), b = a, c = a
        for i in 0..<(n * n) {
            a[i] = Float((i * 7) % 13) / 13 - 0.5
            b[i] = Float((i * 5) % 11) / 11 - 0.5
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let reps = 10
        for _ in 0..<reps {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var maxErr = 0.0
        for (i, j) in [(0, 0), (n / 2, n / 3), (n - 1, n - 1)] {
            var s = 0.0
            for k in 0..<n { s += Double(a[i * n + k]) * Double(b[k * n + j]) }
            maxErr = max(maxErr, abs(s - Double(c[i * n + j])))
        }
        return (2 * Double(n * n * n) * Double(reps) / seconds / 1e9, maxErr)
    }
}
