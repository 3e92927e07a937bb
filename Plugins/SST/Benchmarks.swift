import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// SST's benchmarks (moved from the CLI, which no longer knows any model). SST at 224 × 224 with a ViT-S/16 backbone (random weights in a timm folder, the shape of
/// DINO's `vit_small_patch16_224`): seconds per query image end to end through `sst segment` (image
/// files in, mask files out), the share of that spent extracting features, and the propagation
/// alone per query (the `stm-tracker` on [8, 14, 14, 384] features: support + 7 queries).
extension SSTComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "sst.query_224_vit_s16", unit: "s",
            summary: "seconds per query of `sst segment` on files at 224 px with a ViT-S/16 (support + 7 queries, masks and overlays written)"),
        BenchmarkSpec("sst.feature_share", unit: "% of query", summary: "the share of that query time spent on features"),
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.segmentationBenchmarks() }
}

extension STMTrackerComponent {
    static let benchmarks = [
        BenchmarkSpec("sst.propagation_224", unit: "ms", summary: "the stm-tracker alone per query on [8, 14, 14, 384] features, through the host", target: 50)
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.segmentationBenchmarks() }
}

extension BenchmarkRun {
    func segmentationBenchmarks() throws {
        let queries = 7
        if wanted("sst.query_224_vit_s16") || wanted("sst.feature_share"), has("sst"), has("vit-classifier") {
            let dir = scratch + "/bench-sst"
            try FileManager.default.createDirectory(atPath: dir + "/queries", withIntermediateDirectories: true)
            var config = ViTConfig(imageSize: 224, patchSize: 16, width: 384, depth: 12, heads: 6)
            config.numClasses = 0
            try ViT(config: config, seed: 2).save(to: dir + "/model.safetensors")
            let timmConfig = """
                {"architecture": "vit_small_patch16_224", "num_classes": 0, "global_pool": "token",
                 "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}}
                """
            try timmConfig.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
            BufferPool.shared.drain()
            var rng = SeededGenerator(seed: 5)
            func scene() -> (Image, [UInt8]) {
                var px = [UInt8](repeating: 0, count: 224 * 224 * 3), mask = [UInt8](repeating: 0, count: 224 * 224)
                let (cy, cx) = (60 + Int(rng.next() % 100), 60 + Int(rng.next() % 100))
                for y in 0..<224 {
                    for x in 0..<224 {
                        let d = (y - cy) * (y - cy) / 2 + (x - cx) * (x - cx)
                        let label: UInt8 = d < 900 ? 1 : d < 2500 ? 2 : 0
                        mask[y * 224 + x] = label
                        let base: [UInt8] = label == 1 ? [200, 60, 50] : label == 2 ? [60, 160, 80] : [90, 100, 130]
                        for c in 0..<3 { px[(y * 224 + x) * 3 + c] = base[c] &+ UInt8(rng.next() % 20) }
                    }
                }
                return (Image(width: 224, height: 224, channels: 3, pixels: px), mask)
            }
            let (support, mask) = scene()
            try PNG.write(support, to: dir + "/support.png")
            try PNG.write(Image(width: 224, height: 224, channels: 1, pixels: mask), to: dir + "/mask.png")
            for q in 0..<queries { try PNG.write(scene().0, to: dir + "/queries/q\(q).png") }
            let options: JSONValue = [
                "support": .string(dir + "/support.png"), "mask": .string(dir + "/mask.png"), "queries": .string(dir + "/queries"),
                "backbone": "vit-classifier", "backbone_options": .array([.string("classifier=" + dir)]), "size": 224,
            ]
            _ = try invoke("sst", operation: "segment", options: options) // warm: the model loads once per process
            var perQuery: [Double] = [], shares: [Double] = []
            for _ in 0..<max(2, repeats / 5) {
                let r = try invoke("sst", operation: "segment", options: options)
                let seconds = r.result["seconds"]?.doubleValue ?? .nan, features = r.result["feature_seconds"]?.doubleValue ?? .nan
                perQuery.append(seconds / Double(queries))
                shares.append(100 * features / seconds)
            }
            if wanted("sst.query_224_vit_s16") { records.append(record("sst.query_224_vit_s16", unit: "s", perQuery)) }
            if wanted("sst.feature_share") { records.append(record("sst.feature_share", unit: "% of query", shares)) }
        }
        if wanted("sst.propagation_224"), has("stm-tracker") {
            var rng = SeededGenerator(seed: 6)
            let features = try Tensor((0..<((queries + 1) * 14 * 14 * 384)).map { _ in Float(rng.nextNormal()) }, shape: [queries + 1, 14, 14, 384])
            let labels = try Tensor((0..<(224 * 224)).map { Int64(($0 / 224) / 75) }, shape: [224, 224])
            var samples: [Double] = []
            // Warm: in the CLI's process the plugin was warm from `sst.query_224_vit_s16`; this
            // family now starts in a fresh child.
            _ = try invoke("stm-tracker", operation: "segment", inputs: [("features", features), ("labels", labels)])
            for _ in 0..<max(3, repeats / 2) {
                let t0 = now()
                _ = try invoke("stm-tracker", operation: "segment", inputs: [("features", features), ("labels", labels)])
                samples.append((now() - t0) / Double(queries))
            }
            records.append(record("sst.propagation_224", unit: "ms", samples, target: 50))
        }
    }
}
