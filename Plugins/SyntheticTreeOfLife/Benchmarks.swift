import Foundation
import MenagerieKit
import Tensors

/// synthetic-tol's benchmarks (moved from the CLI): generation rate through the host (render +
/// tensors + transfer), at 64 and 224 px, on one thread and on all (the plugin renders a batch's
/// images in parallel). Measured in this plugin's process, `GEMM.setThreads` here sets the thread
/// count its rendering loop uses (`Parallel.threads`); set from the CLI it only reached OpenBLAS and
/// the host's own copy of the setting, which is why one and two threads once measured the same.
extension SyntheticTreeOfLifeComponent {
    static let benchmarks = [64, 224].flatMap { size in
        Set([1, GEMM.threads]).sorted().map { threads in
            BenchmarkSpec(
                "synthetic_tol.generate_\(size).threads_\(threads)", unit: "images/s",
                summary: "synthetic-tol `batch` calls of \(size) px images on \(threads) thread\(threads == 1 ? "" : "s") through the host",
                target: size == 64 && threads == 1 ? 1000 : nil)
        }
    }
    func benchmark(_ run: BenchmarkRun) throws { try run.syntheticTreeOfLifeBenchmarks() }
}

extension BenchmarkRun {
    func syntheticTreeOfLifeBenchmarks() throws {
        // synthetic-tol generation rate through the host (render + tensors + transfer), at 64 and
        // 224 px, on one thread and on all (the plugin renders a batch's images in parallel).
        if has("synthetic-tol") {
            let all = GEMM.threads
            for (size, count) in [(64, 256), (224, 32)] {
                for threads in Set([1, all]).sorted() where wanted("synthetic_tol.generate_\(size).threads_\(threads)") {
                    GEMM.setThreads(threads)
                    defer { GEMM.setThreads(all) }
                    let options: JSONValue = ["size": .number(Double(size)), "count": .number(Double(count)), "shuffle": false]
                    _ = try invoke("synthetic-tol", operation: "batch", options: options)
                    var samples: [Double] = []
                    for r in 0..<max(3, repeats / 4) {
                        var o = options
                        if case .object(var m) = o {
                            m["start"] = .number(Double((r * count) % 1024))
                            o = .object(m)
                        }
                        let t0 = now()
                        _ = try invoke("synthetic-tol", operation: "batch", options: o)
                        samples.append(Double(count) / ((now() - t0) / 1000))
                    }
                    var rec = record("synthetic_tol.generate_\(size).threads_\(threads)", unit: "images/s", samples)
                    if size == 64 && threads == 1 { rec.target = 1000 }
                    records.append(rec)
                }
            }
        }
    }
}
