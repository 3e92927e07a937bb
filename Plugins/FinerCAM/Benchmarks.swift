import Foundation
import MenagerieKit
import Tensors
import Vision

/// `vit_b16.finercam`: one 224×224 image through finer-cam on a random-weight timm ViT-B/16
/// classifier folder, through the host. finer-cam calls grad-cam (the cam plugin) through the host,
/// which calls finer-cam's `score` back: the figure includes both round trips (`Docs/benchmarks.md`
/// compares it with the in-process Finer-CAM of the former explainers plugin).
extension FinerCAMComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "vit_b16.finercam", unit: "ms", summary: "one 224×224 image through finer-cam on a ViT-B/16 classifier folder, through the host",
            ratioTarget: 1.0)
    ]

    func benchmark(_ run: BenchmarkRun) throws {
        guard run.wanted("vit_b16.finercam"), run.has("finer-cam"), run.has("grad-cam") else {
            if run.wanted("vit_b16.finercam") { run.notes.append("vit_b16.finercam needs grad-cam (the cam plugin)") }
            return
        }
        let scratch = NSTemporaryDirectory() + "/menagerie-bench-finer-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let dir = scratch + "/vit-b16"
        _ = try writeBenchmarkViTB16(to: dir)
        BufferPool.shared.drain()
        let image = Tensor.filled(0.5, shape: [1, 3, 224, 224])
        let options: JSONValue = ["classifier": .string(dir)]
        _ = try run.invoke("finer-cam", operation: "explain", options: options, inputs: [("images", image)])
        var samples: [Double] = []
        for _ in 0..<max(3, run.repeats / 4) {
            let t0 = run.now()
            _ = try run.invoke("finer-cam", operation: "explain", options: options, inputs: [("images", image)])
            samples.append(run.now() - t0)
        }
        var r = run.record("vit_b16.finercam", unit: "ms", samples)
        r.ratioTarget = 1.0
        run.records.append(r)
        BufferPool.shared.drain()
    }
}
